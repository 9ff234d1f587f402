"""Preprocessing off the critical path: each frame once, and on the GPU where that is faithful.

The frame cache must not change a single input value: the model sees what the processor's own
call would give it, for every family, whatever the batch's mix of frames.
"""

import types

import numpy as np
import pytest
import torch
from engine_fixtures import scene
from PIL import Image
from vlm_ros.engine.frame_cache import FrameCache
from vlm_ros.engine.gpu_preprocess import device_kwargs


def test_only_the_newest_frames_are_kept():
    calls = []
    cache = FrameCache(lambda images, **kwargs: calls.append(len(images)) or
                       {'pixel_values': np.zeros((len(images), 3))}, np.concatenate, kept=2)
    frames = [Image.fromarray(scene(c)) for c in ('red', 'blue', 'green')]
    for frame in [*frames, frames[2], frames[0]]:
        cache([[frame]])
    assert calls == [1, 1, 1, 1]  # green kept (a hit), red dropped when green came
    cache([[frames[0]]], size=2)  # other options: preprocessed again
    assert (cache.frames_processed, cache.frames_reused) == (5, 1)
    # a GPU's kept tensors are marked as read where the model runs (inputs.py): these two
    assert len(cache.kept_values()) == 2
    assert cache.kept_values()[-1] is cache([[frames[0]]], size=2)['pixel_values']


def test_a_layout_without_one_entry_per_frame_gets_the_processors_own_call():
    # Patches flattened into one tensor with nothing that counts each frame's rows.
    calls = []

    def flattening(images, **kwargs):
        calls.append(len(images))
        return {'pixel_values': np.arange(4 * len(images)).reshape(4 * len(images), 1)}

    cache = FrameCache(flattening, np.concatenate)
    red = Image.fromarray(scene('red'))
    assert cache([[red], [red]])['pixel_values'].shape == (8, 1)
    assert cache.frames_reused == 0
    cache([[red], [red]])  # known now: no per-frame try before the processor's own call
    assert calls == [1, 2, 2] and cache.frames_processed == 4


def _grid_flattening(calls, tensor=np.asarray):
    """Qwen2-VL's layout: every frame's patches in one tensor, a grid row a frame counting them."""
    def process(images, **kwargs):
        frames = [row[0] for row in images]
        calls.append(len(frames))
        grids = [(1, frame.height // 8, frame.width // 8) for frame in frames]
        pixels = [np.full((h * w, 2), frame.getpixel((w * 4, h * 4))[0])
                  for frame, (_, h, w) in zip(frames, grids, strict=True)]
        return {'pixel_values': tensor(np.concatenate(pixels)),
                'image_grid_thw': tensor(np.array(grids))}
    return process


@pytest.mark.parametrize('batched', [False, True])
@pytest.mark.parametrize('tensor', [np.asarray, torch.as_tensor])  # a GPU's processor: torch's
def test_patches_flattened_across_frames_are_put_together_by_their_grid(batched, tensor):
    own, calls = _grid_flattening([], tensor), []
    join = np.concatenate if tensor is np.asarray else torch.cat
    cache = FrameCache(_grid_flattening(calls, tensor), join, batched=batched, threads=1)
    frames = [Image.fromarray(scene('red')), Image.fromarray(scene('blue', 32, 16)),
              Image.fromarray(scene('green'))]
    for batch in ([0, 1, 2], [2, 1, 1, 0], [1]):
        rows = [[frames[index]] for index in batch]
        got, want = cache(rows), own(rows)
        assert set(got) == set(want)
        assert all(np.array_equal(np.asarray(got[name]), np.asarray(want[name]))
                   for name in want)
    assert cache.frames_processed == 3 and cache.frames_reused == 5
    assert calls == ([2, 1] if batched else [1, 1, 1])  # a GPU's: frames of one size together


def test_other_image_layouts_pass_straight_through():
    cache = FrameCache(lambda images, **kwargs: {'seen': images}, np.concatenate)
    assert cache(None)['seen'] is None and cache([['a', 'b']])['seen'] == [['a', 'b']]
    assert cache.frames_processed == 0


def _processor(backend, resample=3, name='ClipImageProcessor'):
    image_processor = type(name, (), {'backend': backend, 'resample': resample})()
    return types.SimpleNamespace(image_processor=FrameCache(image_processor, np.concatenate))


@pytest.mark.parametrize('processor, device, own, expected', [
    (_processor('torchvision'), 'cuda:0', {}, {'device': 'cuda:0'}),
    (_processor('torchvision'), 'cpu', {}, {}),  # nothing to move
    (_processor('pil'), 'cuda', {}, {}),  # PIL resizes on the CPU only
    (_processor(None, name='CLIPImageProcessorFast'), 'cuda', {}, {'device': 'cuda'}),
    (_processor('torchvision', resample=1), 'cuda', {}, {}),  # Lanczos: no CUDA kernel
    (_processor('torchvision'), 'cuda', {'device': 'cpu'}, {}),  # the user's choice wins
    (types.SimpleNamespace(), 'cuda', {}, {}),  # a tokenizer-only processor
])
def test_preprocessing_moves_to_the_gpu_only_where_the_processor_is_faithful_there(
        processor, device, own, expected):
    assert device_kwargs(processor, device, own) == expected
