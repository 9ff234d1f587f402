"""scripted_vla_head, the stand-in VLA head, driven on its own topics as vlm_node drives it.

A StepCommand on `step`; RUNNING at once on `step_feedback`, then the outcome after step_time
(test_closed_loop runs the head beside vlm_node, and observes its script there).
"""

import time
import uuid

import pytest
from loop_harness import start_head, stop_head
from node_harness import RELIABLE, TIMEOUT, wait_matched
from waiting import wait_until

from vlm_ros_msgs.msg import StepCommand, StepFeedback

STEP_TIME = 1.5  # s, well above the default (0.2)


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


def test_a_step_takes_step_time_before_its_outcome(head):
    """The outcome comes no sooner than step_time after the command was sent.

    A lower bound that load cannot break: the head starts its timer once the command arrives.
    """
    send, feedback = head
    sent = time.monotonic()
    plan_id = send('pick up the red block')
    running = feedback.wait_for(lambda f: f.plan_id == plan_id, TIMEOUT, 'RUNNING')
    assert running.status == StepFeedback.STATUS_RUNNING, running
    done = feedback.wait_for(lambda f: f.plan_id == plan_id and f.status != running.status,
                             TIMEOUT + STEP_TIME, 'the outcome')
    assert time.monotonic() - sent >= STEP_TIME
    assert (done.status, done.message) == (StepFeedback.STATUS_SUCCEEDED, 'done'), done


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
