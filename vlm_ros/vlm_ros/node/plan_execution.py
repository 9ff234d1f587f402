"""The ROS side of closed-loop plans: `step`, `plan_progress`, `step_feedback`, and VLM asks.

With execute_plans, each OK Plan of an instruction is executed by plan_runner.PlanRunner: its
steps go out one at a time as StepCommand on `step` (and as plain text on `vla_instruction`,
for heads that take a string), a VLA action head answers on `step_feedback`, and failures,
silences and unconfirmed successes become re-plan (and verify) requests to the worker, on the
freshest frame. PlanProgress on `plan_progress` tells every change.
"""

import time
from collections.abc import Callable
from functools import partial
from typing import Optional

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from vlm_ros_msgs.msg import PlanProgress, StepArguments, StepCommand, StepFeedback

from ..compat import steady_timer
from ..engine.plan_parser import CLEAN_FORMS
from ..engine.plan_schema import takes_arguments
from ..engine.verdict import parse_yes_no
from .jobs import Job, Outcome, Status
from .messages import step_arguments_msg, step_msgs
from .plan_runner import Execution, Outputs, PlanRunner, State
from .scheduler import Worker, cancel_job
from .settings import Settings

TICK_PERIOD = 0.05  # s between step_timeout checks, while a step awaits feedback
VERDICTS = ('yes', 'no')  # the answers a step check scores, with verify_by likelihood
# Why a plan of each form the model did not write whole is not executed (not_executable).
UNCLEAN = {'json_truncated': 'the answer reached max_new_tokens inside it, so steps may be '
                             'missing; raise max_new_tokens',
           'constrained_closed': 'max_new_tokens ran out and the plan grammar wrote its last '
                                 'tokens, so its last step may hold what the model did not '
                                 'write; raise max_new_tokens',
           'json_salvaged': 'its JSON was malformed, and the steps come from the part that '
                            'parsed',
           'list_truncated': 'the answer reached max_new_tokens, so its last step may be cut; '
                             'raise max_new_tokens'}
FEEDBACK_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


class PlanExecution:
    """Publishers from configure to cleanup; the feedback input and timer while active.

    ``node`` creates the publishers now, and lends the operations that create and destroy the
    feedback input and timer on activate and deactivate. ``settings()`` returns the node's
    current Settings (step_timeout, max_replans, verify_steps, verify_by); re-plan and verify
    requests go to ``worker()`` (None while not active), and their answers are counted by
    ``record``.
    """

    def __init__(self, node, qos: QoSProfile, vla_publisher, settings: Callable[[], Settings],
                 worker: Callable[[], Optional[Worker]], record: Callable[[Outcome], None]):
        self._vla = vla_publisher
        self._settings = settings
        self._worker = worker
        self._record = record
        self.step_pub = node.create_publisher(StepCommand, 'step', qos)
        self.arguments_pub = node.create_publisher(StepArguments, 'step_arguments', qos)
        self.progress_pub = node.create_publisher(PlanProgress, 'plan_progress', qos)
        self._subscribe = partial(node.create_subscription, StepFeedback, 'step_feedback',
                                  self._on_feedback, FEEDBACK_QOS)
        self._tick_timer = partial(steady_timer, node, TICK_PERIOD)
        # A timer reset from another thread is first waited on when the executor next wakes.
        self._wake = lambda: node.executor is not None and node.executor.wake()
        self._destroy_subscription = node.destroy_subscription
        self._destroy_timer = node.destroy_timer
        self._pending = None  # the re-plan or verify Job in flight
        self.runner = PlanRunner(Outputs(self._command, self._progress, self._replan,
                                         self._verify, self._cancel), settings, time.monotonic)
        self._sub = None
        self._timer = None
        self._watchers = {}  # plan_id -> callback(PlanProgress): ~/execute_plan goals

    def activate(self, group) -> None:
        """Take feedback; make the step timeouts' timer, cancelled until a step goes out."""
        self._sub = self._subscribe(callback_group=group)
        self._timer = self._tick_timer(self._tick, group)
        self._timer.cancel()

    def ticking(self) -> bool:
        """Tell whether step timeouts are being watched (a step awaits feedback)."""
        return self._timer is not None and not self._timer.is_canceled()

    def deactivate(self, reason: str) -> None:
        """End the running plan PREEMPTED (published), then stop the input and the timer."""
        # One hold of the lock: a tick in flight then finds no timer to cancel, and a start
        # (an answer that came while deactivating) either ends here or finds no input.
        with self.runner.lock:
            self.runner.preempt(reason)
            if self._sub is not None:
                self._destroy_subscription(self._sub)
                self._destroy_timer(self._timer)
                self._sub = self._timer = None

    def publishers(self) -> list:
        """Return the publishers the node closes at cleanup."""
        return [self.step_pub, self.arguments_pub, self.progress_pub]

    def watch(self, plan_id: str, callback) -> None:
        """Call callback(PlanProgress) on every change of plan_id's execution, to its end."""
        self._watchers[plan_id] = callback

    def preempt(self, plan_id: str, reason: str) -> None:
        """End plan_id's execution PREEMPTED, if it is the one executing."""
        runner = self.runner
        with runner.lock:
            if runner.current is not None and runner.current.plan_id == plan_id:
                runner.preempt(reason)

    def execute(self, plan, outcome) -> None:
        """Execute an answered Plan, or end it at once (cancelled: PREEMPTED) with the reason."""
        why = not_executable(outcome, token_limit(outcome, self._settings()))
        if why:
            state = PlanProgress.STATE_PREEMPTED if outcome.status == Status.CANCELLED \
                else PlanProgress.STATE_FAILED
            self._ended(plan, state, why)
        else:
            self.start(plan, outcome.result.steps)

    def start(self, plan, steps: list) -> None:
        """Execute an OK Plan (vlm_ros_msgs/Plan) of an instruction, unless going down.

        steps: the engine's steps of the Plan, which carry the skills' arguments (the Plan's
        own PlanStep messages have none).
        """
        with self.runner.lock:  # deactivate cannot come between the look and the start
            if self._sub is not None:
                self.runner.start(plan.request_id, plan.instruction, plan.header, list(steps))
                return
        # Answered while deactivating: nobody would report on it.
        self._ended(plan, PlanProgress.STATE_PREEMPTED,
                    'the node stopped before it could execute')

    def _ended(self, plan, state: int, message: str) -> None:
        """Say that plan's execution ended before its first step: state, and why (counted)."""
        with self.runner.lock:
            self.runner.finished[State(state)] += 1
        self._report(PlanProgress(header=plan.header, plan_id=plan.request_id,
                                  instruction=plan.instruction, state=state,
                                  message=message))

    def values(self) -> dict:
        """Diagnostics: the plan executing, and what the runner counted."""
        runner = self.runner
        current = runner.current
        return {'plan_executing': current.plan_id if current else '',
                # Who takes the steps: 0 while a plan executes means no head listens.
                'step_subscribers': self.step_pub.get_subscription_count(),
                'plan_replans': runner.replans,
                'plan_feedback_ignored': runner.feedback_ignored,
                **{f'plans_{state.name.lower()}': count
                   for state, count in runner.finished.items()}}

    def _tick(self) -> None:
        """Check the step's timeout; stop ticking once no step awaits feedback.

        An idle node would otherwise wake its executor TICK_PERIOD after TICK_PERIOD (a few
        percent of a core on a robot's CPU, for nothing).
        """
        with self.runner.lock:  # _command's reset cannot come between the look and the cancel
            if not self.runner.tick() and self._timer is not None:
                self._timer.cancel()

    # Runner outputs --------------------------------------------------------------------

    def _command(self, ex: Execution) -> None:
        if self._timer is not None and self._timer.is_canceled():
            self._timer.reset()
            self._wake()
        step = ex.step
        if takes_arguments(self._settings().skills):
            self.arguments_pub.publish(step_arguments_msg(ex.header, ex.plan_id, ex.index,
                                                          ex.attempt, step))
        self.step_pub.publish(StepCommand(
            header=ex.header, plan_id=ex.plan_id, index=ex.index, count=len(ex.steps),
            instruction=step.instruction, skill=step.skill, target=step.target,
            attempt=ex.attempt))
        self._vla.publish(String(data=step.instruction))

    def _progress(self, ex: Execution) -> None:
        progress = PlanProgress(
            header=ex.header, plan_id=ex.plan_id, instruction=ex.instruction,
            state=int(ex.state), index=ex.index,
            steps=step_msgs(ex.steps),
            done=list(ex.done), attempt=ex.attempt, message=ex.message)
        self._report(progress)

    def _report(self, progress: PlanProgress) -> None:
        """Publish progress, and tell its plan's watcher (to its end)."""
        self.progress_pub.publish(progress)
        watcher = self._watchers.get(progress.plan_id)
        if watcher is not None:
            if progress.state != PlanProgress.STATE_EXECUTING:
                del self._watchers[progress.plan_id]
            watcher(progress)

    def _submit(self, job: Job) -> None:
        self._pending = job
        worker = self._worker()
        if worker is None:
            job.done(Outcome(job, Status.CANCELLED, 'node is not active'))
        else:
            worker.submit(job)

    def _replan(self, ex: Execution, ticket: int, failed: str) -> None:
        context = {'done': '; '.join(ex.done) or 'none', 'failed': failed}

        def answered(outcome):
            self._record(outcome)
            problem = not_executable(outcome, token_limit(outcome, self._settings()))
            steps = [] if problem else outcome.result.steps
            self.runner.replanned(ticket, outcome.header or ex.header, steps, problem)
        self._submit(Job('replan', ex.instruction, done=answered, context=context))

    def _verify(self, ex: Execution, ticket: int) -> None:
        by_likelihood = self._settings().verify_by == 'likelihood'

        def answered(outcome):
            self._record(outcome)
            if outcome.status != Status.OK:
                verdict, text = None, ''
            elif by_likelihood:
                verdict, text = _likelier(outcome.scores)
            else:
                text = outcome.result.text
                verdict = parse_yes_no(text)
            self.runner.verified(ticket, verdict, text or f'{outcome.status.name}: '
                                 f'{outcome.message}')
        self._submit(Job('verify', ex.step.instruction, done=answered,
                         candidates=VERDICTS if by_likelihood else ()))

    def _cancel(self) -> None:
        job, self._pending = self._pending, None
        if job is not None:
            cancel_job(self._worker(), job, 'its plan was preempted')

    def _on_feedback(self, msg: StepFeedback) -> None:
        self.runner.feedback(msg.plan_id, msg.index, msg.attempt, msg.status, msg.message)


def token_limit(outcome, settings: Settings) -> int:
    """Return the max_new_tokens outcome's request had: its own, else the node's."""
    return outcome.job.max_new_tokens or settings.max_new_tokens


def not_executable(outcome, limit: int) -> str:
    """Say why an answered (re-)plan is not to be executed ('' when it is).

    Only an OK plan the model wrote whole (a CLEAN_FORMS form) is executed: a cut one
    (json_truncated, or constrained_closed, whose last step the grammar may have written) had
    the robot run part of the task and report it DONE, and a salvaged one's steps come from
    broken JSON; a list that reached ``limit`` (the request's max_new_tokens) may end in a cut
    step. The instruction's plan_progress then ends at once, with the reason.
    """
    if outcome.status != Status.OK:
        return f'no plan to execute: {Status(outcome.status).name}' + (
            f': {outcome.message}' if outcome.message else '')
    result = outcome.result
    if not result.steps:  # the Plan's steps are these
        return 'no plan to execute: the answer has no steps'
    form = 'list_truncated' if result.form == 'list' and result.output_tokens >= limit > 0 \
        else result.form
    if form in CLEAN_FORMS:
        return ''
    why = UNCLEAN.get(form, 'it is not a plan the model wrote whole')
    return f'not executed: the plan is not whole (form {result.form}): {why}'


def _likelier(scores: list) -> tuple:
    """Return (verdict, what to report) from the scores of VERDICTS: the likelier one wins."""
    yes, no = (-score.ce * score.tokens for score in scores)
    verdict = yes > no
    return verdict, (f"{'yes' if verdict else 'no'} (log-probability of yes {yes:.2f}, "
                     f'of no {no:.2f})')
