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
from functools import partial

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from std_msgs.msg import Header

from ..compat import ForgetsDestroyed, steady_timer
from ..engine import VlmError, make_engine
from ..spin import ros_arguments_only, spin_main
from . import parameter_changes, params, readiness, shutdown
from .diagnostics import DiagnosticsReporter, Sources
from .execute_action import ExecutePlanServer
from .features_msg import features_msg
from .frames import FrameSet
from .image_conversion import image_to_rgb
from .image_input import CameraInputs
from .loading import LoadStoppedError, load_unless_stopped
from .plan_execution import PlanExecution
from .requests import RequestEndpoints, Serving
from .scheduler import Worker
from .settings import Settings
from .topics import Topics, deep_qos

USAGE = """
Every setting is a ROS parameter (docs/PARAMETERS.md; on a running node, `ros2 param describe
/vlm_node NAME`):

    vlm_node --ros-args -p model:=DIR -p device:=cuda
    vlm_node --ros-args --params-file config/vlm_gpu.yaml
    ros2 launch vlm_ros vlm.launch.py model:=DIR
"""
ANSWER_MARGIN = 600.0  # s a query waits beyond wait_for_image before its job is cancelled


def _loaded_engine(settings: Settings, logger, stop: threading.Event):
    """Load the settings' model; VlmError why not, also where it cannot take every camera.

    None when stop is set meanwhile (loading.py): the load is left to the process's exit.
    """
    without_effect = settings.without_effect()
    if without_effect:
        logger.warning(f'no effect: {"; ".join(without_effect)}')
    engine = make_engine(settings.engine_config())
    config = engine.config
    remote = config.backend == 'openai' and config.remote.model
    logger.info(f'loading {remote or config.model} ({config.backend} backend)')
    try:
        load_unless_stopped(engine.load, stop)
    except LoadStoppedError as exc:
        logger.info(f'configure stopped: {exc}')
        return None
    if len(settings.cameras) > 1:  # never one camera dropped from the prompt
        try:
            engine.check_cameras(settings.cameras)
        except VlmError as exc:
            engine.unload()
            raise VlmError(exc.kind, f'cameras {", ".join(settings.cameras)}: {exc}') from exc
    return engine


class VlmNode(ForgetsDestroyed, LifecycleNode):
    """Images and instructions in; plans, captions, answers and diagnostics out."""

    def __init__(self, **kwargs):
        super().__init__('vlm_node', **kwargs)
        self.done, self.code = threading.Event(), 0  # set once shut down: spin_main exits 0
        # A launch value ROS or params.validate refuses fails configure until a change fixes it
        refused = parameter_changes.declare_all(self.declare_parameter, self._parameter_overrides)
        for spec in params.SPECS:
            if self.get_parameter_or(spec.name).value is None:  # an array nobody gave
                self.set_parameters([params.default_parameter(spec)])
        self.settings, self._refused = parameter_changes.launch_settings(
            {spec.name: params.typed(spec.name, self.get_parameter(spec.name).value)
             for spec in params.SPECS}, refused)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.engine, self.worker, self.frames = None, None, None
        self._outputs = []
        self.images = None
        self.execution = None  # closed-loop plans (execute_plans), from configure to cleanup
        self.configure_error = ''  # why the last configure failed; '' once one succeeds
        self._frozen_objects = 0  # gc.freeze()'s count while the model is loaded
        self._input_group = MutuallyExclusiveCallbackGroup()
        # The parts get what they need, each read once when needed; none keeps the node.
        self.diagnostics = DiagnosticsReporter(self, Sources(
            lambda: self.settings, lambda: self._state_machine.current_state[1],
            lambda: self.configure_error, self.model_name, lambda: self.engine,
            lambda: self.worker, lambda: self.frames,
            lambda: images.hint() if (images := self.images) else '', lambda: self.execution,
            lambda: self._frozen_objects, lambda: self.topics.subscribers()))
        serving = Serving(lambda: self.worker, self.not_ready, self.diagnostics.record,
                          self.model_name, self._fallback_header,
                          lambda outcome, plan: self.topics.publish_companions(outcome, plan),
                          lambda outcome, placed: images.target_points(
                              outcome, placed, self.settings) if (images := self.images) else [],
                          lambda outcome: features_msg(outcome, outcome.header or Header(), '',
                                                       self.settings, self.model_name()))
        self.requests = RequestEndpoints(
            self, serving, lambda: self.settings.wait_for_image + ANSWER_MARGIN,
            lambda: self.executor)
        self.execute_server = ExecutePlanServer(self, serving, lambda: self.execution)
        self.topics = Topics(self, serving, lambda: self.settings, lambda: self.frames.primary,
                             lambda: self.execution, self.diagnostics.stats)

    def not_ready(self) -> str:
        """Say why requests cannot be served now, or '' when they can (readiness.not_ready)."""
        return readiness.not_ready(self.worker is not None, self.get_fully_qualified_name(),
                                   self._state_machine.current_state[1], self.configure_error)

    def _on_set_parameters(self, changes) -> SetParametersResult:
        """Keep the Settings parameter_changes.accept returns: the new one, or else the old."""
        result, self.settings = parameter_changes.accept(
            self.settings, changes, self._refused, self.engine is not None, self._apply,
            self.get_logger())
        if not result.successful:
            parameter_changes.keep_types(changes, self.describe_parameter, self.get_parameter)
        return result

    def _apply(self, settings: Settings, values: dict) -> None:
        """Apply a change to the parts that exist now (parameter_changes.apply)."""
        parameter_changes.apply(settings, values, self.engine, self.worker, self.topics,
                                self._subscribe_images if self.images is not None else None)

    def model_name(self) -> str:
        """Return the model answers are attributed to: the loaded one's, else the setting."""
        return self.engine.model_name if self.engine is not None else self.settings.model

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
        if self._refused:
            return self._configure_failed('; '.join(self._refused.values()))
        try:
            engine = _loaded_engine(self.settings, self.get_logger(), self.done)
        except VlmError as exc:
            return self._configure_failed(str(exc))
        if engine is None:  # a signal stopped the load: the node ends, nothing failed
            return TransitionCallbackReturn.FAILURE
        self.configure_error, self.engine = '', engine
        self.diagnostics.health.healthy()  # what failed before, a configure included, is history
        # The model, torch and transformers are millions of long-lived objects: a full garbage
        # collection walked them all (0.2 s on 2 cores), stalling every answer in flight.
        # Frozen, the collector walks only what requests create; cleanup thaws them.
        gc.freeze()
        self._frozen_objects = gc.get_freeze_count()
        self.get_logger().info(f'loaded {engine.describe()}')
        # Outputs live from configure to cleanup (as lifecycle publishers do): answers made on
        # deactivate go out through them, and subscribers stay matched across re-activation.
        qos = deep_qos(self.settings.instruction_qos_depth)
        self._outputs = self.topics.open(qos)
        self.execution = PlanExecution(self, qos, self.topics.vla_pub, lambda: self.settings,
                                       lambda: self.worker, self.diagnostics.record)
        self._outputs += self.execution.publishers()
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Log why, keep it for /diagnostics and refusals, and stay unconfigured (retryable)."""
        self.get_logger().error(f'configure failed: {reason}')
        self.configure_error = reason
        self.diagnostics.fault('configure', reason)
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Create the subscriptions and timers; start the worker."""
        self.frames = FrameSet(self.settings.cameras)
        self.images = CameraInputs(self, self.frames, self._input_group)
        self.worker = Worker(self.engine, self.frames, None, self._now,
                             self.settings.limits(), self.get_logger().error,
                             self.engine.concurrency)
        self.worker.no_image_hint = self.images.hint
        self._subscribe_images(self.settings)
        self.topics.activate(self._input_group)
        self.execution.activate(self._input_group)
        self.get_logger().info('active')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking work: the running and waiting requests are answered CANCELLED."""
        self._stop_io('node deactivated')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Close the outputs once the last answers are acknowledged (bounded); free the model."""
        self.execution = None  # first: /diagnostics reads its publishers, destroyed next
        self.topics.close()
        shutdown.close_outputs(self._outputs, self.destroy_publisher)
        self._outputs = []
        if self.engine is not None:
            self.engine.unload()
            self.engine = None
            gc.unfreeze()  # the model's reference cycles are collectable again
            self._frozen_objects = 0
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Answer what is pending (CANCELLED), free everything, then end the process."""
        self._stop_io('node shutting down')
        result = self.on_cleanup(state)
        shutdown.end_when_drained(self.done, self._answering, self.executor.tasks_done)
        return result

    def shutdown_gracefully(self) -> None:
        """Run the shutdown transition on SIGINT/SIGTERM, while the executor still spins.

        spin_main calls this before it stops the executor (its TrackingExecutor), so the
        queries and goals answered here still get their responses sent.
        """
        self.done.set()  # spin_main no longer looks: on_shutdown leaves the end to it
        sent = shutdown.shutdown_gracefully(self._state_machine.current_state[1],
                                            self.trigger_shutdown, self._answering,
                                            self.executor.tasks_done)
        if sent is not None:  # what a client missing its answer needs to know
            self.get_logger().info(f'shutdown: the requests pending were answered, the last '
                                   f'sent {sent:.2f} s after the transition')

    def _answering(self) -> bool:
        return self.requests.busy() or self.execute_server.busy()

    def destroy_node(self) -> None:
        """Destroy the request endpoints with the node (those made: __init__ may have raised)."""
        for part in ('requests', 'execute_server'):
            if hasattr(self, part):
                getattr(self, part).destroy()
        super().destroy_node()

    def _stop_io(self, reason: str) -> None:
        """Close inputs first (no new work), then answer what is pending: CANCELLED, reason."""
        self.topics.deactivate()
        if self.images is not None:
            self.images.close()
            self.images = None
        if self.execution is not None:  # PREEMPTED goes out before the worker is stopped
            self.execution.deactivate(reason)
        if self.worker is not None:
            self.worker.stop(reason)
            self.worker = None

    def _subscribe_images(self, settings: Settings) -> None:
        """(Re)subscribe to the camera with the settings' transport and reliability."""
        limit = settings.max_image_pixels
        self.worker.convert = partial(image_to_rgb, copy=True, max_pixels=limit)
        self.images.subscribe(settings.image_transport,
                              settings.image_reliability == 'reliable', limit, settings.use_depth)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _fallback_header(self) -> Header:
        """Return the header of an answer that used no image: now, no frame."""
        return Header(stamp=self.get_clock().now().to_msg())


def start_when_spinning(node: VlmNode) -> None:
    """Configure and activate node once its executor spins (autostart), from a one-shot timer.

    Not before: a start-up download takes minutes, in which /diagnostics said nothing, the
    lifecycle services did not answer and a signal went unheard until the node was active. A
    signal meanwhile ends the process at once, without activating: configure stops waiting for
    the load (loading.py).
    """
    def start() -> None:
        timer.cancel()
        node.trigger_configure()
        if node.engine is not None and not node.done.is_set():
            node.trigger_activate()
    timer = steady_timer(node, 0.0, start)


def main(args=None) -> None:
    """Console script vlm_node: run the node; with autostart, configure and activate it.

    Exits the process with spin_main's code (0 on SIGINT/SIGTERM) instead of returning.
    """
    refused = ros_arguments_only(__doc__ + USAGE, params.BY_NAME, args)
    if refused is not None:
        sys.exit(refused)

    def make():
        node = VlmNode()
        if node.settings.autostart:
            start_when_spinning(node)
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
