"""Closed-loop plans under test: the scripted head process, the step topics, and observers.

A vlm_node with execute_plans runs the tiny LLaVA trained on the closed-loop prompts
(conftest.closed_loop_llava); the camera shows the red scene the plans were trained on, and
the blue one where a step check answers no.
"""

import json
import signal
import subprocess
import uuid

from engine_fixtures import LOOP_INSTRUCTION, LOOP_REPLAN, OTHER_VERIFY, PICK, PLACE
from node_harness import RELIABLE, TIMEOUT, node_executable, set_ok
from ros_harness import stop_process
from waiting import wait_until

from vlm_ros_msgs.msg import PlanProgress, StepCommand, StepFeedback

DONE, FAILED = PlanProgress.STATE_DONE, PlanProgress.STATE_FAILED
PREEMPTED, EXECUTING = PlanProgress.STATE_PREEMPTED, PlanProgress.STATE_EXECUTING


class Loop:
    """The step topics of one vlm_node, seen and driven from the test node."""

    def __init__(self, node, test_node):
        self.node = node
        self.steps = test_node.collect(StepCommand, 'step', RELIABLE)
        self.progress = test_node.collect(PlanProgress, 'plan_progress', RELIABLE)
        self._feedback = test_node.node.create_publisher(StepFeedback, 'step_feedback',
                                                         RELIABLE)

    def camera(self, colour: str = 'red') -> None:
        """Stream the colour's scene until the node has received a frame of it."""
        from engine_fixtures import scene
        from vlm_ros.node.image_conversion import rgb_to_image

        self.node.stop_stream()
        frame_id = f'{colour}-{uuid.uuid4().hex}'
        image = rgb_to_image(scene(colour))

        def make(stamp):
            image.header.stamp, image.header.frame_id = stamp, frame_id
            return image
        self.node.stream(make).wait_for(lambda m: True, TIMEOUT, f'a {colour} frame')
        # Not a count said before this stream (the test's first, say): the frames of the one
        # before pass it, and the wait would end before the node has a frame of this one.
        later = self.node.diag_from_now()
        received = int(later(lambda v: True, TIMEOUT, 'diagnostics')['frames_received'])
        later(lambda v: int(v['frames_received']) > received + 1, TIMEOUT,
              f'the node to receive {colour} frames')

    def instruct(self, text: str = LOOP_INSTRUCTION):
        """Send an instruction; return its Plan."""
        before = {p.request_id for p in self.node.plans.items()}
        self.node.instruct(text)
        return self.node.plans.wait_for(
            lambda p: p.request_id not in before and p.instruction == text.strip(), TIMEOUT,
            'the Plan')

    def step(self, plan_id: str, index: int, attempt: int = 0) -> StepCommand:
        """Wait for the StepCommand of plan_id's step index in attempt."""
        return self.steps.wait_for(
            lambda s: (s.plan_id, s.index, s.attempt) == (plan_id, index, attempt), TIMEOUT,
            f'step {index} of attempt {attempt}')

    def report(self, step: StepCommand, status: int, message: str = '') -> None:
        """Report on a step as a head would."""
        self._feedback.publish(StepFeedback(plan_id=step.plan_id, index=step.index,
                                            attempt=step.attempt, status=status,
                                            message=message))

    def ended(self, plan_id: str, timeout: float = TIMEOUT) -> PlanProgress:
        """Wait for the end (DONE, FAILED or PREEMPTED) of plan_id's execution."""
        return self.progress.wait_for(
            lambda p: p.plan_id == plan_id and p.state != EXECUTING, timeout, 'the end')

    def replanned(self, plan_id: str) -> PlanProgress:
        """Wait for the progress message that announces a re-plan of plan_id."""
        return self.progress.wait_for(
            lambda p: p.plan_id == plan_id and p.message.startswith('re-plan'), TIMEOUT,
            'a re-plan')

    def commands_of(self, plan_id: str, count: int = 0) -> list:
        """(attempt, index, instruction) of plan_id's StepCommands, once count have come.

        Commands and progress are two topics: the end of a plan may be taken here before its
        last command, so a test that saw the end names how many commands to wait for.
        """
        def commands() -> list:
            return [(s.attempt, s.index, s.instruction) for s in self.steps.items()
                    if s.plan_id == plan_id]
        wait_until(lambda: len(commands()) >= count, TIMEOUT, f'{count} step commands')
        return commands()


def start_head(script: str = '', step_time: float = 0.2) -> subprocess.Popen:
    """Start the scripted_vla_head executable, as a user would."""
    args = [node_executable('scripted_vla_head'), '--ros-args', '-p', f'step_time:={step_time}']
    if script:
        args += ['-p', f'script:={script}']
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_head(head: subprocess.Popen) -> str:
    """Stop the head with SIGINT; it must exit 0. Return its log."""
    code, out, err = stop_process(head, signal.SIGINT)
    assert code == 0, err[-2000:]
    return out + err


def _executing(node, test_node, **values) -> Loop:
    loop = Loop(node, test_node)
    loop.camera('red')
    set_ok(test_node, **values)
    return loop


# Observers of the run-time parameters (test_node_parameters.py runs them) ------------------

def observe_execute_plans(node, test_node):
    loop = _executing(node, test_node)
    plan = loop.instruct()
    node.vla.wait_for(lambda m: m.data == PICK[0], TIMEOUT, 'step 0 as text')
    assert not loop.commands_of(plan.request_id), 'no StepCommand without execute_plans'
    set_ok(test_node, execute_plans=True)
    plan = loop.instruct()
    assert loop.step(plan.request_id, 0).instruction == PICK[0]


def observe_step_timeout(node, test_node):
    loop = _executing(node, test_node, execute_plans=True, max_replans=0, step_timeout=0.5)
    end = loop.ended(loop.instruct().request_id)
    assert end.state == FAILED and 'within step_timeout 0.5 s' in end.message, end


def observe_max_replans(node, test_node):
    loop = _executing(node, test_node, execute_plans=True, max_replans=1, step_timeout=0.5)
    plan = loop.instruct()
    end = loop.ended(plan.request_id)
    assert end.state == FAILED and 'max_replans 1' in end.message, end
    assert [a for a, _, _ in loop.commands_of(plan.request_id, 2)] == [0, 1]


def _verified_pick(node, test_node, colour: str) -> PlanProgress:
    """Report step 0 done while the camera shows colour; return what the node did next."""
    loop = _executing(node, test_node, execute_plans=True, verify_steps=True)
    plan = loop.instruct()
    step = loop.step(plan.request_id, 0)
    loop.camera(colour)
    loop.report(step, StepFeedback.STATUS_SUCCEEDED)
    return loop.progress.wait_for(
        lambda p: p.plan_id == plan.request_id and (p.index == 1 or 're-plan' in p.message),
        TIMEOUT, 'the step check')


def observe_verify_steps(node, test_node):
    assert _verified_pick(node, test_node, 'red').index == 1  # yes: the next step
    after = _verified_pick(node, test_node, 'blue')
    assert "the VLM answered 'no'" in after.message, after


def observe_verify_by(node, test_node):
    set_ok(test_node, verify_by='likelihood')
    assert _verified_pick(node, test_node, 'red').index == 1  # yes the likelier: the next step
    after = _verified_pick(node, test_node, 'blue')
    assert "the VLM answered 'no (log-probability of yes " in after.message, after


def observe_prompt_verify(node, test_node):
    assert "answered 'no'" in _verified_pick(node, test_node, 'blue').message
    set_ok(test_node, prompt_verify=OTHER_VERIFY)  # trained to answer yes on the blue scene
    assert _verified_pick(node, test_node, 'blue').index == 1


def observe_prompt_replan(node, test_node):
    def replan_after_place_failed() -> list:
        loop = _executing(node, test_node, execute_plans=True, step_timeout=60.0)
        plan = loop.instruct()
        loop.report(loop.step(plan.request_id, 0), StepFeedback.STATUS_SUCCEEDED)
        loop.report(loop.step(plan.request_id, 1), StepFeedback.STATUS_FAILED, 'dropped it')
        loop.replanned(plan.request_id)
        got = loop.progress.wait_for(
            lambda p: p.plan_id == plan.request_id and p.attempt >= 1 and
            (p.state != EXECUTING or p.message.startswith('step') or 'gave no' in p.message),
            TIMEOUT, 'the answer of the re-plan')
        return [s.instruction for s in got.steps] if got.message.startswith('step') else []
    trained = [s['instruction'] for s in json.loads(LOOP_REPLAN)['steps']]
    assert replan_after_place_failed() == trained == [PLACE[0], 'close the lid']
    set_ok(test_node, prompt_replan='Again: {instruction} | {done} | {failed}')
    assert replan_after_place_failed() != trained


LOOP_OBSERVERS = {name[len('observe_'):]: value for name, value in globals().items()
                  if name.startswith('observe_')}
