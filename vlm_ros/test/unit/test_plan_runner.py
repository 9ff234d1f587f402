"""PlanRunner alone: the closed-loop decisions, on a hand-driven clock, without ROS.

test_closed_loop.py runs the same contract through real processes; here every branch
(stale feedback, timeouts, unparseable verdicts, answers for preempted plans) is driven
precisely.
"""

from dataclasses import dataclass

import pytest
from vlm_ros.engine.plan_parser import PlanStep
from vlm_ros.engine.results import Result
from vlm_ros.engine.verdict import parse_yes_no
from vlm_ros.node.jobs import Job, Outcome, Status
from vlm_ros.node.plan_execution import not_executable
from vlm_ros.node.plan_runner import Feedback, Outputs, PlanRunner, Settings, State


@dataclass
class Step:
    instruction: str
    skill: str = ''
    target: str = ''


STEPS = [Step('pick up the red block'), Step('place it in the bin'), Step('close the lid')]


class Loop:
    """A runner whose outputs are recorded and whose clock the test sets."""

    def __init__(self, **settings):
        self.settings = Settings(**{'step_timeout': 5.0, 'max_replans': 2, **settings})
        self.now = 0.0
        self.commands, self.progress, self.asks, self.cancels = [], [], [], 0
        self.runner = PlanRunner(
            Outputs(lambda ex: self.commands.append((ex.attempt, ex.index, ex.step.instruction)),
                    lambda ex: self.progress.append((State(ex.state), ex.index, ex.message)),
                    lambda ex, ticket, failed: self.asks.append(('replan', ticket, failed,
                                                                 list(ex.done))),
                    lambda ex, ticket: self.asks.append(('verify', ticket, ex.step.instruction)),
                    self._cancel),
            lambda: self.settings, lambda: self.now)

    def _cancel(self):
        self.cancels += 1

    def report(self, index, status, attempt=0, plan_id='p1', message=''):
        self.runner.feedback(plan_id, index, attempt, int(status), message)

    def states(self):
        return [state for state, _, _ in self.progress]


def test_steps_go_out_in_order_and_the_plan_ends_done():
    loop = Loop()
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    for index in range(3):
        loop.report(index, Feedback.RUNNING)
        loop.report(index, Feedback.SUCCEEDED)
    assert loop.commands == [(0, i, s.instruction) for i, s in enumerate(STEPS)]
    assert loop.states() == [State.EXECUTING] * 3 + [State.DONE]
    assert loop.runner.current is None and loop.runner.finished[State.DONE] == 1


def test_a_failed_step_replans_with_the_steps_done_and_resumes_from_the_new_plan():
    loop = Loop()
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, Feedback.SUCCEEDED)
    loop.report(1, Feedback.FAILED, message='gripper slipped')
    (kind, ticket, failed, done), = loop.asks
    assert (kind, failed, done) == ('replan', 'place it in the bin', ['pick up the red block'])
    assert 'gripper slipped' in loop.progress[-1][2]
    loop.report(1, Feedback.SUCCEEDED)  # while re-planning: nobody's step
    assert loop.runner.feedback_ignored == 1
    loop.runner.replanned(ticket, 'new header', STEPS[1:], '')
    loop.report(0, Feedback.SUCCEEDED, attempt=0)  # the old attempt's index 0: stale
    loop.report(0, Feedback.SUCCEEDED, attempt=1)
    loop.report(1, Feedback.SUCCEEDED, attempt=1)
    assert loop.commands[2:] == [(1, 0, 'place it in the bin'), (1, 1, 'close the lid')]
    assert loop.states()[-1] == State.DONE and loop.runner.feedback_ignored == 2


def test_silence_replans_after_step_timeout_then_fails_after_max_replans():
    loop = Loop(max_replans=1)
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.now = 4.9
    assert loop.runner.tick()  # the step still awaits feedback: keep ticking
    loop.report(0, Feedback.RUNNING)  # alive: the timeout starts again
    loop.now = 9.8
    loop.runner.tick()
    assert not loop.asks
    loop.now = 10.0
    assert not loop.runner.tick()  # waiting for the VLM's re-plan: nothing to time out
    assert loop.asks[0][0] == 'replan' and 'within step_timeout 5 s' in loop.progress[-1][2]
    loop.runner.replanned(loop.asks[0][1], 'h', STEPS, '')
    loop.now = 20.0
    assert not loop.runner.tick()  # the execution has ended
    assert loop.states()[-1] == State.FAILED
    assert 'no re-plan left (max_replans 1)' in loop.progress[-1][2]


def test_a_replan_without_steps_counts_as_an_attempt():
    loop = Loop(max_replans=2)
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, Feedback.FAILED)
    loop.runner.replanned(loop.asks[-1][1], None, [], 'INVALID_OUTPUT: no steps')
    loop.runner.replanned(loop.asks[-1][1], None, [], 'MODEL_ERROR: out of memory')
    assert loop.states()[-1] == State.FAILED and 'out of memory' in loop.progress[-1][2]


@pytest.mark.parametrize('answer, verdict, moves_on', [
    ('Yes.', True, True), ('no, it is still on the table', False, False),
    ('the lid', None, False)])
def test_verify_steps_asks_the_vlm_before_moving_on(answer, verdict, moves_on):
    loop = Loop(verify_steps=True)
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, Feedback.SUCCEEDED)
    kind, ticket, step = loop.asks[-1]
    assert (kind, step) == ('verify', 'pick up the red block')
    assert parse_yes_no(answer) is verdict
    loop.runner.verified(ticket, verdict, answer)
    if moves_on:
        assert loop.commands[-1] == (0, 1, 'place it in the bin')
    else:
        assert loop.asks[-1][0] == 'replan' and answer in loop.progress[-1][2]
        assert ('neither yes nor no' in loop.progress[-1][2]) is (verdict is None)


def test_a_new_plan_preempts_and_answers_for_the_old_one_are_ignored():
    loop = Loop()
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, Feedback.FAILED)
    old_ticket = loop.asks[-1][1]
    loop.runner.start('p2', 'close the lid', 'header', STEPS[2:])
    assert loop.cancels == 1 and loop.states()[-2:] == [State.PREEMPTED, State.EXECUTING]
    loop.runner.replanned(old_ticket, 'h', STEPS, '')
    loop.report(0, Feedback.SUCCEEDED, plan_id='p1')
    assert loop.commands[-1] == (0, 0, 'close the lid') and loop.runner.feedback_ignored == 1
    loop.report(0, Feedback.SUCCEEDED, plan_id='p2')
    assert loop.states()[-1] == State.DONE


def test_a_step_reported_with_an_unknown_status_times_out_naming_it():
    loop = Loop()
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, 99)
    assert loop.runner.feedback_ignored == 1
    loop.now = 5.1
    loop.runner.tick()
    assert loop.progress[-1][2].endswith(
        'within step_timeout 5 s (its head reported status 99, which is none of RUNNING 0, '
        'SUCCEEDED 1, FAILED 2)')
    loop.runner.replanned(loop.asks[0][1], 'h', STEPS, '')
    loop.now = 10.2
    loop.runner.tick()  # the new attempt's step heard nothing at all
    assert loop.progress[-1][2].endswith('within step_timeout 5 s'), loop.progress[-1]


def test_hostile_feedback_is_ignored():
    loop = Loop()
    loop.runner.start('p1', 'put it away', 'header', STEPS)
    loop.report(0, 77)
    loop.report(2**32 - 1, Feedback.SUCCEEDED)
    loop.report(0, Feedback.SUCCEEDED, plan_id='x' * 100000)
    assert loop.runner.feedback_ignored == 3 and loop.commands == [(0, 0, STEPS[0].instruction)]
    loop.report(0, Feedback.FAILED, message='y' * 1_000_000)
    assert len(loop.progress[-1][2]) < 1000  # the reason is bounded


@pytest.mark.parametrize('text, verdict', [
    ('**Yes**', True), ('{"answer": "no"}', False), ('It is not done.', False),
    ('Done!', True), ('It isn\u2019t finished', False), ('', None), ('maybe', None)])
def test_yes_no_is_read_from_what_models_write(text, verdict):
    assert parse_yes_no(text) is verdict


def _answered(form: str, tokens: int, status=None):
    result = Result(task='plan', text='1. pick it', steps=(PlanStep('pick it'),), valid=True,
                    form=form, output_tokens=tokens, time_to_first_token=0.0, total_time=0.0)
    return Outcome(Job('plan', 'tidy up', done=None), status or Status.OK, '', None, result)


@pytest.mark.parametrize('form, tokens, executed', [
    ('constrained', 128, True), ('json', 128, True), ('list', 127, True),
    ('list', 128, False), ('json_truncated', 50, False), ('constrained_closed', 128, False),
    ('json_salvaged', 50, False)])
def test_only_a_whole_plan_is_executed(form, tokens, executed):
    """A cut plan had the robot do part of the task and report it done (plan_execution.py)."""
    why = not_executable(_answered(form, tokens), 128)
    assert (why == '') == executed, why
    assert executed or why.startswith(f'not executed: the plan is not whole (form {form}): ')


def test_a_plan_that_is_not_ok_is_not_executed_and_says_its_status():
    outcome = _answered('json', 10, Status.NO_IMAGE)
    outcome.message = 'no image within wait_for_image 5 s'
    assert not_executable(outcome, 128) == \
        'no plan to execute: NO_IMAGE: no image within wait_for_image 5 s'
