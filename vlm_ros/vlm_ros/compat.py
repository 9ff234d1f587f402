"""What differs between the ROS 2 distros vlm_ros runs on, in one place.

Tested on Kilted (rclpy 9.1) and Jazzy (rclpy 7.1), both from PyPI wheels (scripts/test runs
the suite on each); reviewed against Humble (rclpy 3.3), which has no wheels. Everything else
vlm_ros calls exists alike in all three (docs/DEVELOPING.md, "ROS 2 distros"):

- ``Subscription.get_publisher_count()`` came with rclpy 4.0 (Iron): on Humble the graph is
  asked instead (publisher_count);
- ``rclpy.clock_type`` is Jazzy's new home of ClockType: ``rclpy.clock`` still has it
  everywhere, and so does every timer here (steady_timer);
- the ROS distro itself is not in the environment of a wheels install: it is told from
  rclpy's major version (distro);
- discovery on this machine only is ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST from Iron on, and
  ROS_LOCALHOST_ONLY=1 on Humble; Jazzy warns on every process start when both are set
  (loopback_discovery);
- Jazzy's and Humble's ActionClient record a request after sending it, without a lock: a
  reply handled in between on the executor's thread is dropped ("Ignoring unexpected goal
  response") and its future never completes (ros2/rclpy#1123; Kilted holds a lock). Every
  action client here is ActionClient below, which holds one;
- alike on every distro, a callback group keeps a weak reference to each entity ever added,
  destroyed or not: nodes that create and destroy them for days (vlm_node's activations,
  camera and timer changes at run time, a head's timer per command) take ForgetsDestroyed.
"""

import threading
from importlib import metadata

from rclpy import action
from rclpy._rclpy_pybind11 import RCLError
from rclpy.clock import Clock, ClockType

# rclpy's major version per distro (ros2/rclpy's release branches).
DISTROS = {3: 'humble', 4: 'iron', 7: 'jazzy', 9: 'kilted', 10: 'rolling'}


def publisher_count(node, subscription) -> int:
    """Return how many publishers the subscription is matched with (a graph count on Humble)."""
    count = getattr(subscription, 'get_publisher_count', None)
    if count is not None:
        return count()
    return node.count_publishers(subscription.topic_name)


def steady_timer(node, period: float, callback, callback_group=None):
    """Create a timer on the steady clock.

    With use_sim_time a ROS-clock timer stops while no /clock arrives (a bag not playing), yet
    diagnostics, client checks and step timeouts must go on.
    """
    return node.create_timer(period, callback, callback_group=callback_group,
                             clock=Clock(clock_type=ClockType.STEADY_TIME))


def distro() -> str:
    """Name the ROS 2 distro of the rclpy in use ('unknown' for an unlisted version)."""
    try:
        version = metadata.version('ros-rclpy')  # the PyPI wheels
    except metadata.PackageNotFoundError:
        import os

        return os.environ.get('ROS_DISTRO', 'unknown')  # a sourced distro says so itself
    return DISTROS.get(int(version.split('.')[0]), f'unknown (rclpy {version})')


def loopback_discovery() -> dict:
    """Return the environment variables that keep DDS discovery on this machine."""
    if distro() == 'humble':
        return {'ROS_LOCALHOST_ONLY': '1'}
    return {'ROS_AUTOMATIC_DISCOVERY_RANGE': 'LOCALHOST'}


class ActionClient(action.ActionClient):
    """rclpy's ActionClient whose requests are recorded before their replies are read.

    Sending a goal, result or cancel request and recording its sequence number happen under
    one lock, and so does reading replies (execute), on every distro (ros2/rclpy#1123).

    It can also be made beside a spinning executor. Kilted's rclpy adds the client to its node's
    waitables before it creates the client's ``_lock``, and an executor that counts the
    node's entities in between died of "'ActionClient' object has no attribute '_lock'" (seen
    once in CI: the test's spin thread ended, and its goal was never accepted). The lock
    exists before rclpy's constructor runs; rclpy's own replaces it, unlocked, at the end.
    """

    def __init__(self, *args, **kwargs):
        self._lock = threading.Lock()
        self._request_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    def send_goal_async(self, *args, **kwargs):
        """Send a goal (see rclpy); its reply cannot be read before it is recorded."""
        with self._request_lock:
            return super().send_goal_async(*args, **kwargs)

    def _get_result_async(self, *args, **kwargs):
        with self._request_lock:
            return super()._get_result_async(*args, **kwargs)

    def _cancel_goal_async(self, *args, **kwargs):
        with self._request_lock:
            return super()._cancel_goal_async(*args, **kwargs)

    async def execute(self, taken_data):
        """Handle replies and feedback (see rclpy) once no request is half-recorded."""
        with self._request_lock:
            await super().execute(taken_data)


def execute_goal(handle) -> None:
    """Run an accepted goal's execute callback, also where a cancel comes at the same moment.

    rclpy's ServerGoalHandle.execute() skips the EXECUTING state for a goal already CANCELING,
    but checks then acts: a cancel accepted on an executor thread in between (the node's
    cancel callbacks wake the worker, which answers at once) makes EXECUTE from CANCELING
    invalid, and the execute callback would never run: the client would never get its result
    (forced in that order with rclpy, in a script). The goal is CANCELING then, so a second
    call skips the state and runs it.
    """
    try:
        handle.execute()
    except RCLError:  # 'attempted invalid transition from state CANCELING'
        if not handle.is_cancel_requested:
            raise
        handle.execute()


class ForgetsDestroyed:
    """A Node mixin: destroying a timer, subscription or publisher drops dead group entries.

    rclpy's ``CallbackGroup.add_entity`` adds a weak reference to a set that nothing prunes:
    20,000 StepCommands to a head that made a timer for each left 20,000 entries (3.9 MB), and
    every parameter change that made a timer anew one more. Entries whose entity is gone are
    removed in place (one just destroyed goes at the next destroy, once its last reference
    is): an entity another thread adds meanwhile keeps its entry.
    """

    def destroy_timer(self, timer) -> bool:
        """Destroy as rclpy does, then forget dead entries of its group."""
        return self._forgetting(timer, super().destroy_timer)

    def destroy_subscription(self, subscription) -> bool:
        """Destroy as rclpy does, then forget dead entries of its group."""
        return self._forgetting(subscription, super().destroy_subscription)

    def destroy_publisher(self, publisher) -> bool:
        """Destroy as rclpy does, then forget dead entries of its event handlers' groups."""
        return self._forgetting(publisher, super().destroy_publisher)

    @staticmethod
    def _forgetting(entity, destroy) -> bool:
        groups = {getattr(part, 'callback_group', None)
                  for part in (entity, *getattr(entity, 'event_handlers', ()))} - {None}
        destroyed = destroy(entity)
        for group in groups:
            for ref in [ref for ref in list(group.entities) if ref() is None]:
                group.entities.discard(ref)
        return destroyed
