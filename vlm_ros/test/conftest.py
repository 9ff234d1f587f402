"""Shared fixtures: an isolated, loopback-only DDS domain and an rclpy node per test module."""

import os
import random

import pytest

# Each test run gets its own DDS domain, and discovery stays on this machine: concurrent runs
# (a developer's and CI's) never see each other's topics, and nothing goes onto the network.
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(1, 101)))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')  # Iron and newer
os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')  # Humble
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')


@pytest.fixture(scope='session')
def rclpy_context():
    """Initialise rclpy once for the test process, and shut it down cleanly at the end."""
    import rclpy

    rclpy.init()
    yield
    rclpy.try_shutdown()


@pytest.fixture
def test_node(rclpy_context, request):
    """An rclpy node in the test process, spinning on a background thread."""
    from ros_harness import TestNode

    node = TestNode('test_' + request.node.name.split('[')[0][:40])
    yield node
    node.close()
