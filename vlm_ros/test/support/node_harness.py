"""Start the installed vlm_node as a real process and talk to it over DDS.

The node is the console script colcon installed (lib/vlm_ros/vlm_node), started the way
``ros2 run`` would, with parameters as --ros-args. Readiness and results are awaited as events
(diagnostics, messages, service responses), never with fixed sleeps.
"""

import pathlib
import re
import signal
import subprocess
import tempfile
import time
import uuid

from ament_index_python.packages import get_package_prefix
from diagnostic_msgs.msg import DiagnosticArray
from engine_fixtures import scene
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import Collector, TestNode, stop_process, wait_future
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from vlm_ros.compat import ActionClient
from vlm_ros.node.image_conversion import rgb_to_compressed, rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.msg import Caption, Plan

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT = 60.0


SEGMENT = re.compile(r'/dev/shm/fast(dds|rtps)_[0-9a-f]{16}')  # not the shared port files


def shared_memory_of(pid: int) -> set:
    """Fast DDS's shared-memory segments (/dev/shm files) that a process has mapped."""
    with open(f'/proc/{pid}/maps') as maps:
        return {line.split()[-1] for line in maps if SEGMENT.fullmatch(line.split()[-1])}


def node_executable(name: str = 'vlm_node') -> str:
    """Return an installed executable (what ``ros2 run vlm_ros NAME`` runs)."""
    path = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / name
    assert path.is_file(), f'{path} is not installed'
    return str(path)


def diag_values(msg: DiagnosticArray, node: str = '/vlm_node') -> dict:
    """Return the key/values of node's status (by its full name) in a DiagnosticArray."""
    for status in msg.status:
        if status.name == f'{node}: vlm':
            return {kv.key: kv.value for kv in status.values}
    return {}


def wait_state(diagnostics: Collector, state: str, timeout: float = TIMEOUT,
               node: str = '/vlm_node') -> dict:
    """Wait until a /diagnostics collector sees node in state; return its values."""
    msg = diagnostics.wait_for(lambda m: diag_values(m, node).get('state') == state, timeout,
                               f'{node} to report state {state!r}')
    return diag_values(msg, node)


class VlmNodeProcess:
    """A vlm_node process plus the test-side publishers and collectors wired to it."""

    def __init__(self, test_node: TestNode, env=None, ros_args=(), spawn=None, **params):
        """Start the node; spawn(args, log) (a fork server's start) replaces subprocess.Popen."""
        args = [node_executable(), '--ros-args', *ros_args]  # e.g. --params-file FILE
        for name, value in params.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            args += ['-p', f'{name}:={text}']
        # The log goes to a file: a pipe nobody reads until stop() fills up after 64 kB, and
        # the node would then block in its next log call.
        self.log = tempfile.TemporaryFile('w+')
        if spawn is None:
            self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                         text=True, env=env)
        else:
            self.proc = spawn(args, self.log)
        node = test_node.node
        self.ros = node
        self.test_node = test_node
        self.plans = test_node.collect(Plan, 'plan', RELIABLE)
        self.captions = test_node.collect(Caption, 'caption')
        self.vla = test_node.collect(String, 'vla_instruction', RELIABLE)
        self.diagnostics = test_node.collect(DiagnosticArray, '/diagnostics')
        self.image_pub = node.create_publisher(Image, 'image', 10)
        self.compressed_pub = node.create_publisher(CompressedImage, 'image/compressed', 10)
        self.instruction_pub = node.create_publisher(String, 'instruction', RELIABLE)
        self._streaming = None

    def wait_state(self, state: str, timeout: float = TIMEOUT) -> dict:
        """Wait until /diagnostics reports the lifecycle state; return its values.

        When it does not, the node's log says why (a failed configure, a crash at start).
        """
        try:
            return wait_state(self.diagnostics, state, timeout)
        except AssertionError as exc:
            raise AssertionError(f'{exc}\nnode log:\n{self.log_text()[-6000:]}') from exc

    def log_text(self) -> str:
        """Return what the node has logged so far."""
        self.log.seek(0)
        return self.log.read()

    def wait_diag(self, predicate, timeout: float, what: str) -> dict:
        """Wait for a diagnostics message whose values satisfy predicate."""
        return diag_values(self.diagnostics.wait_for(lambda m: predicate(diag_values(m)),
                                                     timeout, what))

    def diag_from_now(self):
        """Return wait(predicate, timeout, what): wait_diag over the messages yet to come.

        wait_diag takes the first match ever received, so a state said earlier in the test (a
        request in progress, a server reachable) satisfies it at once: a wait for it to be
        said again must start before what makes it so.
        """
        wait = self.diagnostics.from_now()
        return lambda predicate, timeout, what: diag_values(
            wait(lambda m: predicate(diag_values(m)), timeout, what))

    def wait_configure_failed(self, text: str = '', field: str = 'configure_error',
                              timeout: float = TIMEOUT) -> dict:
        """Wait until configure has failed and is over: field says text; return the values.

        The error is said while configure is still on its way back (state 'configuring'):
        a sample with the error alone does not mean the node is unconfigured yet.
        """
        return self.wait_diag(lambda v: bool(v.get(field)) and text in v[field] and
                              v.get('state') == 'unconfigured', timeout,
                              f'a failed configure, {text!r} in {field}, and its end')

    def state_from_now(self):
        """Return wait(state, timeout=TIMEOUT): wait_state over the messages yet to come.

        wait_state takes the first match ever received: a state said again (active after a
        re-activate, unconfigured after a cleanup) is waited for from before the transition.
        """
        later = self.diag_from_now()
        return lambda state, timeout=TIMEOUT: later(
            lambda values: values.get('state') == state, timeout,
            f'the node to report state {state!r} again')

    def instruct(self, text: str) -> None:
        """Publish one instruction, once the node's subscription is matched."""
        wait_matched(self.instruction_pub, 'the instruction subscription')
        self.wait_outputs()
        self.instruction_pub.publish(String(data=text))

    def answers(self, texts: list, timeout: float = TIMEOUT) -> list:
        """Return the first Plan of each instruction in texts, waiting for each one.

        A look at what has arrived misses Plans on their way: another topic's message (the
        diagnostics' count) or the node's exit says nothing about when this topic's arrive.
        """
        return [self.plans.wait_for(lambda p, t=text: p.instruction == t, timeout, text)
                for text in texts]

    def activate_once_heard(self) -> None:
        """Configure and activate a node started with autostart:=false, its outputs heard first.

        For a test where another process (a replay) sends the first input as soon as the node
        subscribes: the answer would otherwise race the test's discovery of the node.
        """
        assert transition(self.test_node, 'configure')
        self.wait_outputs()
        assert transition(self.test_node, 'activate')

    def wait_outputs(self, *others: Collector) -> None:
        """Wait until the plan and VLA topics' collectors, and others, have the node's publishers.

        What the node publishes before then is lost (volatile topics), and a node answers
        within a second of configure: sooner than discovery, on a busy machine. A test that
        makes a collector of its own (plan_targets, ~/features) passes it here before it asks.
        """
        for collector in (self.plans, self.vla, *others):
            wait_heard(collector)

    def wait_first_frame(self) -> None:
        """Wait until the node counts a camera frame (of the first stream it is sent).

        A frame sent is not yet a frame received: the node may discover a new publisher later
        than a request arrives, and with a short wait_for_image it then answers NO_IMAGE.
        """
        self.wait_diag(lambda v: int(v.get('frames_received', '0')) > 0, TIMEOUT,
                       'a camera frame at the node')

    def plan_on_a_new_frame(self, instruction: str, what: str = 'the plan') -> Plan:
        """Stream frames with a fresh frame_id; return a plan of instruction stamped with it."""
        frame_id = uuid.uuid4().hex
        return self.plan_on_new_frames(camera(frame_id), frame_id, instruction, what)

    def plan_on_new_frames(self, make_msg, frame_id: str, instruction: str,
                           what: str = 'the plan') -> Plan:
        """Stream make_msg's frames, stamped frame_id; return a plan of instruction made on one.

        The new stream replaces any earlier one (stream()), and the unique frame_id tells this
        plan from any earlier one still in flight. A frame sent is not yet a frame received:
        while the node still holds an earlier stream's frame, its plan is made on that one, and
        the instruction is sent again (one plan each time) until a plan uses the new stream.
        The frames keep coming after it returns.
        """
        self.stream(make_msg).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
        deadline = time.monotonic() + TIMEOUT
        while True:
            known = {plan.request_id for plan in self.plans.items()}
            self.instruct(instruction)
            plan = self.plans.wait_for(
                lambda p, known=known: p.request_id not in known and
                p.instruction == instruction.strip(),
                max(deadline - time.monotonic(), 1.0), what)
            if plan.header.frame_id == frame_id:
                return plan
            assert time.monotonic() < deadline, f'{what}: no plan on the new frames ' \
                f'within {TIMEOUT} s; the last was made on {plan.header.frame_id}'

    def stream(self, make_msg, rate_hz: float = 20.0) -> Collector:
        """Publish make_msg() at rate_hz from a node timer; return what was sent.

        It replaces any earlier stream: two would interleave their frames.
        """
        self.stop_stream()  # one stream at a time: a new one replaces the last
        sent = Collector()

        def tick():
            msg = make_msg(self.ros.get_clock().now().to_msg())
            (self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub
             ).publish(msg)
            sent(msg)
        self._streaming = self.ros.create_timer(1.0 / rate_hz, tick)
        return sent

    def stop_stream(self) -> None:
        """Stop the image stream started by stream()."""
        if self._streaming is not None:
            self.ros.destroy_timer(self._streaming)
            self._streaming = None

    def stop(self, sig=signal.SIGINT):
        """Stop the node process; return (exit code, stderr)."""
        self.stop_stream()
        try:
            code, _, _ = stop_process(self.proc, sig, timeout=30.0)
        except AssertionError as exc:  # a stop that hung: its log has the threads' stacks
            raise AssertionError(f'{exc}\nnode log:\n{self.log_text()[-6000:]}') from exc
        return code, self.log_text()


def wait_heard(collector: Collector, timeout: float = TIMEOUT) -> None:
    """Wait until a collector's subscription has a publisher (discovery done), with a deadline.

    A volatile topic's message published before then never reaches the collector.
    """
    wait_until(lambda: collector.subscription.get_publisher_count() > 0, timeout,
               f'a publisher of {collector.subscription.topic_name}')


def wait_matched(publisher, what: str, timeout: float = 30.0) -> None:
    """Wait until publisher has a subscriber (discovery done), with a deadline."""
    wait_until(lambda: publisher.get_subscription_count() > 0, timeout, what)


def call(test_node: TestNode, srv_type, name: str, request, timeout: float = 60.0):
    """Call a service of the node under test and return the response."""
    client = test_node.node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), f'{name} never appeared'
        return wait_future(client.call_async(request), timeout, f'the {name} response')
    finally:
        test_node.node.destroy_client(client)


def set_params(test_node: TestNode, **values) -> list:
    """Set vlm_node parameters through its set_parameters service; return the results."""
    request = SetParameters.Request(parameters=[
        Parameter(name, value=value).to_parameter_msg() for name, value in values.items()])
    return call(test_node, SetParameters, '/vlm_node/set_parameters', request).results


def set_ok(test_node: TestNode, **values) -> None:
    """Set parameters of /vlm_node; fail the test unless every one is accepted."""
    results = set_params(test_node, **values)
    assert all(r.successful for r in results), [r.reason for r in results]


def transition(test_node: TestNode, label: str) -> bool:
    """Ask vlm_node for a lifecycle transition by label ('configure', ...); return success."""
    ids = {'configure': Transition.TRANSITION_CONFIGURE,
           'activate': Transition.TRANSITION_ACTIVATE,
           'deactivate': Transition.TRANSITION_DEACTIVATE,
           'cleanup': Transition.TRANSITION_CLEANUP}
    request = ChangeState.Request(transition=Transition(id=ids[label]))
    return call(test_node, ChangeState, '/vlm_node/change_state', request).success


def lifecycle_state(test_node: TestNode) -> str:
    """Return vlm_node's lifecycle state label from its get_state service."""
    return call(test_node, GetState, '/vlm_node/get_state', GetState.Request()).current_state.label


def send_goal(test_node: TestNode, instruction: str, on_feedback, image=True):
    """Send a generate_plan goal on the red scene (or the latest frame); return the handles.

    Returns (client, goal, accepted goal handle).
    """
    client = ActionClient(test_node.node, GeneratePlan, '/vlm_node/generate_plan')
    assert client.wait_for_server(timeout_sec=TIMEOUT), 'generate_plan never appeared'
    goal = GeneratePlan.Goal(instruction=instruction)
    if image:
        goal.image = rgb_to_image(scene('red'))
        goal.image.header.frame_id = uuid.uuid4().hex
    handle = wait_future(client.send_goal_async(goal, feedback_callback=on_feedback), TIMEOUT,
                         'goal acceptance')
    assert handle.accepted
    return client, goal, handle


def goal_plan(test_node: TestNode, instruction: str) -> Plan:
    """Send a generate_plan goal on the red scene; return the Plan of its result."""
    _, _, handle = send_goal(test_node, instruction, None)
    return wait_future(handle.get_result_async(), TIMEOUT, 'the action result').result.plan


class ActionFeedback:
    """Every feedback message of an action, per goal, read from the action's feedback topic.

    rclpy's ActionClient forgets a goal's feedback callback once the goal's result arrives, and
    the feedback topic may lag the result service: the last feedback can reach no callback. A
    test that waits for the last feedback reads it here. Make it before sending the goal.
    """

    def __init__(self, test_node: TestNode, action: str, action_type):
        topic = f'{action}/_action/feedback'
        self._messages = test_node.collect(action_type.Impl.FeedbackMessage, topic, QoSProfile(
            depth=10000, reliability=ReliabilityPolicy.RELIABLE))
        wait_until(lambda: test_node.node.count_publishers(topic) > 0, TIMEOUT,
                   f'the publisher of {topic}')

    def of(self, handle) -> list:
        """Return the feedback the goal of handle got so far, in order."""
        goal = bytes(handle.goal_id.uuid)
        return [msg.feedback for msg in self._messages.items() if bytes(msg.goal_id.uuid) == goal]


def camera(frame_id: str, fmt: str = 'raw'):
    """Make camera messages of the red scene, stamped now, with a unique frame id."""
    def make(stamp):
        msg = rgb_to_image(scene('red')) if fmt == 'raw' else \
            rgb_to_compressed(scene('red'), fmt)
        msg.header.stamp = stamp
        msg.header.frame_id = frame_id
        return msg
    return make
