"""Stage 1 in process: requests in, one batch of the processor's outputs out, each frame once.

run() and score() encode the requests they answer; prepare() encodes the frames of requests
still waiting, from another thread, while a batch generates. Both share one processor, which
runs under a lock (a fast tokenizer refuses calls from two threads at once), and the frame cache
(frame_cache.py) keeps each frame's outputs, so the run() that answers a prepared request skips
the image processor. Tiling processors get the size the frames need (tiling.py), and processors
that can preprocess on the model's GPU do so (gpu_preprocess.py; SmolVLM/Idefics3's through
exact_idefics3.py), unless processor_kwargs say otherwise.

On a GPU, prepare() runs on a CUDA stream of its own. The decoding steps of the batch that
generates meanwhile are queued on the default stream, a few ahead of the host: on the same
stream the frames' kernels would wait behind them, then delay the next ones. The outputs are
complete before prepare() lets go of the processor, and marked as used on the default stream,
where the model reads them, so their memory is not handed out again before that work is done.
"""

import contextlib
import threading
from typing import Optional

import numpy as np
import torch

from ..chat import build_inputs
from ..config import EngineConfig
from ..errors import VlmError
from ..frame_cache import FrameCache
from ..gpu_preprocess import device_kwargs
from ..grounding import is_markup_token
from ..preprocess import resize_max_side
from ..prompts import render_task
from ..results import Request
from ..tiling import fitted_size_kwargs
from .answer_text import special_tokens
from .exact_idefics3 import ExactIdefics3, applies
from .streams import side_stream


class InputStage:
    """The processor side of an engine: one lock for the engine's life, a frame cache per load."""

    def __init__(self):
        self.frames: Optional[FrameCache] = None  # wraps the loaded image processor
        self._lock = threading.Lock()  # run() and prepare() share the processor
        self._special = frozenset()  # the loaded model's special tokens

    def attach(self, processor, device) -> None:
        """Preprocess each distinct frame once from now on; no cache without an image processor.

        On a GPU, SmolVLM/Idefics3's processor runs there, byte for byte (exact_idefics3.py).
        """
        self.frames = _cache_frames(processor, torch.device(device))
        self._special = reserved_tokens(processor)

    def detach(self) -> None:
        """Drop the cached frames: the model is being unloaded."""
        if self.frames is not None:
            self.frames.clear()
            self.frames = None

    def encode(self, loaded, requests: list, config: EngineConfig, templates: dict,
               ahead: bool = False):
        """Run the processor over requests' images and rendered prompts (one call at a time).

        ``ahead``: for requests still waiting (prepare), on the preprocessing stream.
        """
        refuse_special_tokens(self._special, requests, config.model)
        views = [tuple((name, resize_max_side(image, config.max_image_side))
                       for name, image in r.views()) for r in requests]
        images = [row if len(row) > 1 else row[0][1] for row in views]  # cameras: named
        prompts = [render_task(templates, r.task, r.text, r.context) for r in requests]
        own = config.processor_kwargs
        every = [image for row in views for _, image in row]
        kwargs = {**fitted_size_kwargs(loaded.processor, every, own),
                  **device_kwargs(loaded.processor, str(loaded.device), own), **own}
        with self._lock:
            if not (ahead and loaded.device.type == 'cuda'):
                return build_inputs(loaded.processor, images, prompts, **kwargs)
            with _preprocessing_stream(loaded.device):
                encoded = build_inputs(loaded.processor, images, prompts, **kwargs)
            if self.frames is not None:
                _read_on_default_stream(self.frames.kept_values(), loaded.device)
            return encoded

    def prepare(self, loaded, images: list, config: EngineConfig, templates: dict) -> None:
        """Encode frames ahead into the cache; VlmError('bad_input') when the processor refuses."""
        try:
            self.encode(loaded, [Request('caption', image) for image in images], config,
                        templates, ahead=True)
        except VlmError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor refused this input
            raise VlmError('bad_input', f'preprocessing failed: {exc!r}', config.model,
                           config.device, exc) from exc


def reserved_tokens(processor) -> frozenset:
    """Return the special tokens a request's text may not hold.

    Not box markup, which answers keep (answer_text.py) and re-plan and verify prompts quote
    from a plan's steps, nor one character, which is text.
    """
    tokenizer = getattr(processor, 'tokenizer', processor)
    return frozenset(text for text in special_tokens(tokenizer).values()
                     if len(text) > 1 and not is_markup_token(text))


def refuse_special_tokens(special: frozenset, requests: list, model: str) -> None:
    """Refuse a request whose text holds one of the model's special tokens (VlmError).

    The processor reads '<image>' in an instruction as an image placeholder (SmolVLM's then
    raised: its count of them no longer matched the images), and a chat template's own
    markers would end the user's turn: the text is the client's fault, not the camera's.
    """
    for index, request in enumerate(requests):
        texts = [request.text, *(str(value) for value in (request.context or {}).values())]
        found = sorted(token for token in special if any(token in text for text in texts))
        if found:
            which = f'request {index} of {len(requests)}: ' if len(requests) > 1 else ''
            raise VlmError('bad_input', f'{which}the text holds {found[0]!r}, a special token '
                           'of the model, which it would read as such: remove it', model,
                           about='text')


@contextlib.contextmanager
def _preprocessing_stream(device: torch.device):
    """Queue the block's kernels on the device's preprocessing stream; wait for them after."""
    stream = side_stream(device, 'preprocessing')
    try:
        with torch.cuda.stream(stream):
            yield
    finally:  # also after a refusal: outputs kept by then are complete before they are read
        stream.synchronize()


def _read_on_default_stream(values: list, device: torch.device) -> None:
    """Mark the kept CUDA tensors as read on the default stream, where the model reads them."""
    default = torch.cuda.default_stream(device)
    for value in values:
        if isinstance(value, torch.Tensor) and value.is_cuda:
            value.record_stream(default)


def _cache_frames(processor, device: torch.device) -> Optional[FrameCache]:
    """Preprocess each distinct frame once (frame_cache.py); None without an image processor."""
    image_processor = getattr(processor, 'image_processor', None)
    if image_processor is None:
        return None
    if device.type == 'cuda' and applies(image_processor):
        # One thread: the GPU gains nothing from more, and each thread would keep a cuBLAS
        # workspace of its own (34 MiB) after the model is unloaded. Frames of one size go
        # through as one batch instead.
        processor.image_processor = FrameCache(ExactIdefics3(image_processor, device),
                                               concatenate_rows, threads=1, batched=True)
    else:
        processor.image_processor = FrameCache(image_processor, concatenate_rows)
    return processor.image_processor


def concatenate_rows(values: list):
    """Join per-frame tensors (or numpy arrays) along the batch, as a batched call stacks them."""
    if isinstance(values[0], torch.Tensor):
        return torch.cat(values)
    return np.concatenate(values)
