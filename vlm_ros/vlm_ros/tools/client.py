"""vlm_client: talk to a running vlm_node from a shell, on machines without ros2cli.

vlm_client plan "pick up the red block"            # streams the text, prints the plan
vlm_client query "what is on the table?" [--image FILE]
vlm_client ground "the red block" [--image FILE] [--camera NAME]   # its boxes and 3D points
vlm_client caption [--follow]                      # the next caption, or every caption
vlm_client state                                   # the lifecycle state, e.g. active
vlm_client configure|activate|deactivate|cleanup|shutdown
vlm_client param get NAME
vlm_client param set NAME VALUE                    # VALUE as in ros2 param set
A failure prints one line on stderr that says why, and exits non-zero (see below).
"""

import argparse
import sys
import threading

from action_msgs.msg import GoalStatus
from action_msgs.srv import CancelGoal
from rcl_interfaces.msg import ParameterType
from rclpy.exceptions import NameValidationException
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.msg import Caption, Plan
from vlm_ros_msgs.srv import Ground, Query, QueryCameras

from ..bag.arguments import ArgumentParser, positive, print_line
from ..compat import ActionClient
from ..node.messages import format_caption, format_ground, format_plan
from ..spin import spin_main
from .client_ops import (
    BAD_INPUT,
    EXIT_CODES,
    INTERRUPTED,
    NO_REPLY,
    NOT_ACTIVE,
    NOT_OK,
    TRANSITIONS,
    ClientError,
    Remote,
    format_value,
    one_line,
)

PLAN_STATUS = {v: k for k, v in vars(Plan).items() if k.startswith('STATUS_')}
FOLLOW_CHECK = 1.0  # s between two looks at the state of a node whose captions are followed
CANCEL_WAIT = 2.0  # s an interrupted plan waits for its goal's cancel to be answered
CAPTION_TYPE = 'vlm_ros_msgs/msg/Caption'


def read_image(path: str):
    """Load an image file as a sensor_msgs/Image (rgb8), or fail with the reason.

    The file is read here, not by cv2.imread, which says nothing of why it failed and prints
    a warning of its own.
    """
    import cv2
    import numpy as np

    from ..node.image_conversion import rgb_to_image

    try:
        with open(path, 'rb') as file:
            data = np.frombuffer(file.read(), np.uint8)
    except OSError as exc:  # no such file, a directory, no permission
        raise ClientError(BAD_INPUT, f'cannot read image {path!r}: '
                          f'{exc.strerror or one_line(exc)}') from exc
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ClientError(BAD_INPUT, f'cannot read image {path!r}: not an image file OpenCV '
                          f'decodes (PNG, JPEG, BMP, ...), {data.size} bytes')
    msg = rgb_to_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    msg.header.frame_id = path
    return msg


def cancel_goal(goal) -> str:
    """Cancel a plan's goal (a send_goal future), if it was accepted; say what became of it."""
    answered = threading.Event()
    goal.add_done_callback(lambda _: answered.set())
    if not answered.wait(CANCEL_WAIT) or goal.exception() is not None or \
            goal.result() is None or not goal.result().accepted:
        return ''  # not accepted (yet): nothing runs for this client
    answered.clear()
    cancel = goal.result().cancel_goal_async()
    cancel.add_done_callback(lambda _: answered.set())
    if not answered.wait(CANCEL_WAIT) or cancel.exception() is not None:
        return f"; the goal's cancel was not answered within {CANCEL_WAIT:g} s"
    response = cancel.result()
    if response.return_code == CancelGoal.Response.ERROR_NONE and response.goals_canceling:
        return '; the goal was cancelled'
    return f'; the node did not cancel the goal (code {response.return_code}: it had ended?)'


def check_caption_type(node: Node, topic: str) -> None:
    """Refuse a topic that the graph says carries other types than Caption.

    Fast DDS refuses a subscription of another type where it knows the topic's (an RCLError),
    and where it does not yet, no message comes.
    """
    types = dict(node.get_topic_names_and_types()).get(topic, [])
    if types and CAPTION_TYPE not in types:
        raise ClientError(BAD_INPUT, f'{topic} carries {", ".join(types)}, not {CAPTION_TYPE}: '
                          '--topic names a caption topic')


class Client(Node):
    """One command, run on its own thread: the executor spins while it waits on replies.

    ``done`` and ``code`` tell spin_main when to exit and with which status.
    """

    def __init__(self, args):
        super().__init__('vlm_client')
        self.args = args
        self.done = threading.Event()
        self.code = 0
        self._lock = threading.Lock()  # answered or interrupted: whichever comes first counts
        self._answered = self._interrupted = False
        self._goal = None  # the plan's goal, once sent (a future): cancelled if interrupted
        self.remote = Remote(self, '/' + args.node.strip('/'), args.timeout)
        self._first_caption = threading.Event()
        self._streamed = False
        verb = args.command if args.command not in TRANSITIONS else 'transition'
        threading.Thread(target=self._run, args=(getattr(self, f'_{verb}'),),
                         name='vlm_client', daemon=True).start()

    def _run(self, verb) -> None:
        try:
            verb()
        except ClientError as exc:
            self._fail(exc.code, str(exc))
        except NameValidationException as exc:
            self._fail(BAD_INPUT, f'bad --node: {one_line(exc)}')
        except Exception as exc:  # noqa: BLE001 - one line and an exit status, no traceback
            self._fail(NO_REPLY, one_line(exc))
        with self._lock:
            self.done.set()

    def _answering(self) -> bool:
        """Claim the exit for the verb's answer or failure, before it is said.

        False once a signal has claimed it (shutdown_gracefully): that is then all that is said.
        """
        with self._lock:
            self._answered = not self._interrupted
            return self._answered

    def _fail(self, code: int, reason: str) -> None:
        """Print the reason as one line (a node's message may hold newlines); keep the code."""
        if self._answering():
            print(f"vlm_client: {' '.join(reason.split())}", file=sys.stderr, flush=True)
            self.code = code

    def shutdown_gracefully(self) -> None:
        """On SIGINT or SIGTERM (spin_main): a verb not answered exits 130, its plan cancelled.

        A script must not take an interrupted plan for an answered one, and the node should not
        go on generating for nobody. caption --follow runs until interrupted: once it printed a
        caption, that is its end, exit 0.
        """
        with self._lock:
            if self._answered or self.done.is_set():
                return
            self._interrupted = True
        cancelled = cancel_goal(self._goal) if self._goal is not None else ''
        print(f'vlm_client: interrupted before the answer{cancelled}', file=sys.stderr, flush=True)
        self.code = INTERRUPTED

    # plan, query, caption --------------------------------------------------------------

    def _plan(self) -> None:
        goal = GeneratePlan.Goal(instruction=self.args.text)
        if self.args.image:
            goal.image = read_image(self.args.image)
        remote = self.remote
        client = ActionClient(self, GeneratePlan, f'{remote.name}/generate_plan')
        if not client.wait_for_server(timeout_sec=remote.timeout):
            raise remote.absent('generate_plan action server')
        with self._lock:  # a signal before the goal is sent: no goal to cancel, none sent
            if self._interrupted:
                return
            self._goal = client.send_goal_async(goal, feedback_callback=self._on_feedback)
        handle = remote.wait(self._goal, 'the goal', remote.timeout, client.server_is_ready)
        if not handle.accepted:
            raise remote.not_active('rejected the goal')
        # Generation takes as long as it takes; the node bounds it (its answer timeout).
        result = remote.wait(handle.get_result_async(), 'the goal', None,
                             client.server_is_ready)
        plan = result.result.plan
        if self._streamed:
            print('', file=sys.stderr)  # ends the progress line
        if not self._answering():
            return
        print_line(format_plan(plan))
        if result.status != GoalStatus.STATUS_SUCCEEDED and plan.status == Plan.STATUS_OK:
            raise ClientError(NOT_OK, f'{remote.name} ended the goal with status {result.status} '
                              'and no plan')
        if plan.status == Plan.STATUS_CANCELLED:  # deactivated meanwhile: exit 3, as a query
            try:
                failed = self.remote.not_active('cancelled the plan')
            except ClientError:  # going down, say: the plan's own status says enough
                failed = None
            if failed is not None and failed.code == NOT_ACTIVE:
                raise failed
        if plan.status != Plan.STATUS_OK:
            raise ClientError(NOT_OK, f'{PLAN_STATUS.get(plan.status, plan.status)}: '
                              f'{plan.message or "no reason given"}')

    def _on_feedback(self, msg) -> None:
        self._streamed = True
        print(f'\r... {msg.feedback.tokens} tokens: {msg.feedback.partial_text[-60:]!r}',
              end='', file=sys.stderr, flush=True)

    def _query(self) -> None:
        if self.args.cameras:  # the newest frames of the cameras named: ~/query_cameras
            request = QueryCameras.Request(question=self.args.text, cameras=self.args.cameras)
            response = self.remote.call(QueryCameras, 'query_cameras', request, None)
        else:
            request = Query.Request(question=self.args.text)
            if self.args.image:
                request.image = read_image(self.args.image)
            response = self.remote.call(Query, 'query', request, None)
        self._check_answered(response)
        if self._answering():
            print_line(response.answer)

    def _ground(self) -> None:
        request = Ground.Request(phrase=self.args.text, camera=self.args.camera)
        if self.args.image:
            request.image = read_image(self.args.image)
        response = self.remote.call(Ground, 'ground', request, None)
        self._check_answered(response)
        if self._answering():
            print_line(format_ground(response))

    def _check_answered(self, response) -> None:
        """Raise why a service's answer is not one: the node is not active, or it said why."""
        if not response.success:
            failed = self.remote.not_active('could not answer')
            if failed.code == NOT_ACTIVE:
                raise failed
            raise ClientError(NOT_OK, f'{self.remote.name} could not answer: {response.message}')

    def _caption(self) -> None:
        """Check that the node is active and captions at all (caption_rate 0 is the default).

        --timeout bounds the wait for the node and for the first caption. Captions are taken
        once the checks pass: one printed while the node's state was still being asked (its
        service not yet discovered) came before a failure that said there was no such node.
        """
        remote = self.remote
        state = remote.state()
        if state != 'active':
            raise ClientError(NOT_ACTIVE, remote.describe(state))
        rate = remote.parameter('caption_rate')
        if rate.type == ParameterType.PARAMETER_DOUBLE and rate.double_value <= 0:
            node = '' if remote.name == '/vlm_node' else f' --node {remote.name}'
            raise ClientError(BAD_INPUT, f'{remote.name} publishes no captions: its caption_rate '
                              f'is 0 (start it with: vlm_client{node} param set caption_rate 1)')
        try:
            topic = self.resolve_topic_name(self.args.topic)
            check_caption_type(self, topic)
            self.create_subscription(Caption, topic, self._on_caption, 10)
        except (NameValidationException, _rclpy.RCLError) as exc:  # rcl's, without its source
            raise ClientError(BAD_INPUT, f"bad --topic: {one_line(exc).split(', at ')[0]}") \
                from exc
        if not self._first_caption.wait(remote.timeout):
            check_caption_type(self, topic)  # discovered meanwhile: the reason to give
            raise ClientError(NOT_OK, f'no caption on {topic} within {remote.timeout:g} s')
        if self.args.follow:  # until a signal ends the process, or the node stops captioning
            raise remote.until_not_active(FOLLOW_CHECK)

    def _on_caption(self, msg: Caption) -> None:
        if (self.args.follow or not self._first_caption.is_set()) and \
                not (self._answering() and print_line(format_caption(msg))):
            self.done.set()  # `caption --follow | head`: the reader has what it wanted
        self._first_caption.set()

    # state, transitions, parameters ----------------------------------------------------

    def _state(self) -> None:
        state = self.remote.state()
        if not self._answering():
            return
        print_line(state)
        if state == 'unconfigured':
            why = self.remote.describe(state)
            if ': configure failed: ' in why:
                print(f'vlm_client: {why}', file=sys.stderr, flush=True)

    def _transition(self) -> None:
        state = self.remote.transition(self.args.command)
        if self._answering():
            print_line(state)

    def _param(self) -> None:
        if self.args.action == 'get':
            value = format_value(self.remote.parameter(self.args.name))
            if self._answering():
                print_line(value)
        else:
            self.remote.set_parameter(self.args.name, self.args.value)


def _connection_options(parser, default) -> None:
    """--node and --timeout, before the verb (defaults) or after it (then no default)."""
    parser.add_argument('--node', default=default or '/vlm_node',
                        help='vlm_node name (default /vlm_node)')
    parser.add_argument('--timeout', type=positive, default=default or 30.0,
                        help='seconds to wait for the node to appear and for its quick replies '
                        '(caption: and for the first caption); a plan, an answer or a '
                        'transition is awaited while the node is there (default 30)')


def parse_args(argv):
    """Parse the command line (ROS arguments removed)."""
    parser = ArgumentParser(prog='vlm_client', description=__doc__, epilog=EXIT_CODES,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _connection_options(parser, None)
    after = ArgumentParser(add_help=False)
    _connection_options(after, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest='command', required=True)
    for name, what in (('plan', 'an instruction'), ('query', 'a question')):
        command = commands.add_parser(name, help=f'send {what}', parents=[after])
        command.add_argument('text', help=what)
        command.add_argument('--image', help='image file to use instead of the camera frame')
    query = commands.choices['query']
    query.add_argument('--camera', dest='cameras', action='append', default=[], metavar='NAME',
                       help="with the node's cameras parameter: ask on the newest frame of "
                       'this camera (repeat, in prompt order) instead of every camera')
    ground = commands.add_parser('ground', help='print the boxes of what a phrase names',
                                 parents=[after])
    ground.add_argument('text', metavar='phrase', help='what to find, e.g. "the red block"')
    ground.add_argument('--image', help='image file to use instead of the camera frame')
    ground.add_argument('--camera', default='', metavar='NAME',
                        help="with the node's cameras parameter: look in this camera's image "
                        '(default the first); with --image, the camera whose depth serves it')
    caption = commands.add_parser('caption', help='print captions', parents=[after])
    caption.add_argument('--follow', action='store_true', help='keep printing every caption')
    caption.add_argument('--topic', default='caption', help='caption topic (default caption)')
    commands.add_parser('state', help='print the lifecycle state', parents=[after])
    for name in TRANSITIONS:
        commands.add_parser(name, help=f'lifecycle transition {name}; prints the new state',
                            parents=[after])
    param = commands.add_parser('param', help='get or set a parameter')
    actions = param.add_subparsers(dest='action', required=True)
    actions.add_parser('get', help='print a parameter', parents=[after]).add_argument('name')
    setter = actions.add_parser('set', parents=[after], help='set a parameter (VALUE: a YAML '
                                'scalar, typed like the current value)')
    setter.add_argument('name')
    setter.add_argument('value')
    args = parser.parse_args(argv)
    if args.command == 'query' and args.cameras and args.image:
        parser.error('--camera asks on camera frames: not with --image')
    return args


def main(argv=None) -> int:
    """Console script vlm_client."""
    argv = remove_ros_args(sys.argv if argv is None else argv)[1:]
    args = parse_args(argv)
    return spin_main(lambda: Client(args))


if __name__ == '__main__':
    sys.exit(main())
