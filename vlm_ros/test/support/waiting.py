"""Waiting with a deadline, for tests with or without ROS (it imports none).

A wait here ends as soon as what it waits for is true, and fails with a reason when it is not
true in time: never a fixed sleep.
"""

import os
import pty
import select
import signal
import subprocess
import time

ABORT_GRACE = 10.0  # s a process that did not stop gets to print its stacks on SIGABRT


def wait_until(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll a cheap predicate (e.g. a graph query) until true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(poll)


def wait_exit(proc: subprocess.Popen, timeout: float, after: str = 'its start'):
    """Wait for a process to end by itself; return (returncode, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        # SIGABRT first: a vlm_ros process prints every thread's stack on it (spin_main).
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(ABORT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f'no exit within {timeout} s of {after}: {err}') from exc
    proc.exit_seen = True  # the caller has the exit status (stopped_cleanly)
    return proc.returncode, out, err


def run_on_a_terminal(args: list, timeout: float) -> tuple:
    """Run args to their end with stderr on a terminal (a pty); return (returncode, stderr).

    What a user sees in a terminal: a tool may draw there what it keeps out of a pipe. Past
    the deadline the process is killed, and its status says so.
    """
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(arg) for arg in args], stdout=subprocess.DEVNULL,
                            stderr=follower)
    os.close(follower)
    said, deadline = b'', time.monotonic() + timeout
    try:
        while select.select([leader], [], [], max(deadline - time.monotonic(), 0))[0]:
            said += os.read(leader, 4096)  # EIO once the process has closed the terminal
    except OSError:
        pass
    finally:
        os.close(leader)
        proc.kill()  # nothing to kill once it has ended
    return proc.wait(timeout), said.decode()
