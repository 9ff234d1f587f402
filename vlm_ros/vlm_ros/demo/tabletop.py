"""
A scripted tabletop scene: what the sample recordings' head camera sees (sample.py writes them).

A real robot recording cannot ship with the repository (size, licence), and a replay test needs
frames whose exact pixels it knows. So the scene is drawn: a wooden table, a red, a green and a
blue block, a grey bin, and a two-finger gripper that carries out four spoken instructions, one
after the other. Everything is axis-aligned flat colour with no noise, so each frame is a pure
function of its time, compresses well and regenerates byte-identically. The reference plans and
captions say what a good model should answer at each instruction, for vlm_eval and for the demo
that trains a tiny model on them.
"""

import json
from dataclasses import dataclass

import numpy as np

# The scene in design coordinates of a 640x480 frame, scaled to other sizes when drawn.
DESIGN = (640, 480)
_WALL, _TABLE_EDGE, _TABLE = (214, 214, 206), (120, 84, 50), (176, 128, 80)
HORIZON, _SEAMS = 170, (236, 306, 392)  # where the table's back edge and plank joints lie
BLOCK, _BLOCK_TOP = 50, 16  # front face side, height of the visible top face
COLOURS = {'red': ((200, 36, 36), (236, 96, 96)), 'green': ((36, 150, 64), (96, 198, 112)),
            'blue': ((40, 76, 196), (100, 130, 234))}  # (front face, lit top face)
FLOOR = 350  # block bottoms on the table, and the front edge of the bin
_BIN_X, _BIN_RIM, _BIN_WALL, BIN_FLOOR = (450, 620), 256, 290, 320
BIN_SLOTS = (480, 535, 590)  # block centres inside the bin
START = {'red': (130, FLOOR), 'green': (230, FLOOR), 'blue': (340, FLOOR)}
# Gripper pose: (centre x, fingertip y, gap between the fingers).
_OPEN, CLOSED = 76, 52
HOME, CARRY_Y, _GRIP = (320, 150, _OPEN), 215, 4  # fingertips _GRIP above a held block's bottom
_FINGER, _FINGER_W, _PALM, _ARM = 56, 12, 16, 10
_REACT, _DURATION, _WORKING = 0.05, 0.8, 0.85  # seconds after the instruction; share not homing
# One pick and place: (fraction of its time, where the fingertips are, gap) after the start pose.
_MOVE = ((0.25, 'above_source', _OPEN), (0.40, 'source', _OPEN), (0.50, 'source', CLOSED),
         (0.60, 'above_source', CLOSED), (0.80, 'above_target', CLOSED),
         (0.90, 'target', CLOSED), (0.95, 'target', _OPEN), (1.0, 'above_target', _OPEN))
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
        (('red', (BIN_SLOTS[0], BIN_FLOOR)),)),
    Instruction(1.25, 'stack the green block on the blue block', _plan(
        ('pick up the green block', 'pick', 'green block'),
        ('place it on top of the blue block', 'place', 'blue block')),
        'a green and a blue block beside a grey bin with a red block in it on a wooden table',
        (('green', (START['blue'][0], FLOOR - BLOCK)),)),
    Instruction(2.15, 'put the blue block in the bin', _plan(
        ('pick up the green block from the blue block', 'pick', 'green block'),
        ('place it on the table', 'place', 'table'),
        ('pick up the blue block', 'pick', 'blue block'),
        ('place it in the bin', 'place', 'bin')),
        'a green block stacked on a blue block beside a grey bin with a red block in it on a '
        'wooden table',
        (('green', START['green']), ('blue', (BIN_SLOTS[2], BIN_FLOOR)))),
    Instruction(3.05, 'clear the table', _plan(
        ('pick up the green block', 'pick', 'green block'),
        ('place it in the bin', 'place', 'bin')),
        'a green block beside a grey bin with a red and a blue block in it on a wooden table',
        (('green', (BIN_SLOTS[1], BIN_FLOOR)),)),
)


def _keyframes(instruction: Instruction, places: dict):
    """Return the gripper's (time, pose) keyframes and (block, grasp, release, target) moves."""
    start = instruction.time + _REACT
    span = _DURATION * _WORKING / len(instruction.moves)
    places, keys, moves = dict(places), [(start, HOME)], []
    for index, (block, target) in enumerate(instruction.moves):
        begin = start + index * span
        (source_x, source_y), (target_x, target_y) = places[block], target
        where = {'above_source': (source_x, CARRY_Y), 'source': (source_x, source_y - _GRIP),
                 'above_target': (target_x, CARRY_Y), 'target': (target_x, target_y - _GRIP)}
        keys += [(begin + fraction * span, (*where[name], gap)) for fraction, name, gap in _MOVE]
        moves.append((block, begin + _GRASP * span, begin + _RELEASE * span, target))
        places[block] = target
    keys.append((start + _DURATION, HOME))
    return keys, moves


def state(t: float):
    """Return the gripper pose, each block's (x, bottom) at rest and the held block at time t."""
    places = dict(START)
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
    return HOME, places, None


class _Canvas:
    """An RGB frame drawn in design coordinates; rectangles are clipped to the frame."""

    def __init__(self, width: int, height: int):
        self.image = np.zeros((height, width, 3), np.uint8)
        self.sx, self.sy = width / DESIGN[0], height / DESIGN[1]

    def rect(self, x0, y0, x1, y1, colour) -> None:
        top, bottom = (max(0, round(y * self.sy)) for y in (y0, y1))
        left, right = (max(0, round(x * self.sx)) for x in (x0, x1))
        self.image[top:bottom, left:right] = colour

    def block(self, colour: str, x, bottom) -> None:
        front, top = COLOURS[colour]
        half = BLOCK / 2
        self.rect(x - half, bottom - BLOCK - _BLOCK_TOP, x + half, bottom - BLOCK, top)
        self.rect(x - half, bottom - BLOCK, x + half, bottom, front)

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
    return draw_scene(*state(t), width, height)


def draw_scene(pose, places: dict, held, width: int = 640, height: int = 480) -> np.ndarray:
    """Draw the gripper at pose (holding held or None) and each block at its (x, bottom)."""
    canvas = _Canvas(width, height)
    canvas.rect(0, 0, DESIGN[0], HORIZON, _WALL)
    # Wood grain: each row one colour (so zstd finds the repeats), plus darker plank joints.
    top = round(HORIZON * canvas.sy)
    rows = np.arange(top, height) / canvas.sy
    grain = np.round(5 * np.sin(rows * 0.37) + 3 * np.sin(rows * 0.113)).astype(np.int16)
    canvas.image[top:] = (np.int16(_TABLE) + grain[:, None, None]).astype(np.uint8)
    canvas.rect(0, HORIZON, DESIGN[0], HORIZON + 6, _TABLE_EDGE)
    for seam in _SEAMS:
        canvas.rect(0, seam, DESIGN[0], seam + 2, (150, 104, 62))
    x0, x1 = _BIN_X
    canvas.rect(x0, _BIN_RIM, x1, _BIN_WALL, (170, 170, 176))  # the rim around the inside
    canvas.rect(x0 + 4, _BIN_RIM + 4, x1 - 4, _BIN_WALL, (70, 70, 76))
    in_bin = {block: place for block, place in places.items() if _inside_bin(*place)}
    for block, (x, bottom) in in_bin.items():
        canvas.block(block, x, bottom)
    gripper_in_bin = _inside_bin(pose[0], pose[1] + _GRIP)
    if gripper_in_bin:  # lowered into the bin: its front wall hides the fingertips
        canvas.gripper(pose, held)
    canvas.rect(x0, _BIN_WALL, x1, FLOOR, (140, 140, 146))
    canvas.rect(x0, _BIN_WALL, x1, _BIN_WALL + 4, (176, 176, 182))
    on_table = sorted((place[1], block) for block, place in places.items() if block not in in_bin)
    for _, block in reversed(on_table):  # the lower block of a stack first
        canvas.block(block, *places[block])
    if not gripper_in_bin:
        canvas.gripper(pose, held)
    return canvas.image
