"""Each camera frame is preprocessed once: within a batch and back to back.

A caption and a plan on the latest frame, or eight instructions that arrive together, all
carry the same pixels; the image processor (resize, tiling, normalisation: on a CPU the largest
part of SmolVLM's time to first token) would run once per request. ``FrameCache`` wraps a
processor's image processor: a batch's frames are preprocessed once per distinct frame and
the rows are copied out, and the outputs of the last frames are kept for the next requests.

Frames are keyed by their pixels (a SHA-1 digest of the array, 0.5 ms for 640x480, taken when
``chat.build_inputs`` makes the PIL image), not by their header stamps: a bag played twice, or
an unstamped camera, repeats stamps, not pixels.
Outputs are reused only where every per-image output has one entry per image; other layouts
(Qwen2-VL's flattened patches) get the processor's own call.
"""

import copy
import hashlib
import threading
from collections import OrderedDict

import numpy as np
from PIL import Image

DIGEST = 'vlm_ros_frame_digest'  # the attribute of a PIL image that carries frame_digest()
KEPT_FRAMES = 8  # frames whose outputs are kept: a batch of max_batch_size 8 hits after the first


class FrameCache:
    """An image processor that preprocesses each distinct frame once; otherwise the same."""

    def __init__(self, image_processor, kept: int = KEPT_FRAMES):
        self.wrapped = image_processor
        self._kept = kept
        self._outputs: OrderedDict = OrderedDict()  # (frame digests, kwargs) -> outputs
        self._lock = threading.Lock()
        self.frames_processed = 0  # what the processor ran on
        self.frames_reused = 0  # what it did not have to

    def __getattr__(self, name):
        """Everything else is the wrapped processor's (sizes, backend, fetch_images...)."""
        if 'wrapped' not in self.__dict__:  # while copying: nothing to forward to yet
            raise AttributeError(name)
        return getattr(self.__dict__['wrapped'], name)

    def __deepcopy__(self, memo):
        """Copy the wrapped processor alone (transformers deep-copies to show and save).

        The kept outputs belong to the engine, not to the processor's settings.
        """
        return copy.deepcopy(self.wrapped, memo)

    def __repr__(self) -> str:
        """Show the wrapped processor: its settings are what preprocessing does."""
        return repr(self.wrapped)

    def __call__(self, images, **kwargs):
        """Preprocess images (one per row) as the wrapped processor would, each distinct once."""
        frames = _frames(images)
        if frames is None:
            return self.wrapped(images, **kwargs)
        keys = [_digest(frame) for frame in frames]
        distinct = list(dict.fromkeys(keys))
        key = (tuple(distinct), repr(sorted(kwargs.items())))
        with self._lock:
            outputs = self._outputs.get(key)
            if outputs is not None:
                self._outputs.move_to_end(key)
        ran = 0
        if outputs is None:
            outputs = self.wrapped([images[keys.index(k)] for k in distinct], **kwargs)
            self._keep(key, outputs)
            ran = len(distinct)
        expanded = _expand(outputs, [distinct.index(k) for k in keys], len(distinct))
        if expanded is None:  # a layout without one entry per image: the processor's own call
            expanded = self.wrapped(images, **kwargs)
            ran += len(keys)
        self.frames_processed += ran
        self.frames_reused += max(0, len(keys) - ran)
        return expanded

    def _keep(self, key, outputs) -> None:
        """Keep the newest outputs, dropping the oldest beyond ``kept`` frames (not the newest)."""
        with self._lock:
            self._outputs[key] = outputs
            while len(self._outputs) > 1 and sum(len(k[0]) for k in self._outputs) > self._kept:
                self._outputs.popitem(last=False)

    def clear(self) -> None:
        """Forget the kept outputs (they may hold GPU memory)."""
        with self._lock:
            self._outputs.clear()


def _frames(images):
    """Return one PIL image per row ([image] or image), or None for any other layout."""
    if not isinstance(images, (list, tuple)) or not images:
        return None
    frames = []
    for row in images:
        if isinstance(row, (list, tuple)) and len(row) == 1:
            row = row[0]
        if not isinstance(row, Image.Image):
            return None
        frames.append(row)
    return frames


def frame_digest(array: np.ndarray) -> tuple:
    """Key a frame by its pixels: shape and SHA-1 of the bytes, read in place (no copy)."""
    array = np.ascontiguousarray(array)
    return array.shape, str(array.dtype), hashlib.sha1(array.data, usedforsecurity=False).digest()


def _digest(frame: Image.Image) -> tuple:
    """Return the digest build_inputs gave the image, else one of its pixels (a copy)."""
    return getattr(frame, DIGEST, None) or frame_digest(np.asarray(frame))


def _expand(outputs, rows: list, distinct: int):
    """Copy the outputs of distinct frames out to one per row; None when a value has no rows."""
    result = copy.copy(outputs)  # the processor pops entries: the kept outputs stay whole
    if rows == list(range(distinct)):
        return result
    for name, value in outputs.items():
        try:
            if len(value) != distinct:
                return None
        except TypeError:  # a scalar: the same for every row
            continue
        result[name] = [value[row] for row in rows] if isinstance(value, (list, tuple)) \
            else value[rows]
    return result
