"""SIGTERM/SIGINT while vlm_node generates with instructions waiting, many times. Prints a table.

    scripts/with-env python3 -m vlm_ros.benchmarks.shutdown_soak [--runs 20] [--waiting 6]
        [--sig TERM]

Each run starts a vlm_node process on a random-weight tiny LLaVA (it rarely stops, so every
answer generates max_new_tokens = 4096 tokens, seconds on a CPU; plans unconstrained, since the
plan grammar ends a plan at the schema's limits), streams a camera, publishes
1 + waiting instructions, waits until /diagnostics shows one generating and `waiting` queued,
then signals the node. A run passes when the process exits 0 without rclpy's abort and every
instruction got exactly one Plan. Reported: exit time after the signal, Plans per run.
"""

import argparse
import os
import random
import signal
import statistics
import subprocess
import tempfile
import time
import uuid

import rclpy
from ament_index_python.packages import get_package_prefix
from std_msgs.msg import String

from ..models import build_tiny
from ..spin import SpinThread
from .node_peer import Peer

NODE = os.path.join(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_node')


def run_once(peer: Peer, model: str, waiting: int, sig) -> dict:
    """Start a node, make it busy, signal it; return what happened."""
    with peer.lock:
        peer.plans, peer.diag = [], {}
    proc = subprocess.Popen([NODE, '--ros-args', '-p', f'model:={model}', '-p', 'device:=cpu',
                             '-p', 'max_new_tokens:=4096', '-p', f'queue_size:={waiting + 2}',
                             '-p', 'constrain_plans:=off'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert peer.wait(lambda p: p.diag.get('state') == 'active', 120), 'never active'
        assert peer.wait(lambda p: p.tasks.get_subscription_count() > 0, 30), 'no match'
        texts = [uuid.uuid4().hex for _ in range(waiting + 1)]
        for text in texts:
            peer.tasks.publish(String(data=text))
        busy = peer.wait(lambda p: p.diag.get('requests_in_progress') == '1' and
                         p.diag.get('queue_length') == str(waiting), 30)
        started = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
        peer.wait(lambda p: len(p.plans) >= len(texts), 5)
        with peer.lock:
            answered = sorted(t for t in peer.plans if t in texts)
        return {'busy': busy, 'code': proc.returncode, 'abort': 'terminate called' in err,
                'exit_s': took, 'plans': len(answered), 'once_each': answered == sorted(texts)}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main() -> int:
    """Run the soak and print one row per run plus a summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--waiting', type=int, default=6)
    parser.add_argument('--sig', choices=['TERM', 'INT'], default='TERM')
    args = parser.parse_args()
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.randint(1, 101)))
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    sig = getattr(signal, f'SIG{args.sig}')
    with tempfile.TemporaryDirectory() as scratch:
        model = str(build_tiny('llava', os.path.join(scratch, 'llava')))
        rclpy.init()
        peer = Peer()
        spinner = SpinThread([peer])
        rows = []
        try:
            print(f'| run | generating + {args.waiting} waiting at SIG{args.sig} | exit code | '
                  'abort | exit s | Plans | each once |\n|---:|---|---:|---|---:|---:|---|')
            for index in range(args.runs):
                row = run_once(peer, model, args.waiting, sig)
                rows.append(row)
                print(f"| {index + 1} | {row['busy']} | {row['code']} | {row['abort']} | "
                      f"{row['exit_s']:.3f} | {row['plans']}/{args.waiting + 1} | "
                      f"{row['once_each']} |", flush=True)
        finally:
            spinner.stop()
            rclpy.try_shutdown()
    ok = [r for r in rows if r['code'] == 0 and not r['abort'] and r['once_each'] and r['busy']]
    times = [r['exit_s'] for r in rows]
    print(f'\n{len(ok)}/{len(rows)} runs clean; exit after the signal: median '
          f'{statistics.median(times):.3f} s, max {max(times):.3f} s')
    return 0 if len(ok) == len(rows) else 1


if __name__ == '__main__':
    raise SystemExit(main())
