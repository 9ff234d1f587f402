"""Polling with a deadline, for tests with or without ROS (it imports none).

A wait here ends as soon as what it waits for is true, and fails with a reason when it is not
true in time: never a fixed sleep.
"""

import time


def wait_until(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll a cheap predicate (e.g. a graph query) until true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(poll)
