"""Aligned depth and camera_info: a 3D point for a box drawn in the camera's image.

A grounded target's box is in the colour image's own pixels. With a depth image aligned to
that image (the same size and optical frame: what RGB-D drivers publish as their aligned depth)
and the camera's intrinsics, the target's distance is the median of the valid depths in the
box's central half (a box around an object also holds what lies behind its edges; a point's
depth is that of the pixels around it), and its point is the box's centre deprojected at that
distance (pinhole model, camera_info's K), in the camera's optical frame. Whatever keeps a
point from being right gives no point and a reason instead: no depth or camera_info yet, a
depth image of another optical frame, size or encoding, none taken within max_skew of the
image, no intrinsics, too few valid depths in the box. The depth images are kept for a while
(DEPTH_HISTORY), and the one nearest the image's stamp is used: a request is often answered
from a frame older than the newest depth image, and with the newest alone a depth of the very
same stamp was already replaced. With several cameras, each camera's depth serves the boxes
drawn in its image.
"""

import math
from typing import Optional

import numpy as np
from geometry_msgs.msg import Point, PointStamped

from .image_conversion import ImageConversionError, byte_buffer
from .messages import stamp_seconds

DEPTH_SCALE = {'16UC1': 0.001, '32FC1': 1.0}  # encoding -> metres per unit (mm, or m)
MIN_VALID = 0.1  # of the box's central pixels that must have a depth
POINT_RADIUS = 3  # pixels around a point whose depths give its distance
DEPTH_HISTORY = 10  # depth images kept per camera (1 s at 10 Hz): the image's own among them


def depth_metres(msg) -> np.ndarray:
    """Return a depth Image as HxW float32 metres (0 where there is no depth), or raise why."""
    scale = DEPTH_SCALE.get(msg.encoding)
    if scale is None:
        raise ImageConversionError(f'depth encoding {msg.encoding!r} is not one of '
                                   f'{", ".join(DEPTH_SCALE)} (millimetres or metres)')
    dtype = np.dtype(np.uint16 if scale < 1 else np.float32).newbyteorder(
        '>' if msg.is_bigendian else '<')
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = byte_buffer(msg.data)
    if width <= 0 or height <= 0 or step < width * dtype.itemsize or data.size < step * height:
        raise ImageConversionError(f'depth image {width}x{height} (step {step}) does not fit '
                                   f'its {data.size} bytes of data')
    rows = data[:step * height].reshape(height, step)[:, :width * dtype.itemsize]
    depth = rows.copy().view(dtype).astype(np.float32) * scale
    depth[~np.isfinite(depth)] = 0.0
    return depth


def box_depth(depth: np.ndarray, box: tuple) -> tuple:
    """Return (metres, '') for box's central half in depth, or (None, why there is none).

    A point (a box of no size) takes the depths within POINT_RADIUS pixels of the pixel it is
    in. The median of an even count is its lower middle value: a depth some pixel has, never
    the mean of two surfaces at an edge.
    """
    x1, y1, x2, y2 = box
    point = x1 == x2 and y1 == y2
    height, width = depth.shape
    if point:
        column, row = int(x1), int(y1)
        left, right = max(column - POINT_RADIUS, 0), min(column + POINT_RADIUS + 1, width)
        top, bottom = max(row - POINT_RADIUS, 0), min(row + POINT_RADIUS + 1, height)
    else:
        cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
        left, right = int(max(cx - half_w, 0)), int(min(np.ceil(cx + half_w), width))
        top, bottom = int(max(cy - half_h, 0)), int(min(np.ceil(cy + half_h), height))
    inside = depth[top:bottom, left:right]
    valid = inside[inside > 0]
    if inside.size == 0 or valid.size < MIN_VALID * inside.size:
        where = 'around the point' if point else 'of its central half'
        return None, (f'too few valid depths in the box ({valid.size} of {inside.size} '
                      f'pixels {where})')
    middle = (valid.size - 1) // 2
    return float(np.partition(valid, middle)[middle]), ''


class _NoPointError(Exception):
    """Why no box of an image gets a point (the same reason for every box)."""


def nearest(depths, header):
    """Return the depth image of depths whose stamp is nearest the image's (None: none)."""
    when = stamp_seconds(header.stamp)
    return min(depths, key=lambda depth: abs(stamp_seconds(depth.header.stamp) - when),
               default=None)


def _aligned_depth(header, frame_size: tuple, depth_msg, info, max_skew: float,
                   topics: tuple) -> np.ndarray:
    """Return the depth in metres aligned to the image of header; _NoPointError why not."""
    if depth_msg is None or info is None:
        missing, topic = ('depth image', topics[0]) if depth_msg is None else \
            ('camera_info', topics[1])
        raise _NoPointError(f'no {missing} has arrived on {topic}')
    if depth_msg.header.frame_id != header.frame_id:  # e.g. a caller's own image
        raise _NoPointError(f'the depth image is of frame {depth_msg.header.frame_id[:80]!r}, '
                            f'the image of {header.frame_id[:80]!r}: not aligned to it')
    apart = abs(stamp_seconds(depth_msg.header.stamp) - stamp_seconds(header.stamp))
    if max_skew > 0 and apart > max_skew:
        raise _NoPointError(f'the nearest depth image is {apart:.4f} s from the image '
                            f'(max_skew {max_skew:g} s)')
    sizes = {'depth image': (depth_msg.width, depth_msg.height),
             'camera_info': (info.width, info.height)}
    for what, size in sizes.items():
        if tuple(size) != tuple(frame_size):
            raise _NoPointError(f'the {what} is {size[0]}x{size[1]}, the image '
                                f'{frame_size[0]}x{frame_size[1]}: not aligned to it')
    fx, cx, fy, cy = (float(info.k[i]) for i in (0, 2, 4, 5))
    if fx <= 0 or fy <= 0:
        raise _NoPointError('camera_info has no intrinsics (K is zero: an uncalibrated camera)')
    if not math.isfinite(fx + cx + fy + cy):  # NaN passes the test above; no point is NaN
        raise _NoPointError(f'camera_info K is not finite: fx {fx}, fy {fy}, cx {cx}, cy {cy}')
    try:
        return depth_metres(depth_msg)
    except ImageConversionError as exc:
        raise _NoPointError(str(exc)) from exc


def _point(box: tuple, depth: np.ndarray, header, info) -> tuple:
    """Return (PointStamped, '') for box's centre at its depth, or (None, why there is none)."""
    metres, why = box_depth(depth, box)
    if metres is None:
        return None, why
    fx, cx, fy, cy = (float(info.k[i]) for i in (0, 2, 4, 5))
    u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    stamped = PointStamped(point=Point(x=(u - cx) * metres / fx, y=(v - cy) * metres / fy,
                                       z=metres))
    stamped.header.stamp = header.stamp
    stamped.header.frame_id = info.header.frame_id or header.frame_id
    return stamped, ''


def points_of(boxes: list, header, frame_size: Optional[tuple], depths, info,
              max_skew: float, topics: tuple = ('depth/image', 'camera_info')) -> list:
    """Return (PointStamped or None, why there is none) for each box in the image of header.

    ``frame_size`` is the image's (width, height); ``depths`` the recent depth Images (the one
    nearest the image's stamp is used) and ``info`` the newest CameraInfo (None before the
    first); ``max_skew`` bounds how far the depth's stamp may lie from the image's (0: any).
    The depth is checked and converted once for all boxes.
    """
    if not boxes:
        return []
    try:
        if frame_size is None:
            raise _NoPointError('the size of the image used is not known')
        depth = _aligned_depth(header, frame_size, nearest(depths, header), info, max_skew,
                               topics)
    except _NoPointError as exc:
        return [(None, str(exc)) for _ in boxes]
    return [_point(box, depth, header, info) for box in boxes]
