"""Each camera frame is preprocessed once, and a batch's distinct frames side by side.

A caption and a plan on the latest frame, or eight instructions that arrive together, all
carry the same pixels; the image processor (resize, tiling, normalisation: on a CPU the largest
part of SmolVLM's time to first token) would run once per request. ``FrameCache`` wraps a
processor's image processor and preprocesses frame by frame: each distinct frame once, the
missing ones of a batch in parallel threads (PIL's resizes and numpy release the GIL), and
the outputs of the last frames are kept for the next requests. The rows are then put together
as the processor's batched call would: equal, tensor for tensor (test_preprocessing.py).

Frames are keyed by their pixels (a SHA-1 digest of the array, 0.5 ms for 640x480, taken when
``chat.build_inputs`` makes the PIL image), not by their header stamps: a bag played twice, or
an unstamped camera, repeats stamps, not pixels. Where frames cannot be put together (their
sizes differ, so the processor pads them to each other; or a layout without one entry per
frame) the processor's own call runs instead. Qwen2-VL's layout flattens every frame's patches
into one ``pixel_values``, the frame's ``image_grid_thw`` row counting its patches: its frames
are put together (and split) by those counts, of any sizes, as its processor concatenates them.

A processor on a GPU (``batched``) gets the missing frames of one size in one call instead,
and its outputs are split by row: it pads only frames of different sizes to each other, and
one call launches its kernels once for all of them, not once per frame.
"""

import copy
import hashlib
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

DIGEST = 'vlm_ros_frame_digest'  # the attribute of a PIL image that carries frame_digest()
KEPT_FRAMES = 8  # frames whose outputs are kept: a batch of max_batch_size 8 hits after the first
THREADS = min(8, os.cpu_count() or 1)
# Patches flattened across frames (Qwen2-VL and its successors): the grid's rows, one a frame,
# count each frame's rows of the flattened values.
GRID = 'image_grid_thw'
FLATTENED = ('pixel_values',)


class FrameCache:
    """An image processor that preprocesses each distinct frame once; otherwise the same.

    ``concatenate`` joins one value's per-frame tensors along the batch (``torch.cat``): the
    engine's top level imports no torch.
    """

    def __init__(self, image_processor, concatenate, kept: int = KEPT_FRAMES,
                 threads: int = THREADS, batched: bool = False):
        self.wrapped = image_processor
        self._concatenate = concatenate
        self._kept = kept
        self.threads = threads
        self.batched = batched  # frames of one size in one call (a GPU's processor)
        self._pool = None  # made at the first batch with several new frames
        self._splits = True  # False once its outputs proved not to have one entry per frame
        self._frames: OrderedDict = OrderedDict()  # (digest, options) -> that frame's outputs
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
        if not self._splits:  # no per-frame outputs to keep: straight to the processor
            self.frames_processed += len(frames)
            return self.wrapped(images, **kwargs)
        options = repr(sorted(kwargs.items()))
        keys = [(_digest(frame), options) for frame in frames]
        with self._lock:
            known = {key: self._frames[key] for key in keys if key in self._frames}
        missing = [key for key in dict.fromkeys(keys) if key not in known]
        computed = self._preprocess([images[keys.index(key)] for key in missing], kwargs)
        combined = None
        if computed is not None:
            known.update(zip(missing, computed, strict=True))
            self._keep(keys, known)
            combined = _combine([known[key] for key in keys], self._concatenate)
        if combined is None:
            self.frames_processed += len(keys)
            return self.wrapped(images, **kwargs)
        self.frames_processed += len(missing)
        self.frames_reused += len(keys) - len(missing)
        return combined

    def _preprocess(self, rows: list, kwargs: dict):
        """Preprocess each row's frame alone, in parallel; None unless one entry per frame."""
        if len(rows) > 1 and self.batched:
            outputs = self._together(rows, kwargs)
        elif len(rows) > 1 and self.threads > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, 'vlm-preprocess')
            outputs = list(self._pool.map(lambda row: self.wrapped([row], **kwargs), rows))
        else:
            outputs = [self.wrapped([row], **kwargs) for row in rows]
        self._splits = all(_one_per_frame(output) for output in outputs)
        return outputs if self._splits else None

    def _together(self, rows: list, kwargs: dict) -> list:
        """Preprocess the rows' frames of each size in one call; split its outputs by row."""
        sizes = {}
        for index, frame in enumerate(_frames(rows)):
            sizes.setdefault(frame.size, []).append(index)
        outputs = [None] * len(rows)
        for indices in sizes.values():
            batch = self.wrapped([rows[index] for index in indices], **kwargs)
            for index, output in zip(indices, _split(batch, len(indices)), strict=True):
                outputs[index] = output
        return outputs

    def _keep(self, keys: list, known: dict) -> None:
        """Keep the batch's frames as the newest, dropping the oldest beyond ``kept``."""
        with self._lock:
            for key in keys:
                self._frames[key] = known[key]
                self._frames.move_to_end(key)
            while len(self._frames) > self._kept:
                self._frames.popitem(last=False)

    def kept_values(self) -> list:
        """Return every value of the kept outputs (a GPU's are marked where they are read)."""
        with self._lock:
            return [value for outputs in self._frames.values() for value in outputs.values()]

    def clear(self) -> None:
        """Forget the kept outputs (they may hold GPU memory) and stop the threads."""
        with self._lock:
            self._frames.clear()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
                self._pool = None


def frame_digest(array: np.ndarray) -> tuple:
    """Key a frame by its pixels: shape and SHA-1 of the bytes, read in place (no copy)."""
    array = np.ascontiguousarray(array)
    return array.shape, str(array.dtype), hashlib.sha1(array.data, usedforsecurity=False).digest()


def _digest(frame: Image.Image) -> tuple:
    """Return the digest build_inputs gave the image, else one of its pixels (a copy)."""
    return getattr(frame, DIGEST, None) or frame_digest(np.asarray(frame))


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


def _flattened(outputs) -> tuple:
    """Return the names of outputs whose rows the grid counts (none without a grid)."""
    return tuple(name for name in FLATTENED if name in outputs) if GRID in outputs else ()


def _one_per_frame(outputs) -> bool:
    """Tell whether every value of one frame's outputs has one entry (or is a scalar)."""
    flattened = _flattened(outputs)
    for name, value in outputs.items():
        if name not in flattened and \
                (isinstance(value, (list, tuple)) or getattr(value, 'ndim', 0) > 0):
            if len(value) != 1:
                return False
    return True


def _split(outputs, count: int) -> list:
    """Split a call's outputs into count rows' (values without count entries stay whole)."""
    rows = [copy.copy(outputs) for _ in range(count)]
    flattened = _flattened(outputs)
    if flattened:
        ends = np.cumsum([int(grid.prod()) for grid in outputs[GRID]])  # numpy or torch
        for name in flattened:
            for row, start, end in zip(rows, [0, *ends[:-1]], ends, strict=True):
                row[name] = outputs[name][start:end]
    for name, value in outputs.items():
        sized = isinstance(value, (list, tuple)) or getattr(value, 'ndim', 0) > 0
        if sized and len(value) == count and name not in flattened:
            for index, row in enumerate(rows):
                row[name] = value[index:index + 1]
    return rows


def _combine(rows: list, concatenate):
    """Put per-frame outputs together along the batch; None where their shapes differ."""
    result = copy.copy(rows[0])  # the processor pops entries: the kept outputs stay whole
    flattened = _flattened(rows[0])
    for name, value in rows[0].items():
        values = [row[name] for row in rows]
        if isinstance(value, (list, tuple)):
            result[name] = [entry for each in values for entry in each]
        elif getattr(value, 'ndim', 0) > 0:
            # A grid's flattened values differ in length: only their rows must agree.
            start = 1 if name in flattened else 0
            if any(each.shape[start:] != value.shape[start:] for each in values):
                return None
            result[name] = concatenate(values) if len(values) > 1 else value
        elif any(each != value for each in values):
            return None
    return result
