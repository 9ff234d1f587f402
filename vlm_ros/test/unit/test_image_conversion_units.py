"""image_conversion: every encoding round-trips, views really share msg.data, bad input says why.

Messages are real sensor_msgs ones. rclpy stores a uint8[] field as array.array('B') and turns
assigned bytes into one, so the 'bytes' variants hand the converter a stand-in object with the
same fields and a bytes payload, as non-rclpy callers (rosbags readers, tools) may.
"""

import array
import types

import cv2
import numpy as np
import pytest
from image_samples import RGB, H, W, smooth_rgb, with_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from vlm_ros.engine.errors import VlmError
from vlm_ros.node.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
)

GRAY = np.repeat(cv2.cvtColor(RGB, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
VIEWS_8 = ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8']
VIEWS_16 = ['rgb16', 'bgr16', 'rgba16', 'bgra16', 'mono16']
# encoding -> where R, G, B sit among a pixel's channels (mono: the one channel, three times).
ORDER = {'rgb': (0, 1, 2), 'bgr': (2, 1, 0), 'rgba': (0, 1, 2), 'bgra': (2, 1, 0),
         'mono': (0, 0, 0)}


def raw_image(encoding, pixels, step=0, bigendian=False):
    """Build an Image from HxWxC pixels of any dtype, rows padded to step bytes with 0xEE."""
    height, width = pixels.shape[:2]
    row = pixels[0].nbytes
    step = step or row
    rows = np.full((height, step), 0xEE, np.uint8)
    dtype = pixels.dtype.newbyteorder('>' if bigendian else '<')
    rows[:, :row] = pixels.astype(dtype).view(np.uint8).reshape(height, row)
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=int(bigendian))
    msg.data = array.array('B', rows.tobytes())
    return msg


def assert_copy(out, msg, want):
    """copy=True: the same pixels in a new, writeable, C-contiguous array."""
    np.testing.assert_array_equal(out, want)
    assert out.flags.c_contiguous and out.flags.writeable
    assert not np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def expected(encoding):
    return GRAY if encoding.startswith('mono') else RGB


@pytest.mark.parametrize('kind', ['array', 'bytes'])
@pytest.mark.parametrize('padding', [0, 5])
@pytest.mark.parametrize('encoding', VIEWS_8)
def test_8bit_round_trip(encoding, padding, kind):
    channels = {'mono8': 1, 'rgb8': 3, 'bgr8': 3}.get(encoding, 4)
    msg = rgb_to_image(RGB, encoding, step=W * channels + padding if padding else 0)
    assert msg.step == W * channels + padding and len(msg.data) == H * msg.step
    rows = np.frombuffer(msg.data, np.uint8).reshape(H, msg.step)
    rows[:, W * channels:] = 0xEE  # garbage padding must not leak into the image
    out = image_to_rgb(with_data(msg, kind))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected(encoding))
    assert_copy(image_to_rgb(with_data(msg, kind), copy=True), msg, expected(encoding))


@pytest.mark.parametrize('bigendian', [False, True])
@pytest.mark.parametrize('padding', [0, 6])
@pytest.mark.parametrize('encoding', VIEWS_16)
def test_16bit_keeps_the_high_byte(encoding, padding, bigendian):
    base = expected(encoding)
    if encoding.startswith('mono'):
        base = base[..., :1]
    else:
        base = base[..., list(ORDER[encoding[:-2]])]
        if 'a' in encoding[:4]:
            base = np.dstack((base, np.full((H, W), 200, np.uint8)))
    low = np.random.default_rng(1).integers(0, 256, base.shape)  # dropped by >> 8
    pixels = base.astype(np.uint16) * 256 + low.astype(np.uint16)
    msg = raw_image(encoding, pixels, pixels[0].nbytes + padding, bigendian)
    for kind in ('array', 'bytes'):
        np.testing.assert_array_equal(image_to_rgb(with_data(msg, kind)), expected(encoding))
    assert_copy(image_to_rgb(msg, copy=True), msg, expected(encoding))


@pytest.mark.parametrize('encoding', VIEWS_8 + VIEWS_16)
def test_views_share_msg_data(encoding):
    """The zero-copy claim: the result is msg.data; writing the message changes the result."""
    depth = 2 if encoding.endswith('16') else 1
    channels = {'mono': 1, 'rgb': 3, 'bgr': 3}.get(encoding.rstrip('1268'), 4)
    msg = raw_image(encoding, np.zeros((H, W, channels), np.uint16 if depth == 2 else np.uint8),
                    step=W * channels * depth + 3)
    out = image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable  # callers copy before writing
    stand_in = with_data(msg, 'bytes')
    assert np.shares_memory(image_to_rgb(stand_in), np.frombuffer(stand_in.data, np.uint8))
    red = ORDER[encoding.rstrip('1268')][0]
    high = depth - 1  # little-endian: the high byte comes second
    msg.data[2 * msg.step + 4 * channels * depth + red * depth + high] = 123
    want = [123, 123, 123] if channels == 1 else [123, 0, 0]
    assert out[2, 4].tolist() == want and int(out.sum()) == sum(want)


def uyvy_red():
    """BT.601 video-range red is Y 81, U 90, V 240: one known colour independent of OpenCV."""
    return np.array([90, 81, 240, 81], np.uint8)


@pytest.mark.parametrize('padding', [0, 4])
@pytest.mark.parametrize('encoding,order', [('yuv422', 'UYVY'), ('uyvy', 'UYVY'),
                                            ('yuv422_yuy2', 'YUYV'), ('yuyv', 'YUYV')])
def test_yuv422(encoding, order, padding):
    rng = np.random.default_rng(3)
    y = rng.integers(16, 236, (H, 8)).astype(np.uint8)
    u, v = (rng.integers(16, 241, (H, 4)).astype(np.uint8) for _ in range(2))
    planes = {'Y0': y[:, 0::2], 'Y1': y[:, 1::2], 'U': u, 'V': v}
    names = ['U', 'Y0', 'V', 'Y1'] if order == 'UYVY' else ['Y0', 'U', 'Y1', 'V']
    packed = np.stack([planes[n] for n in names], axis=2).reshape(H, 8, 2)
    msg = raw_image(encoding, packed, 16 + padding)
    out = image_to_rgb(msg)
    assert_copy(image_to_rgb(msg, copy=True), msg, out)
    # BT.601 video range, per pixel: the chroma pair is shared by two neighbours.
    yy = 1.164 * (y.astype(float) - 16)
    uu, vv = (np.repeat(c.astype(float) - 128, 2, axis=1) for c in (u, v))
    ref = np.stack([yy + 1.596 * vv, yy - 0.392 * uu - 0.813 * vv, yy + 2.017 * uu], axis=2)
    assert np.abs(out.astype(float) - np.clip(ref, 0, 255)).max() <= 2
    red = uyvy_red() if order == 'UYVY' else uyvy_red()[[1, 0, 3, 2]]
    red_out = image_to_rgb(raw_image(encoding, np.tile(red, (2, 1, 1)).reshape(2, 2, 2)))
    assert np.abs(red_out.astype(int) - [255, 0, 0]).max() <= 2


def test_8uc1_alias_is_mono8():
    msg = rgb_to_image(RGB, 'mono8')
    msg.encoding = '8UC1'
    np.testing.assert_array_equal(image_to_rgb(msg), GRAY)
    assert '8UC1' in SUPPORTED_ENCODINGS and 'yuyv' in SUPPORTED_ENCODINGS


@pytest.mark.parametrize('fmt,encode_order,gray', [
    ('jpeg', 'bgr', False), ('png', 'bgr', False),  # drivers that write a bare format name
    ('rgb8; jpeg compressed rgb8', 'rgb', False),  # RGB channels stored as they came
    ('mono8; png compressed mono8', 'bgr', True),
])
def test_compressed_format_strings(fmt, encode_order, gray):
    rgb = smooth_rgb()
    source = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else (
        rgb if encode_order == 'rgb' else rgb[..., ::-1])
    ok, data = cv2.imencode('.png' if 'png' in fmt else '.jpg', np.ascontiguousarray(source))
    out = compressed_to_rgb(types.SimpleNamespace(format=fmt, data=data.tobytes()))
    want = np.repeat(source[..., None], 3, axis=2) if gray else rgb
    assert np.abs(out.astype(int) - want).mean() < 2


def test_header_is_kept():
    header = Header(frame_id='camera_optical')
    header.stamp.sec = 42
    for msg in (rgb_to_image(RGB, 'rgb8', header), rgb_to_compressed(RGB, 'png', header)):
        assert msg.header.frame_id == 'camera_optical' and msg.header.stamp.sec == 42


def _image(**changes):
    msg = with_data(rgb_to_image(RGB, 'rgb8'), 'bytes')  # stand-in: any field may be wrong
    vars(msg).update(changes)
    return msg


@pytest.mark.parametrize('msg,reason', [
    (_image(data=bytes(H * W * 3 - 1)), 'has 104 bytes, but height 5 x step 21 = 105'),
    (_image(data=bytes(H * W * 3 + 5)), 'has 110 bytes, but height 5 x step 21 = 105'),
    (_image(step=20, data=bytes(100)), 'step 20 is smaller than width 7 x 3 bytes per pixel = 21'),
    (_image(encoding='rgba8'), 'step 21 is smaller than width 7 x 4 bytes per pixel = 28'),
    (_image(encoding='mono16', step=13), 'step 13 is smaller than width 7 x 2'),
    (_image(encoding='rgb9'), "encoding 'rgb9' (unknown encoding); supported: 8UC1, bgr16"),
    (_image(encoding=''), "encoding '' (unknown encoding); supported:"),
    (_image(encoding='8UC3'), 'channel order is unknown; publish rgb8 or bgr8'),
    (_image(encoding='16UC1'), 'depth image'),
    (_image(width=0, step=0, data=b''), 'image is empty: width 0 x height 5'),
    (_image(height=0, data=b''), 'image is empty: width 7 x height 0'),
    (_image(encoding='yuv422', width=7, step=14, data=bytes(70)),
     'yuv422 packs 2 pixels into 4 bytes, so width must be even, not 7'),
    (_image(encoding='yuyv', step=13), 'step 13 is smaller than width 7 x 2'),
    (_image(data=[300] * 105), 'not a byte buffer'),
    (_image(data=None), 'not a byte buffer'),
    (_image(width='seven'), 'not a sensor_msgs/Image'),
    (object(), 'not a sensor_msgs/Image (object)'),
])
def test_malformed_image_says_why(msg, reason):
    with pytest.raises(ImageConversionError) as caught:
        image_to_rgb(msg)
    assert reason in str(caught.value)
    assert isinstance(caught.value, VlmError) and caught.value.kind == 'bad_input'


def _compressed(fmt, data):
    return types.SimpleNamespace(format=fmt, data=data)


@pytest.mark.parametrize('msg,reason', [
    (_compressed('jpeg', b'not a jpeg'), "could not decode 10 bytes of 'jpeg' compressed image "
                                         'data (starts with 6e 6f 74 20 61 20 6a 70, which is '
                                         'neither JPEG nor PNG data)'),
    # OpenCV would decode these, by what the bytes are: HDR and TIFF skip the size check.
    (_compressed('jpeg', cv2.imencode('.hdr', RGB.astype(np.float32))[1].tobytes()),
     'which is neither JPEG nor PNG data'),
    (_compressed('png', cv2.imencode('.tiff', RGB)[1].tobytes()),
     'which is neither JPEG nor PNG data'),
    (_compressed('png', b''), 'could not decode 0 bytes'),
    (_compressed('png', b'\x89PNG\r\n\x1a\n' + bytes(40)), 'could not decode 48 bytes'),
    (_compressed('webp', b'RIFF'), "unsupported compressed image format 'webp'; supported: "
                                   'jpeg, png'),
    (_compressed('', b'\xff\xd8\xff'), "unsupported compressed image format ''"),
    (_compressed('16UC1; compressedDepth png', b'x'), 'compressedDepth png'),
    (_compressed('jpeg', [256]), 'not a byte buffer'),
    (object(), 'not a sensor_msgs/CompressedImage (object)'),
])
def test_malformed_compressed_says_why(msg, reason):
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_rgb(msg)
    assert reason in str(caught.value)
    assert caught.value.kind == 'bad_input'


def test_a_compressed_image_whose_header_says_no_size_is_not_decoded_under_a_pixel_limit():
    png = cv2.imencode('.png', RGB)[1].tobytes()
    headless = _compressed('png', png[:8] + bytes(len(png) - 8))  # PNG's signature, no IHDR
    with pytest.raises(ImageConversionError) as caught:
        compressed_to_rgb(headless, max_pixels=10**6)
    assert "'png' compressed image: its size cannot be read from its header" in \
        str(caught.value)
    assert compressed_to_rgb(_compressed('png', png), max_pixels=35).shape == RGB.shape


@pytest.mark.parametrize('call,reason', [
    (lambda: rgb_to_image(RGB, 'yuv422'), "cannot encode 'yuv422'; supported: rgb8, bgr8"),
    (lambda: rgb_to_image(RGB, 'rgb8', step=20), 'step 20 is smaller than the 21-byte row'),
    (lambda: rgb_to_image(RGB.astype(np.uint16)), 'got uint16 (5, 7, 3)'),
    (lambda: rgb_to_image(RGB[..., 0]), 'got uint8 (5, 7)'),
    (lambda: rgb_to_image(RGB[:0]), 'need a non-empty HxWx3 uint8 RGB array'),
    (lambda: rgb_to_compressed([[1, 2, 3]]), 'got list'),
    (lambda: rgb_to_compressed(RGB, 'gif'), "cannot compress to 'gif'; supported: jpeg, png"),
])
def test_encoder_input_errors(call, reason):
    with pytest.raises(ImageConversionError) as caught:
        call()
    assert reason in str(caught.value)
