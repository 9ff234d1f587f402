"""Two cameras streamed from the test process onto a vlm_node with cameras:=[head, wrist].

Each camera publishes the red scene on NAME/image at 20 Hz, its stamps offset as the test
chooses, each with a frame_id of its own.
"""

import uuid

from engine_fixtures import TARGETS, scene
from node_harness import RELIABLE, TIMEOUT, set_ok
from rclpy.duration import Duration
from sensor_msgs.msg import Image
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.msg import ImageSources, Plan

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
    cameras = Cameras(test_node, {'head': 0.0, 'wrist': 0.5})  # the wrist 0.5 s behind
    try:
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
