#!/usr/bin/env python3
"""How closely vlm_replay keeps a recording's timing: gap errors over real DDS. Prints a table.

    scripts/with-env python -m vlm_ros.benchmarks.replay_timing [--messages 200] [--side 640]

Writes a bag of camera frames (side x 3/4 side rgb8) and instructions with gaps of 20-150 ms,
replays it with the installed vlm_replay (a separate process) at each rate and storage, and
compares the gaps between receive times in this process with the recorded gaps / rate.
"""

import argparse
import pathlib
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

from ..bag.storage import add_topic, bag_writer, header, serialize
from ..spin import SpinThread

IMAGE, INSTRUCTION = '/bench/image', '/bench/instruction'


def write_bag(path, count: int, side: int, storage: str) -> list:
    """Write count messages (every 4th an instruction); return their log times (ns)."""
    rng = np.random.default_rng(0)
    height = side * 3 // 4
    times, t = [], 1_767_225_600 * 10**9
    with bag_writer(path, storage) as writer:
        image = add_topic(writer, IMAGE, 'sensor_msgs/msg/Image')
        instruction = add_topic(writer, INSTRUCTION, 'std_msgs/msg/String')
        for k in range(count):
            t += int(rng.integers(20, 150)) * 1_000_000
            if k % 4 == 3:
                writer.write(instruction, t, serialize('std_msgs/msg/String', data=f'do {k}'))
            else:
                frame = np.full(height * side * 3, k % 256, np.uint8)
                writer.write(image, t, serialize(
                    'sensor_msgs/msg/Image', header=header(t, 'cam'), height=height, width=side,
                    encoding='rgb8', is_bigendian=0, step=side * 3, data=frame))
            times.append(t)
    return times


def measure(node: Node, bag, times: list, rate: float) -> np.ndarray:
    """Replay bag at rate; return |received gap - recorded gap / rate| in ms per pair."""
    received, done = [], threading.Event()

    def on_message(_):
        received.append(time.monotonic())
        if len(received) == len(times):
            done.set()

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    subs = [node.create_subscription(cls, topic, on_message, qos, raw=True)
            for topic, cls in ((IMAGE, Image), (INSTRUCTION, String))]
    replay = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_replay'
    proc = subprocess.Popen([str(replay), str(bag), '--rate', str(rate),
                             '--wait-for-subscribers', '30'], stderr=subprocess.DEVNULL)
    finished = done.wait(60 + (times[-1] - times[0]) / 1e9 / rate)
    proc.wait(30)
    for sub in subs:
        node.destroy_subscription(sub)
    if not finished:
        raise SystemExit(f'only {len(received)} of {len(times)} messages arrived')
    recorded = np.diff(times) / 1e6 / rate
    return np.abs(np.diff(received) * 1e3 - recorded)


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--messages', type=int, default=200)
    parser.add_argument('--side', type=int, default=640, help='frame width in pixels')
    args = parser.parse_args()
    rclpy.init()
    node = Node('replay_timing')
    spinner = SpinThread([node])
    print('| storage | rate | messages | frame | median gap error ms | p95 ms | max ms |')
    print('|---|---:|---:|---|---:|---:|---:|')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for storage in ('mcap', 'sqlite3'):
                bag = pathlib.Path(tmp, storage)
                times = write_bag(bag, args.messages, args.side, storage)
                for rate in (1.0, 2.0):
                    errors = measure(node, bag, times, rate)
                    print(f'| {storage} | {rate:g} | {args.messages} | '
                          f'{args.side}x{args.side * 3 // 4} | {np.median(errors):.2f} | '
                          f'{np.percentile(errors, 95):.2f} | {errors.max():.2f} |', flush=True)
    finally:
        spinner.stop()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
