"""vlm_node: the managed ROS 2 node around the engine.

Lifecycle: configure loads the model (or, with backend 'openai', connects a client to its
server), activate creates the topics, service and action server and starts the worker,
deactivate stops taking work (pending requests are answered), cleanup frees the model. The node
only converts messages and schedules: inference runs on worker threads, never in an executor
callback.
"""

import sys
import threading
from functools import partial

from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.msg import Caption, Plan
from vlm_ros_msgs.srv import Query

from ..engine import EngineConfig, RemoteConfig, VlmError, make_engine
from ..spin import spin_main
from . import params
from .diagnostics import DiagnosticsReporter
from .frames import FrameStore
from .image_conversion import compressed_to_rgb, image_to_rgb
from .messages import caption_msg, fill_query_response, plan_msg, stamp_seconds
from .scheduler import Job, Limits, Outcome, Status, Worker

# A contiguous copy: OpenCV makes it in ~0.2 ms at 1080p, numpy from a view takes 7-15 ms.
raw_to_rgb = partial(image_to_rgb, copy=True)
WAIT_MARGIN = 600.0  # s a service/action waits beyond generation before giving up


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
        self._io = []
        self._image_sub = None
        self._instruction_sub = None
        self._last_instruction = ''
        self._last_planned_seq = 0
        self._last_captioned_seq = 0
        self._goals = {}  # action goal id -> job, so a cancel request reaches the worker
        self._periodic = []  # caption and replan timers (rclpy's Node owns self._timers)
        self._answer_group = ReentrantCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self.diagnostics = DiagnosticsReporter(self)

    def p(self, name: str):
        """Return the current value of one of our parameters."""
        return self.get_parameter(name).value

    def _on_set_parameters(self, changes) -> SetParametersResult:
        reason = params.validate_all({change.name: change.value for change in changes},
                                     model_loaded=self.engine is not None)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        values = {change.name: change.value for change in changes}
        if self.worker is not None:
            self._apply_limits(values)
        if self._image_sub is not None and {'image_transport', 'image_reliability',
                                            'image_qos_depth'} & values.keys():
            self._subscribe_images(values)
        return SetParametersResult(successful=True)

    def _apply_limits(self, values: dict) -> None:
        limits = self.worker.limits
        for name in ('wait_for_image', 'max_image_age', 'queue_size'):
            if name in values:
                setattr(limits, name, values[name])

    def model_name(self) -> str:
        """Return the model answers are attributed to: the loaded one's, else the parameter."""
        return self.engine.model_name if self.engine is not None else self.p('model')

    def _engine_config(self) -> EngineConfig:
        prompts = {task: self.p(name) for name, task in params.PROMPT_PARAMS.items()}
        remote = RemoteConfig(
            base_url=self.p('base_url'), model=self.p('remote_model'),
            api_key_env=self.p('api_key_env'), request_timeout=self.p('request_timeout'),
            max_retries=self.p('max_retries'), max_concurrency=self.p('max_concurrency'),
            jpeg_quality=self.p('jpeg_quality'))
        return EngineConfig(
            model=self.p('model'), device=self.p('device'), dtype=self.p('dtype'),
            attn_implementation=self.p('attn_implementation') or None,
            trust_remote_code=self.p('trust_remote_code'),
            local_files_only=self.p('local_files_only'),
            max_new_tokens=self.p('max_new_tokens'), max_image_side=self.p('max_image_side'),
            processor_kwargs=params.processor_kwargs(self.p('processor_kwargs')),
            prompts=prompts, backend=self.p('backend'), remote=remote)

    # Lifecycle transitions -------------------------------------------------------------

    def on_configure(self, state) -> TransitionCallbackReturn:
        """Load the model; on failure log why and stay unconfigured (configure may retry).

        With the openai backend the server need not be up: requests answer
        STATUS_MODEL_ERROR until it is, and /diagnostics shows whether it is reachable.
        """
        try:
            engine = make_engine(self._engine_config())
            self.get_logger().info(f'loading {engine.config.model} ({engine.config.backend} '
                                   'backend)')
            engine.load()
        except VlmError as exc:
            self.get_logger().error(f'configure failed: {exc}')
            self.diagnostics.last_error = str(exc)
            return TransitionCallbackReturn.FAILURE
        self.engine = engine
        self.get_logger().info(f'loaded {engine.describe()}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        """Create subscriptions, publishers, service, action server and timers; start work."""
        self.frames = FrameStore(raw_to_rgb)  # _subscribe_images sets the transport's
        limits = Limits(self.p('wait_for_image'), self.p('max_image_age'), self.p('queue_size'))
        self.worker = Worker(self.engine, self.frames, raw_to_rgb, self._now, limits,
                             self.get_logger().error, self.engine.concurrency)
        deep = QoSProfile(depth=self.p('instruction_qos_depth'),
                          reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST)
        self._plan_pub = self.create_publisher(Plan, 'plan', deep)
        self._caption_pub = self.create_publisher(Caption, 'caption', 10)
        self._vla_pub = self.create_publisher(String, 'vla_instruction', deep)
        self._io = [self._plan_pub, self._caption_pub, self._vla_pub,
                    self.create_service(Query, '~/query', self._on_query,
                                        callback_group=self._answer_group)]
        self._instruction_sub = self.create_subscription(
            String, 'instruction', self._on_instruction, deep, callback_group=self._input_group)
        self._action = ActionServer(self, GeneratePlan, '~/generate_plan', self._on_goal,
                                    cancel_callback=self._on_cancel,
                                    callback_group=self._answer_group)
        self._subscribe_images({})
        if self.p('caption_rate') > 0:
            self._periodic.append(self.create_timer(1.0 / self.p('caption_rate'),
                                                    self._on_caption_due))
        if self.p('replan_period') > 0:
            self._periodic.append(self.create_timer(self.p('replan_period'),
                                                    self._on_replan_due))
        self.get_logger().info('active')
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        """Stop taking work: the running and waiting requests are answered CANCELLED."""
        self._stop_io()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        """Release the model and its (GPU) memory."""
        if self.engine is not None:
            self.engine.unload()
            self.engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        """Answer what is pending, then free everything."""
        self._stop_io()
        return self.on_cleanup(state)

    def _stop_io(self) -> None:
        """Close inputs first (no new work), answer what is pending, then close outputs."""
        for timer in self._periodic:
            self.destroy_timer(timer)
        self._periodic = []
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
            self._image_sub = None
        if self._instruction_sub is not None:
            self.destroy_subscription(self._instruction_sub)
            self._instruction_sub = None
        if self.worker is not None:
            self.worker.stop('node deactivated')
            self.worker = None
        if self._io:
            self._action.destroy()
            for entity in self._io:
                for destroy in (self.destroy_publisher, self.destroy_service):
                    if destroy(entity):
                        break
            self._io = []

    # Inputs ----------------------------------------------------------------------------

    def _subscribe_images(self, changes: dict) -> None:
        value = {spec.name: changes.get(spec.name, self.p(spec.name)) for spec in params.SPECS
                 if spec.name.startswith('image_')}
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        reliability = ReliabilityPolicy.RELIABLE if value['image_reliability'] == 'reliable' \
            else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=value['image_qos_depth'], reliability=reliability,
                         history=HistoryPolicy.KEEP_LAST)
        compressed = value['image_transport'] == 'compressed'
        self.frames.convert = compressed_to_rgb if compressed else raw_to_rgb
        self._image_sub = self.create_subscription(
            CompressedImage if compressed else Image,
            'image/compressed' if compressed else 'image', self._on_image, qos,
            callback_group=self._input_group)

    def _on_image(self, msg) -> None:
        self.frames.put(msg.header, stamp_seconds(msg.header.stamp), msg)

    def _on_instruction(self, msg: String) -> None:
        text = msg.data.strip()
        job = Job('plan', text, done=self._publish_plan)
        if not text:
            job.request_id = self.worker.new_request_id()
            self._publish_plan(Outcome(job, Status.BAD_INPUT, 'empty instruction'))
            return
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

    def _publish_plan(self, outcome) -> None:
        fallback = Header(stamp=self.get_clock().now().to_msg())
        plan = plan_msg(outcome, self.model_name(), fallback)
        self._plan_pub.publish(plan)
        if outcome.status == Status.OK and plan.steps:
            self._vla_pub.publish(String(data=plan.steps[0].instruction))
        self.diagnostics.record(outcome)
        if outcome.status != Status.OK:
            self.get_logger().warning(
                f'plan {plan.request_id}: {outcome.status.name}: {outcome.message}',
                throttle_duration_sec=1.0)

    def _publish_caption(self, outcome) -> None:
        self.diagnostics.record(outcome)
        if outcome.status == Status.OK:
            self._caption_pub.publish(caption_msg(outcome, self.model_name()))

    # Service and action (waiting on the reentrant group, never on the worker) ----------

    def _wait(self, job: Job):
        done = threading.Event()
        outcomes = []

        def finish(outcome):
            outcomes.append(outcome)
            done.set()
        job.done = finish
        if self.worker is None:
            return None
        self.worker.submit(job)
        done.wait(self.p('wait_for_image') + WAIT_MARGIN)
        return outcomes[0] if outcomes else None

    def _on_query(self, request, response):
        job = Job('vqa', request.question.strip(), done=None,
                  image_msg=request.image if request.image.width else None,
                  max_new_tokens=request.max_new_tokens)
        outcome = self._wait(job)
        if outcome is None:
            response.success, response.message = False, 'node is not active or timed out'
            return response
        self.diagnostics.record(outcome)
        return fill_query_response(response, outcome)

    def _on_cancel(self, goal_handle) -> CancelResponse:
        job = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if job is not None:
            job.cancel.set()  # generation stops between two decoding steps or chunks
        return CancelResponse.ACCEPT

    def _on_goal(self, goal_handle):
        goal = goal_handle.request
        pieces = []

        def feedback(text):
            pieces.append(text)
            goal_handle.publish_feedback(GeneratePlan.Feedback(partial_text=''.join(pieces),
                                                               tokens=len(pieces)))
        job = Job('plan', goal.instruction.strip(), done=None, on_text=feedback,
                  image_msg=goal.image if goal.image.width else None)
        key = bytes(goal_handle.goal_id.uuid)
        self._goals[key] = job
        try:
            outcome = self._wait(job)
        finally:
            self._goals.pop(key, None)
        result = GeneratePlan.Result()
        if outcome is None:
            goal_handle.abort()
            result.plan.status, result.plan.message = Status.MODEL_ERROR, 'no answer in time'
            return result
        self.diagnostics.record(outcome)
        result.plan = plan_msg(outcome, self.model_name(),
                               Header(stamp=self.get_clock().now().to_msg()))
        if outcome.status == Status.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.status == Status.OK:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result


def main(args=None) -> int:
    """Console script vlm_node: run the node; with autostart, configure and activate it."""
    def make():
        node = VlmNode()
        if node.p('autostart'):
            node.trigger_configure()
            if node.engine is not None:
                node.trigger_activate()
        return node
    # Service and action callbacks wait for the worker on executor threads: have plenty.
    return spin_main(make, args, num_threads=16)


if __name__ == '__main__':
    sys.exit(main())
