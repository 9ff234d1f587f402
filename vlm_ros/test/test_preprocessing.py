"""Preprocessing off the critical path: each frame once, and on the GPU where that is faithful.

The frame cache must not change a single input value: the model sees what the processor's own
call would give it, for every family, whatever the batch's mix of frames.
"""

import threading
import types

import numpy as np
import pytest
import torch
import transformers
from engine_fixtures import FAMILIES, scene
from PIL import Image
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.chat import build_inputs
from vlm_ros.engine.frame_cache import FrameCache
from vlm_ros.engine.gpu_preprocess import device_kwargs
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.engine import concatenate_rows

# Rows of each batch, as indices into four frames (the last one smaller: a tiling processor
# pads its fewer tiles to the others'); sent one batch after another.
BATCHES = ([0, 1, 0], [0], [0], [1, 1], [2, 0, 1, 2], [0, 1, 0], [3, 0, 3])


@pytest.mark.parametrize('family', FAMILIES)
def test_cached_inputs_equal_the_processors_own_for_every_mix_of_frames(family, trained_tiny):
    frames = [scene(colour) for colour in ('red', 'blue', 'green')] + [scene('red', 30, 30)]
    plain = transformers.AutoProcessor.from_pretrained(trained_tiny(family))
    cached = transformers.AutoProcessor.from_pretrained(trained_tiny(family))
    cached.image_processor = FrameCache(cached.image_processor, concatenate_rows)
    for batch in BATCHES:
        prompts = [f'question {row} ' * (row + 1) for row in range(len(batch))]
        want = build_inputs(plain, [frames[i] for i in batch], prompts)
        got = build_inputs(cached, [frames[i] for i in batch], prompts)
        assert set(got) == set(want)
        for name, value in want.items():
            assert torch.equal(got[name], value), f'{family} {batch}: {name} differs'
    assert cached.image_processor.frames_reused >= 11  # 1 + 1 + 1 + 2 + 3 + 3 (+ 1)
    assert repr(cached) == repr(plain)  # transformers deep-copies the processor to show it


def test_an_engine_preprocesses_a_frame_shared_by_requests_once(trained_tiny):
    engine = VlmEngine(EngineConfig(model=str(trained_tiny('idefics3')), device='cpu',
                                    max_new_tokens=4))
    engine.load()
    red, blue = scene('red'), scene('blue')
    engine.run([Request('caption', red), Request('plan', red.copy(), 'pick up the block')])
    assert (engine.status()['frames_preprocessed'], engine.status()['frames_reused']) == (1, 1)
    engine.run([Request('vqa', red, 'what is red?')])  # back to back on the same frame
    engine.run([Request('caption', blue)])
    assert (engine.status()['frames_preprocessed'], engine.status()['frames_reused']) == (2, 2)
    engine.unload()
    assert engine.status() == {}  # a diagnostics timer may ask while a shutdown unloads


def test_frames_prepared_from_another_thread_during_runs_give_the_same_answers(trained_tiny):
    """The worker's look-ahead calls prepare() while run() generates: no race, same answers."""
    engine = VlmEngine(EngineConfig(model=str(trained_tiny('idefics3')), device='cpu',
                                    max_new_tokens=8))
    engine.load()
    frames = [scene(colour) for colour in ('red', 'blue', 'green')]
    plain = [engine.run([Request('caption', frame)])[0].text for frame in frames]
    engine.unload()
    engine.load()
    ahead = [frame.copy() for frame in frames]
    for index, frame in enumerate(ahead):
        frame[0, 0] = index  # new pixels: nothing kept from before
    preparing = threading.Thread(target=lambda: [engine.prepare([frame]) for frame in ahead])
    preparing.start()
    during = [engine.run([Request('caption', frame)])[0].text for frame in frames]
    preparing.join()
    prepared = engine.status()['frames_preprocessed']
    after = [engine.run([Request('caption', frame)])[0].text for frame in ahead]
    assert during == plain and after == plain  # a pixel apart: the same scene
    assert engine.status()['frames_preprocessed'] == prepared == 6  # prepare() ran each once
    assert engine.status()['frames_reused'] == 3
    engine.unload()


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


def test_a_layout_without_one_entry_per_frame_gets_the_processors_own_call():
    # Qwen2-VL flattens every frame's patches into one tensor: its rows cannot be copied out.
    calls = []

    def flattening(images, **kwargs):
        calls.append(len(images))
        return {'pixel_values': np.arange(4 * len(images)).reshape(4 * len(images), 1),
                'image_grid_thw': np.ones((len(images), 3))}

    cache = FrameCache(flattening, np.concatenate)
    red = Image.fromarray(scene('red'))
    out = cache([[red], [red]])
    assert out['pixel_values'].shape == (8, 1) and out['image_grid_thw'].shape == (2, 3)
    assert cache.frames_reused == 0
    cache([[red], [red]])  # known now: no per-frame try before the processor's own call
    assert calls == [1, 2, 2] and cache.frames_processed == 4


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
