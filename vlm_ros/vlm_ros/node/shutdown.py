"""vlm_node on its way out: closing its outputs, and the shutdown a signal starts.

What is answered on the way out (CANCELLED, PREEMPTED) must still reach its subscribers and
clients: the outputs close only once acknowledged, and the executor keeps spinning until the
answers are sent. Each function gets what it needs from the node, called when needed.
"""

import threading
import time
from collections.abc import Callable

from rclpy.duration import Duration
from rclpy.executors import Executor

ACK_TIMEOUT = 0.5  # s the last answers may take to be acknowledged before outputs close
DRAIN_TIMEOUT = 1.0  # s queries and goals answered on the way out may take to be sent


def close_outputs(publishers: list, destroy_publisher: Callable) -> None:
    """Destroy each publisher once what it sent is acknowledged, or after ACK_TIMEOUT.

    Reliable subscribers acknowledge on the writer's next heartbeat, so the wait is bounded:
    what was published has left the process by then in any case.
    """
    for publisher in publishers:
        publisher.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT))
        destroy_publisher(publisher)


def shutdown_gracefully(state: str, trigger_shutdown: Callable[[], object],
                        busy: Callable[[], bool], executor: Callable[[], Executor]) -> None:
    """Run the shutdown transition from state, then let its answers go out (DRAIN_TIMEOUT).

    ``busy()`` tells whether queries or goals answered on the way out are still being sent;
    ``executor()`` is the node's executor, still spinning.
    """
    if state in ('unconfigured', 'inactive', 'active'):
        trigger_shutdown()
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while busy() and time.monotonic() < deadline:
        time.sleep(0.01)
    # An action result goes out in an executor task scheduled after its execute callback:
    # two round trips through the executor let those tasks run before it stops.
    for _ in range(2):
        through = threading.Event()
        executor().create_task(through.set)
        through.wait(max(0.0, deadline - time.monotonic()))
