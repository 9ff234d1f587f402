"""PlanTargets: each step's box in the source image's pixels, joined to its Plan."""

import json

import pytest
from geometry_msgs.msg import Point, PointStamped
from std_msgs.msg import Header
from vlm_ros.engine.grounding import View
from vlm_ros.engine.results import make_result
from vlm_ros.node.jobs import Job, Outcome, Status
from vlm_ros.node.messages import plan_msg, targets_msg

TEXT = json.dumps({'steps': [
    {'instruction': 'pick up the cup', 'skill': 'pick', 'target': 'cup<loc_250><loc_500><loc_499>'
     '<loc_999>'},
    {'instruction': 'wait', 'skill': 'wait', 'target': ''},
    {'instruction': 'push it', 'skill': 'push', 'target': 'box', 'box': [1.5, 0, 2, 1]}]})


def _answered(request_id: str) -> Outcome:
    """Return an OK plan outcome of TEXT on a 640x480 image its model saw whole."""
    view = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))
    return Outcome(Job('plan', 'tidy up', done=None, request_id=request_id), Status.OK,
                   header=Header(frame_id='cam'),
                   result=make_result('plan', TEXT, 30, 0.1, 0.2, False, (640, 480),
                                      views=(('', view),)))


def test_each_step_gets_its_box_in_pixels_or_none_and_why():
    outcome = _answered('r-1')
    plan = plan_msg(outcome, 'tiny', Header())
    targets = targets_msg(outcome, plan)
    assert (targets.request_id, targets.header.frame_id) == ('r-1', 'cam')
    assert len(targets.steps) == len(plan.steps) == 3
    assert list(targets.steps[0].box) == pytest.approx([160.32, 240.24, 319.68, 479.76])
    assert targets.steps[0].problem == '' and list(targets.steps[1].box) == []
    assert list(targets.steps[2].box) == []
    assert targets.steps[2].problem == 'the box (1.0, 0.0, 1.3, 0.5) has no size'


def test_a_plan_without_an_answer_has_no_targets():
    outcome = Outcome(Job('plan', 'tidy up', done=None, request_id='r-2'), Status.NO_IMAGE,
                      'no image')
    plan = plan_msg(outcome, 'tiny', Header())
    assert targets_msg(outcome, plan).steps == []


def test_with_use_depth_each_boxed_step_gets_its_point_or_why_not():
    outcome = _answered('r-3')
    asked = []

    def points(answer, placed):  # as CameraInputs.target_points: one (point, why) per box
        asked.append((answer, placed))
        return [(PointStamped(header=Header(frame_id='cam_optical'),
                              point=Point(x=0.1, y=0.2, z=0.5)), '')]
    targets = targets_msg(outcome, plan_msg(outcome, 'tiny', Header()), points)
    assert asked == [(outcome, [(outcome.result.boxes[0], '')])]  # only the step with a box
    first, second, third = targets.steps
    assert first.point.header.frame_id == 'cam_optical' and first.point.point.z == 0.5
    assert first.point_problem == ''
    assert second.point == PointStamped() and third.point == PointStamped()

    def no_depth(answer, boxes):
        return [(None, 'no depth image yet on depth/image') for _ in boxes]
    first = targets_msg(outcome, plan_msg(outcome, 'tiny', Header()), no_depth).steps[0]
    assert first.point.header.frame_id == '' and first.point_problem.startswith('no depth')


def test_without_use_depth_no_step_has_a_point_or_a_problem():
    outcome = _answered('r-4')
    targets = targets_msg(outcome, plan_msg(outcome, 'tiny', Header()),
                          lambda answer, boxes: [])
    assert all(step.point == PointStamped() and step.point_problem == ''
               for step in targets.steps)


def test_with_several_cameras_each_target_names_its_camera_and_gets_its_point():
    head = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))
    wrist = View((320, 240), (0.0, 0.0, 320.0, 240.0), (320, 240))
    text = json.dumps({'steps': [
        {'instruction': 'pick the cup', 'camera': 'wrist', 'bbox_2d': [10, 20, 30, 40]},
        {'instruction': 'look at the bin', 'bbox_2d': [100, 100, 200, 200]},
        {'instruction': 'push it', 'camera': 'wrist', 'bbox_2d': [400, 20, 500, 40]},
        {'instruction': 'wave', 'camera': 'elbow', 'bbox_2d': [1, 2, 3, 4]}]})
    outcome = Outcome(Job('plan', 'tidy up', done=None, request_id='r-9'), Status.OK,
                      header=Header(frame_id='head'),
                      result=make_result('plan', text, 30, 0.1, 0.2, False, (640, 480),
                                         views=(('head', head), ('wrist', wrist))))
    asked = []

    def points(answer, placed):
        asked.extend(placed)
        return [(None, f'no depth in {camera}') for _, camera in placed]
    targets = targets_msg(outcome, plan_msg(outcome, 'tiny', Header()), points)
    assert [step.camera for step in targets.steps] == ['wrist', 'head', 'wrist', '']
    assert asked == [((10.0, 20.0, 30.0, 40.0), 'wrist'), ((100.0, 100.0, 200.0, 200.0), 'head')]
    assert [step.point_problem for step in targets.steps] == ['no depth in wrist',
                                                               'no depth in head', '', '']
    assert targets.steps[2].problem.startswith('camera wrist: the box (400.0')
    assert targets.steps[3].problem == "camera 'elbow' is not one of the images (head, wrist)"
