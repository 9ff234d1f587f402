"""SmolVLM/Idefics3 preprocessing as tensor operations equals its PIL processor, bit for bit.

On a GPU the engine preprocesses SmolVLM's frames with exact_idefics3.py, so the model must see
the very values Pillow and numpy give (its training pixels): every resize, tile, rescale and
normalisation is compared with ``torch.equal`` here, on the CPU, where the same arithmetic
runs (the CUDA run: vlm_ros.benchmarks.cuda_checks --preprocessing).
"""

import numpy as np
import pytest
import torch
import transformers
from engine_fixtures import scene
from PIL import Image
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from vlm_ros.engine.chat import build_inputs
from vlm_ros.engine.frame_cache import FrameCache
from vlm_ros.engine.local.exact_idefics3 import BATCH_BYTES, ExactIdefics3
from vlm_ros.engine.local.inputs import InputStage, concatenate_rows
from vlm_ros.engine.local.lanczos import (
    MAX_SIZES,
    LanczosResizer,
    TooManyTapsError,
    pillow_coefficients,
)

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return uniform noise: the frames where a float Lanczos is furthest from Pillow's."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def ramp(height: int, width: int) -> np.ndarray:
    """Return diagonal ramps that wrap from 255 to 0: edges that overshoot and clip."""
    values = np.add.outer(np.arange(height) * 3, np.arange(width) * 5) % 256
    return np.stack([values, values[::-1], 255 - values], axis=-1).astype(np.uint8)


@pytest.mark.parametrize('pixels', [noise, ramp])
@pytest.mark.parametrize('source, target', [
    ((480, 640), (576, 768)),  # the node's fitted size for a VGA camera: upscale
    ((576, 768), (364, 364)),  # the global tile: downscale, both axes
    ((720, 1280), (480, 320)),  # one axis up, one down
    ((480, 640), (480, 100)),  # height unchanged: Pillow skips that pass
    ((33, 71), (20, 9)),  # odd sizes
    ((5, 5), (300, 2)),  # extreme stretch
])
def test_the_lanczos_resize_equals_pillows(pixels, source, target):
    frame = pixels(*source)
    want = np.asarray(Image.fromarray(frame).resize(target[::-1], Image.Resampling.LANCZOS))
    got = LanczosResizer('cpu').resize(torch.from_numpy(frame).permute(2, 0, 1), *target)
    assert got.dtype == torch.uint8
    assert np.array_equal(got.permute(1, 2, 0).numpy(), want)


def test_a_resizer_keeps_the_matrices_of_the_sizes_used_last_only():
    """Queries may carry images of ever new sizes: each size's matrix is device memory."""
    resizer = LanczosResizer('cpu')
    camera = torch.zeros(3, 480, 640, dtype=torch.uint8)
    for width in range(100, 100 + 3 * MAX_SIZES):
        resizer.resize(camera, 360, 480)  # the camera's frames, between queries' images
        resizer.resize(torch.zeros(3, 50, width, dtype=torch.uint8), 50, 64)
    assert len(resizer._parts) == MAX_SIZES
    assert (640, 480) in resizer._parts and (480, 360) in resizer._parts  # used all along


def test_coefficients_are_pillows_22_bit_weights_and_refused_where_floats_would_round():
    weights = pillow_coefficients(640, 768)
    assert weights.shape == (768, 640)
    assert set(weights.sum(axis=1)) <= {(1 << 22) - 1, 1 << 22, (1 << 22) + 1}  # each rounded
    with pytest.raises(TooManyTapsError, match='4000 -> 64 px'):
        pillow_coefficients(4000, 64)  # 62x: sums could pass 2**24


@pytest.mark.parametrize('size, frame', [
    ({}, noise(480, 640, 1)),  # SmolVLM's own 1456 px: 4x3 tiles + 1
    ({'size': {'longest_edge': 768}}, noise(480, 640, 2)),  # what the node asks for (tiling.py)
    ({}, noise(720, 1280, 3)),
    ({}, ramp(1080, 1920)),
    ({'do_image_splitting': False}, noise(640, 480, 4)),  # portrait, one tile
])
def test_smolvlm_sizes_give_the_pil_processors_pixel_values(size, frame):
    processor = Idefics3ImageProcessorPil(**size)
    frames = [[Image.fromarray(frame)], [Image.fromarray(ramp(300, 500))]]  # padded to each other
    want = processor(frames, return_row_col_info=True, return_tensors='pt')
    got = ExactIdefics3(processor, 'cpu')(frames, return_row_col_info=True, return_tensors='pt')
    assert set(got) == set(want)
    assert got['rows'] == want['rows'] and got['cols'] == want['cols']
    for name in ('pixel_values', 'pixel_attention_mask'):
        assert got[name].dtype == want[name].dtype
        assert torch.equal(got[name], want[name]), name


class ChunkCounting(ExactIdefics3):
    """ExactIdefics3, keeping how many frames go through each step at once."""

    def _tiles(self, frames, options):
        self.chunks.append(len(frames))
        return super()._tiles(frames, options)


ONE_SIZE = [[noise(60, 80, 1)], [ramp(50, 40)], [noise(60, 80, 2)], [noise(60, 80, 3)]]
TWO_CAMERAS = [[noise(60, 80, 4), ramp(50, 40)], [noise(60, 80, 5), ramp(50, 40)],
               [noise(60, 80, 6)]]
ROOM_FOR_TWO = 2 * 192 * 96 * 96  # 96x96: the largest size these frames pass through


@pytest.mark.parametrize('rows, batch_bytes, chunks', [
    (ONE_SIZE, BATCH_BYTES, [3, 1]),  # the three 60x80 frames as one batch, the ramp alone
    (ONE_SIZE, ROOM_FOR_TWO, [2, 1, 1]),
    (TWO_CAMERAS, BATCH_BYTES, [3, 2]),  # rows of two frames: two cameras
    (TWO_CAMERAS, ROOM_FOR_TWO, [2, 1, 2]),
])
def test_frames_of_one_size_go_through_together_as_the_processor_takes_them(rows, batch_bytes,
                                                                            chunks):
    """Frames of one size are resized, tiled and normalised as one batch: nothing changes.

    Their temporaries are bounded (BATCH_BYTES): more frames go through a few at a time.
    """
    processor = Idefics3ImageProcessorPil(size={'longest_edge': 96},
                                          max_image_size={'longest_edge': 32})
    frames = [[Image.fromarray(frame) for frame in row] for row in rows]
    want = processor(frames, return_row_col_info=True, return_tensors='pt')
    exact = ChunkCounting(processor, 'cpu', batch_bytes)
    exact.chunks = []
    got = exact(frames, return_row_col_info=True, return_tensors='pt')
    assert exact.chunks == chunks
    assert got['rows'] == want['rows'] and got['cols'] == want['cols']
    for name in ('pixel_values', 'pixel_attention_mask'):
        assert torch.equal(got[name], want[name]), name


class CountingExact(ExactIdefics3):
    """ExactIdefics3, keeping the number of frames in each call."""

    def __call__(self, images, **kwargs):
        self.calls.append(len(images))
        return super().__call__(images, **kwargs)


@pytest.mark.parametrize('threads, batched, calls', [
    (8, False, [1, 1, 1, 1, 1]),  # the CPU's way: each missing frame alone, in threads
    (1, True, [2, 2, 1]),  # the GPU's: the missing frames of one size in one call
])
def test_the_tiny_model_gets_the_same_inputs_through_the_frame_cache(trained_tiny, threads,
                                                                     batched, calls):
    frames = [scene('red'), scene('blue'), scene('green', 30, 30), scene('blue', 30, 30),
              scene('green')]
    plain = transformers.AutoProcessor.from_pretrained(trained_tiny('idefics3'))
    exact = transformers.AutoProcessor.from_pretrained(trained_tiny('idefics3'))
    counting = CountingExact(exact.image_processor, 'cpu')
    counting.calls = []
    exact.image_processor = FrameCache(counting, concatenate_rows, threads=threads,
                                       batched=batched)
    for batch in ([0, 1, 0, 1], [2, 4, 3, 1], [1]):
        prompts = [f'question {row}' for row in range(len(batch))]
        want = build_inputs(plain, [frames[i] for i in batch], prompts)
        got = build_inputs(exact, [frames[i] for i in batch], prompts)
        assert set(got) == set(want)
        for name, value in want.items():
            assert torch.equal(got[name], value), f'{batch}: {name} differs'
    assert sorted(counting.calls) == sorted(calls)
    assert repr(exact) == repr(plain)  # transformers deep-copies the processor to show it


class Counting(Idefics3ImageProcessorPil):
    """The PIL processor, counting the calls it answers itself."""

    calls = 0

    def __call__(self, *args, **kwargs):
        Counting.calls += 1
        return super().__call__(*args, **kwargs)


@pytest.mark.parametrize('frame, kwargs', [
    (Image.fromarray(noise(40, 50)[..., 0]), {}),  # not RGB: the processor converts it
    (Image.fromarray(noise(40, 50)), {'device': 'cpu'}),  # processor_kwargs {"device": "cpu"}
    (Image.fromarray(noise(40, 50)), {'resample': Image.Resampling.BICUBIC}),
    (Image.fromarray(noise(40, 50)), {'do_pad': False, 'return_tensors': None}),
    (Image.fromarray(noise(40, 4000)), {}),  # 62x down to the tiny edge: too many taps
])
def test_calls_it_cannot_reproduce_are_the_processors_own(frame, kwargs):
    processor = Counting(size={'longest_edge': 64}, max_image_size={'longest_edge': 32})
    kwargs = {'return_tensors': 'pt', **kwargs}
    want = processor([[frame]], **kwargs)
    before = Counting.calls
    got = ExactIdefics3(processor, 'cuda:0')([[frame]], **kwargs)  # never reaches CUDA
    assert Counting.calls == before + 1
    assert np.array_equal(np.asarray(got['pixel_values']), np.asarray(want['pixel_values']))


@pytest.mark.parametrize('device, exact', [('cuda:0', True), ('cpu', False)])
def test_only_a_gpu_engine_preprocesses_idefics3_as_tensors(trained_tiny, device, exact):
    processor = transformers.AutoProcessor.from_pretrained(trained_tiny('idefics3'))
    stage = InputStage()
    stage.attach(processor, device)  # no CUDA call until a frame comes
    assert isinstance(stage.frames.wrapped, ExactIdefics3) is exact
    assert (stage.frames.threads == 1) is exact  # a cuBLAS workspace per thread otherwise
    assert stage.frames.batched is exact  # frames of one size in one call
    llava = transformers.AutoProcessor.from_pretrained(trained_tiny('llava'))  # bicubic
    stage.attach(llava, device)
    assert not isinstance(stage.frames.wrapped, ExactIdefics3)
