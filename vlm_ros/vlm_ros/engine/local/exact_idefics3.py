"""SmolVLM/Idefics3's image processing as tensor operations on the model's GPU, byte for byte.

On a CPU, SmolVLM's processor (transformers' PIL backend) takes most of a request's time to
first token: three Lanczos resizes in Pillow, tiling, then rescaling and normalising in numpy.
``ExactIdefics3`` does the same steps on the model's device: only the frame's bytes cross (from
pinned memory), the resizes are Pillow's own arithmetic as matrix products (lanczos.py), and
rescale and normalise are the same IEEE float operations numpy does. Its ``pixel_values`` equal
the processor's (``torch.equal``; test_exact_preprocessing.py), so the model sees the pixels
it was trained on.

Calls it does not reproduce (another resample filter, inputs that are not RGB PIL frames, no
padding, a ``device`` of 'cpu' in the call) go to the wrapped processor unchanged.
"""

import copy
import math
import types

import numpy as np
import torch
from transformers import BatchFeature

from ..gpu_preprocess import LANCZOS
from ..tiling import longest_edge as _edge
from .lanczos import LanczosResizer, TooManyTapsError

try:  # transformers 5: the PIL backend's size rule, a function of the image's shape
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        get_resize_output_image_size,
    )
except ImportError:  # pragma: no cover - transformers 4 has no PIL backend module
    get_resize_output_image_size = None

# Frames resized together keep their sums within this: a batch of 8 of the node's 640x480
# frames (768x768 at most on the way) goes through at once, 8 at SmolVLM's own 1456 px would
# hold some 2.4 GB of temporaries (on a Jetson, the model's memory too) and go 3 at a time.
BATCH_BYTES = 2**30
BYTES_PER_PIXEL = 192  # about: 3 channels x 3 parts x (float32 sums + int64 rounding steps)
OPTIONS = ('do_resize', 'size', 'resample', 'do_rescale', 'rescale_factor', 'do_normalize',
           'image_mean', 'image_std', 'do_pad', 'do_convert_rgb', 'do_image_splitting',
           'max_image_size')


def applies(image_processor) -> bool:
    """Return whether ExactIdefics3 reproduces this image processor: Idefics3's, with Lanczos."""
    name = type(image_processor).__name__
    return (get_resize_output_image_size is not None and name.startswith('Idefics3Image')
            and getattr(image_processor, 'resample', None) == LANCZOS)


class ExactIdefics3:
    """An Idefics3 image processor whose outputs are made on ``device``; otherwise the same."""

    def __init__(self, image_processor, device, batch_bytes: int = BATCH_BYTES):
        self.wrapped = image_processor
        self.device = torch.device(device)
        self._resizer = LanczosResizer(self.device)
        self._batch_bytes = batch_bytes

    def __getattr__(self, name):
        """Everything else is the wrapped processor's (sizes, fetch_images, patch counts...)."""
        if 'wrapped' not in self.__dict__:  # while copying: nothing to forward to yet
            raise AttributeError(name)
        return getattr(self.__dict__['wrapped'], name)

    def __deepcopy__(self, memo):
        """Copy the wrapped processor alone: the device is the engine's, not a setting."""
        return copy.deepcopy(self.wrapped, memo)

    def __repr__(self) -> str:
        return repr(self.wrapped)

    def __call__(self, images, return_row_col_info=False, return_tensors=None, **kwargs):
        """Preprocess nested rows of frames as the wrapped processor would, on the device."""
        options = self._options(images, return_tensors, kwargs)
        try:
            done = None if options is None else self._rows(images, options)
        except TooManyTapsError:  # a frame thousands of pixels wide for tiny tiles
            done = None
        if done is None:
            return self.wrapped(images, return_row_col_info=return_row_col_info,
                                return_tensors=return_tensors, **kwargs)
        tiles = [[tile for image in row for tile in image[0]] for row in done]
        rows = [[image[1] for image in row] for row in done]
        cols = [[image[2] for image in row] for row in done]
        pixel_values, mask = _pad(tiles)
        encoding = BatchFeature({'pixel_values': pixel_values, 'pixel_attention_mask': mask})
        if return_row_col_info:
            encoding['rows'], encoding['cols'] = rows, cols
        return encoding

    def _options(self, images, return_tensors, kwargs: dict):
        """Return the call's settings over the processor's, or None where it must handle it."""
        kwargs = dict(kwargs)
        device = kwargs.pop('device', None)
        if device is not None and torch.device(device) != self.device:
            return None
        if set(kwargs) - set(OPTIONS) or return_tensors not in ('pt', None):
            return None
        options = {name: kwargs.get(name, getattr(self.wrapped, name, None)) for name in OPTIONS}
        frames = images if isinstance(images, (list, tuple)) else None
        if not frames or not all(isinstance(row, (list, tuple)) and row for row in frames):
            return None
        if any(getattr(image, 'mode', None) != 'RGB' for row in frames for image in row):
            return None
        if options['resample'] != LANCZOS or not options['do_pad']:
            return None
        return options

    def _rows(self, images: list, options: dict) -> list:
        """Return each frame's (tiles, rows, cols), row by row; frames of one size together.

        At batch 8 a frame at a time took 8 times one frame's kernel launches (28 ms on an
        H200); frames of one size share every shape, so they go through each step as one.
        """
        frames = [image for row in images for image in row]
        sizes = {}
        for index, frame in enumerate(frames):
            sizes.setdefault(frame.size, []).append(index)
        done = [None] * len(frames)
        for indices in sizes.values():
            step = self._batch(frames[indices[0]], options)
            for start in range(0, len(indices), step):
                chunk = indices[start:start + step]
                for index, result in zip(chunk, self._tiles([frames[i] for i in chunk], options),
                                         strict=True):
                    done[index] = result
        ends = np.cumsum([len(row) for row in images])
        return [done[end - len(row):end] for row, end in zip(images, ends, strict=True)]

    def _batch(self, frame, options: dict) -> int:
        """Return how many frames of this one's size go through at once (BATCH_BYTES)."""
        shape = (frame.height, frame.width)
        sizes = [shape]
        if options['do_resize']:
            sizes.append(_first_size(shape, options['size']))
        if options['do_image_splitting']:
            sizes.append(_vision_encoder_size(sizes[-1], _edge(options['max_image_size'])))
        largest = max(height * width for height, width in sizes)
        return max(1, self._batch_bytes // (BYTES_PER_PIXEL * largest))

    def _upload(self, frames: list) -> torch.Tensor:
        """Copy frames' bytes to the device once, from pinned memory: an (N, 3, H, W) uint8."""
        array = np.stack([np.asarray(frame) for frame in frames])
        if self.device.type != 'cuda':
            return torch.from_numpy(array).permute(0, 3, 1, 2)
        staging = torch.empty(array.shape, dtype=torch.uint8, pin_memory=True)
        staging.numpy()[...] = array
        return staging.to(self.device, non_blocking=True).permute(0, 3, 1, 2)

    def _tiles(self, frames: list, options: dict) -> list:
        """Resize, tile, rescale and normalise frames of one size: each one's (tiles, rows, cols).

        The same steps as the processor's, for all the frames at once. The first resize's
        coefficients come first: a frame too large for them (TooManyTapsError) is not uploaded.
        """
        first = frames[0]
        image = None
        if options['do_resize']:
            height, width = _first_size((first.height, first.width), options['size'])
            self._resizer.prepare((first.height, first.width), (height, width))
            image = self._resizer.resize(self._upload(frames), height, width)
        image = self._upload(frames) if image is None else image
        tile = _edge(options['max_image_size'])
        rows = cols = 0
        if options['do_image_splitting']:
            image = self._resizer.resize(image, *_vision_encoder_size(image.shape[-2:], tile))
            height, width = image.shape[-2:]
            if height > tile or width > tile:
                rows, cols = (height - tile) // tile + 1, (width - tile) // tile + 1
                tiles = [image[..., r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]
                         for r in range(rows) for c in range(cols)]
                tiles.append(self._resizer.resize(image, tile, tile))
            else:
                tiles = [image]
        else:
            tiles = [self._resizer.resize(image, tile, tile)]
        if len({tile.shape for tile in tiles}) == 1:  # one normalisation for all tiles
            values = _normalise(torch.stack(tiles, dim=1), options)  # (N, tiles, C, H, W)
            return [(list(frame), rows, cols) for frame in values]
        per_tile = [_normalise(tile, options) for tile in tiles]  # each (N, C, H, W)
        return [([tile[index] for tile in per_tile], rows, cols) for index in range(len(frames))]


def _first_size(shape: tuple, size) -> tuple:
    """Return Idefics3's first resize: to a longest edge (aspect kept), or a height and width."""
    longest = _edge(size)
    if longest:
        frame = types.SimpleNamespace(shape=(3, *shape))  # all the size rule reads
        return tuple(get_resize_output_image_size(frame, resolution_max_side=longest))
    return size['height'], size['width']


def _vision_encoder_size(shape, tile: int) -> tuple:
    """Return resize_for_vision_encoder's size: both sides up to multiples of the tile."""
    height, width = shape
    aspect_ratio = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect_ratio) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect_ratio) / tile) * tile
    return height, width


def _normalise(tile: torch.Tensor, options: dict) -> torch.Tensor:
    """Rescale and normalise (..., C, H, W) tiles with numpy's operations, in numpy's order.

    A float64 product cast to float32, then float32 (x - mean) / std: each an IEEE-rounded
    operation, so either device gives numpy's bits.
    """
    values = tile
    if options['do_rescale']:
        values = (values.to(torch.float64) * options['rescale_factor']).to(torch.float32)
    values = values.to(torch.float32)
    if options['do_normalize']:
        mean, std = (torch.tensor(_per_channel(options[name], values.shape[-3]),
                                  dtype=torch.float32)[:, None, None].to(values.device)
                     for name in ('image_mean', 'image_std'))
        values = (values - mean) / std
    return values


def _per_channel(value, channels: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * channels


def _pad(rows: list) -> tuple:
    """Pad every row's tiles to the batch's largest tile and count, with the valid-pixel mask."""
    count = max(len(tiles) for tiles in rows)
    height = max(tile.shape[1] for tiles in rows for tile in tiles)
    width = max(tile.shape[2] for tiles in rows for tile in tiles)
    first = rows[0][0]
    values = first.new_zeros((len(rows), count, first.shape[0], height, width))
    mask = torch.zeros((len(rows), count, height, width), dtype=torch.int64, device=first.device)
    for i, tiles in enumerate(rows):
        for j, tile in enumerate(tiles):
            values[i, j, :, :tile.shape[1], :tile.shape[2]] = tile
            mask[i, j, :tile.shape[1], :tile.shape[2]] = 1
    return values, mask

