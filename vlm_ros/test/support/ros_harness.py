"""Helpers for tests that talk to real ROS 2 processes over real DDS.

Every wait here is an event wait with a deadline, never a fixed sleep: a test finishes as soon
as what it waits for happens, and fails with a reason when it does not happen in time.
"""

import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

from rclpy.node import Node
from vlm_ros.spin import SpinThread
from waiting import wait_exit

HERE = pathlib.Path(__file__).resolve().parent


class Collector:
    """Thread-safe list of received messages that a test can wait on."""

    def __init__(self):
        self._items = []
        self._cond = threading.Condition()
        self.subscription = None  # set by TestNode.collect

    def __call__(self, msg) -> None:
        with self._cond:
            self._items.append(msg)
            self._cond.notify_all()

    def items(self) -> list:
        with self._cond:
            return list(self._items)

    def from_now(self):
        """Return wait(predicate, timeout, what): wait_for over the items that come after this.

        A state said once may be said again later: a wait for the later one must not take the
        earlier one. (An item on its way already counts as later: wait for what it cannot be.)
        """
        known = {id(item) for item in self.items()}  # the items are kept: no id is reused
        return lambda predicate, timeout, what: self.wait_for(
            lambda item: id(item) not in known and predicate(item), timeout, what)

    def wait_for(self, predicate, timeout: float, what: str):
        """Return the first item matching predicate; fail the test after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self._items:
                    if predicate(item):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'timed out after {timeout} s waiting for {what}; '
                                         f'got {len(self._items)} other messages')
                self._cond.wait(left)


class TestNode:
    """An rclpy node in the test process, spinning on a background thread."""

    def __init__(self, name: str):
        self.node = Node(name)
        self._spin = SpinThread([self.node])

    def collect(self, msg_type, topic: str, qos=10) -> Collector:
        """Subscribe to topic and return a Collector of what arrives."""
        collector = Collector()
        collector.subscription = self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def close(self) -> None:
        self._spin.stop()


def wait_future(future, timeout: float, what: str):
    """Wait for an rclpy future completed by the spin thread; return its result."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        raise AssertionError(f'timed out after {timeout} s waiting for {what}')
    return future.result()


def start_process(args: list, **kwargs) -> subprocess.Popen:
    """Start a Python helper script from the test folder as its own process."""
    script = str(HERE / args[0])
    return subprocess.Popen([sys.executable, script, *args[1:]], env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def stop_process(proc: subprocess.Popen, sig=signal.SIGINT, timeout: float = 20.0):
    """Signal a process and return (returncode, stdout, stderr) once it has exited."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return wait_exit(proc, timeout, f'{sig!r}')


def stopped_cleanly(make, request=None):
    """Fixture body: yield a starter of processes (make's), then stop each one still running.

    Every stop must end the process cleanly: exit 0, without rclpy's abort, so every test that
    starts a process also checks its shutdown. Use as ``yield from stopped_cleanly(make)``.
    With the fixture's request, a failed test's report shows each process's log (conftest).
    """
    started = []
    if request is not None:
        request.node.started_processes = started

    def start(*args, **kwargs):
        started.append(make(*args, **kwargs))
        return started[-1]
    yield start
    for item in started:
        if item.proc.poll() is None:
            code, output = item.stop()
            assert code == 0 and 'terminate called' not in output, output[-3000:]
        elif item.proc.returncode != 0 and not getattr(item.proc, 'exit_seen', False):
            # It ended during the test, which did not look (wait_exit): a crash, say, that
            # the test went on without.
            log = getattr(item, 'log_text', lambda: '')()
            raise AssertionError(f'{item.proc.args[0]} ended with exit status '
                                 f'{item.proc.returncode} during the test: {log[-3000:]}')
