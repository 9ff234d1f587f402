"""The tabletop scene as a wrist camera and a depth camera see it: the several-camera sample.

A manipulator's planner sees the table through a head camera and the grasp through a wrist
camera, and grounds its targets in 3D with the head camera's aligned depth and intrinsics.
These views are pure functions of time, like the head camera's frames (tabletop.py), so the
sample with them (samples/tabletop_cameras) regenerates byte-identically:
- the wrist camera looks down between the fingers: the head camera's view around the
  fingertips at twice the detail;
- the depth image is aligned with the head camera (same size and frame): millimetres along the
  optical axis, the table a plane that falls away towards the horizon, each block at the depth
  of its front edge, the bin at that of its front wall and the gripper above the table;
- camera_info gives the head camera's pinhole intrinsics (60 degrees across, no distortion).
"""

import math

import numpy as np

from ..bag import storage as bags
from . import tabletop as scene

WRIST_SIZE = (320, 240)  # width, height of a wrist frame
WRIST_FRAME_ID = 'wrist_camera_optical_frame'
WRIST_VIEW = (160, 120)  # the design pixels a wrist frame shows, below the fingertips
FIELD_OF_VIEW = 60.0  # degrees across the head camera's width
_FAR, _NEAR = 1800.0, 700.0  # mm: the table at the horizon row, and at the frame's bottom row
_WALL_MM = 2500
_GRIPPER_MM = 150  # nearer than the table below the fingertips
_GRIPPER_COLOURS = ((150, 150, 160), (84, 84, 94), (48, 48, 54))
_BIN_COLOURS = ((170, 170, 176), (70, 70, 76), (140, 140, 146), (176, 176, 182))


def draw_wrist(t: float) -> np.ndarray:
    """Return the wrist camera's HxWx3 uint8 RGB frame t seconds into the script."""
    width, height = WRIST_SIZE
    scale = width / WRIST_VIEW[0]
    full = scene.draw_tabletop(t, round(scene.DESIGN[0] * scale), round(scene.DESIGN[1] * scale))
    (x, tip, _), _, _ = scene.state(t)
    left = round((x - WRIST_VIEW[0] / 2) * scale)
    top = round((tip - WRIST_VIEW[1] / 3) * scale)
    padded = np.pad(full, ((height, height), (width, width), (0, 0)), mode='edge')
    return np.ascontiguousarray(padded[top + height:top + 2 * height,
                                       left + width:left + 2 * width])


def _table_mm(row: np.ndarray) -> np.ndarray:
    """Depth of the table surface seen at design row(s): _FAR at the horizon, _NEAR at 480."""
    share = (row - scene.HORIZON) / (scene.DESIGN[1] - scene.HORIZON)
    return _FAR + (_NEAR - _FAR) * np.clip(share, 0.0, 1.0)


def _colour_pixels(rgb: np.ndarray, colours) -> np.ndarray:
    """Return where the frame has exactly one of colours (the scene is flat colour)."""
    found = np.zeros(rgb.shape[:2], dtype=bool)
    for colour in colours:
        found |= np.all(rgb == colour, axis=-1)
    return found


def draw_depth(t: float, width: int = 640, height: int = 480) -> np.ndarray:
    """Return the head camera's aligned HxW uint16 depth (mm) t seconds into the script."""
    rgb = scene.draw_tabletop(t, width, height)
    rows = (np.arange(height) + 0.5) * scene.DESIGN[1] / height
    depth = np.repeat(_table_mm(rows)[:, None], width, axis=1)
    depth[rows < scene.HORIZON] = _WALL_MM
    depth[_colour_pixels(rgb, _BIN_COLOURS)] = _table_mm(np.float64(scene.FLOOR))
    _, places, held = scene.state(t)
    for block, (_, bottom) in places.items():
        depth[_colour_pixels(rgb, scene.COLOURS[block])] = _table_mm(np.float64(bottom))
    tip_mm = _table_mm(np.float64(scene.FLOOR)) - _GRIPPER_MM
    if held:
        depth[_colour_pixels(rgb, scene.COLOURS[held])] = tip_mm
    depth[_colour_pixels(rgb, _GRIPPER_COLOURS)] = tip_mm
    return np.round(depth).astype(np.uint16)


def camera_info_fields(stamp_ns: int, frame_id: str, width: int = 640,
                       height: int = 480) -> dict:
    """Return the head camera's sensor_msgs/CameraInfo as fields for bag.storage.serialize."""
    focal = width / 2 / math.tan(math.radians(FIELD_OF_VIEW) / 2)
    cx, cy = width / 2, height / 2
    return {'header': bags.header(stamp_ns, frame_id), 'height': height, 'width': width,
            'distortion_model': 'plumb_bob', 'd': np.zeros(5),
            'k': np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64),
            'r': np.eye(3).reshape(-1),
            'p': np.array([focal, 0, cx, 0, 0, focal, cy, 0, 0, 0, 1, 0], dtype=np.float64),
            'binning_x': 0, 'binning_y': 0,
            'roi': {'x_offset': 0, 'y_offset': 0, 'height': 0, 'width': 0,
                    'do_rectify': False}}
