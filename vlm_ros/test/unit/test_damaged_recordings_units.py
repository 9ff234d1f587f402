"""A recording damaged inside: the reader says where, and what it read before is whole.

A failing disk, a copy cut short and patched, a card pulled mid-write: the file opens (its index
is whole) and breaks somewhere inside. Every tool reads through storage.OpenBag.messages, which
turns what rosbags' readers and decompressors raise into one DamagedBagError: the file, the log
time of the last message read before the damage, and the reader's reason. vlm_eval, vlm_export
and vlm_replay say it in one line and exit 2 (system/test_recordings.py).
"""

import pytest
import vlm_ros.bag.storage as bags
from engine_fixtures import scene
from eval_bags import image_fields
from recordings import ROS1_CAMERA, damage, jpeg, write_ros1_bag
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_typestore

T0 = 1_767_225_600 * 10**9
FRAMES = 60  # 0.1 s apart: a third into the file is inside the recording, past its start


def _frames() -> list:
    return [(T0 + k * 10**8, scene(('red', 'green', 'blue')[k % 3]), f'f{k}')
            for k in range(FRAMES)]


def _write(where, storage: str):
    """Write FRAMES camera frames in storage: 'mcap', 'sqlite3' or 'ros1[-bz2|-lz4]'."""
    if storage.startswith('ros1'):
        path = where / 'robot.bag'
        write_ros1_bag(path, _frames(), compression=storage[5:])
        return path
    path = where / 'robot'
    with bags.bag_writer(path, storage) as writer:
        camera = bags.add_topic(writer, '/camera/image_raw', 'sensor_msgs/msg/Image')
        for log_ns, rgb, _ in _frames():
            writer.write(camera, log_ns,
                         bags.serialize('sensor_msgs/msg/Image', **image_fields(rgb, log_ns)))
    return path


# Bytes overwritten a third into the file, inside the recording. The ROS 1 chunks of these
# frames compress to one small chunk behind the 4 KiB bag header: damaged 0.7 into the file
# (a few bytes), nothing before the damage can be read.
@pytest.mark.parametrize(('storage', 'size', 'at', 'reason'), [
    ('mcap', 2000, 1 / 3, 'Unable to decompress Zstandard data'),  # bag_writer's zstd chunks
    ('sqlite3', 2000, 1 / 3, 'database disk image is malformed'),
    ('ros1', 2000, 1 / 3, 'Header could not be read from file.'),
    ('ros1-bz2', 16, 0.7, 'Invalid data stream'),
    ('ros1-lz4', 16, 0.7, 'LZ4F_decompress failed'),
], ids=['mcap', 'sqlite3', 'ros1', 'ros1-bz2', 'ros1-lz4'])
def test_a_damaged_recording_is_read_up_to_the_damage_and_says_where_it_is(tmp_path, storage,
                                                                           size, at, reason):
    path = _write(tmp_path, storage)
    damage(path, size, at)
    read = []
    with bags.open_bag(path) as reader, pytest.raises(bags.DamagedBagError) as raised:
        for connection, log_ns, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)  # what is read is whole
            read.append(log_ns)
    assert len(read) < FRAMES
    last_s = (read[-1] - T0) / 1e9 if read else 0.0  # the last message read before the damage
    said = str(raised.value)
    assert said.startswith(f'{path}: the recording is damaged at {last_s:.3f} s of its '
                           f'{(FRAMES - 1) / 10:.3f} s: {reason}'), said
    assert raised.value.exit_code == 2  # the user's file: bad input


def test_a_ros1_message_that_is_no_message_of_its_type_is_damage_where_it_is_logged(tmp_path):
    """vlm_replay converts a ROS 1 bag's messages to CDR: bytes that are not one are damage."""
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    path = tmp_path / 'pi.bag'
    with Ros1Writer(path) as writer:
        camera = writer.add_connection(ROS1_CAMERA, 'sensor_msgs/msg/CompressedImage',
                                       typestore=store)
        frame = types['sensor_msgs/msg/CompressedImage'](
            header=types['std_msgs/msg/Header'](
                seq=0, stamp=types['builtin_interfaces/msg/Time'](sec=1, nanosec=0),
                frame_id='pi'), format='jpg', data=jpeg(scene('red')))
        writer.write(camera, T0, store.serialize_ros1(frame, 'sensor_msgs/msg/CompressedImage'))
        writer.write(camera, T0 + 5 * 10**8, b'\x07\x00')
    with bags.open_bag(path) as reader:
        (connection,) = reader.connections
        to_cdr = bags.cdr_converter(reader, connection)
        (_, good_ns, good), (_, bad_ns, bad) = list(reader.messages())
        assert bags.typestore().deserialize_cdr(to_cdr(good, good_ns),
                                                connection.msgtype).header.frame_id == 'pi'
        with pytest.raises(bags.DamagedBagError) as raised:
            to_cdr(bad, bad_ns)
    assert str(raised.value).startswith(
        f'{path}: the recording is damaged at 0.500 s of its 0.500 s: a message of '
        f'{ROS1_CAMERA} is no sensor_msgs/msg/CompressedImage (')
