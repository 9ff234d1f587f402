"""scripted_vla_head, the stand-in VLA head, driven on its own topics as vlm_node drives it.

A StepCommand on `step`; RUNNING at once on `step_feedback`, then the outcome after step_time
(test_closed_loop runs the head beside vlm_node, and observes its script there).
"""

import uuid

import pytest
from loop_harness import start_head, stop_head
from node_harness import RELIABLE, TIMEOUT, wait_matched
from waiting import wait_until

from vlm_ros_msgs.msg import StepCommand, StepFeedback

STEP_TIME = 1.5  # s, well above the default (0.2): a second command comes before it ends


@pytest.fixture
def head(test_node):
    """Start a head whose steps take STEP_TIME; return (send a command, its feedback)."""
    process = start_head(step_time=STEP_TIME)
    commands = test_node.node.create_publisher(StepCommand, 'step', RELIABLE)
    feedback = test_node.collect(StepFeedback, 'step_feedback', RELIABLE)
    wait_matched(commands, 'the head to subscribe to step')
    wait_until(lambda: feedback.subscription.get_publisher_count() > 0, 30.0,
               "the head's step_feedback publisher")

    def send(instruction: str) -> str:
        plan_id = uuid.uuid4().hex
        commands.publish(StepCommand(plan_id=plan_id, index=0, count=1, instruction=instruction))
        return plan_id
    yield send, feedback
    stop_head(process)


def test_a_step_reports_running_then_its_outcome(head):
    """RUNNING is said first, then the outcome, both with the command's plan_id.

    step_time's only effect is when the outcome comes, which a test does not assert; the
    order is what a head's user relies on (the outcome ends the step).
    """
    send, feedback = head
    plan_id = send('pick up the red block')
    feedback.wait_for(lambda f: f.plan_id == plan_id and f.status != StepFeedback.STATUS_RUNNING,
                      TIMEOUT + STEP_TIME, 'the outcome')
    said = [(f.status, f.message) for f in feedback.items() if f.plan_id == plan_id]
    assert said == [(StepFeedback.STATUS_RUNNING, 'executing'),
                    (StepFeedback.STATUS_SUCCEEDED, 'done')], said


def test_a_newer_command_replaces_the_one_being_executed(head):
    """The first command's outcome is never said: had its timer run, it would come first."""
    send, feedback = head
    first = send('pick up the red block')
    feedback.wait_for(lambda f: f.plan_id == first, TIMEOUT, 'the first RUNNING')
    second = send('place it in the bin')
    feedback.wait_for(lambda f: f.plan_id == second and
                      f.status == StepFeedback.STATUS_SUCCEEDED, TIMEOUT + STEP_TIME,
                      "the second command's outcome")
    assert [f.status for f in feedback.items() if f.plan_id == first] == \
        [StepFeedback.STATUS_RUNNING]
