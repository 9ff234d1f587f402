"""compat: the distro differences, on the distro this leg of scripts/test runs."""

import gc
import os
import subprocess
import sys
import types
import uuid

import pytest
from node_harness import wait_matched
from rclpy.node import Node
from std_msgs.msg import String
from vlm_ros.compat import ForgetsDestroyed, loopback_discovery, publisher_count
from waiting import wait_until


def test_humbles_graph_count_agrees_with_the_subscription_method(test_node):
    node = test_node.node
    topic = f'compat_{os.getpid()}'
    subscription = node.create_subscription(String, topic, lambda _: None, 10)
    publisher = node.create_publisher(String, topic, 10)
    wait_matched(publisher, 'our own subscription')
    # Without get_publisher_count (Humble), the graph is asked for the topic's publishers.
    humble_like = types.SimpleNamespace(topic_name=subscription.topic_name)
    wait_until(lambda: publisher_count(node, humble_like) == 1, 10.0, 'the graph count')
    assert publisher_count(node, subscription) == 1
    node.destroy_publisher(publisher)
    wait_until(lambda: publisher_count(node, humble_like) == 0, 10.0, 'the publisher to go')
    assert publisher_count(node, subscription) == 0
    node.destroy_subscription(subscription)


def test_processes_start_without_discovery_warnings():
    """Only the distro's own variable is set: Jazzy warns when ROS_LOCALHOST_ONLY is set too."""
    assert set(loopback_discovery()) <= set(os.environ)
    code = 'import rclpy; rclpy.init(); rclpy.shutdown()'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and 'WARN' not in result.stderr, result.stderr


@pytest.mark.parametrize('forgets', [False, True], ids=['rclpy', 'ForgetsDestroyed'])
def test_destroyed_entities_leave_no_entry_in_their_callback_group(rclpy_context, forgets):
    """A head making a timer per command, 200 times: rclpy alone keeps 200 dead entries."""
    node = (type('Forgetting', (ForgetsDestroyed, Node), {}) if forgets else Node)(
        f'compat_{uuid.uuid4().hex[:8]}')
    try:
        group = node.default_callback_group
        before = len(group.entities)
        for _ in range(200):
            node.destroy_timer(node.create_timer(1.0, lambda: None))
            sub = node.create_subscription(String, 'compat_forget', lambda _: None, 10)
            node.destroy_subscription(sub)
        gc.collect()
        kept = len(group.entities) - before
        assert kept < 10 if forgets else kept >= 400, kept  # the last ones: not yet dead
    finally:
        node.destroy_node()
