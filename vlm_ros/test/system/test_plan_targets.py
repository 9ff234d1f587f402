"""plan_targets: every Plan's step targets as boxes in the source image, just before the Plan.

The trained tiny model names its targets in words only, so each step's box is empty with no
problem; the boxes themselves are read and mapped by the engine (test_grounding_geometry.py)
and put into the message by messages.targets_msg (test_plan_targets_units.py).
"""

from engine_fixtures import TARGETS
from node_harness import RELIABLE, TIMEOUT, goal_plan

from vlm_ros_msgs.msg import Plan, PlanTargets


def _check(targets: PlanTargets, plan: Plan) -> None:
    assert targets.header == plan.header and len(targets.steps) == len(plan.steps) > 0
    assert all(list(step.box) == [] and step.problem == '' and step.point.header.frame_id == ''
               and step.point_problem == '' for step in targets.steps), targets


def test_every_plan_has_its_targets_first(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    targets = test_node.collect(PlanTargets, '/plan_targets', RELIABLE)
    node.wait_outputs(targets)
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])
    assert plan.status == Plan.STATUS_OK, plan
    _check(targets.wait_for(lambda t: t.request_id == plan.request_id, TIMEOUT,
                            "the plan's targets"), plan)
    result = goal_plan(test_node, TARGETS['plan'][0])
    _check(targets.wait_for(lambda t: t.request_id == result.request_id, TIMEOUT,
                            "the goal's plan's targets"), result)
