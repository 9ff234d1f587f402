"""The tabletop scene's sample recordings (rosbag2) and their reference answers.

samples/tabletop holds the head camera (raw and JPEG) and the spoken instructions: one camera
topic, so every tool finds it without being told. samples/tabletop_cameras adds the wrist camera,
the head camera's aligned depth and its camera_info (tabletop_views.py), for several cameras and
3D targets. No rclpy here: bags are written with rosbags (see bag/storage.py), so this runs
without a ROS graph.
"""

import cv2
import numpy as np
import yaml

from ..bag import storage as bags
from .tabletop import INSTRUCTIONS, Instruction, draw_tabletop
from .tabletop_views import WRIST_FRAME_ID, camera_info_fields, draw_depth, draw_wrist

START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: fixed, so the bag regenerates exactly
TOPICS = {'image': '/camera/image_raw', 'compressed': '/camera/image_raw/compressed',
          'instruction': '/instruction'}
# The several-camera sample's further streams: left out unless topics= names them.
CAMERA_TOPICS = {'wrist': '/wrist/image_raw', 'depth': '/camera/depth/image_raw',
                 'camera_info': '/camera/camera_info'}
JPEG_QUALITY = 90
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'  # image_transport's format string for rgb8 frames
_TYPES = {'image': bags.IMAGE_TYPES[0], 'compressed': bags.IMAGE_TYPES[1],
          'instruction': bags.STRING_TYPE, 'wrist': bags.IMAGE_TYPES[0],
          'depth': bags.IMAGE_TYPES[0], 'camera_info': 'sensor_msgs/msg/CameraInfo'}
_ORDER = ('image', 'compressed', 'wrist', 'depth', 'camera_info', 'instruction')  # at equal times


def _frames(seconds: float, rate_hz: float, start_ns: int):
    """Return (t, stamp_ns) of every frame: round(seconds x rate) frames from start_ns on."""
    count = round(seconds * rate_hz)
    return [(index / rate_hz, start_ns + round(index * 10**9 / rate_hz)) for index in range(count)]


def _instruction_ns(instruction: Instruction, start_ns: int) -> int:
    return start_ns + round(instruction.time * 10**9)


def image_fields(head: dict, pixels: np.ndarray, encoding: str) -> dict:
    """Return a sensor_msgs/Image's fields (rgb8 HxWx3 or 16UC1 HxW, little-endian)."""
    return {'header': head, 'height': pixels.shape[0], 'width': pixels.shape[1],
            'encoding': encoding, 'is_bigendian': 0,
            'step': pixels.shape[1] * pixels.itemsize * (pixels.shape[2] if pixels.ndim > 2
                                                         else 1),
            'data': np.ascontiguousarray(pixels, pixels.dtype.newbyteorder('<')).view(
                np.uint8).reshape(-1)}


def _frame_events(names: dict, t: float, stamp: int, frame_id: str) -> list:
    """Return the (log time, role, fields) of one frame time's messages, roles in names."""
    head = bags.header(stamp, frame_id)
    rgb = draw_tabletop(t)
    events = [(stamp, 'image', image_fields(head, rgb, 'rgb8'))]
    if names['compressed']:
        _, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        events.append((stamp, 'compressed',
                       {'header': head, 'format': JPEG_FORMAT, 'data': jpeg.reshape(-1)}))
    if names['wrist']:
        events.append((stamp, 'wrist', image_fields(bags.header(stamp, WRIST_FRAME_ID),
                                                     draw_wrist(t), 'rgb8')))
    if names['depth']:
        events.append((stamp, 'depth', image_fields(head, draw_depth(t), '16UC1')))
    if names['camera_info']:
        events.append((stamp, 'camera_info', camera_info_fields(stamp, frame_id)))
    return events


def write_recording(path, storage: str = 'mcap', seconds: float = 4.0, rate_hz: float = 10.0,
                    start_ns: int = START_NS, frame_id: str = 'camera_optical_frame',
                    topics: dict | None = None) -> dict:
    """
    Write the scripted scene as a new rosbag2 directory at path; return {topic: messages}.

    Every frame goes out twice at one log time, equal to its header stamp: rgb8 on the image
    topic and JPEG on the compressed one. Instructions within the recording go out on their own
    topic at their times. ``topics`` renames streams by role (image, compressed, instruction;
    and wrist, depth, camera_info, which are left out unless named: CAMERA_TOPICS); a role
    mapped to None is left out. The depth and camera_info share the head frame's stamp and
    frame_id (aligned); the wrist frames have the same stamps.
    """
    names = {**TOPICS, **dict.fromkeys(CAMERA_TOPICS), **(topics or {})}
    unknown = set(names) - set(_TYPES)
    if unknown:
        raise ValueError(f'unknown topic roles {sorted(unknown)}; use {sorted(_TYPES)}')
    events = [event for t, stamp in _frames(seconds, rate_hz, start_ns)
              for event in _frame_events(names, t, stamp, frame_id)]
    events += [(_instruction_ns(instruction, start_ns), 'instruction', {'data': instruction.text})
               for instruction in INSTRUCTIONS if instruction.time < seconds]
    counts = {}
    with bags.bag_writer(path, storage) as writer:
        connections = {role: bags.add_topic(writer, names[role], _TYPES[role])
                       for role in _ORDER if names[role]}
        for stamp, role, fields in sorted(events, key=lambda e: (e[0], _ORDER.index(e[1]))):
            if role in connections:
                writer.write(connections[role], stamp, bags.serialize(_TYPES[role], **fields))
                counts[names[role]] = counts.get(names[role], 0) + 1
    return counts


def references(seconds: float = 4.0, rate_hz: float = 10.0, start_ns: int = START_NS) -> list:
    """
    Return the reference answers of the recording, as dicts, in time order.

    Each instruction gives a plan entry and a caption entry, both stamped with the header stamp
    of the latest frame at or before it: the frame a node would have answered from.
    """
    stamps = [stamp for _, stamp in _frames(seconds, rate_hz, start_ns)]
    entries = []
    for instruction in INSTRUCTIONS:
        when = _instruction_ns(instruction, start_ns)
        if instruction.time >= seconds or not stamps:
            continue
        frame = max(stamp for stamp in stamps if stamp <= when)
        entries.append({'stamp_ns': frame, 'task': 'plan', 'text': instruction.text,
                        'target': instruction.plan})
        entries.append({'stamp_ns': frame, 'task': 'caption', 'text': '',
                        'target': instruction.caption})
    return entries


def write_references(path, seconds: float = 4.0, rate_hz: float = 10.0,
                     start_ns: int = START_NS) -> list:
    """Write references() as a YAML list to path (one line per field) and return the entries."""
    entries = references(seconds, rate_hz, start_ns)
    with open(path, 'w', encoding='utf-8') as out:
        out.write('# Reference answers of the tabletop sample bag (vlm_ros.demo.tabletop); '
                  'stamp_ns is an image header stamp.\n')
        yaml.safe_dump(entries, out, sort_keys=False, width=10**6, allow_unicode=True)
    return entries
