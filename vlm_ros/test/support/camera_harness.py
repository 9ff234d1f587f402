"""Cameras streamed from the test process onto a vlm_node: several, and depth beside one.

Each camera publishes the red scene on NAME/image at 20 Hz, its stamps offset as the test
chooses, each with a frame_id of its own; an aligned depth camera sees the red block nearer
than the table.
"""

import uuid

import numpy as np
import pytest
from engine_fixtures import GROUND, RED_BLOCK, TARGETS, scene
from node_harness import RELIABLE, TIMEOUT, call, set_ok
from rclpy.duration import Duration
from sensor_msgs.msg import CameraInfo, Image
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.msg import ImageSources, Plan
from vlm_ros_msgs.srv import Ground

CAMERAS = '[head, wrist]'
START_PARAMS = {'cameras': CAMERAS, 'wait_for_image': 0.5}  # observe_max_skew's node
INSTRUCTION = TARGETS['plan'][0]


class Cameras:
    """Publish a frame on NAME/image for each camera at 20 Hz, each with its stamp offset (s)."""

    def __init__(self, test_node, offsets: dict):
        node = test_node.node
        self.frame_ids = {name: uuid.uuid4().hex for name in offsets}
        self._pubs = {name: node.create_publisher(Image, f'{name}/image', 10) for name in offsets}
        self._offsets = offsets
        self._frame = rgb_to_image(scene('red'))
        self._clock = node.get_clock()
        self._timer = node.create_timer(0.05, self._tick)
        self._destroy = node.destroy_timer

    def _tick(self) -> None:
        now = self._clock.now()
        for name, publisher in self._pubs.items():
            self._frame.header.stamp = (now - Duration(seconds=self._offsets[name])).to_msg()
            self._frame.header.frame_id = self.frame_ids[name]
            publisher.publish(self._frame)

    def stop(self) -> None:
        self._destroy(self._timer)

    def heard_by(self, node) -> None:
        """Wait until the node counts frames of each of these cameras, from now.

        Their publishers are new: a request sent at once can reach the node before it has
        discovered them, and a short wait_for_image then answers NO_IMAGE on a busy machine.
        """
        def heard(values: dict) -> bool:
            counts = received_by_camera(values) or {  # a node of one camera counts in total
                name: int(values['frames_received']) for name in self._pubs}
            return all(counts.get(name, 0) > 0 for name in self._pubs)
        node.diag_from_now()(heard, TIMEOUT, f'frames of {", ".join(self._pubs)} at the node')


def received_by_camera(values: dict) -> dict:
    """Return frames_received_by_camera ('head 5, wrist 0') as {camera: count}."""
    return {name: int(count) for name, count in (
        part.rsplit(' ', 1) for part in values.get('frames_received_by_camera', '').split(', ')
        if part)}


def new_plan(node, instruction: str = INSTRUCTION) -> Plan:
    """Send instruction; return the node's next Plan."""
    known = {plan.request_id for plan in node.plans.items()}
    node.instruct(instruction)
    return node.plans.wait_for(lambda p: p.request_id not in known, TIMEOUT, 'the plan')


def observe_max_skew(node, test_node):
    """Frames 0.5 s apart are STATUS_UNSYNCHRONIZED with the skew, until max_skew allows them.

    The node runs with START_PARAMS.
    """
    sources = test_node.collect(ImageSources, '/image_sources', RELIABLE)
    node.wait_outputs(sources)
    cameras = Cameras(test_node, {'head': 0.0, 'wrist': 0.5})  # the wrist 0.5 s behind
    try:
        cameras.heard_by(node)
        plan = new_plan(node)
        assert plan.status == Plan.STATUS_UNSYNCHRONIZED, plan
        assert 'max_skew is 0.1 s' in plan.message and 'wrist' in plan.message, plan.message
        used = sources.wait_for(lambda m: m.request_id == plan.request_id, TIMEOUT,
                                'the image sources of the refused plan')
        # The stamps' own offset, or one tick more when a newer head frame came in between.
        assert used.skew >= 0.499 and f'{used.skew:.3f} s apart' in plan.message, used.skew
        node.wait_diag(lambda v: v.get('status_unsynchronized') == '1', TIMEOUT, 'it counted')
        set_ok(test_node, max_skew=0.0)  # no limit
        assert new_plan(node).status == Plan.STATUS_OK
    finally:
        cameras.stop()


# An aligned RGB-D camera over scene(): the table 1.0 m away, the red block 0.5 m; its
# intrinsics put the principal point at the image's centre.
DEPTH_FRAME = 'camera_color_optical_frame'
FX = FY = 50.0
CX, CY = 32.0, 24.0


def depth_of_scene(stamp, frame_id: str = DEPTH_FRAME) -> tuple:
    """Return the depth Image (16UC1, mm) and CameraInfo of scene('red'), stamped stamp."""
    millimetres = np.full((48, 64), 1000, np.uint16)
    x1, y1, x2, y2 = (int(v) for v in RED_BLOCK)
    millimetres[y1:y2, x1:x2] = 500
    depth = Image(height=48, width=64, encoding='16UC1', step=128,
                  data=millimetres.tobytes())
    info = CameraInfo(height=48, width=64, k=[FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0])
    for msg in (depth, info):
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
    return depth, info


def stream_depth(test_node, prefix: str, frame_id: str):
    """Publish depth_of_scene on PREFIXdepth/image and PREFIXcamera_info at 20 Hz, stamped now.

    Return the timer; destroy it to stop.
    """
    node = test_node.node
    publishers = [node.create_publisher(kind, f'{prefix}{topic}', 10)
                  for kind, topic in ((Image, 'depth/image'), (CameraInfo, 'camera_info'))]

    def tick():
        for publisher, msg in zip(publishers, depth_of_scene(node.get_clock().now().to_msg(),
                                                             frame_id), strict=True):
            publisher.publish(msg)
    return node.create_timer(0.05, tick)


def observe_use_depth(node, test_node):
    """~/ground's boxes get 3D points from depth/image and camera_info once use_depth is on."""
    stamp = test_node.node.get_clock().now().to_msg()
    depth, info = depth_of_scene(stamp)
    publishers = [test_node.node.create_publisher(type(msg), topic, 10)
                  for msg, topic in ((depth, 'depth/image'), (info, 'camera_info'))]
    pairs = list(zip(publishers, (depth, info), strict=True))
    timer = test_node.node.create_timer(0.05, lambda: [pub.publish(msg) for pub, msg in pairs])
    image = rgb_to_image(scene('red'))
    image.header.stamp, image.header.frame_id = stamp, DEPTH_FRAME  # an aligned pair
    request = Ground.Request(phrase=GROUND[0], image=image)
    try:
        assert list(call(test_node, Ground, '/vlm_node/ground', request).points) == []
        set_ok(test_node, use_depth=True)
        answered = {}

        def pointed() -> bool:
            answered['last'] = call(test_node, Ground, '/vlm_node/ground', request)
            return answered['last'].points[0].header.frame_id != ''
        wait_until(pointed, TIMEOUT, 'a 3D point', poll=0.0)
        point = answered['last'].points[0]
        centre = ((RED_BLOCK[0] + RED_BLOCK[2]) / 2, (RED_BLOCK[1] + RED_BLOCK[3]) / 2)
        assert point.header.frame_id == DEPTH_FRAME and point.header.stamp == stamp
        assert (point.point.x, point.point.y, point.point.z) == pytest.approx(
            ((centre[0] - CX) * 0.5 / FX, (centre[1] - CY) * 0.5 / FY, 0.5), abs=0.01)
        assert answered['last'].point_problems == ['']
        image.header.frame_id = 'my_photo'  # a caller's own image: not the depth camera's
        other = call(test_node, Ground, '/vlm_node/ground', request)
        assert other.success and other.points[0].header.frame_id == ''
        assert "the image of 'my_photo': not aligned" in other.point_problems[0], other
    finally:
        test_node.node.destroy_timer(timer)
