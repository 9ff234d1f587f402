"""The long versions of the abuse tests: oversized inputs and minutes-long floods. Prints tables.

    scripts/with-env python3 -m vlm_ros.benchmarks.abuse_long sizes [--model DIR]
    scripts/with-env python3 -m vlm_ros.benchmarks.abuse_long flood [--minutes 5] [--rate 1000]

sizes: a vlm_node process gets 1 MB and 10 MB instructions, a 10 MB question and a 10 MB raw
frame in a query; each row shows the status that came back, how long it took and the node's
resident memory afterwards. flood: for --minutes, instructions at --rate per second (reliable,
KEEP_ALL publisher), 30 simultaneous queries every 10 s and a 20 Hz camera; each minute shows
what was sent and answered and the node's memory. At the end every instruction must have had
exactly one Plan and every query an answer. Without --model, a tiny LLaVA with random weights.
A benchmark, not a test: it prints what happened and exits 1 when an answer was missing.
"""

import argparse
import collections
import os
import subprocess
import time
import uuid

import numpy as np
import rclpy
from ament_index_python.packages import get_package_prefix
from rclpy._rclpy_pybind11 import RCLError
from std_msgs.msg import String

from vlm_ros_msgs.srv import Query

from ..node.image_conversion import rgb_to_image
from ..spin import SpinThread
from .node_peer import KEEP_ALL, Peer, rss_mib, session

NODE = os.path.join(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_node')
MB = 1_000_000


def wait_result(future, timeout: float):
    """Return the future's result, or None after timeout s."""
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.005)
    return future.result() if future.done() else None


def sizes(peer: Peer, proc, query) -> bool:
    """Send each oversized input once; print status, seconds and RSS. True when all answered."""
    print('| input | answer | s | node RSS MiB |\n|---|---|---:|---:|', flush=True)
    answered = True
    for label, megabytes in (('instruction 1 MB', 1), ('instruction 10 MB', 10)):
        text = uuid.uuid4().hex + 'x' * (megabytes * MB)
        start = time.monotonic()
        peer.tasks.publish(String(data=text))
        got = peer.wait(lambda p, t=text: t in p.plans, 120)
        answered &= got
        status = peer.status_of(text) if got else 'no Plan in 120 s'
        print(f'| {label} | {status} | {time.monotonic() - start:.2f} | '
              f'{rss_mib(proc.pid):.0f} |', flush=True)
    frame = rgb_to_image(np.random.default_rng(0).integers(0, 255, (1800, 1920, 3), np.uint8))
    for label, request in (
            ('question 10 MB', Query.Request(question='q' * (10 * MB), image=frame)),
            (f'raw frame {len(frame.data) / MB:.1f} MB', Query.Request(question='what?',
                                                                       image=frame))):
        start = time.monotonic()
        response = wait_result(query.call_async(request), 120)
        answered &= response is not None
        status = 'no answer in 120 s' if response is None else \
            f'success={response.success} {response.message[:50]!r}'
        print(f'| {label} | {status} | {time.monotonic() - start:.2f} | '
              f'{rss_mib(proc.pid):.0f} |', flush=True)
    return answered


def flood(peer: Peer, proc, query, minutes: float, rate: float) -> bool:
    """Flood for minutes; print a row per minute. True when everything was answered once."""
    publisher = peer.create_publisher(String, 'instruction', KEEP_ALL)
    request = Query.Request(question='what is on the table?')
    sent, futures, started, blocked = [], [], time.monotonic(), 0
    print('| minute | instructions sent | Plans | queries sent | answered | node RSS MiB |\n'
          '|---:|---:|---:|---:|---:|---:|', flush=True)
    next_row, next_burst = 60.0, 0.0
    while (elapsed := time.monotonic() - started) < minutes * 60:
        if elapsed >= next_burst:
            futures += [query.call_async(request) for _ in range(30)]
            next_burst += 10.0
        text = f'{len(sent)} {uuid.uuid4().hex[:8]}'
        try:
            publisher.publish(String(data=text))
        except RCLError:  # the writer's history is full: flow control slows the sender
            blocked += 1
            time.sleep(0.01)
            continue
        sent.append(text)
        if elapsed >= next_row:
            print_row(peer, proc, elapsed, sent, futures)
            next_row += 60.0
        time.sleep(max(0.0, started + len(sent) / rate - time.monotonic()))
    sending = time.monotonic() - started
    print_row(peer, proc, sending, sent, futures)
    peer.wait(lambda p: len(p.plans) >= len(sent), 120)
    deadline = time.monotonic() + 30
    for future in futures:
        wait_result(future, max(0.0, deadline - time.monotonic()))
    print_row(peer, proc, time.monotonic() - started, sent, futures)
    with peer.lock:
        counts = collections.Counter(peer.plans)
    missing = sum(1 for text in sent if counts[text] == 0)
    repeated = sum(1 for text in sent if counts[text] > 1)
    unanswered = sum(1 for future in futures if not future.done())
    with peer.lock:
        statuses = collections.Counter(peer.statuses)
    print(f'\n{len(sent)} instructions ({len(sent) / sending:.0f}/s achieved; the publisher was '
          f'held back {blocked} times): {missing} without a Plan, {repeated} with more than '
          f'one; Plan statuses {dict(statuses)}; {len(futures)} queries, {unanswered} '
          'unanswered')
    return not (missing or repeated or unanswered)


def print_row(peer: Peer, proc, elapsed: float, sent: list, futures: list) -> None:
    """Print one minute's row of the flood table."""
    with peer.lock:
        plans = len(peer.plans)
    done = sum(future.done() for future in futures)
    print(f'| {elapsed / 60:.1f} | {len(sent)} | {plans} | {len(futures)} | {done} | '
          f'{rss_mib(proc.pid):.0f} |', flush=True)


def main() -> int:
    """Start the node, run the chosen mode, stop the node; exit 1 when an answer was missing."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', choices=('sizes', 'flood'))
    parser.add_argument('--model', help='default: a tiny LLaVA with random weights')
    parser.add_argument('--minutes', type=float, default=5.0)
    parser.add_argument('--rate', type=float, default=1000.0, help='instructions per second')
    args = parser.parse_args()
    with session(args.model) as (peer, model, scratch):
        # Answers refused at once come in bursts: a client keeping the last 10 would lose some.
        query = peer.create_client(Query, '/vlm_node/query', qos_profile=KEEP_ALL)
        spinner = SpinThread([peer])
        log = open(os.path.join(scratch, 'node.log'), 'w+')  # a pipe would fill and block
        proc = subprocess.Popen([NODE, '--ros-args', '-p', f'model:={model}', '-p',
                                 'device:=cpu', '-p', 'max_new_tokens:=16'],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            assert query.wait_for_service(timeout_sec=120), 'no query service'
            assert peer.wait(lambda p: p.diag.get('state') == 'active', 120), 'not active'
            ok = sizes(peer, proc, query) if args.mode == 'sizes' else \
                flood(peer, proc, query, args.minutes, args.rate)
            print(f'node alive: {proc.poll() is None}')
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            spinner.stop()
            rclpy.try_shutdown()
            log.close()
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
