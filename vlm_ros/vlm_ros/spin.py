"""The one start-up and shutdown pattern every vlm_ros process uses.

rclpy aborts the process ("terminate called without an active exception") when a thread is still
inside an executor while the context shuts down. So shutdown always goes: executor stopped, spin
thread joined, nodes destroyed, then ``rclpy.try_shutdown()``. SIGINT and SIGTERM are handled by
rclpy's signal handlers (installed by ``rclpy.init``), which shut the context down; the spinning
executor then returns or raises, and the pattern above runs, so the process exits 0.
"""

import threading
from collections.abc import Callable, Sequence
from typing import Optional

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


class SpinThread:
    """Spin nodes on a background thread, and stop them in the order rclpy needs.

    Tests and tools that need the calling thread free (to publish, wait on events, assert) use
    this instead of ``rclpy.spin``; ``stop`` is safe to call twice.
    """

    def __init__(self, nodes: Sequence[Node], executor: Optional[Executor] = None):
        self._nodes = list(nodes)
        self._executor = executor or MultiThreadedExecutor()
        for node in self._nodes:
            self._executor.add_node(node)
        self._thread = threading.Thread(target=self._spin, name='ros-spin', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def stop(self) -> None:
        """Stop the executor, join its thread, destroy the nodes."""
        self._executor.shutdown()
        self._thread.join()
        for node in self._nodes:
            node.destroy_node()
        self._nodes.clear()


def spin_main(make_node: Callable[[], Node], args: Optional[list] = None,
              executor: Optional[Executor] = None) -> int:
    """Run one node until Ctrl-C, SIGTERM or an external shutdown; return the exit code (0).

    A ``MultiThreadedExecutor`` is the default so that services, actions and parameter callbacks
    stay responsive while another callback group is busy.
    """
    rclpy.init(args=args)
    node = None
    executor = executor or MultiThreadedExecutor()
    try:
        node = make_node()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
