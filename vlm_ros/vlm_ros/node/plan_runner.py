"""Closed-loop execution of plans by a VLA action head: steps out, feedback in, re-plans.

The SayCan / Inner Monologue pattern without ROS: the node hands the runner each OK Plan of
an instruction, the head's StepFeedback, a clock tick, and the answers of the re-plan and
verify requests it made; the runner decides what to command and when to re-plan, through the
callbacks in ``Outputs``. One plan executes at a time; a new one preempts it.

Everything is called from executor callbacks and worker threads alike, under one lock. Answers
that arrive for an execution that has ended (a re-plan made while a new instruction preempted
it) are recognised by their ticket and ignored.
"""

import enum
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional


class State(enum.IntEnum):
    """The execution's state; the values are vlm_ros_msgs/PlanProgress's STATE_*."""

    EXECUTING = 0
    DONE = 1
    FAILED = 2
    PREEMPTED = 3


class Feedback(enum.IntEnum):
    """A head's report; the values are vlm_ros_msgs/StepFeedback's STATUS_*."""

    RUNNING = 0
    SUCCEEDED = 1
    FAILED = 2


MAX_REASON_CHARS = 500  # of a head's failure message: anyone on the DDS domain can send one
_FEEDBACK = frozenset(int(status) for status in Feedback)


@dataclass
class Settings:
    """The run-time parameters the runner reads at every decision.

    The node hands the runner its settings.Settings, which has these fields among its others.
    """

    step_timeout: float = 30.0  # s without SUCCEEDED/FAILED (or RUNNING) before a re-plan
    max_replans: int = 2
    verify_steps: bool = False


@dataclass
class Execution:
    """One instruction's plan being executed; steps are engine PlanSteps (or alike)."""

    plan_id: str
    instruction: str
    header: object
    steps: list
    index: int = 0
    attempt: int = 0
    done: list = field(default_factory=list)  # instructions of the steps that succeeded
    state: State = State.EXECUTING
    deadline: Optional[float] = None  # None while waiting for the VLM (re-plan or verify)
    ticket: int = 0  # which re-plan or verify answer is awaited
    message: str = ''
    # The last status the head reported for this step that is none of Feedback's: ignored,
    # and named if the step then times out (the head and the node disagree on the message).
    unknown_status: Optional[int] = None

    @property
    def step(self):
        """The step being executed."""
        return self.steps[self.index]


@dataclass
class Outputs:
    """What the runner does to the world (the node's publishers and worker)."""

    command: Callable[[Execution], None]  # publish StepCommand (+ vla_instruction) of .step
    progress: Callable[[Execution], None]  # publish PlanProgress
    replan: Callable[[Execution, int, str], None]  # ask the VLM: (execution, ticket, failed)
    verify: Callable[[Execution, int], None]  # ask the VLM whether .step is done: (ex, ticket)
    cancel: Callable[[], None]  # cancel the re-plan or verify request in flight, if any


class PlanRunner:
    """Executes one plan at a time; counts what it ignored for /diagnostics."""

    def __init__(self, outputs: Outputs, settings: Callable[[], Settings],
                 now: Callable[[], float]):
        self._out = outputs
        self._settings = settings
        self._now = now
        self.lock = threading.RLock()  # callers may hold it to act on .current atomically
        self._tickets = itertools.count(1)
        self.current: Optional[Execution] = None
        self.feedback_ignored = 0
        self.replans = 0
        self.finished = {state: 0 for state in (State.DONE, State.FAILED, State.PREEMPTED)}

    def start(self, plan_id: str, instruction: str, header, steps: list) -> None:
        """Execute a new plan from its first step, preempting the one running."""
        with self.lock:
            self.preempt('preempted by a new instruction')
            self.current = Execution(plan_id, instruction, header, list(steps))
            self._command()

    def preempt(self, reason: str) -> None:
        """End the running execution PREEMPTED (a new instruction, deactivate, shutdown)."""
        with self.lock:
            if self.current is not None:
                self._end(State.PREEMPTED, reason)  # first: the cancelled answer is then stale
                self._out.cancel()

    def feedback(self, plan_id: str, index: int, attempt: int, status: int,
                 message: str) -> None:
        """Take a head's report on the current step; anything else is counted and ignored."""
        with self.lock:
            ex = self.current
            ours = ex is not None and ex.deadline is not None and \
                (plan_id, index, attempt) == (ex.plan_id, ex.index, ex.attempt)
            if not ours or status not in _FEEDBACK:
                if ours:
                    ex.unknown_status = status
                self.feedback_ignored += 1
                return
            if status == Feedback.RUNNING:
                ex.deadline = self._now() + self._settings().step_timeout
            elif status == Feedback.FAILED:
                self._replan(f'step {ex.index + 1} ({ex.step.instruction!r}) failed'
                             + (f': {message[:MAX_REASON_CHARS]}' if message else ''))
            elif self._settings().verify_steps:
                ex.deadline, ex.ticket = None, next(self._tickets)
                self._out.verify(ex, ex.ticket)
            else:
                self._next_step()

    def verified(self, ticket: int, verdict: Optional[bool], answer: str) -> None:
        """Take the VLM's yes/no on a reported success: yes moves on, anything else re-plans."""
        with self.lock:
            ex = self._awaiting(ticket)
            if ex is None:
                return
            if verdict:
                self._next_step()
                return
            why = f'the VLM answered {answer[:200]!r}' if verdict is not None else \
                f'the VLM answer {answer[:200]!r} is neither yes nor no: not verified'
            self._replan(f'step {ex.index + 1} ({ex.step.instruction!r}) was reported done, '
                         f'but {why}')

    def replanned(self, ticket: int, header, steps: list, problem: str) -> None:
        """Take a re-plan's answer: its steps replace the plan's rest, or why it has none."""
        with self.lock:
            ex = self._awaiting(ticket)
            if ex is None:
                return
            if problem or not steps:
                self._replan(f're-plan {ex.attempt}: {problem or "no steps"}')
                return
            ex.header, ex.steps, ex.index = header, list(steps), 0
            self._command()

    def tick(self) -> bool:
        """Re-plan when the head has said nothing about the current step within step_timeout.

        Return whether a step still awaits feedback: only then does the clock need to tick.
        """
        with self.lock:
            ex = self.current
            if ex is not None and ex.deadline is not None and self._now() > ex.deadline:
                timeout = self._settings().step_timeout
                unknown = '' if ex.unknown_status is None else (
                    f' (its head reported status {ex.unknown_status}, which is none of '
                    f'{", ".join(f"{status.name} {status.value}" for status in Feedback)})')
                self._replan(f'no feedback on step {ex.index + 1} ({ex.step.instruction!r}) '
                             f'within step_timeout {timeout:g} s{unknown}')
            return self.current is not None and self.current.deadline is not None

    # Internals, called locked ----------------------------------------------------------

    def _awaiting(self, ticket: int) -> Optional[Execution]:
        ex = self.current
        return ex if ex is not None and ex.deadline is None and ex.ticket == ticket else None

    def _command(self) -> None:
        ex = self.current
        ex.deadline = self._now() + self._settings().step_timeout
        ex.unknown_status = None
        ex.message = f'step {ex.index + 1} of {len(ex.steps)}: {ex.step.instruction}'
        self._out.command(ex)
        self._out.progress(ex)

    def _next_step(self) -> None:
        ex = self.current
        ex.done.append(ex.step.instruction)
        if ex.index + 1 < len(ex.steps):
            ex.index += 1
            self._command()
        else:
            self._end(State.DONE, f'all {len(ex.done)} steps done')

    def _replan(self, reason: str) -> None:
        ex = self.current
        limit = self._settings().max_replans
        if ex.attempt >= limit:
            self._end(State.FAILED, f'{reason}; no re-plan left (max_replans {limit})')
            return
        ex.attempt += 1
        self.replans += 1
        ex.deadline, ex.ticket = None, next(self._tickets)
        ex.message = f're-plan {ex.attempt} of {limit}: {reason}'
        self._out.progress(ex)
        self._out.replan(ex, ex.ticket, ex.step.instruction)

    def _end(self, state: State, message: str) -> None:
        ex = self.current
        ex.state, ex.message, ex.deadline = state, message, None
        self.current = None
        self.finished[state] += 1
        self._out.progress(ex)
