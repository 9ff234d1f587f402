"""detections: every ~/ground answer's boxes as a vision_msgs/Detection2DArray, where installed.

scripts/bootstrap builds vision_msgs (from ../shared/vision_msgs), as a distro installs it, so
a node at its defaults publishes on detections; a node that cannot import it serves as before
and says at configure why it has no detections topic. A plan's boxed steps go out the same way
(test_detections_units.py); the trained tiny model names its plan targets in words only.
"""

import math
import os
import uuid

import pytest
from engine_fixtures import GROUND, RED_BLOCK, TARGETS, scene
from node_harness import RELIABLE, TIMEOUT, call
from vlm_ros.node.detections import NO_POSE_COVARIANCE, vision_msgs
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Ground

TYPES = vision_msgs()
needs_vision_msgs = pytest.mark.skipif(TYPES is None, reason='vision_msgs is not installed '
                                       '(scripts/bootstrap builds it from ../shared/vision_msgs)')


def _ground(test_node, frame_id: str) -> Ground.Response:
    image = rgb_to_image(scene('red'))
    image.header.frame_id = frame_id
    return call(test_node, Ground, '/vlm_node/ground', Ground.Request(phrase=GROUND[0],
                                                                      image=image))


@needs_vision_msgs
def test_a_ground_answers_boxes_go_out_as_detections_first(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    detections = test_node.collect(TYPES.Detection2DArray, '/detections', RELIABLE)
    node.wait_outputs(detections)
    frame_id = uuid.uuid4().hex
    response = _ground(test_node, frame_id)
    assert response.success, response.message
    # Published just before the response, so it is on its way when the response is here.
    found = detections.wait_for(lambda d: d.header.frame_id == frame_id, TIMEOUT,
                                "the ground answer's detections")
    assert found.header == response.image_header and len(found.detections) == 1
    detection = found.detections[0]
    center, size = detection.bbox.center.position, (detection.bbox.size_x,
                                                    detection.bbox.size_y)
    assert (center.x - size[0] / 2, center.y - size[1] / 2, center.x + size[0] / 2,
            center.y + size[1] / 2) == pytest.approx(tuple(response.boxes), abs=1e-3)
    assert list(response.boxes) == pytest.approx(RED_BLOCK, abs=1.0)
    hypothesis = detection.results[0]
    assert hypothesis.hypothesis.class_id == GROUND[0]
    assert 0.0 < hypothesis.hypothesis.score <= 1.0 and math.isfinite(hypothesis.hypothesis.score)
    assert hypothesis.pose.covariance[0] == NO_POSE_COVARIANCE  # no use_depth: no 3D point
    assert detection.id.endswith('/0') and detection.header == found.header

    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])  # its targets are words: no boxes
    assert plan.status == Plan.STATUS_OK, plan
    later = uuid.uuid4().hex
    assert _ground(test_node, later).success
    detections.wait_for(lambda d: d.header.frame_id == later, TIMEOUT, 'the next detections')
    assert not [d for d in detections.items() if d.detections and
                d.detections[0].id.startswith(f'{plan.request_id}/')], 'a plan without boxes'


def test_without_vision_msgs_the_node_serves_and_says_why_it_has_no_detections(
        start_vlm_node, test_node):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        path for path in env.get('PYTHONPATH', '').split(os.pathsep)
        if f'{os.sep}vision_msgs{os.sep}' not in path)
    node = start_vlm_node(env=env)
    node.wait_state('active')
    assert 'vision_msgs is not installed: no detections topic' in node.log_text()
    response = _ground(test_node, uuid.uuid4().hex)
    assert response.success and list(response.boxes) == pytest.approx(RED_BLOCK, abs=1.0)
    # Its publishers are in the graph but for detections. The node makes the detections one,
    # where it has one, before its vla_instruction one (node/topics.py), and a participant's
    # publishers are announced in order: once that one is in the graph, so would this be.
    publishers = test_node.node.count_publishers
    wait_until(lambda: publishers('/vla_instruction') > 0, TIMEOUT, 'the vla_instruction one')
    assert publishers('/plan_targets') > 0 and publishers('/detections') == 0
