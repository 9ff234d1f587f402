"""The test peer of the node benchmarks: a camera, an instruction publisher, and collectors.

Used by shutdown_soak, lifecycle_storm and abuse_long
(scripts/with-env python3 -m vlm_ros.benchmarks.NAME).
"""

import contextlib
import os
import pathlib
import random
import tempfile
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vlm_ros_msgs.msg import Plan

from ..models import build_tiny
from ..node.image_conversion import rgb_to_image

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
STATUS_NAMES = {getattr(Plan, name): name for name in dir(Plan) if name.startswith('STATUS_')}


def rss_mib(pid: int) -> float:
    """Return a process's resident memory in MiB (Linux /proc)."""
    for line in pathlib.Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def isolate() -> None:
    """Use a random DDS domain on this machine only: a run never meets another's nodes."""
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')


@contextlib.contextmanager
def session(model):
    """Yield (Peer, model, scratch dir) in an isolated domain; model None: a random tiny LLaVA.

    rclpy is initialised for the peer and shut down after it.
    """
    isolate()
    with tempfile.TemporaryDirectory() as scratch:
        model = model or str(build_tiny('llava', os.path.join(scratch, 'llava')))
        rclpy.init()
        try:
            yield Peer(), model, scratch
        finally:
            rclpy.try_shutdown()


class Peer(Node):
    """Camera, instruction publisher, Plan and diagnostics collector."""

    def __init__(self):
        super().__init__('bench_peer')
        self.plans, self.statuses, self.diag = [], [], {}
        self.lock = threading.Lock()
        self.create_subscription(Plan, 'plan', self._plan, KEEP_ALL)
        self.create_subscription(DiagnosticArray, '/diagnostics', self._diag, 10)
        self.tasks = self.create_publisher(String, 'instruction', RELIABLE)
        images = self.create_publisher(Image, 'image', 10)
        frame = rgb_to_image(np.full((48, 64, 3), 128, np.uint8))
        self.create_timer(0.05, lambda: images.publish(frame))

    def _plan(self, msg):
        with self.lock:
            self.plans.append(msg.instruction)
            self.statuses.append(STATUS_NAMES.get(msg.status, str(msg.status)))

    def status_of(self, instruction: str) -> str:
        """Return the status name of the last Plan for instruction ('' when none came)."""
        with self.lock:
            found = [s for i, s in zip(self.plans, self.statuses, strict=True)
                     if i == instruction]
        return found[-1] if found else ''

    def _diag(self, msg):
        for status in msg.status:
            if status.name == '/vlm_node: vlm':
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in status.values}

    def wait(self, predicate, timeout: float) -> bool:
        """Poll predicate(self) under the lock until true (True) or timeout (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self):
                    return True
            time.sleep(0.02)
        return False
