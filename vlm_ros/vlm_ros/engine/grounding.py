"""Boxes as models write them, back in the camera's own pixels.

Grounding models name a step's target with a box, each family in its own notation:

- Qwen2.5-VL: ``"bbox_2d": [x1, y1, x2, y2]`` in the pixels of the image it was given;
- Qwen2-VL: ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, each coordinate 0-1000;
- Florence-2: ``<loc_x1><loc_y1><loc_x2><loc_y2>``, bins 0-999;
- PaliGemma: ``<locY1><locX1><locY2><locX2>``, four digits each, 0-1023 (y first);
- plain ``[x1, y1, x2, y2]`` (a step's ``box`` or ``bbox``, or in its text), 0-1 or 0-1000.

A target may be a point instead: Qwen2.5-VL's ``"point_2d": [x, y]`` (pixels), Molmo's
``<point x="…" y="…">`` (percent), or a step's ``point`` ``[x, y]``, 0-1 or 0-1000. A point is
a box of no size (x1 = x2, y1 = y2) from here on, in every message that carries boxes.

Each becomes a box in the model's view, as fractions of its width and height (or its pixels,
for ``bbox_2d`` and ``point_2d``), then ``View.to_pixels`` maps it through what the view did to
the frame (a crop, a resize) to the frame's own pixels. A box that is malformed, empty or
outside the image is no box, and ``box_problem`` says why.
"""

import json
import math
import re
from dataclasses import dataclass, replace
from typing import Optional

from .preprocess import fitted_size

_NUMBER = r'\s*(-?\d{1,6}(?:\.\d{1,8})?)\s*'
_FLORENCE = re.compile(r'<loc_(\d{1,3})>' * 4)
_PALIGEMMA = re.compile(r'<loc(\d{4})>' * 4)
_QWEN2 = re.compile(r'<\|box_start\|>\s*\(' + _NUMBER + ',' + _NUMBER + r'\)\s*,\s*\(' +
                    _NUMBER + ',' + _NUMBER + r'\)\s*<\|box_end\|>')
_PLAIN = re.compile(r'\[' + ','.join([_NUMBER] * 4) + r'\]')
_MOLMO = re.compile(r'<point\s+x="' + _NUMBER + r'"\s+y="' + _NUMBER + '"')
# Qwen2-VL names what a box is of between object_ref markers; its tokenizer makes them, and the
# box markers, special tokens (as Florence-2's makes its location bins): local/answer_text.py.
_MARKUP_TOKEN = re.compile(r'<loc_?\d{1,4}>|<\|(?:box|object_ref|quad)_(?:start|end)\|>')
_MARKUP = re.compile(r'<point\b[^<>]{0,300}>|</point>|' + _QWEN2.pattern + '|' +
                     _MARKUP_TOKEN.pattern + '|' + _PLAIN.pattern)
MALFORMED = 'malformed '  # a ViewBox notation: a box key whose value is no box (step_box)
BOX_KEYS = ('bbox_2d', 'box', 'bbox')  # step keys that carry a box, bbox_2d in pixels
MAX_LABEL_CHARS = 128  # of a box's label
UNKNOWN_VIEW = "the model's view of the frame is not known"  # place's problem: no View
POINT_KEYS = ('point_2d', 'point')  # step keys that carry a point, point_2d in pixels


@dataclass(frozen=True)
class ViewBox:
    """A box in the model's view: fractions of its width and height, or its pixels."""

    x1: float
    y1: float
    x2: float
    y2: float
    pixels: bool = False  # Qwen2.5-VL's bbox_2d: the pixels of the image the model was given
    notation: str = 'plain'
    point: bool = False  # a point the model wrote (x1 = x2, y1 = y2), not a box of no size
    label: str = ''  # what the model named it, where it did (Qwen2.5-VL's "label")


def is_markup_token(token: str) -> bool:
    """Tell whether a tokenizer's token is part of a box notation (kept in an answer's text)."""
    return bool(_MARKUP_TOKEN.fullmatch(token))


def without_boxes(text: str) -> str:
    """Return text without the box and point notations in it: a target's words alone."""
    return ' '.join(_MARKUP.sub(' ', text).split())


def parse_box(text: str) -> Optional[ViewBox]:
    """Return the first box written in text in a known notation, or None."""
    return next(iter(_written_boxes(text)), None)


def parse_boxes(text: str) -> list:
    """Return every box of an answer: its JSON objects' (Qwen2.5-VL), or those in the text.

    A grounding answer may name several instances of a phrase: a JSON list of objects with
    ``bbox_2d`` (or ``box``), or several boxes in one notation. Malformed ones are left out.
    """
    items = _json_objects(text)
    boxes = [replace(box, label=_label(item)) for box, item in zip(
        map(step_box, items), items, strict=True) if box is not None]
    return boxes or _written_boxes(text)


def _label(item: dict) -> str:
    """Return what a grounding answer's JSON object names its box ('' where nothing)."""
    label = item.get('label')
    return label.strip()[:MAX_LABEL_CHARS] if isinstance(label, str) else ''


def _json_objects(text: str) -> list:
    """Return the objects of text parsed as JSON (an object, or a list of them), else []."""
    start = min((i for i in (text.find('['), text.find('{')) if i >= 0), default=-1)
    if start < 0:
        return []
    try:
        value = json.loads(text[start:text.rfind(']' if text[start] == '[' else '}') + 1])
    except (ValueError, RecursionError):  # JSONDecodeError, or nested too deep
        return []
    values = value if isinstance(value, list) else [value]
    return [item for item in values if isinstance(item, dict)]


def _written_boxes(text: str) -> list:
    """Return the boxes of the first notation written in text, in their order."""
    found = _FLORENCE.findall(text)
    if found:
        return [ViewBox(*((int(v) + 0.5) / 1000 for v in box), notation='florence2')
                for box in found]
    found = _PALIGEMMA.findall(text)
    if found:
        return [ViewBox(x1, y1, x2, y2, notation='paligemma')
                for y1, x1, y2, x2 in ([int(v) / 1024 for v in box] for box in found)]
    found = _QWEN2.findall(text)
    if found:
        return [ViewBox(*(float(v) / 1000 for v in box), notation='qwen2') for box in found]
    found = _MOLMO.findall(text)
    if found:  # percent of the width and height
        return [ViewBox(*(float(v) / 100 for v in point * 2), notation='molmo', point=True)
                for point in found]
    plain = (_plain([float(v) for v in box]) for box in _PLAIN.findall(text))
    return [box for box in plain if box is not None]


def step_box(item: dict) -> Optional[ViewBox]:
    """Return the box of a plan step's JSON object: under a box key, or in its target text.

    A point key (point_2d, point) gives a point where no box key gives a box. A box or point
    key whose value is not four (two) numbers, with nothing in the text either, gives a box
    marked malformed (MALFORMED): box_problem then says so, where nothing would say why.
    """
    written = None
    for key in BOX_KEYS + POINT_KEYS:
        value = item.get(key)
        count = 4 if key in BOX_KEYS else 2
        if isinstance(value, list) and len(value) == count and \
                all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            values = [float(v) for v in value] * (4 // count)  # a point: a box of no size
            if key in ('bbox_2d', 'point_2d'):
                return ViewBox(*values, pixels=True, notation=key, point=count == 2)
            return _plain(values, point=count == 2)
        if value not in (None, [], '') and written is None:  # null, [], '': no box at all
            written = f'{key} {json.dumps(value)[:60]} is not ' \
                f'{"four" if count == 4 else "two"} numbers'
    texts = [v for v in item.values() if isinstance(v, str)]
    found = next((box for box in map(parse_box, texts) if box is not None), None)
    if found is None and written is not None:
        return ViewBox(math.nan, math.nan, math.nan, math.nan, notation=MALFORMED + written)
    return found


def _plain(values: list, point: bool = False) -> Optional[ViewBox]:
    """Read [x1, y1, x2, y2] as fractions (all at most 1) or thousandths (at most 1000)."""
    top = max(abs(v) for v in values)
    scale = 1.0 if top <= 1.0 else 1000.0 if top <= 1000.0 else None
    return None if scale is None else ViewBox(*(v / scale for v in values), point=point)


@dataclass(frozen=True)
class View:
    """What the model saw of a frame: a region of it, given to the model at some size.

    ``region`` is (x0, y0, width, height) in the frame's pixels (the whole frame unless the
    processor crops it); ``size`` the (width, height) of the image the model was given, which
    ``bbox_2d`` pixels are in (Idefics2's and Idefics3's own resizes are not modelled: they
    write no pixel boxes).
    """

    frame: tuple  # (width, height) of the frame as received
    region: tuple
    size: tuple

    def to_pixels(self, box: ViewBox, clip: bool = True) -> tuple:
        """Return the box in the frame's pixels, (x1, y1, x2, y2), clipped to the frame."""
        x0, y0, width, height = self.region
        sx, sy = (width / self.size[0], height / self.size[1]) if box.pixels else (width, height)
        x1, x2 = sorted((x0 + box.x1 * sx, x0 + box.x2 * sx))
        y1, y2 = sorted((y0 + box.y1 * sy, y0 + box.y2 * sy))
        if not clip:
            return x1, y1, x2, y2
        frame_w, frame_h = self.frame
        return (min(max(x1, 0.0), frame_w), min(max(y1, 0.0), frame_h),
                min(max(x2, 0.0), frame_w), min(max(y2, 0.0), frame_h))


def box_problem(box: ViewBox, view: View) -> str:
    """Say why a box (or point) is none in view's frame ('' when it is one).

    The message gives the box in the frame's pixels before clipping: clipped, a box beside the
    frame would read as one of no size on its edge.
    """
    if box.notation.startswith(MALFORMED):
        return f'malformed: {box.notation[len(MALFORMED):]}'
    values = (box.x1, box.y1, box.x2, box.y2)
    if not all(math.isfinite(v) for v in values):
        return 'a coordinate is not a number'
    placed = view.to_pixels(box, clip=False)
    x1, y1, x2, y2 = view.to_pixels(box)
    frame = f'the {view.frame[0]:.0f}x{view.frame[1]:.0f} frame'
    if box.point:
        inside = (x1, y1) == placed[:2]
        return '' if inside else \
            f'the point ({_pixel(placed[0])}, {_pixel(placed[1])}) is outside {frame}'
    if x2 - x1 >= 1.0 and y2 - y1 >= 1.0:
        return ''
    where = ', '.join(map(_pixel, placed))
    if placed[2] - placed[0] < 1.0 or placed[3] - placed[1] < 1.0:
        return f'the box ({where}) has no size'
    return f'the box ({where}) is outside {frame}'


def _pixel(value: float) -> str:
    """Write a coordinate for a message: one decimal, or short where the model wrote 1e300."""
    return f'{value:.1f}' if abs(value) < 1e6 else f'{value:.3g}'


def place(box: Optional[ViewBox], camera: str, views: tuple) -> tuple:
    """Return (box in its frame's pixels or None, problem or '', camera) for one written box.

    ``views`` are the request's (camera name, View or None) pairs, in prompt order; a lone
    image's name is ''. ``camera`` is the camera a step names (its ``camera`` key), '' for the
    first: with several images a box is in one of them, and the model says which. With a
    lone image the name is not needed, and not checked.
    """
    if box is None:
        return None, '', ''
    if not views:
        return None, UNKNOWN_VIEW, ''
    names = [name for name, _ in views]
    name = camera if camera and names != [''] else names[0]
    if name not in names:
        return None, f'camera {camera[:48]!r} is not one of the images ({", ".join(names)})', ''
    view = dict(views)[name]
    if view is None:
        return None, UNKNOWN_VIEW, name
    problem = box_problem(box, view)
    if problem and name:
        problem = f'camera {name}: {problem}'
    return (None if problem else view.to_pixels(box)), problem, name


def views_of(image_processor, request, max_side: int) -> tuple:
    """Return (camera name, View or None) of each of request's images (Request.views).

    Each image as the engine gives it to the processor: its longer side at most max_side.
    """
    return tuple((name, view_of(image_processor, image.shape[1::-1],
                                fitted_size(image, max_side)))
                 for name, image in request.views())


def view_of(image_processor, frame: tuple, given: tuple) -> Optional[View]:
    """Return what the model saw of a frame of size ``frame`` given to it at size ``given``.

    ``given`` is the frame's size after the engine's own resize (max_image_side), which keeps
    its aspect. A processor that resizes the shortest edge and then crops the centre (CLIP's:
    LLaVA-1.5) shows the model that centre only; every other tested processor shows the whole
    frame (resized, or as tiles plus the whole frame as a global tile), at its ``size`` where it
    names a height and width. None where the view is not known: Mllama fits the frame into a
    canvas of tiles and pads it, so its boxes are left unmapped (test_grounding_geometry.py
    checks the others).
    """
    if getattr(image_processor, 'max_image_tiles', None):  # Mllama's padded canvas
        return None
    frame_w, frame_h = frame
    width, height = given
    crop, short = _get(image_processor, 'crop_size'), _get(image_processor, 'size')
    if getattr(image_processor, 'do_center_crop', False) and crop and short and \
            short.get('shortest_edge'):
        edge = short['shortest_edge']  # transformers: the short side to edge, the long in scale
        new_w = edge if width <= height else int(edge * width / height)
        new_h = edge if height < width else int(edge * height / width)
        scale_w, scale_h = new_w / width, new_h / height
        crop_w, crop_h = crop['width'], crop['height']
        left, top = (new_w - crop_w) // 2, (new_h - crop_h) // 2
        to_frame_w, to_frame_h = frame_w / width, frame_h / height
        return View(frame, (left / scale_w * to_frame_w, top / scale_h * to_frame_h,
                            crop_w / scale_w * to_frame_w, crop_h / scale_h * to_frame_h),
                    (crop_w, crop_h))
    size = short if short and short.get('height') and short.get('width') else None
    return View(frame, (0.0, 0.0, float(frame_w), float(frame_h)),
                (size['width'], size['height']) if size else
                _patch_grid_size(image_processor, short, width, height))


def _patch_grid_size(image_processor, budget: Optional[dict], width: int, height: int) -> tuple:
    """Return (width, height) the image is given to the model at: as given, or on a patch grid.

    Qwen2-VL's processors (and its successors') resize to multiples of patch x merge size
    within a budget of pixels (their ``size``'s shortest and longest "edge" are pixel counts):
    a 160x120 frame is seen at 112x84 by a budget of 12544, and Qwen2.5-VL's ``bbox_2d`` is
    in those pixels.
    """
    merge = getattr(image_processor, 'merge_size', None)
    patch = getattr(image_processor, 'patch_size', None)
    if not (merge and patch and getattr(image_processor, 'temporal_patch_size', None) and
            budget and budget.get('shortest_edge') and budget.get('longest_edge')):
        return width, height
    new_height, new_width = grid_resize(height, width, patch * merge, budget['shortest_edge'],
                                        budget['longest_edge'])
    return new_width, new_height


def grid_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple:
    """Return (height, width) as Qwen2-VL's ``smart_resize`` gives them (test_grounding_units).

    The engine's model-free side cannot import transformers: the rule is written out here and
    a unit test compares it with transformers' own for sizes, aspects and budgets.
    """
    rows, cols = round(height / factor) * factor, round(width / factor) * factor
    if rows * cols > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        return (max(factor, math.floor(height / beta / factor) * factor),
                max(factor, math.floor(width / beta / factor) * factor))
    if rows * cols < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        return (math.ceil(height * beta / factor) * factor,
                math.ceil(width * beta / factor) * factor)
    return rows, cols


def _get(image_processor, name: str) -> Optional[dict]:
    """Return a size setting as a plain dict (a dict or a SizeDict), None when unset."""
    value = getattr(image_processor, name, None)
    if value is None:
        return None
    return {key: value[key] for key in ('height', 'width', 'shortest_edge', 'longest_edge')
            if _has(value, key)}


def _has(value, key: str) -> bool:
    try:
        return value[key] is not None
    except (KeyError, TypeError):
        return False
