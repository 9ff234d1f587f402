"""
A scripted tabletop camera recording: the sample bag of the replay and evaluation demos.

A real robot recording cannot ship with the repository (size, licence), and a replay test needs
frames whose exact pixels it knows. So the scene is drawn: a wooden table, a red, a green and a
blue block, a grey bin, and a two-finger gripper that carries out four spoken instructions, one
after the other. Everything is axis-aligned flat colour with no noise, so each frame is a pure
function of its time, compresses well (zstd in the MCAP, JPEG beside it) and regenerates
byte-identically. The reference plans and captions say what a good model should answer at each
instruction, for vlm_eval and for the demo that trains a tiny model on them. No rclpy here: bags
are written with rosbags (see bag/storage.py), so this runs without a ROS graph.
"""

import json
from dataclasses import dataclass

import cv2
import numpy as np
import yaml

from ..bag import storage as bags

START_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: fixed, so the bag regenerates exactly
TOPICS = {'image': '/camera/image_raw', 'compressed': '/camera/image_raw/compressed',
          'instruction': '/instruction'}
JPEG_QUALITY = 90
JPEG_FORMAT = 'rgb8; jpeg compressed bgr8'  # image_transport's format string for rgb8 frames

# The scene in design coordinates of a 640x480 frame, scaled to other sizes when drawn.
_DESIGN = (640, 480)
_WALL, _TABLE_EDGE, _TABLE = (214, 214, 206), (120, 84, 50), (176, 128, 80)
_HORIZON, _SEAMS = 170, (236, 306, 392)  # where the table's back edge and plank joints lie
_BLOCK, _BLOCK_TOP = 50, 16  # front face side, height of the visible top face
_COLOURS = {'red': ((200, 36, 36), (236, 96, 96)), 'green': ((36, 150, 64), (96, 198, 112)),
            'blue': ((40, 76, 196), (100, 130, 234))}  # (front face, lit top face)
_FLOOR = 350  # block bottoms on the table, and the front edge of the bin
_BIN_X, _BIN_RIM, _BIN_WALL, _BIN_FLOOR = (450, 620), 256, 290, 320
_BIN_SLOTS = (480, 535, 590)  # block centres inside the bin
_START = {'red': (130, _FLOOR), 'green': (230, _FLOOR), 'blue': (340, _FLOOR)}
# Gripper pose: (centre x, fingertip y, gap between the fingers).
_OPEN, _CLOSED = 76, 52
_HOME, _CARRY_Y, _GRIP = (320, 150, _OPEN), 215, 4  # fingertips _GRIP above a held block's bottom
_FINGER, _FINGER_W, _PALM, _ARM = 56, 12, 16, 10
_REACT, _DURATION, _WORKING = 0.05, 0.8, 0.85  # seconds after the instruction; share not homing
# One pick and place: (fraction of its time, where the fingertips are, gap) after the start pose.
_MOVE = ((0.25, 'above_source', _OPEN), (0.40, 'source', _OPEN), (0.50, 'source', _CLOSED),
         (0.60, 'above_source', _CLOSED), (0.80, 'above_target', _CLOSED),
         (0.90, 'target', _CLOSED), (0.95, 'target', _OPEN), (1.0, 'above_target', _OPEN))
_GRASP, _RELEASE = 0.50, 0.95


@dataclass(frozen=True)
class Instruction:
    """A scripted instruction, its reference answers, and the moves the gripper then makes."""

    time: float  # seconds after the first frame
    text: str
    plan: str  # the JSON plan prompts.yaml asks for: {"steps": [{instruction, skill, target}]}
    caption: str  # the scene in the latest frame at or before the instruction
    moves: tuple  # (block, (x, bottom)) pairs carried out from time + _REACT on


def _plan(*steps) -> str:
    """Serialise (instruction, skill, target) steps exactly as the plan prompt asks for."""
    return json.dumps({'steps': [{'instruction': text, 'skill': skill, 'target': target}
                                 for text, skill, target in steps]})


INSTRUCTIONS = (
    Instruction(0.35, 'put the red block in the bin', _plan(
        ('pick up the red block', 'pick', 'red block'),
        ('place it in the bin', 'place', 'bin')),
        'a red, a green and a blue block beside a grey bin on a wooden table',
        (('red', (_BIN_SLOTS[0], _BIN_FLOOR)),)),
    Instruction(1.25, 'stack the green block on the blue block', _plan(
        ('pick up the green block', 'pick', 'green block'),
        ('place it on top of the blue block', 'place', 'blue block')),
        'a green and a blue block beside a grey bin with a red block in it on a wooden table',
        (('green', (_START['blue'][0], _FLOOR - _BLOCK)),)),
    Instruction(2.15, 'put the blue block in the bin', _plan(
        ('pick up the green block from the blue block', 'pick', 'green block'),
        ('place it on the table', 'place', 'table'),
        ('pick up the blue block', 'pick', 'blue block'),
        ('place it in the bin', 'place', 'bin')),
        'a green block stacked on a blue block beside a grey bin with a red block in it on a '
        'wooden table',
        (('green', _START['green']), ('blue', (_BIN_SLOTS[2], _BIN_FLOOR)))),
    Instruction(3.05, 'clear the table', _plan(
        ('pick up the green block', 'pick', 'green block'),
        ('place it in the bin', 'place', 'bin')),
        'a green block beside a grey bin with a red and a blue block in it on a wooden table',
        (('green', (_BIN_SLOTS[1], _BIN_FLOOR)),)),
)


def _keyframes(instruction: Instruction, places: dict):
    """Return the gripper's (time, pose) keyframes and (block, grasp, release, target) moves."""
    start = instruction.time + _REACT
    span = _DURATION * _WORKING / len(instruction.moves)
    places, keys, moves = dict(places), [(start, _HOME)], []
    for index, (block, target) in enumerate(instruction.moves):
        begin = start + index * span
        (source_x, source_y), (target_x, target_y) = places[block], target
        where = {'above_source': (source_x, _CARRY_Y), 'source': (source_x, source_y - _GRIP),
                 'above_target': (target_x, _CARRY_Y), 'target': (target_x, target_y - _GRIP)}
        keys += [(begin + fraction * span, (*where[name], gap)) for fraction, name, gap in _MOVE]
        moves.append((block, begin + _GRASP * span, begin + _RELEASE * span, target))
        places[block] = target
    keys.append((start + _DURATION, _HOME))
    return keys, moves


def _state(t: float):
    """Return the gripper pose, each block's (x, bottom) at rest and the held block at time t."""
    places = dict(_START)
    for instruction in INSTRUCTIONS:
        if t < instruction.time + _REACT:
            break
        keys, moves = _keyframes(instruction, places)
        held = None
        for block, grasp, release, target in moves:
            if t >= release:
                places[block] = target
            elif t >= grasp:
                held = block
        if t < keys[-1][0]:
            index = next(i for i, (time, _) in enumerate(keys) if time > t)
            (t0, pose0), (t1, pose1) = keys[index - 1], keys[index]
            share = (t - t0) / (t1 - t0)
            pose = tuple(a + (b - a) * share for a, b in zip(pose0, pose1, strict=True))
            if held:
                del places[held]
            return pose, places, held
    return _HOME, places, None


class _Canvas:
    """An RGB frame drawn in design coordinates; rectangles are clipped to the frame."""

    def __init__(self, width: int, height: int):
        self.image = np.zeros((height, width, 3), np.uint8)
        self.sx, self.sy = width / _DESIGN[0], height / _DESIGN[1]

    def rect(self, x0, y0, x1, y1, colour) -> None:
        top, bottom = (max(0, round(y * self.sy)) for y in (y0, y1))
        left, right = (max(0, round(x * self.sx)) for x in (x0, x1))
        self.image[top:bottom, left:right] = colour

    def block(self, colour: str, x, bottom) -> None:
        front, top = _COLOURS[colour]
        half = _BLOCK / 2
        self.rect(x - half, bottom - _BLOCK - _BLOCK_TOP, x + half, bottom - _BLOCK, top)
        self.rect(x - half, bottom - _BLOCK, x + half, bottom, front)

    def gripper(self, pose, held) -> None:
        x, tip, gap = pose
        if held:
            self.block(held, x, tip + _GRIP)
        palm, half = tip - _FINGER - _PALM, gap / 2 + _FINGER_W + 4
        self.rect(x - _ARM, 0, x + _ARM, palm, (150, 150, 160))
        self.rect(x - half, palm, x + half, tip - _FINGER, (84, 84, 94))
        for side in (-1, 1):
            inner = x + side * gap / 2
            self.rect(min(inner, inner + side * _FINGER_W), tip - _FINGER,
                      max(inner, inner + side * _FINGER_W), tip, (48, 48, 54))


def _inside_bin(x, bottom) -> bool:
    """Tell whether something at (x, bottom) is behind the bin's front wall, so drawn first."""
    return _BIN_X[0] < x < _BIN_X[1] and bottom > _BIN_RIM


def draw_tabletop(t: float, width: int = 640, height: int = 480) -> np.ndarray:
    """
    Draw the scene t seconds into the script as a new HxWx3 uint8 RGB frame.

    A pure function of its arguments: the recording and the tests draw the same pixels.
    """
    canvas = _Canvas(width, height)
    canvas.rect(0, 0, _DESIGN[0], _HORIZON, _WALL)
    # Wood grain: each row one colour (so zstd finds the repeats), plus darker plank joints.
    top = round(_HORIZON * canvas.sy)
    rows = np.arange(top, height) / canvas.sy
    grain = np.round(5 * np.sin(rows * 0.37) + 3 * np.sin(rows * 0.113)).astype(np.int16)
    canvas.image[top:] = (np.int16(_TABLE) + grain[:, None, None]).astype(np.uint8)
    canvas.rect(0, _HORIZON, _DESIGN[0], _HORIZON + 6, _TABLE_EDGE)
    for seam in _SEAMS:
        canvas.rect(0, seam, _DESIGN[0], seam + 2, (150, 104, 62))
    pose, places, held = _state(t)
    x0, x1 = _BIN_X
    canvas.rect(x0, _BIN_RIM, x1, _BIN_WALL, (170, 170, 176))  # the rim around the inside
    canvas.rect(x0 + 4, _BIN_RIM + 4, x1 - 4, _BIN_WALL, (70, 70, 76))
    in_bin = {block: place for block, place in places.items() if _inside_bin(*place)}
    for block, (x, bottom) in in_bin.items():
        canvas.block(block, x, bottom)
    gripper_in_bin = _inside_bin(pose[0], pose[1] + _GRIP)
    if gripper_in_bin:  # lowered into the bin: its front wall hides the fingertips
        canvas.gripper(pose, held)
    canvas.rect(x0, _BIN_WALL, x1, _FLOOR, (140, 140, 146))
    canvas.rect(x0, _BIN_WALL, x1, _BIN_WALL + 4, (176, 176, 182))
    on_table = sorted((place[1], block) for block, place in places.items() if block not in in_bin)
    for _, block in reversed(on_table):  # the lower block of a stack first
        canvas.block(block, *places[block])
    if not gripper_in_bin:
        canvas.gripper(pose, held)
    return canvas.image


def _frames(seconds: float, rate_hz: float, start_ns: int):
    """Return (t, stamp_ns) of every frame: round(seconds x rate) frames from start_ns on."""
    count = round(seconds * rate_hz)
    return [(index / rate_hz, start_ns + round(index * 10**9 / rate_hz)) for index in range(count)]


def _instruction_ns(instruction: Instruction, start_ns: int) -> int:
    return start_ns + round(instruction.time * 10**9)


def write_recording(path, storage: str = 'mcap', seconds: float = 4.0, rate_hz: float = 10.0,
                    start_ns: int = START_NS, frame_id: str = 'camera_optical_frame',
                    topics: dict | None = None) -> dict:
    """
    Write the scripted scene as a new rosbag2 directory at path; return {topic: messages}.

    Every frame goes out twice at one log time, equal to its header stamp: rgb8 on the image
    topic and JPEG on the compressed one. Instructions within the recording go out on their own
    topic at their times. ``topics`` renames streams by role (image, compressed, instruction);
    a role mapped to None is left out.
    """
    names = {**TOPICS, **(topics or {})}
    if set(names) != set(TOPICS):
        raise ValueError(f'unknown topic roles {sorted(set(names) - set(TOPICS))}; '
                         f'use {sorted(TOPICS)}')
    types = {'image': bags.IMAGE_TYPES[0], 'compressed': bags.IMAGE_TYPES[1],
             'instruction': bags.STRING_TYPE}
    events = []  # (log time, order, role, fields): frames before an instruction at equal times
    for t, stamp in _frames(seconds, rate_hz, start_ns):
        rgb = draw_tabletop(t)
        head = bags.header(stamp, frame_id)
        events.append((stamp, 0, 'image', {
            'header': head, 'height': rgb.shape[0], 'width': rgb.shape[1], 'encoding': 'rgb8',
            'is_bigendian': 0, 'step': rgb.shape[1] * 3, 'data': rgb.reshape(-1)}))
        if names['compressed']:
            _, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            events.append((stamp, 1, 'compressed',
                           {'header': head, 'format': JPEG_FORMAT, 'data': jpeg.reshape(-1)}))
    for instruction in INSTRUCTIONS:
        if instruction.time < seconds:
            events.append((_instruction_ns(instruction, start_ns), 2, 'instruction',
                           {'data': instruction.text}))
    counts = {}
    with bags.bag_writer(path, storage) as writer:
        connections = {role: bags.add_topic(writer, names[role], types[role])
                       for role in TOPICS if names[role]}
        for stamp, _, role, fields in sorted(events, key=lambda event: event[:2]):
            if role in connections:
                writer.write(connections[role], stamp, bags.serialize(types[role], **fields))
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
