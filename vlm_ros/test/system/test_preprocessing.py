"""Preprocessing off the critical path: each frame once, and on the GPU where that is faithful.

The frame cache must not change a single input value: the model sees what the processor's own
call would give it, for every family, whatever the batch's mix of frames.
"""

import threading

import pytest
import torch
from engine_fixtures import FAMILIES, scene
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.chat import build_inputs
from vlm_ros.engine.frame_cache import FrameCache
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.inputs import concatenate_rows
from vlm_ros.engine.local.processors import load_processor

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

# Rows of each batch, as indices into four frames (the last one smaller: a tiling processor
# pads its fewer tiles to the others'); sent one batch after another.
BATCHES = ([0, 1, 0], [0], [0], [1, 1], [2, 0, 1, 2], [0, 1, 0], [3, 0, 3])


@pytest.mark.parametrize('family', FAMILIES)
def test_cached_inputs_equal_the_processors_own_for_every_mix_of_frames(family, trained_tiny):
    frames = [scene(colour) for colour in ('red', 'blue', 'green')] + [scene('red', 30, 30)]
    plain = load_processor(str(trained_tiny(family)))
    cached = load_processor(str(trained_tiny(family)))
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
