"""The node's topics: instructions in; plans (and companions), captions, vla_instruction out.

Each instruction becomes a plan request for the worker; its Plan goes out on `plan`, and its
first step on `vla_instruction` (or, with execute_plans, the whole plan to PlanExecution).
Timers caption the latest frame (caption_rate), take the features of the last instruction on
fresh frames (features_rate) and re-plan it (replan_period), skipped while the worker is busy.
A timer's caption or re-plan yields to any request that comes before it is done (Job.yields):
an instruction, a step's re-plan or a query never waits for one.
"""

from collections.abc import Callable
from functools import partial
from typing import Optional

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from vlm_ros_msgs.msg import Caption, Plan

from .companions import companion_messages, companion_publishers
from .frames import FrameStore
from .jobs import Job, Outcome, Status
from .messages import caption_msg, plan_msg
from .plan_execution import PlanExecution
from .requests import Serving
from .settings import Settings
from .stats import Stats

# Every instruction is kept until taken: with KEEP_LAST a burst overwrites the oldest ones
# before the callback drains them, and those never get their Plan. With KEEP_ALL, DDS flow
# control slows a sender down instead.
INSTRUCTIONS_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL,
                              reliability=ReliabilityPolicy.RELIABLE)


def deep_qos(depth: int) -> QoSProfile:
    """Return the QoS of the plan, vla_instruction, step and plan_progress publishers."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      history=HistoryPolicy.KEEP_LAST)


class Topics:
    """Publishers from configure to cleanup; the instruction input and the timers while active.

    ``node`` lends the operations that create and destroy them; the node itself is not kept.
    Requests go to ``serving.worker()``; ``settings()`` is the node's current Settings,
    ``frames()`` its first camera's FrameStore and ``execution()`` its PlanExecution (None
    while it has none); ``captions`` (stats.Stats) counts the captions skipped while busy and
    those that yielded to a request.
    """

    def __init__(self, node, serving: Serving, settings: Callable[[], Settings],
                 frames: Callable[[], Optional[FrameStore]],
                 execution: Callable[[], Optional[PlanExecution]],
                 captions: Stats):
        self._serving, self._settings, self._frames = serving, settings, frames
        self._execution, self._captions = execution, captions
        self._create_publisher = node.create_publisher
        self._subscribe = partial(node.create_subscription, String, 'instruction',
                                  self._on_instruction, INSTRUCTIONS_QOS)
        self._create_timer = node.create_timer
        self._destroy_subscription = node.destroy_subscription
        self._destroy_timer = node.destroy_timer
        self._logger = node.get_logger()
        self._plan_pub = self._caption_pub = self.vla_pub = None
        self._companion_pubs = {}  # what goes out before a Plan or answer, while open
        self._detection_types = None  # vision_msgs.msg while open, where it is installed
        self._sub = None
        self._periodic = []  # caption, features and replan timers
        self._last_instruction = ''
        self._last_planned_seq = self._last_captioned_seq = self._last_featured_seq = 0

    def open(self, qos: QoSProfile) -> list:
        """Create the publishers (configure); return them, for the node to close at cleanup."""
        self._plan_pub = self._create_publisher(Plan, 'plan', qos)
        self._companion_pubs, self._detection_types = companion_publishers(
            self._create_publisher, qos, self._logger)
        self._caption_pub = self._create_publisher(Caption, 'caption', 10)
        self.vla_pub = self._create_publisher(String, 'vla_instruction', qos)
        return [self._plan_pub, *self._companion_pubs.values(), self._caption_pub,
                self.vla_pub]

    def close(self) -> None:
        """Forget the publishers (cleanup destroys them): an action's late plan sends none."""
        self._companion_pubs = {}

    def subscribers(self) -> dict:
        """Say how many subscriptions the plan publisher matched (while open): who gets plans."""
        return {'plan_subscribers': self._plan_pub.get_subscription_count()} \
            if self._companion_pubs else {}  # none from cleanup, which destroys the publishers

    def publish_companions(self, outcome, plan: Optional[Plan] = None) -> None:
        """Publish what goes out just before an answer (nothing once cleaned up).

        The messages are companions.py's. A goal's result or a query's response may be sent
        while cleanup destroys the publishers: the answer matters, its companions are then
        left out.
        """
        messages = companion_messages(outcome, plan, self._settings(), self._serving.points,
                                      self._detection_types)
        for kind, message in messages.items():
            publisher = self._companion_pubs.get(kind)
            if publisher is None:
                continue
            try:
                made = message()
                if made is not None:
                    publisher.publish(made)
            except Exception as exc:  # noqa: BLE001 - destroyed under us; the answer still goes
                self._logger.warning(f'{outcome.job.task} {outcome.job.request_id}: no {kind} '
                                     f'published: {exc!r}', throttle_duration_sec=1.0)

    def activate(self, group) -> None:
        """Take instructions (in group) and start the timers."""
        self._sub = self._subscribe(callback_group=group)
        self.start_timers(self._settings())

    def start_timers(self, settings: Settings) -> None:
        """(Re)start the caption, features and replan timers at the settings' rates (0 = off)."""
        self._stop_timers()
        if settings.caption_rate > 0:
            self._periodic.append(self._create_timer(1.0 / settings.caption_rate,
                                                     self.caption_due))
        if settings.features_rate > 0:
            self._periodic.append(self._create_timer(1.0 / settings.features_rate,
                                                     self._on_features_due))
        if settings.replan_period > 0:
            self._periodic.append(self._create_timer(settings.replan_period,
                                                     self._on_replan_due))

    def deactivate(self) -> None:
        """Stop the timers and the instruction input (no new work)."""
        self._stop_timers()
        if self._sub is not None:
            self._destroy_subscription(self._sub)
            self._sub = None

    def _stop_timers(self) -> None:
        for timer in self._periodic:
            self._destroy_timer(timer)
        self._periodic = []

    # Inputs ----------------------------------------------------------------------------

    def _on_instruction(self, msg: String) -> None:
        worker = self._serving.worker()
        if worker is None:  # deactivated since this message was taken
            return
        text = msg.data.strip()
        job = Job('plan', text, done=self._execute_plan)
        if not text:  # refused: it stops nothing the robot is doing
            job.request_id = worker.new_request_id()
            self._publish_plan(Outcome(job, Status.BAD_INPUT, 'empty instruction'))
            return
        execution = self._execution()
        if self._settings().execute_plans and execution is not None:
            # The robot stops the old plan now, not once this one is planned.
            execution.runner.preempt('preempted by a new instruction')
        # A refused or dropped instruction leaves none to re-plan or take features of: the
        # robot was told something new, and the old plan was preempted.
        self._last_instruction = text if worker.submit(job) else ''

    def caption_due(self) -> None:
        """Caption the latest frame, unless it was captioned or the worker is busy (skipped).

        The caption yields: a request that comes before it is done cancels it (no Caption is
        published), so instructions, re-plans and queries never wait for a periodic caption.
        """
        frame, worker = self._frames().latest(), self._serving.worker()
        if frame is None or frame.seq == self._last_captioned_seq or worker is None:
            return
        if not worker.idle():
            self._captions.skip_caption(frame.seq)
            return
        self._last_captioned_seq = frame.seq
        worker.submit(Job('caption', '', done=self._publish_caption, yields=True))

    def _fresh(self, last_seq: int):
        """Return (worker, frame seq) when the replan and features timers act, else None.

        They act where the last instruction has a frame newer than last_seq, and the worker
        is idle.
        """
        frame, worker = self._frames().latest(), self._serving.worker()
        if not self._last_instruction or frame is None or worker is None or \
                frame.seq == last_seq or not worker.idle():
            return None
        return worker, frame.seq

    def _on_replan_due(self) -> None:
        due = self._fresh(self._last_planned_seq)
        if due:
            worker, self._last_planned_seq = due
            worker.submit(Job('plan', self._last_instruction, done=self._publish_plan,
                              waits=False, yields=True))

    def _on_features_due(self) -> None:
        due = self._fresh(self._last_featured_seq)
        if due:
            worker, self._last_featured_seq = due
            worker.submit(Job('plan', self._last_instruction, done=self._publish_features,
                              max_new_tokens=1, features_only=True, waits=False))

    # Outputs (called on the worker thread) ---------------------------------------------

    def _publish_features(self, outcome) -> None:
        """Publish the features of a features_rate job, or why there are none (problem)."""
        self._serving.record(outcome)
        publisher = self._companion_pubs.get('features')
        if publisher is not None:
            publisher.publish(self._serving.features(outcome))

    def _execute_plan(self, outcome) -> None:
        """Publish an instruction's Plan; with execute_plans, execute it or say why not."""
        plan = self._publish_plan(outcome)
        execution = self._execution()
        if execution is not None and self._settings().execute_plans:
            execution.execute(plan, outcome)

    def _publish_plan(self, outcome) -> Plan:
        plan = plan_msg(outcome, self._serving.model_name(), self._serving.header())
        self.publish_companions(outcome, plan)
        self._plan_pub.publish(plan)
        if outcome.status == Status.OK and plan.steps and not self._settings().execute_plans:
            self.vla_pub.publish(String(data=plan.steps[0].instruction))
        self._serving.record(outcome)
        if outcome.status != Status.OK and not outcome.yielded:  # that one is expected
            self._logger.warning(
                f'plan {plan.request_id}: {outcome.status.name}: {outcome.message}',
                throttle_duration_sec=1.0)
        return plan

    def _publish_caption(self, outcome) -> None:
        self._serving.record(outcome)
        if outcome.yielded:
            self._captions.yield_caption()
        if outcome.status == Status.OK:
            self.publish_companions(outcome)
            self._caption_pub.publish(caption_msg(outcome, self._serving.model_name()))
