"""sensor_msgs Image / CompressedImage <-> HxWx3 uint8 RGB numpy arrays, without cv_bridge.

ROS 2 cv_bridge is not installable from wheels (PyPI's cv-bridge is a broken ROS 1 port), so
raw frames are decoded with numpy and OpenCV. Every 8- and 16-bit RGB/BGR/mono encoding comes
back as a read-only strided view of ``msg.data`` (no copy per frame; the view keeps the buffer
alive), or, with ``copy=True``, as a new writeable C-contiguous array made by OpenCV.

Encodings: rgb8 bgr8 rgba8 bgra8 mono8 rgb16 bgr16 rgba16 bgra16 mono16 (views), yuv422 (UYVY)
and yuv422_yuy2 (YUYV) (converted by OpenCV, BT.601 video range). Aliases: 'uyvy' and 'yuyv'
(their Jazzy names) and '8UC1' (one channel can only be gray). '8UC3'/'8UC4' are refused: the
channel order is unknown, and guessing BGR would hand a model swapped colours without a word.
16-bit data becomes 8-bit by keeping the high byte (value >> 8, as cv_bridge scales), which is
a view too; sensors that fill only 10 or 12 of the 16 bits therefore look dark.
"""

import array
import io

import cv2
import numpy as np
from PIL import Image as PilImage

from ..engine.errors import VlmError

# encoding -> (channels in the message, bytes per channel, first channel of R,G,B, its step).
_VIEWS = {
    'rgb8': (3, 1, 0, 1), 'bgr8': (3, 1, 2, -1), 'rgba8': (4, 1, 0, 1), 'bgra8': (4, 1, 2, -1),
    'mono8': (1, 1, 0, 0), 'rgb16': (3, 2, 0, 1), 'bgr16': (3, 2, 2, -1),
    'rgba16': (4, 2, 0, 1), 'bgra16': (4, 2, 2, -1), 'mono16': (1, 2, 0, 0),
}
# copy=True: (channels, first) -> OpenCV code; numpy copies reversed or broadcast views 30x slower.
_COPY = {(3, 2): cv2.COLOR_BGR2RGB, (4, 0): cv2.COLOR_RGBA2RGB, (4, 2): cv2.COLOR_BGRA2RGB,
         (1, 0): cv2.COLOR_GRAY2RGB}
_YUV = {'yuv422': cv2.COLOR_YUV2RGB_UYVY, 'yuv422_yuy2': cv2.COLOR_YUV2RGB_YUYV}
_ALIASES = {'uyvy': 'yuv422', 'yuyv': 'yuv422_yuy2', '8UC1': 'mono8'}
_REFUSED = {'8UC3': 'its channel order is unknown; publish rgb8 or bgr8',
            '8UC4': 'its channel order is unknown; publish rgba8 or bgra8',
            '16UC1': 'it is a depth image, not a camera image',
            '32FC1': 'it is a depth image, not a camera image'}
SUPPORTED_ENCODINGS = tuple(sorted([*_VIEWS, *_YUV, *_ALIASES]))
_ENCODE = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,  # alpha 255
           'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}


_JPEG_MAGIC = b'\xff\xd8\xff'  # how each format's data starts
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


class ImageConversionError(VlmError):
    """A message that cannot become an RGB array; the text says which field is wrong and how."""

    def __init__(self, message: str, cause=None):
        super().__init__('bad_input', message, cause=cause)


def byte_buffer(data) -> np.ndarray:
    """View msg.data as uint8 without copying: rclpy gives array.array('B') or bytes."""
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError, BufferError):
        pass  # a list of ints: no buffer to share, so copy it
    try:
        values = np.asarray(data, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageConversionError(f'image data is not a byte buffer: {exc}', exc) from exc
    if values.size and (values.min() < 0 or values.max() > 255):  # numpy 1.x would wrap
        raise ImageConversionError(
            f'image data is not a byte buffer: values {values.min()}..{values.max()}')
    return values.astype(np.uint8)


def _geometry(msg):
    """Read the Image fields as plain values, so a wrong message type fails with a reason."""
    try:
        return (int(msg.height), int(msg.width), int(msg.step), str(msg.encoding),
                bool(msg.is_bigendian), msg.data)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageConversionError(
            f'not a sensor_msgs/Image ({type(msg).__name__}): {exc}', exc) from exc


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image of more than max_pixels pixels (0 = no limit), before any decoding."""
    if max_pixels and width * height > max_pixels:
        raise ImageConversionError(
            f'{what} is {width}x{height} = {width * height / 1e6:.1f} MP, more than '
            f'max_image_pixels {max_pixels / 1e6:.1f} MP; send smaller frames or raise the limit')


def _compressed_size(buffer: np.ndarray, what: str) -> tuple:
    """Return (width, height) from a JPEG/PNG header without decoding.

    A header that says no size is refused: OpenCV would decode up to its own limit of a
    gigapixel, 3 GB for one frame.
    """
    try:
        with PilImage.open(io.BytesIO(buffer.tobytes())) as image:
            return image.size
    except PilImage.DecompressionBombError as exc:  # over PIL's own limit (178 MP)
        raise ImageConversionError(f'{what} is too large to decode: {exc}', exc) from exc
    except Exception as exc:  # noqa: BLE001 - any reason PIL gives: the header is unreadable
        raise ImageConversionError(
            f'{what}: its size cannot be read from its header ({exc}), so it is not decoded '
            f'(max_image_pixels)', exc) from exc


def image_to_rgb(msg, copy: bool = False, max_pixels: int = 0) -> np.ndarray:
    """Return a sensor_msgs/Image (or any object with its fields) as HxWx3 uint8 RGB.

    ``copy=True`` returns a new C-contiguous array instead of a view: a caller that needs one
    (PIL, torch) gets it from OpenCV in 0.3 ms at 1080p, where np.ascontiguousarray on a bgr8 or
    mono8 view takes 10-20 ms. Raises ImageConversionError naming the field and the numbers.
    """
    height, width, step, encoding, bigendian, data = _geometry(msg)
    encoding = _ALIASES.get(encoding, encoding)
    if encoding in _REFUSED or (encoding not in _VIEWS and encoding not in _YUV):
        why = _REFUSED.get(encoding, 'unknown encoding')
        raise ImageConversionError(f'cannot convert image encoding {encoding!r} ({why}); '
                                   f'supported: {", ".join(SUPPORTED_ENCODINGS)}')
    if height <= 0 or width <= 0:
        raise ImageConversionError(f'image is empty: width {width} x height {height}')
    check_pixels(width, height, max_pixels, f'{encoding} image')
    channels, depth, first, direction = _VIEWS.get(encoding, (2, 1, 0, 1))  # YUV: 2 B/pixel
    pixel = channels * depth
    if step < width * pixel:
        raise ImageConversionError(
            f'{encoding} image step {step} is smaller than width {width} x {pixel} bytes per '
            f'pixel = {width * pixel}')
    buffer = byte_buffer(data)
    if buffer.size != height * step:
        raise ImageConversionError(
            f'{encoding} image data has {buffer.size} bytes, but height {height} x step {step} '
            f'= {height * step}')
    if encoding in _YUV:
        if width % 2:
            raise ImageConversionError(
                f'{encoding} packs 2 pixels into 4 bytes, so width must be even, not {width}')
        packed = np.lib.stride_tricks.as_strided(buffer, (height, width, 2), (step, 2, 1),
                                                 writeable=False)
        return cv2.cvtColor(packed, _YUV[encoding])
    # The high byte of a 16-bit channel is its first byte big-endian, its second little-endian.
    high = depth - 1 if depth == 2 and not bigendian else 0
    # Bounds: validated above, the farthest byte is (height-1)*step + width*pixel - 1.
    if not copy:
        return np.lib.stride_tricks.as_strided(buffer[high + first * depth:], (height, width, 3),
                                               (step, pixel, direction * depth), writeable=False)
    pixels = np.lib.stride_tricks.as_strided(buffer[high:], (height, width, channels),
                                             (step, pixel, depth), writeable=False)
    code = _COPY.get((channels, first))
    return np.array(pixels) if code is None else cv2.cvtColor(
        pixels[..., 0] if channels == 1 else pixels, code)


def compressed_to_rgb(msg, max_pixels: int = 0) -> np.ndarray:
    """Decode a JPEG or PNG sensor_msgs/CompressedImage to HxWx3 uint8 RGB (a new array).

    The size is read from the header first: a few hundred kB of PNG can decode to gigabytes.
    """
    try:
        fmt, data = str(msg.format), msg.data
    except AttributeError as exc:
        raise ImageConversionError(
            f'not a sensor_msgs/CompressedImage ({type(msg).__name__}): {exc}', exc) from exc
    lowered = fmt.lower()
    if 'compresseddepth' in lowered or not any(k in lowered for k in ('jpeg', 'jpg', 'png')):
        raise ImageConversionError(
            f'unsupported compressed image format {fmt!r}; supported: jpeg, png (image_transport '
            f'formats such as "rgb8; jpeg compressed bgr8" included)')
    buffer = byte_buffer(data)
    what = f'{fmt!r} compressed image'
    # OpenCV decodes what the bytes are, whatever the format field says: HDR, TIFF, ... pass
    # no JPEG/PNG size check, and a few MB of them decode to gigabytes.
    ours = bytes(buffer[:len(_PNG_MAGIC)]).startswith((_JPEG_MAGIC, _PNG_MAGIC))
    if ours and max_pixels:
        check_pixels(*_compressed_size(buffer, what), max_pixels, what)
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if ours else None
    except cv2.error as exc:
        decoded, cause = None, exc
    else:
        cause = None
    if decoded is None:
        raise ImageConversionError(
            f'could not decode {buffer.size} bytes of {fmt!r} compressed image data (starts '
            f'with {bytes(buffer[:8]).hex(" ") or "nothing"}'
            f'{"" if ours else ", which is neither JPEG nor PNG data"}); is the format field '
            f'right?', cause)
    # image_transport marks data compressed from RGB channels ('compressed rgb8'): already RGB.
    return decoded if 'compressed rgb' in lowered else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _check_rgb(rgb) -> np.ndarray:
    """Refuse anything but a non-empty HxWx3 uint8 array, before it reaches OpenCV."""
    if (not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3
            or rgb.shape[2] != 3 or 0 in rgb.shape):
        what = f'{rgb.dtype} {rgb.shape}' if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ImageConversionError(f'need a non-empty HxWx3 uint8 RGB array, got {what}')
    return rgb


def rgb_to_image(rgb, encoding: str = 'rgb8', header=None, step: int = 0):
    """Encode RGB into a sensor_msgs/Image (for tests, tools and the CLI).

    ``step`` > width x bytes per pixel pads every row with zeros, as some drivers do.
    """
    from sensor_msgs.msg import Image

    if encoding not in _ENCODE:
        raise ImageConversionError(
            f'rgb_to_image cannot encode {encoding!r}; supported: {", ".join(_ENCODE)}')
    code = _ENCODE[encoding]
    pixels = _check_rgb(rgb) if code is None else cv2.cvtColor(rgb, code)
    height, width = pixels.shape[:2]
    row = pixels[0].size
    step = step or row
    if step < row:
        raise ImageConversionError(f'step {step} is smaller than the {row}-byte row')
    rows = np.zeros((height, step), np.uint8)
    rows[:, :row] = pixels.reshape(height, row)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.array('B')
    msg.data.frombytes(rows)  # assigning bytes would make rclpy check every byte in Python
    if header is not None:
        msg.header = header
    return msg


def rgb_to_compressed(rgb, fmt: str = 'jpeg', header=None, quality: int = 90):
    """Encode RGB into a sensor_msgs/CompressedImage with image_transport's format string."""
    from sensor_msgs.msg import CompressedImage

    extension = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt)
    if extension is None:
        raise ImageConversionError(f'cannot compress to {fmt!r}; supported: jpeg, png')
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if extension == '.jpg' else []
    ok, encoded = cv2.imencode(extension, cv2.cvtColor(_check_rgb(rgb), cv2.COLOR_RGB2BGR),
                               params)
    if not ok:
        raise ImageConversionError(f'OpenCV could not encode a {rgb.shape} image as {fmt}')
    msg = CompressedImage(format=f'rgb8; {extension[1:].replace("jpg", "jpeg")} compressed bgr8')
    msg.data = array.array('B')
    msg.data.frombytes(encoded)
    if header is not None:
        msg.header = header
    return msg
