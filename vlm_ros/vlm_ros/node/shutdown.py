"""vlm_node on its way out: closing its outputs, and the shutdown a signal starts.

What is answered on the way out (CANCELLED, PREEMPTED) must still reach its subscribers and
clients: the outputs close only once acknowledged, and the executor keeps spinning until the
answers are sent. Each function gets what it needs from the node, called when needed.
"""

import threading
import time
from collections.abc import Callable
from typing import Optional

from rclpy.duration import Duration

ACK_TIMEOUT = 0.5  # s the last answers may take to be acknowledged before outputs close
DRAIN_TIMEOUT = 3.0  # s queries and goals answered on the way out may take to be sent
# s the executor keeps serving once those are sent: a client's request for a result it was
# answered (an action's get_result) may still be on its way, sent just before the signal
GRACE = 0.5


def close_outputs(publishers: list, destroy_publisher: Callable) -> None:
    """Destroy each publisher once what it sent is acknowledged, all within ACK_TIMEOUT.

    Reliable subscribers acknowledge on the writer's next heartbeat, which may come later than
    the timeout: one deadline for all, since their acknowledgements arrive side by side (one
    timeout each made a shutdown after a plan step wait 0.5 s for each of three publishers).
    What was published has left the process by then in any case.
    """
    deadline = time.monotonic() + ACK_TIMEOUT
    for publisher in publishers:
        left = max(0.0, deadline - time.monotonic())
        publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        destroy_publisher(publisher)


def shutdown_gracefully(state: str, trigger_shutdown: Callable[[], object],
                        busy: Callable[[], bool],
                        tasks_done: Callable[[], bool]) -> Optional[float]:
    """Run the shutdown transition from state, then let its answers go out (DRAIN_TIMEOUT).

    ``busy()`` tells whether queries or goals answered on the way out still wait for their
    answer; ``tasks_done()`` whether the executor (still spinning) has run every task created
    on it: an action result is sent from such tasks after the goal's execute callback.
    Checked in that order, so a goal that is no longer busy has created its tasks. Where
    something was answered on the way out, the executor then serves for GRACE more: rclpy sends
    an action's result only when its client asks, and that request may still be in flight.
    That includes what the transition itself answered and sent (busy before it): the process
    ended as soon as the transition returned, and a get_result request still in flight then
    went unanswered.
    Return drain's answer.
    """
    answering = busy()
    if state in ('unconfigured', 'inactive', 'active'):
        trigger_shutdown()
    return drain(busy, tasks_done, answered=answering)


def drain(busy: Callable[[], bool], tasks_done: Callable[[], bool],
          answered: bool = False) -> Optional[float]:
    """Return once what was answered has gone out: GRACE s without work (DRAIN_TIMEOUT at most).

    answered: something was answered already (the shutdown transition's own response), so the
    executor serves for GRACE at least; otherwise it returns at once when nothing is pending.
    Return the seconds until the last answer was sent (None: nothing was answered), for the log.
    """
    start = time.monotonic()
    deadline, quiet_since = start + DRAIN_TIMEOUT, start
    while time.monotonic() < deadline:
        now = time.monotonic()
        if busy() or not tasks_done():
            answered, quiet_since = True, now
        elif not answered or now - quiet_since >= GRACE:
            break
        time.sleep(0.01)
    return quiet_since - start if answered else None


def end_when_drained(done: threading.Event, busy: Callable[[], bool],
                     tasks_done: Callable[[], bool]) -> None:
    """After the lifecycle shutdown transition, set done once its answers have gone out.

    They include the transition's own response, so the executor serves GRACE s at least. Where
    done is set already, a signal's shutdown_gracefully is ending the process itself.
    """
    if done.is_set():
        return

    def end() -> None:
        drain(busy, tasks_done, answered=True)
        done.set()
    threading.Thread(target=end, name='shutdown', daemon=True).start()
