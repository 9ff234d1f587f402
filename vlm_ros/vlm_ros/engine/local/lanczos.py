"""Pillow's Lanczos resize as two matrix products on any torch device, equal to Pillow's bytes.

SmolVLM/Idefics3 were trained on pixels that Pillow's Lanczos filter made; torchvision has no
Lanczos on CUDA, and a float Lanczos (one rounding at the end) differs from Pillow by up to
52 grey levels on noisy frames. Pillow resamples with integer coefficients (22 fractional
bits, the weights rounded one by one), a horizontal pass rounded and clipped to 8 bits, then
a vertical one. Both passes are linear maps, so each is one matrix product with a coefficient
matrix built once per (input size, output size) exactly as Pillow builds it.

Exact in float32 (and under TF32, split-K or any summation order): each coefficient is split
into three 8-bit parts (k = hi * 2**16 + mid * 2**8 + lo), so every product of a pixel and a
part is below 2**16 and every partial sum of at most MAX_TAPS taps below 2**24, where float32
holds integers exactly. The three sums are then joined in int64 and rounded as Pillow does.
"""

import math
import threading
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

PRECISION_BITS = 22  # Pillow's 8-bit resampling: 32 - 8 - 2
SUPPORT = 3.0  # Lanczos-3
MAX_TAPS = 256  # 255 * 255 * 256 < 2**24: the float32 sums stay exact (downscales up to 42x)
MAX_SIZES = 16  # resizes (in, out) whose matrices a device keeps
PART_SHIFTS = (16, 8, 0)  # the three 8-bit parts of a coefficient, most significant first


def _lanczos(x: float) -> float:
    """Pillow's truncated sinc, evaluated in double precision as its C code does."""
    if not -SUPPORT <= x < SUPPORT:
        return 0.0
    return _sinc(x) * _sinc(x / SUPPORT)


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


class TooManyTapsError(ValueError):
    """A downscale so large that float32 could not sum its products exactly."""


@lru_cache(maxsize=64)
def pillow_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Return Pillow's integer Lanczos weights as an (out_size, in_size) int64 matrix.

    The same arithmetic, in the same order, as Pillow's precompute_coeffs and
    normalize_coeffs_8bpc (src/libImaging/Resample.c): each output pixel's weights around its
    centre, normalised to sum 1, then each rounded half away from zero to 22 fractional bits.
    TooManyTapsError where the float32 sums could not stay exact (a downscale above 42x).
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    if int(math.ceil(support)) * 2 + 1 > MAX_TAPS:
        raise TooManyTapsError(f'a {in_size} -> {out_size} px Lanczos resize has over {MAX_TAPS} '
                         'taps: too many for exact float32 sums')
    matrix = np.zeros((out_size, in_size), dtype=np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        weights = [_lanczos((x + xmin - center + 0.5) / filterscale) for x in range(xmax)]
        total = 0.0
        for w in weights:
            total += w
        for x, w in enumerate(weights):
            w = w / total if total != 0.0 else w
            fixed = -0.5 + w * (1 << PRECISION_BITS) if w < 0 else 0.5 + w * (1 << PRECISION_BITS)
            matrix[xx, xmin + x] = int(fixed)  # C's (int): towards zero
    return matrix


class LanczosResizer:
    """Resize uint8 images on one device as Pillow would; coefficient matrices kept per size.

    The matrices live on the device beside the frames, built on first use of each size (a
    camera's frames share one), so a steady stream of frames builds none. The MAX_SIZES used
    last are kept: images of ever new sizes (anyone may send a query's) would otherwise keep a
    matrix each, up to 6 MB of device memory.
    """

    def __init__(self, device):
        self.device = torch.device(device)
        # (in_size, out_size) -> float32 (3 * out, in) coefficient parts, least recent first
        self._parts = OrderedDict()
        self._lock = threading.Lock()  # the frame cache preprocesses frames in threads

    def resize(self, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Return the (..., C, height, width) uint8 resize of a (..., C, H, W) uint8 image.

        As Pillow: the horizontal pass first, each pass skipped where its size is unchanged,
        and each pass's result rounded and clipped to 8 bits. Leading dimensions are frames of
        one size, resized together: the same arithmetic for each.
        """
        *lead, in_height, in_width = image.shape
        pixels = image.to(torch.float32)
        if width != in_width:
            parts = self._coefficients(in_width, width)  # (3 * W', W)
            sums = pixels.reshape(-1, in_width) @ parts.T  # (... * H, 3 * W')
            pixels = _round(sums.reshape(-1, 3, width), dim=1).reshape(*lead, in_height, width)
        if height != in_height:
            parts = self._coefficients(in_height, height)  # (3 * H', H)
            sums = parts @ pixels  # (..., 3 * H', W')
            pixels = _round(sums.reshape(*lead, 3, height, width), dim=-3)
        return pixels.to(torch.uint8)

    def prepare(self, shape: tuple, size: tuple) -> None:
        """Compute a (H, W) -> (H', W') resize's weights, or raise TooManyTapsError."""
        for in_size, out_size in zip(shape, size, strict=True):
            pillow_coefficients(in_size, out_size)

    def _coefficients(self, in_size: int, out_size: int) -> torch.Tensor:
        key = (in_size, out_size)
        with self._lock:
            if key not in self._parts:
                self._parts[key] = split_parts(pillow_coefficients(in_size, out_size)).to(
                    self.device)
                if len(self._parts) > MAX_SIZES:
                    self._parts.popitem(last=False)
            self._parts.move_to_end(key)
            return self._parts[key]


def split_parts(matrix: np.ndarray) -> torch.Tensor:
    """Stack a coefficient matrix's three 8-bit parts: (out, in) int64 -> (3 * out, in) float32.

    hi = k >> 16 keeps the sign (arithmetic shift); mid and lo are in 0..255.
    """
    hi, mid, lo = (matrix >> shift for shift in PART_SHIFTS)
    parts = (hi, mid & 0xFF, lo & 0xFF)
    return torch.from_numpy(np.concatenate(parts)).to(torch.float32)


def _round(sums: torch.Tensor, dim: int) -> torch.Tensor:
    """Join the parts' exact float32 sums and round to 8 bits as Pillow's clip8 does."""
    exact = sums.to(torch.int64)
    hi, mid, lo = exact.unbind(dim)
    total = (hi << PART_SHIFTS[0]) + (mid << PART_SHIFTS[1]) + lo + (1 << (PRECISION_BITS - 1))
    return (total >> PRECISION_BITS).clamp_(0, 255).to(torch.float32)
