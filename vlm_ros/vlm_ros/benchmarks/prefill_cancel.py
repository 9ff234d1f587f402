"""How fast a cancel stops a long first forward (vision encoder + prefill). Prints a table.

    scripts/with-env python3 -m vlm_ros.benchmarks.prefill_cancel [--random smolvlm-256m]
        [--runs 3]

A random-weight model at a real model's size (models/real_size.py) answers a plan request
on a 640x480 frame on this machine's CPU, where the first forward takes seconds. The time to
the first token is measured without cancelling; then the request is cancelled from another
thread at 10 %, 30 % and 60 % of that time, and the table shows how long run() took to return
after the cancel (the rest of the layer that was running), over the runs the cancel reached
before their first token. Before the engine checked the
cancel per layer, the whole first forward ran out. A benchmark, not a test: it asserts nothing.
"""

import argparse
import statistics
import tempfile
import threading
import time

import numpy as np

from ..engine import EngineConfig, Request
from ..engine.local import VlmEngine
from ..models.real_size import SIZES, build_random

INSTRUCTION = 'put the red block in the bin'


def cancelled_after(engine, request, delay: float) -> tuple:
    """Cancel request delay s into run(); return (s from cancel to return, tokens made)."""
    cancel = threading.Event()
    cancelled_at = []
    timer = threading.Timer(delay, lambda: (cancelled_at.append(time.perf_counter()),
                                            cancel.set()))
    timer.start()
    result = engine.run([request], cancel=cancel)[0]
    returned = time.perf_counter()
    timer.join()
    latency = returned - cancelled_at[0] if cancelled_at else float('nan')
    return latency, result.output_tokens, result.cancelled


def main() -> None:
    """Time the uncancelled first token, then cancel at shares of it; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--random', default='smolvlm-256m', choices=sorted(SIZES))
    parser.add_argument('--runs', type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as scratch:
        engine = VlmEngine(EngineConfig(model=str(build_random(args.random, scratch)),
                                        device='cpu', dtype='float32', max_new_tokens=8))
        engine.load()
    request = Request('plan', frame, INSTRUCTION)
    engine.run([request])  # warm-up
    firsts = [engine.run([request])[0].time_to_first_token for _ in range(args.runs)]
    first = statistics.median(firsts)
    print(f'{args.random} on CPU, 640x480 frame: time to first token {first:.2f} s '
          f'(median of {args.runs})')
    print(f"{'cancel at':>10} {'latency p50 s':>14} {'max s':>7} {'tokens':>7} {'cancelled':>10}")
    for share in (0.1, 0.3, 0.6):
        rows = []
        for _ in range(args.runs):
            rows.append(cancelled_after(engine, request, share * first))
        latencies = [row[0] for row in rows if row[2]] or [float('nan')]
        print(f'{share:>9.0%} {statistics.median(latencies):>14.3f} {max(latencies):>7.3f} '
              f'{max(row[1] for row in rows):>7} {sum(row[2] for row in rows):>7}/{len(rows)}')
    engine.unload()


if __name__ == '__main__':
    main()
