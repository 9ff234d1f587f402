"""The goals an action server has accepted and not yet finished, and their clients' cancels.

Shared by ~/generate_plan and ~/execute_plan, which answer goals from the worker's thread
(accepted/execute). rclpy leaves two windows around a cancel, each hit under load (Jazzy,
2 cores: 2 of 3 runs of 40 cancels in a row; a CI run's goal that never got its result):

- it sends a goal's acceptance before it calls handle_accepted_callback, so a client that
  cancels at once can reach the cancel callback before the goal is entered here: the cancel
  was rejected and the goal ran on (a plan waiting minutes for a camera frame);
- it marks a goal CANCELING only once the cancel callback has returned ACCEPT, and the worker
  answers a cancelled job at once, from its own thread or inside the cancel callback: the
  execute callback could run while the goal was still EXECUTING, and it ended ABORTED though
  its client's cancel had been accepted.

The book accepts the first cancel (``enter`` says so, and the goal is answered CANCELLED
without being started) and waits out the second (``finish``: microseconds, on another thread).
"""

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Optional

from action_msgs.msg import GoalStatus

SETTLE_TIMEOUT = 1.0  # s finish waits for rclpy to mark a goal whose cancel it accepted
SETTLE_CHECK = 0.001  # s between looks
CLIENT_CHECK_PERIOD = 1.0  # s between looks at the graph while goals run
ORPHAN_CHECKS = 2  # looks in a row without a client before goals are ended
CLIENT_GONE = 'the action client is gone'
# s a goal's result is kept for its client to ask for, after the goal ended (both servers). Set
# here as the distros' defaults differ (Jazzy 900, Kilted 10), and each kept goal holds its
# request: a goal's image of up to max_image_pixels was kept 15 minutes, whatever the count.
RESULT_TIMEOUT = 30


def _key(handle) -> bytes:
    return bytes(handle.goal_id.uuid)


class GoalBook:
    """Each accepted goal's record (the server's own object), by goal id, until finished."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = {}  # goal id -> record
        self._cancelled = set()  # goal ids whose client's cancel was accepted

    def enter(self, handle, record) -> bool:
        """Keep record (handle_accepted_callback); False when the goal is cancelled already.

        A goal cancelled before it was entered is to be answered CANCELLED, not started.
        """
        key = _key(handle)
        with self._lock:
            self._records[key] = record
            return key not in self._cancelled

    def cancel(self, handle) -> tuple[bool, Optional[object]]:
        """Take a client's cancel (cancel_callback): (whether to accept it, the goal's record).

        Accepted unless the goal is finished; the record is None for a goal not yet entered.
        """
        key = _key(handle)
        with self._lock:
            record = self._records.get(key)
            if record is None and handle.status != GoalStatus.STATUS_ACCEPTED:
                return False, None  # answered: its execute callback has taken it
            self._cancelled.add(key)
            return True, record

    def finish(self, handle) -> tuple[object, bool]:
        """Take the goal's record (execute_callback): (record, whether it may end CANCELED).

        It may where its client's cancel was accepted and rclpy has marked it CANCELING, which
        is awaited here (SETTLE_TIMEOUT at most: the rest of the cancel callback).
        """
        key = _key(handle)
        with self._lock:
            record = self._records.pop(key)
            cancelled = key in self._cancelled
            self._cancelled.discard(key)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while cancelled and not handle.is_cancel_requested and time.monotonic() < deadline:
            time.sleep(SETTLE_CHECK)
        return record, cancelled and handle.is_cancel_requested

    def records(self) -> list:
        """Return the records of the goals not yet finished."""
        with self._lock:
            return list(self._records.values())

    def busy(self) -> bool:
        """Tell whether a goal still waits for its result to be sent."""
        with self._lock:
            return bool(self._records)


def action_clients(node, action: str) -> Callable[[], int]:
    """Return a count of the clients of node's action that could still take a result.

    Every action client subscribes to the action's feedback topic.
    """
    return partial(node.count_subscribers, f'{action}/_action/feedback')


class Orphans:
    """Tell which goals no action client is left to take the result of (every CLIENT_CHECK_PERIOD).

    A client that exits leaves the graph at once; one that is killed, when DDS notices its
    participant is gone (its lease: 20 s with Fast DDS's defaults). Goals younger than the
    looks are kept, so a client whose feedback subscription is not yet discovered is not
    taken for gone. With several clients a vanished one's goals run on until the last client
    leaves: a goal does not say which client sent it. ``clients()``: action_clients.
    """

    def __init__(self, clients: Callable[[], int]):
        self._clients = clients
        self._looks = 0  # looks in a row that found no action client

    def look(self, goals: list, received: Callable[[object], float]) -> list:
        """Return those of goals (not yet answered) to end, by ``received`` (monotonic s)."""
        if not goals or self._clients() > 0:
            self._looks = 0
            return []
        self._looks += 1
        if self._looks < ORPHAN_CHECKS:
            return []
        oldest = time.monotonic() - ORPHAN_CHECKS * CLIENT_CHECK_PERIOD
        return [goal for goal in goals if received(goal) < oldest]
