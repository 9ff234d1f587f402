"""vlm_node: the managed ROS 2 node around the engine.

Lifecycle: configure loads the model (or, with backend 'openai', connects a client to its
server), activate creates the topics and timers and starts the worker, deactivate stops taking
work (pending requests are answered CANCELLED), cleanup frees the model, and shutdown (also
what SIGINT and SIGTERM run) answers what is pending and frees everything. The node only
converts messages and schedules: inference runs on worker threads, never in an executor
callback.
"""

import gc
import os
import sys
import threading
import time
from functools import partial

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header, String

from vlm_ros_msgs.msg import Caption, Plan

from ..engine import VlmError, make_engine
from ..spin import spin_main
from . import params
from .diagnostics import DiagnosticsReporter
from .execute_action import ExecutePlanServer
from .frames import FrameStore
from .image_conversion import image_to_rgb
from .image_input import ImageInput
from .messages import caption_msg, plan_msg
from .plan_execution import PlanExecution
from .requests import RequestEndpoints
from .scheduler import Job, Outcome, Status, Worker

# Every instruction is kept until taken: with KEEP_LAST a burst overwrites the oldest ones
# before the callback drains them, and those never get their Plan. With KEEP_ALL, DDS flow
# control slows a sender down instead.
INSTRUCTIONS_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL,
                              reliability=ReliabilityPolicy.RELIABLE)
ANSWER_MARGIN = 600.0  # s a query waits beyond wait_for_image before its job is cancelled
ACK_TIMEOUT = 0.5  # s the last answers may take to be acknowledged before outputs close
DRAIN_TIMEOUT = 1.0  # s queries and goals answered on the way out may take to be sent


class VlmNode(LifecycleNode):
    """Images and instructions in; plans, captions, answers and diagnostics out."""

    def __init__(self, **kwargs):
        super().__init__('vlm_node', **kwargs)
        for spec in params.SPECS:
            self.declare_parameter(spec.name, spec.default, params.descriptor(spec))
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine = None
        self.worker = None
        self.frames = None
        self._outputs = []
        self.images = None
        self._instruction_sub = None
        self.execution = None  # closed-loop plans (execute_plans), from configure to cleanup
        self.configure_error = ''  # why the last configure failed; '' once one succeeds
        self._last_instruction = ''
        self._last_planned_seq = 0
        self._last_captioned_seq = 0
        self._periodic = []  # caption and replan timers (rclpy's Node owns self._timers)
        self._input_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics = DiagnosticsReporter(self)
        self.requests = RequestEndpoints(
            self, lambda: self.worker, self.not_ready,
            lambda: self.p('wait_for_image') + ANSWER_MARGIN, self._fallback_header,
            self.diagnostics.record)
        self.execute_server = ExecutePlanServer(self, self._fallback_header)

    def not_ready(self) -> str:
        """Say why requests cannot be served now, or '' when they can (the worker runs).

        Callers get the lifecycle state and, after a failed configure, its reason: 'not
        active' alone leaves an operator guessing whether to configure, activate or fix a
        parameter.
        """
        if self.worker is not None:
            return ''
        state = self._state_machine.current_state[1]
        reason = f'{self.get_fully_qualified_name()} is {state}'
        if state == 'unconfigured' and self.configure_error:
            reason += f': configure failed: {self.configure_error}'
        return reason

    def p(self, name: str):
        """Return the current value of one of our parameters."""
        return self.get_parameter(name).value

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """Validate, then apply each run-time group (params.APPLIES) to what runs now.

        rclpy stores the new values only after this returns, so the appliers read the changed
        values from ``values`` and the others from the current parameters.
        """
        values = {change.name: change.value for change in changes}
        reason = params.validate_all(values, model_loaded=self.engine is not None)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        try:
            self._apply(values)
        except Exception as exc:  # noqa: BLE001 - refused with the reason; the node lives on
            self.get_logger().error(f'applying {sorted(values)} failed: {exc!r}')
            return SetParametersResult(successful=False, reason=f'cannot apply: {exc!r}')
        return SetParametersResult(successful=True)

    def _apply(self, values: dict) -> None:
        """Apply validated run-time values to the engine, limits, timers or image input."""
        groups = {params.BY_NAME[name].applies for name in values if name in params.BY_NAME}
        current = partial(self._value, values)
        if 'engine' in groups and self.engine is not None:
            self.engine.update(**params.run_time_engine_fields(current))
        if 'limits' in groups and self.worker is not None:
            self.worker.limits = params.limits(current)
        if 'timers' in groups and self.worker is not None:
            self._start_timers(current)
            if 'caption_rate' in values and values['caption_rate'] > 0:
                self._on_caption_due()  # the first caption now, not one period later
        if 'images' in groups and self.images is not None:
            self._subscribe_images(current)

    def _value(self, changes: dict, name: str):
        """Return a parameter's value: the one being set, else the current one."""
        return changes[name] if name in changes else self.p(name)

    def model_name(self) -> str:
        """Return the model answers are attributed to: the loaded one's, else the parameter."""
        return self.engine.model_name if self.engine is not None else self.p('model')

    # Lifecycle transitions -------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the model; on failure log why and stay unconfigured (configure may retry).

        With the openai backend the server need not be up: requests answer
        STATUS_MODEL_ERROR until it is, and /diagnostics shows whether it is reachable.
        """
        # rclpy keeps every value given for this node (command line, params files, launch), also
        # for names it never declares: a misspelt one would otherwise be dropped in silence.
        unknown = params.unknown_parameters(self._parameter_overrides)
        if unknown:
            return self._configure_failed(unknown)
        try:
            engine = make_engine(params.engine_config(self.p))
            self.get_logger().info(f'loading {engine.config.model} ({engine.config.backend} '
                                   'backend)')
            engine.load()
        except VlmError as exc:
            return self._configure_failed(str(exc))
        self.configure_error = ''
        self.engine = engine
        # The model, torch and transformers are millions of long-lived objects: a full garbage
        # collection walked them all (0.2 s on 2 cores), stalling every answer in flight.
        # Frozen, the collector walks only what requests create; cleanup thaws them.
        gc.freeze()
        self.get_logger().info(f'loaded {engine.describe()}')
        # Outputs live from configure to cleanup (as lifecycle publishers do): answers made on
        # deactivate go out through them, and subscribers stay matched across re-activation.
        self._plan_pub = self.create_publisher(Plan, 'plan', self._deep_qos())
        self._caption_pub = self.create_publisher(Caption, 'caption', 10)
        self._vla_pub = self.create_publisher(String, 'vla_instruction', self._deep_qos())
        self.execution = PlanExecution(self, self._deep_qos(), self._vla_pub)
        self._outputs = [self._plan_pub, self._caption_pub, self._vla_pub,
                         *self.execution.publishers()]
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Log why, keep it for /diagnostics and refusals, and stay unconfigured (retryable)."""
        self.get_logger().error(f'configure failed: {reason}')
        self.configure_error = reason
        self.diagnostics.fault('configure', reason)
        return TransitionCallbackReturn.FAILURE

    def _deep_qos(self) -> QoSProfile:
        return QoSProfile(depth=self.p('instruction_qos_depth'),
                          reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Create the subscriptions and timers; start the worker."""
        self.frames = FrameStore()
        self.images = ImageInput(self, self.frames, self._input_group)
        self.worker = Worker(self.engine, self.frames, None, self._now,
                             params.limits(self.p), self.get_logger().error,
                             self.engine.concurrency)
        self.worker.no_image_hint = self.images.hint
        self._instruction_sub = self.create_subscription(
            String, 'instruction', self._on_instruction, INSTRUCTIONS_QOS,
            callback_group=self._input_group)
        self._subscribe_images(self.p)
        self._start_timers(self.p)
        self.execution.activate(self._input_group)
        self.get_logger().info('active')
        return TransitionCallbackReturn.SUCCESS

    def _start_timers(self, value) -> None:
        """(Re)start the caption and replan timers at the rates value() gives (0 = off)."""
        for timer in self._periodic:
            self.destroy_timer(timer)
        self._periodic = []
        if value('caption_rate') > 0:
            self._periodic.append(self.create_timer(1.0 / value('caption_rate'),
                                                    self._on_caption_due))
        if value('replan_period') > 0:
            self._periodic.append(self.create_timer(value('replan_period'),
                                                    self._on_replan_due))

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking work: the running and waiting requests are answered CANCELLED."""
        self._stop_io('node deactivated')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Close the outputs once the last answers are acknowledged; release the model.

        Reliable subscribers acknowledge on the writer's next heartbeat, so the wait is bounded
        (ACK_TIMEOUT): what was published has left the process by then in any case.
        """
        for publisher in self._outputs:
            publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT))
            self.destroy_publisher(publisher)
        self._outputs = []
        self.execution = None
        if self.engine is not None:
            self.engine.unload()
            self.engine = None
            gc.unfreeze()  # the model's reference cycles are collectable again
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Answer what is pending (CANCELLED), then free everything."""
        self._stop_io('node shutting down')
        return self.on_cleanup(state)

    def shutdown_gracefully(self) -> None:
        """Run the shutdown transition on SIGINT/SIGTERM, while the executor still spins.

        spin_main calls this before it stops the executor, so the queries and goals answered
        here still get their responses sent.
        """
        if self._state_machine.current_state[1] in ('unconfigured', 'inactive', 'active'):
            self.trigger_shutdown()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (self.requests.busy() or self.execute_server.busy()) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        # An action result goes out in an executor task scheduled after its execute callback:
        # two round trips through the executor let those tasks run before it stops.
        for _ in range(2):
            through = threading.Event()
            self.executor.create_task(through.set)
            through.wait(max(0.0, deadline - time.monotonic()))

    def destroy_node(self) -> None:
        """Destroy the request endpoints with the node."""
        self.requests.destroy()
        self.execute_server.destroy()
        super().destroy_node()

    def _stop_io(self, reason: str) -> None:
        """Close inputs first (no new work), then answer what is pending: CANCELLED, reason."""
        for timer in self._periodic:
            self.destroy_timer(timer)
        self._periodic = []
        if self.images is not None:
            self.images.close()
            self.images = None
        if self._instruction_sub is not None:
            self.destroy_subscription(self._instruction_sub)
            self._instruction_sub = None
        if self.execution is not None:  # PREEMPTED goes out before the worker is stopped
            self.execution.deactivate(reason)
        if self.worker is not None:
            self.worker.stop(reason)
            self.worker = None

    # Inputs ----------------------------------------------------------------------------

    def _subscribe_images(self, value) -> None:
        """(Re)subscribe to the camera with the transport and reliability value() gives."""
        limit = value('max_image_pixels')
        self.worker.convert = partial(image_to_rgb, copy=True, max_pixels=limit)
        self.images.subscribe(value('image_transport'),
                              value('image_reliability') == 'reliable', limit)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        job = Job('plan', text, done=self._execute_plan)
        if not text:  # refused: it stops nothing the robot is doing
            job.request_id = self.worker.new_request_id()
            self._publish_plan(Outcome(job, Status.BAD_INPUT, 'empty instruction'))
            return
        if self.p('execute_plans'):  # the robot stops the old plan now, not once this is planned
            self.execution.runner.preempt('preempted by a new instruction')
        self._last_instruction = text
        self.worker.submit(job)

    def _on_caption_due(self) -> None:
        frame = self.frames.latest()
        if frame is None or frame.seq == self._last_captioned_seq:
            return
        if not self.worker.idle():
            self.diagnostics.stats.skip_caption()
            return
        self._last_captioned_seq = frame.seq
        self.worker.submit(Job('caption', '', done=self._publish_caption))

    def _on_replan_due(self) -> None:
        frame = self.frames.latest()
        if not self._last_instruction or frame is None or \
                frame.seq == self._last_planned_seq or not self.worker.idle():
            return
        self._last_planned_seq = frame.seq
        self.worker.submit(Job('plan', self._last_instruction, done=self._publish_plan))

    # Outputs (called on the worker thread) ---------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _fallback_header(self) -> Header:
        """Return the header of an answer that used no image: now, no frame."""
        return Header(stamp=self.get_clock().now().to_msg())

    def _execute_plan(self, outcome) -> None:
        """Publish an instruction's Plan; with execute_plans, start executing an OK one."""
        plan = self._publish_plan(outcome)
        execution = self.execution
        if plan.status == Plan.STATUS_OK and plan.steps and execution is not None and \
                self.p('execute_plans'):
            execution.start(plan)

    def _publish_plan(self, outcome) -> Plan:
        plan = plan_msg(outcome, self.model_name(), self._fallback_header())
        self._plan_pub.publish(plan)
        if outcome.status == Status.OK and plan.steps and not self.p('execute_plans'):
            self._vla_pub.publish(String(data=plan.steps[0].instruction))
        self.diagnostics.record(outcome)
        if outcome.status != Status.OK:
            self.get_logger().warning(
                f'plan {plan.request_id}: {outcome.status.name}: {outcome.message}',
                throttle_duration_sec=1.0)
        return plan

    def _publish_caption(self, outcome) -> None:
        self.diagnostics.record(outcome)
        if outcome.status == Status.OK:
            self._caption_pub.publish(caption_msg(outcome, self.model_name()))


def main(args=None) -> None:
    """Console script vlm_node: run the node; with autostart, configure and activate it.

    Exits the process with spin_main's code (0 on SIGINT/SIGTERM) instead of returning.
    """
    def make():
        node = VlmNode()
        if node.p('autostart'):
            node.trigger_configure()
            if node.engine is not None:
                node.trigger_activate()
        return node
    # No callback waits for the model (queries await their answer as coroutines, goals use
    # accepted/execute), so a few threads serve any number of waiting requests.
    code = spin_main(make, args, num_threads=4)
    # Everything is answered, destroyed and shut down by now. What is left is the interpreter's
    # teardown of torch and transformers, over a second of garbage collection that would make
    # the process miss a launch system's SIGINT-to-SIGTERM escalation: skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == '__main__':
    sys.exit(main())
