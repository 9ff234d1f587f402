"""vlm_client: talk to a running vlm_node from a shell, on machines without ros2cli.

vlm_client plan "pick up the red block"            # streams the text, prints the plan
vlm_client query "what is on the table?" [--image FILE]
vlm_client caption [--follow]                      # the next caption, or every caption
Bad input (a missing node or image file, a node that does not caption) exits 2 with the reason.
"""

import argparse
import sys
import threading

from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.msg import Caption, Plan
from vlm_ros_msgs.srv import Query

from ..bag.arguments import ArgumentParser, positive
from ..node.messages import format_caption, format_plan
from ..spin import spin_main


def read_image(path: str):
    """Load an image file as a sensor_msgs/Image (rgb8), or exit with the reason."""
    import cv2

    from ..node.image_conversion import rgb_to_image

    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        print(f'vlm_client: cannot read image {path!r}', file=sys.stderr)
        sys.exit(2)
    msg = rgb_to_image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    msg.header.frame_id = path
    return msg


class Client(Node):
    """One command: send it, print what comes back, and signal when done."""

    def __init__(self, args):
        super().__init__('vlm_client')
        self.args = args
        self.done = threading.Event()
        self.code = 0
        self.node = args.node.rstrip('/')
        getattr(self, f'_{args.command}')()

    def _finish(self, code: int = 0) -> None:
        self.code = code
        self.done.set()

    def _plan(self) -> None:
        client = ActionClient(self, GeneratePlan, f'{self.node}/generate_plan')
        goal = GeneratePlan.Goal(instruction=self.args.text)
        if self.args.image:
            goal.image = read_image(self.args.image)
        if not client.wait_for_server(timeout_sec=self.args.timeout):
            print(f'vlm_client: no {self.node}/generate_plan action server', file=sys.stderr)
            return self._finish(2)
        sent = client.send_goal_async(goal, feedback_callback=self._on_feedback)
        sent.add_done_callback(lambda f: f.result().get_result_async().add_done_callback(
            self._on_result))

    def _on_feedback(self, msg) -> None:
        print(f'\r... {msg.feedback.tokens} tokens: {msg.feedback.partial_text[-60:]!r}',
              end='', file=sys.stderr, flush=True)

    def _on_result(self, future) -> None:
        plan = future.result().result.plan
        print('', file=sys.stderr)
        print(format_plan(plan), flush=True)
        self._finish(0 if plan.status == Plan.STATUS_OK else 1)

    def _query(self) -> None:
        client = self.create_client(Query, f'{self.node}/query')
        request = Query.Request(question=self.args.text)
        if self.args.image:
            request.image = read_image(self.args.image)
        if not client.wait_for_service(timeout_sec=self.args.timeout):
            print(f'vlm_client: no {self.node}/query service', file=sys.stderr)
            return self._finish(2)
        client.call_async(request).add_done_callback(self._on_answer)

    def _on_answer(self, future) -> None:
        response = future.result()
        print(response.answer if response.success else f'failed: {response.message}',
              flush=True)
        self._finish(0 if response.success else 1)

    def _caption(self) -> None:
        """Ask the node whether it captions at all (caption_rate 0 is the default), then wait.

        --timeout bounds the wait for the node and for the first caption.
        """
        client = self.create_client(GetParameters, f'{self.node}/get_parameters')
        if not client.wait_for_service(timeout_sec=self.args.timeout):
            print(f'vlm_client: no {self.node} node (its parameter service did not appear '
                  f'within {self.args.timeout:g} s)', file=sys.stderr)
            return self._finish(2)
        self._captions = 0
        self.create_subscription(Caption, self.args.topic, self._on_caption, 10)
        client.call_async(GetParameters.Request(names=['caption_rate'])).add_done_callback(
            self._on_caption_rate)
        self._deadline = self.create_timer(self.args.timeout, self._on_no_caption)

    def _on_caption_rate(self, future) -> None:
        values = future.result().values
        if values and values[0].type == ParameterType.PARAMETER_DOUBLE and \
                values[0].double_value <= 0:
            print(f'vlm_client: {self.node} publishes no captions: its caption_rate is 0 '
                  f'(start it with: ros2 param set {self.node} caption_rate 1.0)',
                  file=sys.stderr)
            self._finish(2)

    def _on_no_caption(self) -> None:
        self.destroy_timer(self._deadline)
        if not self._captions:
            print(f'vlm_client: no caption on {self.args.topic} within {self.args.timeout:g} s',
                  file=sys.stderr)
            self._finish(1)

    def _on_caption(self, msg: Caption) -> None:
        self._captions += 1
        print(format_caption(msg), flush=True)
        if not self.args.follow:
            self._finish(0)


def parse_args(argv):
    """Parse the command line (ROS arguments removed)."""
    parser = ArgumentParser(prog='vlm_client', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--node', default='/vlm_node', help='vlm_node name (default /vlm_node)')
    parser.add_argument('--timeout', type=positive, default=30.0,
                        help='seconds to wait for the node to appear (caption: and for the '
                        'first caption)')
    commands = parser.add_subparsers(dest='command', required=True)
    for name, what in (('plan', 'instruction'), ('query', 'question')):
        command = commands.add_parser(name, help=f'send an {what}')
        command.add_argument('text', help=f'the {what}')
        command.add_argument('--image', help='image file to use instead of the camera frame')
    caption = commands.add_parser('caption', help='print captions')
    caption.add_argument('--follow', action='store_true', help='keep printing every caption')
    caption.add_argument('--topic', default='caption', help='caption topic (default caption)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Console script vlm_client."""
    argv = remove_ros_args(sys.argv if argv is None else argv)[1:]
    args = parse_args(argv)
    return spin_main(lambda: Client(args))


if __name__ == '__main__':
    sys.exit(main())
