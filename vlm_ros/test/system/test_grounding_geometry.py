"""A box the model sees maps back to where it is in the camera's frame, through each processor.

A red rectangle is drawn at known pixels of a frame; each tiny family's real processor makes the
model's view of it (CLIP's resize and centre crop for LLaVA, Florence-2's square resize,
Idefics2's resize, Idefics3's global tile), and the rectangle is found there. Written in each
notation models use, read back and mapped with grounding.view_of, it must land on the drawn
rectangle, to within the view's own pixel size.
"""

import numpy as np
import pytest
import transformers
from vlm_ros.engine.grounding import ViewBox, parse_box, view_of
from vlm_ros.engine.local.processors import load_processor
from vlm_ros.engine.preprocess import fitted_size, resize_max_side

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent
FRAME = (160, 120)  # width, height of the camera frame
RECT = (40, 30, 100, 90)  # x1, y1, x2, y2 of the red rectangle in it


def _frame() -> np.ndarray:
    frame = np.full((FRAME[1], FRAME[0], 3), 128, np.uint8)
    x1, y1, x2, y2 = RECT
    frame[y1:y2, x1:x2] = (230, 20, 20)
    return frame


def _view_pixels(family: str, processor, image) -> np.ndarray:
    """Return the model's view as (H, W, 3) floats: the global tile for Idefics3."""
    out = processor.image_processor([[image]], return_tensors='np')
    values = out['pixel_values']
    if family == 'qwen2_vl':
        return _unpatched(processor.image_processor, values, out['image_grid_thw'][0])
    view = {'llava': lambda v: v[0], 'florence2': lambda v: v[0],
            'idefics2': lambda v: v[0, 0], 'idefics3': lambda v: v[0, -1]}[family](values)
    return np.moveaxis(np.asarray(view, dtype=np.float32), 0, -1)


def _unpatched(image_processor, patches: np.ndarray, grid) -> np.ndarray:
    """Return Qwen2-VL's image from its flattened patches (each 2x2 merge's 4 patches in a row)."""
    _, rows, cols = (int(n) for n in grid)
    merge, patch = image_processor.merge_size, image_processor.patch_size
    frames = image_processor.temporal_patch_size
    grid = patches.reshape(rows // merge, cols // merge, merge, merge, 3, frames, patch, patch)
    image = grid[:, :, :, :, :, 0].transpose(0, 2, 5, 1, 3, 6, 4)  # rows, y, cols, x, channel
    return image.reshape(rows * patch, cols * patch, 3).astype(np.float32)


def _found(view: np.ndarray) -> tuple:
    """Return the red rectangle's box in the view, as fractions of its width and height."""
    red = view[..., 0] - view[..., 1] > 0.5 * (view[..., 0].max() - view[..., 1].min())
    rows, cols = np.nonzero(red)
    height, width = red.shape
    return (cols.min() / width, rows.min() / height, (cols.max() + 1) / width,
            (rows.max() + 1) / height)


def _notations(x1, y1, x2, y2) -> dict:
    def loc(v):
        return min(int(v * 1000), 999)

    def pali(v):
        return f'{min(int(v * 1024), 1023):04d}'
    return {
        'florence2': f'block<loc_{loc(x1)}><loc_{loc(y1)}><loc_{loc(x2)}><loc_{loc(y2)}>',
        'paligemma': f'<loc{pali(y1)}><loc{pali(x1)}><loc{pali(y2)}><loc{pali(x2)}> block',
        'qwen2': f'<|box_start|>({round(x1 * 1000)},{round(y1 * 1000)}),'
                 f'({round(x2 * 1000)},{round(y2 * 1000)})<|box_end|>',
        'plain': f'[{x1:.4f}, {y1:.4f}, {x2:.4f}, {y2:.4f}]',
        'thousandths': f'[{x1 * 1000:.0f}, {y1 * 1000:.0f}, {x2 * 1000:.0f}, {y2 * 1000:.0f}]'}


@pytest.mark.parametrize('family', ['llava', 'florence2', 'idefics2', 'idefics3', 'qwen2_vl'])
@pytest.mark.parametrize('max_image_side', [0, 100])  # the engine's own resize first, or not
def test_every_notation_maps_back_onto_the_drawn_rectangle(family, max_image_side,
                                                           trained_tiny):
    processor = load_processor(str(trained_tiny(family)))
    frame = _frame()
    given = resize_max_side(frame, max_image_side)
    pixels = _view_pixels(family, processor, given)
    view_box = _found(pixels)
    view = view_of(processor.image_processor, FRAME, fitted_size(frame, max_image_side))
    # One pixel of the view, in the frame's pixels, plus the resampling's edge.
    tolerance = 1.5 * max(view.region[2] / view.size[0], view.region[3] / view.size[1]) + 1
    for notation, text in _notations(*view_box).items():
        mapped = view.to_pixels(parse_box(text))
        assert mapped == pytest.approx(RECT, abs=tolerance), (notation, text, mapped, view)
    if family in ('idefics2', 'idefics3'):
        return  # their views' pixel sizes are not modelled: they write no bbox_2d
    height, width = pixels.shape[:2]  # bbox_2d: the pixels of the image the model was given
    x1, y1, x2, y2 = view_box
    box = ViewBox(x1 * width, y1 * height, x2 * width, y2 * height, pixels=True)
    assert view.to_pixels(box) == pytest.approx(RECT, abs=tolerance), (family, view)


def test_mllamas_padded_tiles_leave_its_boxes_unmapped(trained_tiny):
    processor = transformers.AutoProcessor.from_pretrained(trained_tiny('mllama'))
    assert view_of(processor.image_processor, FRAME, FRAME) is None
