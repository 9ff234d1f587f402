"""What ROS adds to a VLM answer, and whether vlm_node's memory stays flat. Prints tables.

    scripts/with-env python3 -m vlm_ros.benchmarks.ros_overhead latency [--model DIR] [--runs 10]
    scripts/with-env python3 -m vlm_ros.benchmarks.ros_overhead soak --minutes 10 [--model DIR]

latency: the same model and frame, answered (a) by VlmEngine in this process and (b) by a
vlm_node process over DDS (instruction published -> Plan received, camera streaming at 30 Hz),
at 640x480 and 1920x1080. soak: a 30 Hz 640x480 stream plus an instruction every 2 s, with
the node's resident memory sampled every 30 s.
Without --model, a tiny LLaVA is built and trained on the plan (seconds, offline).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import rclpy
from ament_index_python.packages import get_package_prefix
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vlm_ros_msgs.msg import Plan

from ..engine import EngineConfig, Request
from ..engine.local import VlmEngine
from ..engine.prompts import load_templates, render_task
from ..node.image_conversion import rgb_to_image
from ..spin import SpinThread
from .node_peer import rss_mib

INSTRUCTION = 'put the red block in the bin'
PLAN = json.dumps({'steps': [{'instruction': 'pick up the red block', 'skill': 'pick',
                              'target': 'red block'}]})
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def frame(height: int, width: int) -> np.ndarray:
    """Draw a grey table with a red block, at any resolution."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[height // 3:2 * height // 3, width // 3:width // 2] = (220, 30, 30)
    return image


def tiny_model(scratch: str) -> str:
    """Build and train a tiny LLaVA to answer INSTRUCTION with PLAN."""
    from ..models import build_tiny, train_tiny

    path = build_tiny('llava', pathlib.Path(scratch) / 'llava')
    prompt = render_task(load_templates(), 'plan', INSTRUCTION)
    train_tiny(path, [(frame(480, 640), prompt, PLAN), (frame(1080, 1920), prompt, PLAN)])
    return str(path)


class Bench(Node):
    """Streams camera frames and instructions to vlm_node; timestamps the Plans that return."""

    def __init__(self):
        super().__init__('ros_overhead_bench')
        self.image_pub = self.create_publisher(Image, 'image', 10)
        self.instruction_pub = self.create_publisher(String, 'instruction', RELIABLE)
        self.plans = {}
        self.arrived = threading.Condition()
        self.create_subscription(Plan, 'plan', self._on_plan, RELIABLE)
        self._frame = None
        self.create_timer(1 / 30, self._publish_frame)

    def _on_plan(self, plan: Plan) -> None:
        with self.arrived:
            self.plans[plan.instruction] = (time.perf_counter(), plan)
            self.arrived.notify_all()

    def _publish_frame(self) -> None:
        if self._frame is not None:
            self._frame.header.stamp = self.get_clock().now().to_msg()
            self.image_pub.publish(self._frame)

    def set_frame(self, rgb) -> None:
        """Stream rgb (None: stop)."""
        self._frame = None if rgb is None else rgb_to_image(rgb)

    def ask(self, text: str, timeout: float = 120.0):
        """Publish one instruction; return (seconds until its Plan arrived, the Plan)."""
        start = time.perf_counter()
        self.instruction_pub.publish(String(data=text))
        with self.arrived:
            if not self.arrived.wait_for(lambda: text in self.plans, timeout):
                raise RuntimeError(f'no plan for {text!r} within {timeout} s')
            arrived, plan = self.plans.pop(text)
        return arrived - start, plan


def start_node(model: str) -> subprocess.Popen:
    """Start the installed vlm_node on model, as ros2 run would."""
    exe = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_node'
    return subprocess.Popen([str(exe), '--ros-args', '-p', f'model:={model}', '-p',
                             'device:=cpu', '-p', 'dtype:=float32', '-p', 'max_new_tokens:=64',
                             '-p', 'wait_for_image:=5.0'], stderr=subprocess.DEVNULL)


def wait_ready(bench: Bench, runs: int = 1) -> None:
    """Wait until the node answers an instruction (model loaded, DDS matched)."""
    deadline = time.monotonic() + 180
    while bench.instruction_pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise RuntimeError('vlm_node did not come up')
        time.sleep(0.1)
    for _ in range(runs):
        bench.ask(INSTRUCTION)


def latency(args, model: str, bench: Bench) -> None:
    """Print engine vs end-to-end latency at two resolutions."""
    engine = VlmEngine(EngineConfig(model=model, device='cpu', dtype='float32',
                                    max_new_tokens=64))
    engine.load()
    print('| frame | engine ms (p50) | vlm_node e2e ms (p50) | Plan.total_time ms (p50) | '
          'ROS overhead ms | plan status |')
    print('|---|---:|---:|---:|---:|---|')
    for height, width in ((480, 640), (1080, 1920)):
        rgb = frame(height, width)
        engine.run([Request('plan', rgb, INSTRUCTION)])
        raw = [engine.run([Request('plan', rgb, INSTRUCTION)])[0].total_time
               for _ in range(args.runs)]
        bench.set_frame(rgb)
        wait_ready(bench, 2)
        e2e, node_total, status = [], [], set()
        for _ in range(args.runs):
            seconds, plan = bench.ask(INSTRUCTION)  # one at a time: same text, same answer
            e2e.append(seconds)
            node_total.append(plan.total_time)
            status.add(plan.status)
        raw_ms = 1000 * statistics.median(raw)
        e2e_ms = 1000 * statistics.median(e2e)
        print(f'| {width}x{height} | {raw_ms:.1f} | {e2e_ms:.1f} | '
              f'{1000 * statistics.median(node_total):.1f} | {e2e_ms - raw_ms:.1f} | '
              f'{sorted(status)} |', flush=True)


def soak(args, bench: Bench, node: subprocess.Popen) -> None:
    """Stream 640x480 at 30 Hz with an instruction every 2 s; print RSS every 30 s."""
    bench.set_frame(frame(480, 640))
    wait_ready(bench)
    print('| minute | vlm_node RSS MiB | plans answered |')
    print('|---:|---:|---:|')
    start = time.monotonic()
    answered, next_sample = 0, 0.0
    while (elapsed := time.monotonic() - start) < args.minutes * 60:
        if elapsed >= next_sample:
            print(f'| {elapsed / 60:.1f} | {rss_mib(node.pid):.0f} | {answered} |', flush=True)
            next_sample += 30
        bench.ask(INSTRUCTION)
        answered += 1
        time.sleep(2.0)
    print(f'| {args.minutes:.1f} | {rss_mib(node.pid):.0f} | {answered} |', flush=True)


def main() -> int:
    """Run the chosen measurement."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', choices=('latency', 'soak'))
    parser.add_argument('--model', help='model directory (default: a trained tiny LLaVA)')
    parser.add_argument('--runs', type=int, default=10)
    parser.add_argument('--minutes', type=float, default=10.0)
    args = parser.parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tiny_model(scratch)
        node = start_node(model)
        rclpy.init()
        bench = Bench()
        spinner = SpinThread([bench])
        try:
            if args.mode == 'latency':
                latency(args, model, bench)
            else:
                soak(args, bench, node)
        finally:
            spinner.stop()
            rclpy.try_shutdown()
            node.terminate()
            node.wait()
    return 0


if __name__ == '__main__':
    sys.exit(main())
