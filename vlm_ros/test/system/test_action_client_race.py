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

import pytest
from rclpy.action import ActionServer
from ros_harness import wait_future
from vlm_ros.compat import ActionClient

from vlm_ros_msgs.action import GeneratePlan

TIMEOUT = 30.0


class _ReplyFirst:
    """The client's rcl handle, whose goal send returns only once the reply was taken.

    An rclpy that sends and takes under its client's one lock (Kilted's) cannot take the
    reply in between: the send returns at once there (``under_rclpy_lock``).
    """

    def __init__(self, client):
        self._client = client
        self._handle = client._client_handle
        self.taken = threading.Event()
        self.under_rclpy_lock = False
        self.taken_while_sending = False

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self._handle.__enter__()

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)

    def send_goal_request(self, request):
        sequence_number = self._handle.send_goal_request(request)
        self.under_rclpy_lock = self._client._lock.locked()
        if not self.under_rclpy_lock:
            self.taken_while_sending = self.taken.wait(TIMEOUT)
        return sequence_number

    def take_goal_response(self, *args):
        response = self._handle.take_goal_response(*args)
        if response != (None, None):
            self.taken.set()
        return response


def test_a_goal_reply_taken_before_the_request_is_recorded_is_not_lost(test_node):
    """The reply is taken while the send is still on its way, and the goal is answered."""
    name = f'race_{uuid.uuid4().hex[:8]}'

    def execute(goal_handle):
        goal_handle.succeed()
        return GeneratePlan.Result()

    server = ActionServer(test_node.node, GeneratePlan, name, execute_callback=execute)
    client = ActionClient(test_node.node, GeneratePlan, name)
    try:
        assert client.wait_for_server(timeout_sec=TIMEOUT)
        reply_first = client._client_handle = _ReplyFirst(client)
        handle = wait_future(client.send_goal_async(GeneratePlan.Goal(instruction=name)),
                             TIMEOUT, 'the goal reply')
        assert handle.accepted
        wait_future(handle.get_result_async(), TIMEOUT, 'the result')
    finally:
        client.destroy()
        server.destroy()
    if reply_first.under_rclpy_lock:
        pytest.skip('this rclpy sends a goal and takes its reply under one lock: the race '
                    'cannot happen (the goal went through both locks)')
    assert reply_first.taken_while_sending, 'the reply came after the send: no race was forced'


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
