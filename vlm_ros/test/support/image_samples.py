"""Camera images both tiers of the image-conversion tests use."""

import array
import types

import numpy as np

H, W = 5, 7


RGB = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)


def with_data(msg, kind):
    """Return msg itself (array.array data) or a same-field stand-in whose data is bytes."""
    if kind == 'array':
        assert isinstance(msg.data, array.array)
        return msg
    names = ('height', 'width', 'step', 'encoding', 'is_bigendian', 'format')
    fields = {name: getattr(msg, name) for name in names if hasattr(msg, name)}
    return types.SimpleNamespace(**fields, data=bytes(msg.data))


def smooth_rgb(height=48, width=64):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 2 % 256],
                    axis=2).astype(np.uint8)
