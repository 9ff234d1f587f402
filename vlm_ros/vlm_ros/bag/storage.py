"""Recordings without rosbag2_py: open rosbag2 (MCAP, SQLite3) and ROS 1 bags, write rosbag2.

``ros2 bag`` and rosbag2_py are not installable from wheels, so vlm_replay, vlm_eval and the
sample recording use the pure-Python ``rosbags`` library instead. Its type store knows the
standard messages of the Kilted release; the vlm_ros_msgs definitions are added from the
installed .msg files, so that recorded Plans and Captions carry their full definitions and open
with ``ros2 bag info`` / ``ros2 bag play`` on a ROS 2 machine. ROS 1 bags (many public robot
recordings) are read too; their messages are converted to CDR, the ROS 2 wire format, where
they are published. No rclpy here: offline evaluation reads bags without a ROS graph.
"""

import contextlib
import functools
import io
import pathlib

import apsw
from ament_index_python.packages import get_package_share_directory
from rosbags.convert.converter import generate_message_converter
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import ReaderError as Ros1ReaderError
from rosbags.rosbag2 import CompressionFormat, CompressionMode, ReaderError, StoragePlugin, Writer
from rosbags.serde import SerdeError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ..engine.errors import VlmError

try:
    from compression import zstd  # Python 3.14; rosbags decompresses with it where it is
except ImportError:
    from backports import zstd

STORAGES = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
STRING_TYPE = 'std_msgs/msg/String'
PLAN_TYPE, CAPTION_TYPE = 'vlm_ros_msgs/msg/Plan', 'vlm_ros_msgs/msg/Caption'
PROGRESS_TYPE = 'vlm_ros_msgs/msg/PlanProgress'
TARGETS_TYPE, SOURCES_TYPE = 'vlm_ros_msgs/msg/PlanTargets', 'vlm_ros_msgs/msg/ImageSources'
# Metadata version 9 (what Kilted writes) stores each topic's QoS profiles as a YAML list, which
# Humble's rosbag2 (reading versions up to 5, QoS as a YAML string) fails to decode
# (ros2/rosbag2#1895). Version 8 keeps the string form; every newer distro reads older versions.
BAG_VERSION = 8


# What rosbags raises reading a recording damaged past its index, found by overwriting bytes of
# recordings of every storage: its readers' ReaderErrors; the chunk and message decompressors'
# (zstd's ZstdError, lz4's RuntimeError, bz2's OSError and ValueError); SQLite's apsw.Error;
# and, where garbage is read as a length, an index or a name, OverflowError, KeyError,
# UnicodeDecodeError (a ValueError) and the ROS 1 reader's AssertionError.
DAMAGE = (ReaderError, Ros1ReaderError, zstd.ZstdError, RuntimeError, OSError, ValueError,
          apsw.Error, OverflowError, KeyError, AssertionError)


class BagError(VlmError):
    """A recording that cannot be opened or written; the text says which file and why."""

    def __init__(self, message: str, cause=None):
        super().__init__('bad_input', message, cause=cause)


class DamagedBagError(BagError):
    """A recording that opened but cannot be read on from some point: bad input, found late."""


def damage_reason(exc: BaseException) -> str:
    """Return what a reader said of the damage; the type where its text alone says nothing."""
    text = str(exc)
    if isinstance(exc, (KeyError, AssertionError, OverflowError)) or not text:
        return f'inconsistent records ({type(exc).__name__}{": " + text if text else ""})'
    return text


@functools.cache
def typestore():
    """Return the Kilted type store with vlm_ros_msgs registered from its installed .msg files."""
    store = get_typestore(Stores.ROS2_KILTED)
    share = pathlib.Path(get_package_share_directory('vlm_ros_msgs'), 'msg')
    types = {}
    for path in sorted(share.glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(), f'vlm_ros_msgs/msg/{path.stem}'))
    store.register(types)
    return store


class OpenBag(AnyReader):
    """An AnyReader that open_bag has opened already: ``with`` only closes it at the end.

    Its messages() raises DamagedBagError, saying where, for a recording damaged past its index:
    the first message it cannot read ends the reading, and rosbags' own error names neither the
    file nor the point of the recording.
    """

    def __enter__(self):
        return self

    def messages(self, connections=(), start=None, stop=None):
        """Yield (connection, log_ns, raw bytes) as AnyReader.messages does, or DamagedBagError."""
        source = super().messages(connections, start, stop)
        reached = self.start_time if start is None else max(start, self.start_time)
        with contextlib.closing(source):  # also when the caller stops reading early
            while True:
                try:
                    item = next(source)
                except StopIteration:
                    return
                except DAMAGE as exc:
                    raise self.damaged(reached, damage_reason(exc), exc) from exc
                reached = item[1]
                yield item

    def damaged(self, log_ns: int, reason: str, cause=None) -> DamagedBagError:
        """Return the DamagedBagError of damage found at log_ns (the last time read before it)."""
        length = (self.end_time - self.start_time) / 1e9
        return DamagedBagError(f'{self.paths[0]}: the recording is damaged at '
                               f'{(log_ns - self.start_time) / 1e9:.3f} s of its '
                               f'{length:.3f} s: {reason}', cause)


READABLE = 'a rosbag2 directory (MCAP or SQLite3), one .mcap or .db3 file, or a ROS 1 .bag'


def open_bag(path) -> OpenBag:
    """Open a recording (READABLE) for reading; close() or use ``with``.

    Opening happens here, so a bad path or file fails at once with a BagError that names it.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise BagError(f'no recording at {path}')
    if path.is_file() and path.suffix not in ('.mcap', '.db3', '.bag'):
        raise BagError(f'{path} is not a recording: expected {READABLE}')
    try:
        reader = OpenBag([path], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several unrelated types
        raise BagError(f"cannot open {path} as {READABLE}: {' '.join(str(exc).split())}",
                       exc) from exc  # one line: a YAML error spans several
    return reader


def cdr_converter(reader, connection):
    """Return a function from a connection's recorded message (bytes, log time) to its CDR.

    rosbag2 stores CDR already. A ROS 1 message is decoded with the bag's own definitions and
    encoded as the ROS 2 type of the same name (a ROS 1 Header's seq is dropped, say); bytes
    that are no such message raise the reader's DamagedBagError.
    """
    if reader.is2:
        return lambda data, _log_ns: bytes(data)
    msgtype = connection.msgtype
    if msgtype not in typestore().fielddefs:
        raise BagError(f'{msgtype} of the ROS 1 recording has no ROS 2 counterpart here; '
                       'play the other topics with --topics')
    with contextlib.redirect_stdout(io.StringIO()):  # it prints which types it migrates
        convert = generate_message_converter(reader.typestore, typestore(), msgtype, msgtype,
                                             {}, src_is2=False, dst_is2=True)

    def to_cdr(data, log_ns: int) -> bytes:
        try:
            return bytes(convert(data))
        except SerdeError as exc:
            raise reader.damaged(log_ns, f'a message of {connection.topic} is no {msgtype} '
                                 f'({exc})', exc) from exc
    return to_cdr


@contextlib.contextmanager
def bag_writer(path, storage: str = 'mcap'):
    """
    Yield a rosbags Writer for a new rosbag2 directory at path.

    MCAP chunks are zstd-compressed (the storage-level compression that rosbag2's MCAP plugin
    reads natively): camera frames of a tabletop compress tenfold and more.
    """
    path = pathlib.Path(path)
    if path.exists():
        raise BagError(f'{path} exists already; rosbag2 writes a new directory')
    if storage not in STORAGES:
        raise BagError(f'unknown storage {storage!r}; use one of {sorted(STORAGES)}')
    writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
    if storage == 'mcap':
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        yield writer


def add_topic(writer, topic: str, msgtype: str):
    """Add a connection whose definition comes from our type store, so readers need no .msg."""
    return writer.add_connection(topic, msgtype, typestore=typestore())


def serialize(msgtype: str, **fields) -> bytes:
    """
    Serialize a message of msgtype as CDR, the bytes a rosbag2 recording stores.

    Every field must be given (rosbags messages have no defaults); nested messages as dicts.
    """
    store = typestore()
    return bytes(store.serialize_cdr(_build(store, msgtype, fields), msgtype))


def _build(store, msgtype: str, fields: dict):
    """Construct a rosbags message of msgtype, nested messages built from their dicts."""
    values = dict(fields)
    for name, (kind, spec) in store.fielddefs[msgtype][1]:
        if kind.name == 'NAME':
            values[name] = _build(store, spec, fields[name])
    return store.types[msgtype](**values)


def deserialize(data: bytes, msgtype: str):
    """Decode CDR bytes of msgtype into a rosbags message (attribute access like rclpy's)."""
    return typestore().deserialize_cdr(data, msgtype)


def header(stamp_ns: int, frame_id: str) -> dict:
    """Return a std_msgs/Header as fields for serialize()."""
    return {'stamp': {'sec': stamp_ns // 10**9, 'nanosec': stamp_ns % 10**9},
            'frame_id': frame_id}


def time_ns(stamp) -> int:
    """Return a builtin_interfaces/Time in integer nanoseconds."""
    return stamp.sec * 10**9 + stamp.nanosec


def stamp_ns(msg) -> int:
    """Return a message's header stamp in integer nanoseconds."""
    return time_ns(msg.header.stamp)
