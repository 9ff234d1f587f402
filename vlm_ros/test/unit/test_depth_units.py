"""A box's 3D point from aligned depth and camera_info, and every reason there is none."""

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vlm_ros.node.depth import box_depth, depth_metres, points_of
from vlm_ros.node.image_conversion import ImageConversionError

BLOCK = (21.0, 16.0, 32.0, 32.0)
SIZE = (64, 48)


def depth_image(metres: np.ndarray, encoding: str = '16UC1', sec: int = 10,
                nanosec: int = 0) -> Image:
    """Encode metres as a depth Image (16UC1: millimetres; 32FC1: metres), in frame color."""
    values = (metres * 1000).astype('<u2') if encoding == '16UC1' else metres.astype('<f4')
    msg = Image(height=metres.shape[0], width=metres.shape[1], encoding=encoding,
                step=metres.shape[1] * values.itemsize, data=values.tobytes())
    msg.header.stamp, msg.header.frame_id = Time(sec=sec, nanosec=nanosec), 'color'
    return msg


def scene_depth() -> np.ndarray:
    """Return the depths of the 64x48 scene: the table 1 m away, the block 0.5 m."""
    metres = np.ones((48, 64), np.float32)
    metres[16:32, 21:32] = 0.5
    return metres


def camera_info(k=(50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0), size=SIZE) -> CameraInfo:
    info = CameraInfo(width=size[0], height=size[1], k=list(k))
    info.header.frame_id = 'optical'
    return info


def image_header(sec: int = 10, nanosec: int = 0) -> Header:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id='color')


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_both_depth_encodings_read_as_metres(encoding):
    assert np.allclose(depth_metres(depth_image(scene_depth(), encoding)), scene_depth())


def test_a_depth_image_that_cannot_be_read_says_why():
    with pytest.raises(ImageConversionError, match="depth encoding 'rgb8' is not one of"):
        depth_metres(Image(encoding='rgb8', height=1, width=1, step=3, data=b'abc'))
    short = depth_image(scene_depth())
    short.data = short.data[:100]
    with pytest.raises(ImageConversionError, match='does not fit its 100 bytes'):
        depth_metres(short)


def test_the_boxs_depth_is_the_median_of_its_central_half():
    metres = scene_depth()
    metres[16:20, 21:32] = 0.0  # no depth along the top edge
    assert box_depth(metres, BLOCK) == (0.5, '')
    wider = (15.0, 10.0, 38.0, 38.0)  # the table around the block: the centre is still block
    assert box_depth(metres, wider)[0] == 0.5
    metres[:, :] = 0.0
    depth, why = box_depth(metres, BLOCK)
    assert depth is None and why.startswith('too few valid depths in the box (0 of')


def test_a_points_depth_is_of_the_pixels_around_it_and_a_depth_some_pixel_has():
    metres = np.zeros((48, 64), np.float32)
    metres[17:24, 27:34] = 0.7  # exactly the 7x7 pixels around the pixel (30, 20)
    assert box_depth(metres, (30.5, 20.9, 30.5, 20.9)) == (pytest.approx(0.7), '')
    assert box_depth(metres, (40.0, 20.0, 40.0, 20.0))[1] == \
        'too few valid depths in the box (0 of 49 pixels around the point)'
    metres[:, :4], metres[:, 4:] = 1.0, 0.4  # an edge through a box's central half (8 pixels)
    assert box_depth(metres, (0.0, 0.0, 8.0, 4.0)) == (pytest.approx(0.4), '')  # not 0.7


def test_the_point_is_the_boxs_centre_at_its_depth_in_the_optical_frame():
    (point, why), = points_of([BLOCK], image_header(), SIZE, [depth_image(scene_depth())],
                              camera_info(), 0.1)
    assert why == '' and point.header.frame_id == 'optical' and point.header.stamp.sec == 10
    assert (point.point.x, point.point.y, point.point.z) == pytest.approx(
        ((26.5 - 32) * 0.5 / 50, (24 - 24) * 0.5 / 50, 0.5))


@pytest.mark.parametrize('change, why', [
    ({'depth': None}, 'no depth image has arrived on depth/image'),
    ({'info': None}, 'no camera_info has arrived on camera_info'),
    ({'header': image_header(10, 300_000_000)}, 'the nearest depth image is 0.3000 s from the '
                                               'image (max_skew 0.1 s)'),
    ({'header': Header(stamp=Time(sec=10), frame_id='my_photo')}, "the depth image is of frame "
                                                                  "'color', the image of "
                                                                  "'my_photo': not aligned"),
    ({'info': camera_info(size=(32, 24))}, 'the camera_info is 32x24, the image 64x48: not '
                                           'aligned to it'),
    ({'depth': depth_image(np.ones((24, 32), np.float32))}, 'the depth image is 32x24, the '
                                                           'image 64x48'),
    ({'info': camera_info(k=(0.0,) * 9)}, 'camera_info has no intrinsics (K is zero'),
    ({'info': camera_info(k=(math.nan, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0))},
     'camera_info K is not finite: fx nan, fy 50.0'),
    ({'info': camera_info(k=(50.0, 0.0, math.inf, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0))},
     'camera_info K is not finite: fx 50.0, fy 50.0, cx inf'),
    ({'depth': depth_image(scene_depth(), 'rgb8')}, "depth encoding 'rgb8' is not one of"),
])
def test_each_reason_for_no_point_is_given(change, why):
    given = {'header': image_header(), 'depth': depth_image(scene_depth()),
             'info': camera_info(), **change}
    depths = [given['depth']] if given['depth'] is not None else []
    (point, said), = points_of([BLOCK], given['header'], SIZE, depths, given['info'], 0.1)
    assert point is None and said.startswith(why), said


def test_points_need_the_size_of_the_image_used():
    assert points_of([BLOCK], image_header(), None, (), None, 0.1) == \
        [(None, 'the size of the image used is not known')]
    assert points_of([], image_header(), SIZE, (), None, 0.1) == []


def test_the_depth_image_nearest_the_images_stamp_is_used_not_the_newest():
    """An image answered a frame late still gets the depth of its own stamp."""
    far, own, newest = (depth_image(scene_depth() * scale, sec=10, nanosec=nanosec)
                        for scale, nanosec in ((3.0, 0), (2.0, 100_000_000), (1.0, 200_000_000)))
    (point, why), = points_of([BLOCK], image_header(10, 100_000_000), SIZE,
                              (far, own, newest), camera_info(), 0.05)
    assert why == '' and point.point.z == pytest.approx(1.0)  # the block at 0.5 m x 2
