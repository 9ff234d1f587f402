"""detections: boxes as vision_msgs/Detection2DArray, where vision_msgs is installed.

scripts/bootstrap builds vision_msgs from ../shared/vision_msgs, as a distro installs it;
without it these are skipped (the node then has no detections topic, test_detections.py).
"""

import json
import math

import pytest
from geometry_msgs.msg import Point, PointStamped
from std_msgs.msg import Header
from vlm_ros.engine.grounding import View
from vlm_ros.engine.results import make_result
from vlm_ros.node.companions import companion_messages
from vlm_ros.node.detections import (
    NO_POSE_COVARIANCE,
    ground_detections,
    plan_detections,
    score,
    vision_msgs,
)
from vlm_ros.node.jobs import Job, Outcome, Status
from vlm_ros.node.messages import plan_msg, targets_msg
from vlm_ros.node.settings import Settings

TYPES = vision_msgs()
pytestmark = pytest.mark.skipif(TYPES is None, reason='vision_msgs is not installed (scripts/'
                                'bootstrap builds it where ../shared/vision_msgs is)')
WHOLE = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))  # a model that saw it all
ONE = (('', WHOLE),)  # the request's one image
PLAN = json.dumps({'steps': [
    {'instruction': 'pick up the cup', 'skill': 'pick', 'target': 'cup', 'box': [0.25, 0.5, 0.5,
                                                                                 1.0]},
    {'instruction': 'wait', 'skill': 'wait', 'target': ''},
    {'instruction': 'push the box', 'skill': 'push', 'target': '', 'box': [0, 0, 0.5, 0.5]}]})
OPTICAL = PointStamped(header=Header(frame_id='cam_optical'), point=Point(x=0.1, y=0.2, z=0.5))


def _outcome(task: str, text: str, request_id: str) -> Outcome:
    return Outcome(Job(task, 'the cup' if task == 'ground' else 'tidy up', done=None,
                       request_id=request_id), Status.OK, header=Header(frame_id='cam'),
                   result=make_result(task, text, 30, 0.1, 0.2, False, (640, 480), views=ONE,
                                      logprobs=(-0.5,) * 30,
                                      ends=tuple(len(text) * (i + 1) // 30 for i in range(30))))


def _box(detection) -> tuple:
    center, bbox = detection.bbox.center.position, detection.bbox
    return (center.x - bbox.size_x / 2, center.y - bbox.size_y / 2,
            center.x + bbox.size_x / 2, center.y + bbox.size_y / 2)


def test_a_plans_boxed_steps_become_detections_named_by_their_targets():
    outcome = _outcome('plan', PLAN, 'r-1')
    plan = plan_msg(outcome, 'tiny', Header())
    found = plan_detections(TYPES, plan, targets_msg(outcome, plan), outcome.result.
                            step_confidence, outcome.header_of)
    assert found.header.frame_id == 'cam'
    assert [d.id for d in found.detections] == ['r-1/0', 'r-1/2']  # the wait step has no box
    assert [d.results[0].hypothesis.class_id for d in found.detections] == \
        ['cup', 'push the box']  # a step without a target word is named by its instruction
    assert _box(found.detections[0]) == pytest.approx((160, 240, 320, 480), abs=0.5)
    assert _box(found.detections[1]) == pytest.approx((0, 0, 320, 240), abs=0.5)
    assert all(d.header.frame_id == 'cam' for d in found.detections)
    first_mean = outcome.result.step_confidence[0][0]
    assert found.detections[0].results[0].hypothesis.score == pytest.approx(
        math.exp(first_mean))
    assert found.detections[0].results[0].pose.covariance[0] == NO_POSE_COVARIANCE


def test_a_plan_without_boxes_has_no_detections():
    text = json.dumps({'steps': [{'instruction': 'wait', 'skill': 'wait', 'target': 'cup'}]})
    outcome = _outcome('plan', text, 'r-2')
    plan = plan_msg(outcome, 'tiny', Header())
    assert plan_detections(TYPES, plan, targets_msg(outcome, plan), (),
                           outcome.header_of) is None


def test_a_boxes_3d_point_is_its_hypothesis_position():
    outcome = _outcome('plan', PLAN, 'r-3')
    plan = plan_msg(outcome, 'tiny', Header())
    targets = targets_msg(outcome, plan, lambda answer, boxes: [(OPTICAL, ''), (None, 'no depth')])
    first, second = plan_detections(TYPES, plan, targets, (), outcome.header_of).detections
    position = first.results[0].pose.pose.position
    assert (position.x, position.y, position.z) == (0.1, 0.2, 0.5)
    assert first.results[0].pose.covariance[0] == 0.0
    assert second.results[0].pose.covariance[0] == NO_POSE_COVARIANCE
    assert math.isnan(first.results[0].hypothesis.score)  # no step confidence given: unknown


def test_a_ground_answer_gives_every_box_its_phrase_even_none():
    outcome = _outcome('ground', '[0.25, 0.5, 0.5, 1.0] and [0, 0, 0.1, 0.1]', 'r-4')
    found = ground_detections(TYPES, outcome, [(OPTICAL, ''), (None, 'no depth')])
    assert [d.id for d in found.detections] == ['r-4/0', 'r-4/1']
    assert {d.results[0].hypothesis.class_id for d in found.detections} == {'the cup'}
    assert _box(found.detections[0]) == pytest.approx((160, 240, 320, 480), abs=0.5)
    assert found.detections[0].results[0].pose.pose.position.z == 0.5
    assert found.detections[0].results[0].hypothesis.score == pytest.approx(math.exp(-0.5))
    labelled = _outcome('ground', json.dumps([{'bbox_2d': [0, 0, 64, 48], 'label': 'red block'},
                                              {'bbox_2d': [64, 48, 128, 96]}]), 'r-8')
    named = ground_detections(TYPES, labelled, [])
    assert [d.results[0].hypothesis.class_id for d in named.detections] == ['red block',
                                                                            'the cup']
    unboxed = _outcome('ground', 'somewhere on the left', 'r-5')
    assert ground_detections(TYPES, unboxed, []).detections == []


def test_detections_go_with_plans_and_ground_answers_only_where_vision_msgs_is():
    plan_outcome = _outcome('plan', PLAN, 'r-6')
    plan = plan_msg(plan_outcome, 'tiny', Header())
    settings = Settings.from_values()
    no_points = lambda answer, boxes: []  # noqa: E731 - without use_depth
    assert 'detections' in companion_messages(plan_outcome, plan, settings, no_points, TYPES)
    assert 'detections' not in companion_messages(plan_outcome, plan, settings, no_points)
    ground = _outcome('ground', '[0, 0, 0.5, 0.5]', 'r-7')
    assert set(companion_messages(ground, None, settings, no_points, TYPES)) == {'detections'}
    assert companion_messages(ground, None, settings, no_points) == {}


def test_score_is_the_mean_tokens_probability_and_nan_when_unknown():
    assert score(0.0) == 1.0 and score(math.log(0.25)) == pytest.approx(0.25)
    assert math.isnan(score(float('nan'))) and score(float('-inf')) == 0.0
