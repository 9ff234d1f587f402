"""What asking for features (engine/features.py) adds to a plan's time. Prints a table.

    scripts/with-env python3 -m vlm_ros.benchmarks.features_cost [--random tiny:llava]
        [--batch-sizes 1 8] [--repeats 5] [--new-tokens 32] [--device cpu]

Plans of a batch are made with and without features, run for run (alternating, so a machine
that slows down slows both), through engine.run: preprocessing, prefill, decoding and parsing,
what vlm_node waits for. Each pooling is its own row, at the last layer. A benchmark, not a
test: it asserts nothing (issue 28's goal: at most 5 % on the CPU with the tiny families).
"""

import argparse
import statistics
import tempfile
import time

import numpy as np

from ..engine import EngineConfig, Request
from ..engine.features import POOLINGS, FeatureSpec
from ..engine.local import VlmEngine
from ..models import FAMILIES
from ..models.real_size import SIZES, build_random

INSTRUCTION = 'put the red block in the bin'


def _frames(batch: int, rng) -> list:
    """Return new frames, so that the engine's frame cache makes no later run cheaper."""
    return [rng.integers(0, 255, (240, 320, 3), dtype=np.uint8) for _ in range(batch)]


def _seconds(engine: VlmEngine, frames: list, spec) -> float:
    started = time.perf_counter()
    engine.run([Request('plan', frame, INSTRUCTION, features=spec) for frame in frames])
    return time.perf_counter() - started


def cost_rows(engine: VlmEngine, batch_sizes, repeats: int) -> list:
    """Return per batch size and pooling: plan ms without and with features, and the cost."""
    rng = np.random.default_rng(28)
    rows = []
    for batch in batch_sizes:
        for pooling in POOLINGS:
            spec = FeatureSpec(-1, pooling)
            _seconds(engine, _frames(batch, rng), spec)  # warm-up
            runs = {None: [], pooling: []}
            for _ in range(repeats):
                for asked in (None, spec):
                    runs[asked and pooling].append(_seconds(engine, _frames(batch, rng), asked))
            free, bound = (1000 * statistics.median(runs[key]) for key in (None, pooling))
            rows.append({'batch': batch, 'pooling': pooling, 'free_ms': free,
                         'features_ms': bound, 'cost_pct': 100 * (bound / free - 1)})
    return rows


def format_rows(title: str, rows: list) -> str:
    """Render cost_rows as a Markdown table."""
    lines = [f'### {title}', '', '| batch | pooling | plan ms | with features ms | cost |',
             '|---:|---|---:|---:|---:|']
    lines += [f"| {r['batch']} | {r['pooling']} | {r['free_ms']:.1f} | {r['features_ms']:.1f} "
              f"| {r['cost_pct']:+.1f}% |" for r in rows]
    return '\n'.join(lines)


def main(argv=None) -> None:
    """Build the random-weight model, time plans with and without features; print the table."""
    known = [*sorted(SIZES), *(f'tiny:{family}' for family in FAMILIES)]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--random', default='tiny:llava', choices=known)
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--new-tokens', type=int, default=32)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        engine = VlmEngine(EngineConfig(model=str(build_random(args.random, scratch)),
                                        device=args.device, max_new_tokens=args.new_tokens))
        engine.load()
    try:
        rows = cost_rows(engine, args.batch_sizes, args.repeats)
        print(format_rows(f'{args.random}: plans with and without features, '
                          f'{engine.loaded.device} {str(engine.loaded.dtype)[6:]}, '
                          f'{args.new_tokens} new tokens at most, 320x240 frames', rows),
              flush=True)
    finally:
        engine.unload()


if __name__ == '__main__':
    main()
