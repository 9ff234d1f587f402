"""`ros2 launch vlm_ros vlm.launch.py ...` as a user runs it, where the `ros2` command exists.

A ROS 2 distro brings `ros2` (ros2cli and ros2launch); on a machine without one,
scripts/bootstrap builds them from ../shared/ros2-launch into the workspace, and
scripts/with-env puts them on PATH. Where neither exists, the launch tests skip with that
reason. Every launch gets a unique namespace unless a test asks for the root one, so a test
only ever looks at its own node.
"""

import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import uuid

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import RELIABLE, TIMEOUT, diag_values, wait_state
from waiting import wait_exit

from vlm_ros_msgs.msg import Plan


def launch_command() -> list:
    """Return `ros2 launch`, or skip saying why this machine has no such command."""
    if shutil.which('ros2') is None or importlib.util.find_spec('ros2launch') is None:
        pytest.skip('the ros2 command (ros2cli, ros2launch) is not installed: source a ROS 2 '
                    'distro, or put ../shared beside this checkout and run scripts/bootstrap')
    return ['ros2', 'launch']


class Launch:
    """One `ros2 launch vlm_ros vlm.launch.py` process, by default in its own namespace."""

    def __init__(self, test_node, *arguments: str, env=None, namespace=None):
        """Start the launch; namespace '' leaves it out (the root one, as a user's launch)."""
        self.namespace = 'launch_' + uuid.uuid4().hex[:12] if namespace is None else namespace
        self.node_name = self.topic('vlm_node')
        given = [f'namespace:={self.namespace}'] if self.namespace else []
        args = [*launch_command(), 'vlm_ros', 'vlm.launch.py', *given, *arguments]
        # Its own process group, as in a terminal: Ctrl-C reaches launch and its node alike.
        # Output to a file: an unread pipe fills up (64 kB) and blocks the node's logging.
        self.log = tempfile.TemporaryFile('w+')
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                     text=True, env=env or os.environ.copy(),
                                     start_new_session=True)
        self.diagnostics = test_node.collect(DiagnosticArray, '/diagnostics')
        self.test_node = test_node

    def topic(self, name: str) -> str:
        """Resolve one of the node's relative topic names in its namespace."""
        return f'/{self.namespace}/{name}' if self.namespace else f'/{name}'

    def wait_state(self, state: str, timeout: float = TIMEOUT) -> dict:
        """Wait until this launch's node reports state; return its diagnostics values."""
        return wait_state(self.diagnostics, state, timeout, self.node_name)

    def wait_diag(self, predicate, what: str, timeout: float = TIMEOUT) -> dict:
        """Wait for diagnostics of this launch's node that satisfy predicate."""
        msg = self.diagnostics.wait_for(lambda m: predicate(diag_values(m, self.node_name)),
                                        timeout, what)
        return diag_values(msg, self.node_name)

    def plans(self, topic: str = 'plan'):
        """Collect Plans from the node's (namespaced) plan topic."""
        return self.test_node.collect(Plan, self.topic(topic), RELIABLE)

    def stop(self):
        """Press Ctrl-C: SIGINT to the launch's process group; return (exit code, output).

        Interactive launch does not forward a SIGINT of its own to its processes, because a
        terminal already sends Ctrl-C to the whole foreground group.
        """
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        code, _, _ = wait_exit(self.proc, 30.0, 'Ctrl-C')
        self.log.seek(0)
        return code, self.log.read()
