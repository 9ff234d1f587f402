"""vlm_ros.compat.ActionClient closes two races of rclpy's action client.

A goal's reply read before its request is recorded still completes (ros2/rclpy#1123), and a
client made beside a spinning executor is whole when the executor first counts it.

Jazzy's and Humble's rclpy record a goal request after sending it: a reply taken in between
on the executor's thread was dropped ("Ignoring unexpected goal response") and vlm_client
waited for an answer that never came (seen once in CI on Jazzy). The test forces exactly that
order: the send waits until the executor has taken the reply.
"""

import threading
import uuid

from rclpy.action import ActionServer
from ros_harness import wait_future
from vlm_ros.compat import ActionClient

from vlm_ros_msgs.action import GeneratePlan

TIMEOUT = 30.0


class _ReplyFirst:
    """The client's rcl handle, whose goal send returns only once the reply was taken."""

    def __init__(self, handle):
        self._handle = handle
        self.taken = threading.Event()

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self._handle.__enter__()

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def send_goal_request(self, request):
        sequence_number = self._handle.send_goal_request(request)
        self.taken.wait(5.0)  # a distro that locks around taking too gets here after 5 s
        return sequence_number

    def take_goal_response(self, *args):
        response = self._handle.take_goal_response(*args)
        if response != (None, None):
            self.taken.set()
        return response


def test_a_goal_reply_taken_before_the_request_is_recorded_is_not_lost(test_node):
    name = f'race_{uuid.uuid4().hex[:8]}'

    def execute(goal_handle):
        goal_handle.succeed()
        return GeneratePlan.Result()

    server = ActionServer(test_node.node, GeneratePlan, name, execute_callback=execute)
    client = ActionClient(test_node.node, GeneratePlan, name)
    try:
        assert client.wait_for_server(timeout_sec=TIMEOUT)
        client._client_handle = _ReplyFirst(client._client_handle)
        handle = wait_future(client.send_goal_async(GeneratePlan.Goal(instruction=name)),
                             TIMEOUT, 'the goal reply')
        assert handle.accepted
        assert client._client_handle.taken.is_set()  # the reply came while sending
        wait_future(handle.get_result_async(), TIMEOUT, 'the result')
    finally:
        client.destroy()
        server.destroy()


class _CountingNode:
    """A node whose add_waitable counts the waitable's entities at once, as an executor may."""

    def __init__(self, node):
        self._node = node

    def __getattr__(self, name):
        return getattr(self._node, name)

    def add_waitable(self, waitable):
        self._node.add_waitable(waitable)
        waitable.get_num_entities()  # a spinning executor's wait set, in the same instant


def test_a_client_counted_while_it_is_made_is_whole(test_node):
    """Kilted's rclpy adds the client before it makes its _lock: counting it then raised."""
    client = ActionClient(_CountingNode(test_node.node), GeneratePlan,
                          f'made_{uuid.uuid4().hex[:8]}')
    client.destroy()
