"""image_conversion on messages as rclpy and the wire hand them over.

list-typed data and serialized round trips through rclpy, and compressed images through the
real codecs; every encoding's conversions are in unit/test_image_conversion_units.py.
"""

import types

import numpy as np
import pytest
from image_samples import RGB, W, smooth_rgb, with_data
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from vlm_ros.node.image_conversion import (
    compressed_to_rgb,
    image_to_rgb,
    rgb_to_compressed,
    rgb_to_image,
)


def test_list_data_and_serialized_messages():
    msg = rgb_to_image(RGB, 'bgr8', step=W * 3 + 1)
    received = deserialize_message(serialize_message(msg), Image)  # what a subscriber gets
    np.testing.assert_array_equal(image_to_rgb(received), RGB)
    np.testing.assert_array_equal(image_to_rgb(with_data(msg, 'bytes')), RGB)
    listed = types.SimpleNamespace(**vars(with_data(msg, 'bytes')))
    listed.data = list(msg.data)  # no buffer to share: converted by a copy
    np.testing.assert_array_equal(image_to_rgb(listed), RGB)


@pytest.mark.parametrize('kind', ['array', 'bytes'])
@pytest.mark.parametrize('fmt', ['jpeg', 'png'])
def test_compressed_round_trip(fmt, kind):
    rgb = smooth_rgb()
    msg = rgb_to_compressed(rgb, fmt)
    assert msg.format == f'rgb8; {fmt} compressed bgr8'
    received = deserialize_message(serialize_message(msg), CompressedImage)
    out = compressed_to_rgb(with_data(received, kind))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    error = np.abs(out.astype(int) - rgb)
    if fmt == 'png':
        assert error.max() == 0
    else:
        assert error.mean() < 2 and error.max() < 24
