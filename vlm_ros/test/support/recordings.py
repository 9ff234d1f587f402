"""Recordings as robots make them, for the tools' tests: ROS 1 bags of a compressed camera.

Public robot recordings are often ROS 1 bags of a Raspberry Pi camera: sensor_msgs/
CompressedImage, format 'jpg', a relative topic name, and no instruction topic at all. These
helpers write such bags with rosbags' ROS 1 writer and the Noetic type store.
"""

import pathlib

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Ros1Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

ROS1_CAMERA = 'raspicam_node/image/compressed'  # relative, as in the recordings we met
ROS1_INSTRUCTION = '/instruction'


def jpeg(rgb: np.ndarray) -> np.ndarray:
    """Encode an RGB frame as a camera's JPEG bytes (quality 90, as the tiny models learnt)."""
    ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.reshape(-1)


def write_ros1_bag(path, frames: list, instructions: list = (), topic: str = ROS1_CAMERA,
                   camera_info: str = '', compression: str = '') -> list:
    """Write (log_ns, rgb, frame_id) frames and (log_ns, text) instructions into a ROS 1 bag.

    Frames are stamped with their log time and numbered in the header's seq, as a ROS 1 driver
    does; with camera_info (a topic name), each frame has its CameraInfo there, as a camera
    driver publishes it. compression: '' (rosbag record's default), 'bz2' or 'lz4' chunks.
    Returns the frames' (stamp_ns, frame_id).
    """
    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    written = []
    writer = Ros1Writer(path)
    if compression:
        writer.set_compression(Ros1Writer.CompressionFormat[compression.upper()])
    with writer:
        camera = writer.add_connection(topic, 'sensor_msgs/msg/CompressedImage',
                                       typestore=store)
        info = writer.add_connection(camera_info, 'sensor_msgs/msg/CameraInfo',
                                     typestore=store) if camera_info else None
        told = writer.add_connection(ROS1_INSTRUCTION, 'std_msgs/msg/String', typestore=store) \
            if instructions else None
        events = [(t, 'frame', (rgb, frame_id)) for t, rgb, frame_id in frames]
        events += [(t, 'text', text) for t, text in instructions]
        for seq, (log_ns, kind, payload) in enumerate(sorted(events, key=lambda e: e[0])):
            if kind == 'text':
                msg = types['std_msgs/msg/String'](data=payload)
                writer.write(told, log_ns, store.serialize_ros1(msg, 'std_msgs/msg/String'))
                continue
            rgb, frame_id = payload
            stamp = types['builtin_interfaces/msg/Time'](sec=log_ns // 10**9,
                                                         nanosec=log_ns % 10**9)
            msg = types['sensor_msgs/msg/CompressedImage'](
                header=types['std_msgs/msg/Header'](seq=seq, stamp=stamp, frame_id=frame_id),
                format='jpg', data=jpeg(rgb))
            writer.write(camera, log_ns,
                         store.serialize_ros1(msg, 'sensor_msgs/msg/CompressedImage'))
            if info is not None:
                writer.write(info, log_ns, store.serialize_ros1(
                    _camera_info(types, msg.header, rgb.shape), 'sensor_msgs/msg/CameraInfo'))
            written.append((log_ns, frame_id))
    return written


def _camera_info(types, header, shape):
    """Return a ROS 1 CameraInfo of a pinhole camera without distortion for a frame's shape."""
    height, width = shape[:2]
    return types['sensor_msgs/msg/CameraInfo'](
        header=header, height=height, width=width, distortion_model='plumb_bob',
        D=np.zeros(5), K=np.array([width, 0, width / 2, 0, width, height / 2, 0, 0, 1.0]),
        R=np.eye(3).reshape(-1), P=np.array([width, 0, width / 2, 0, 0, width, height / 2, 0,
                                             0, 0, 1.0, 0]),
        binning_x=0, binning_y=0, roi=types['sensor_msgs/msg/RegionOfInterest'](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def write_ros1_custom_bag(path) -> None:
    """Write a ROS 1 bag holding one message of a robot's own type (no ROS 2 counterpart)."""
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg('string state\n', 'my_robot/msg/Status'))
    with Ros1Writer(path) as writer:
        status = writer.add_connection('/status', 'my_robot/msg/Status', typestore=store)
        writer.write(status, 10**18, store.serialize_ros1(
            store.types['my_robot/msg/Status'](state='idle'), 'my_robot/msg/Status'))


def damage(path, size: int = 2000, at: float = 1 / 3) -> pathlib.Path:
    """Overwrite size bytes at a fraction of a recording's storage file, as a failing disk would.

    path: a .bag, .mcap or .db3 file, or a rosbag2 directory (its one storage file is damaged).
    Returns the damaged file.
    """
    path = pathlib.Path(path)
    damaged = path if path.is_file() else next(
        p for p in sorted(path.iterdir()) if p.suffix in ('.mcap', '.db3'))
    with damaged.open('r+b') as storage:
        storage.seek(int(damaged.stat().st_size * at))
        storage.write(b'\xab' * size)
    return damaged
