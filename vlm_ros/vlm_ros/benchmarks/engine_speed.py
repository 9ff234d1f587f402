"""vlm_benchmark: how fast a VLM answers through the engine, per batch size. Prints a table.

    vlm_benchmark --model DIR_OR_HUB_ID [--batch-sizes 1 4 8] [--device cuda] [--dtype bfloat16]
    vlm_benchmark --random smolvlm-256m|smolvlm-2b|florence-2-base    (no download needed)
    vlm_benchmark --random tiny:llava                                  (the test checkpoints)
    vlm_benchmark --node --random tiny:llava [--streams 8] [--batch-sizes 1 8]   (a vlm_node)

Each row: one 640x480 image and one plan prompt per request, exactly --new-tokens generated
(EOS suppressed, so random weights are timed like real ones), median of --repeats runs after
one warm-up. A benchmark, not a test: it asserts nothing.
"""

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Optional

import numpy as np

from ..bag.arguments import ArgumentParser, not_negative, positive_int, print_line, reported
from ..engine import Request, VlmError
from ..engine.plan_parser import parse_plan
from ..tools.engine_args import add_engine_args, engine_config
from .vision_timer import VisionTimer

if TYPE_CHECKING:  # torch takes seconds to import: not before the arguments are checked
    from ..engine.local import VlmEngine


def peak_memory_mib(device) -> float:
    """Peak memory since the last reset: CUDA allocations on a GPU, process RSS on a CPU."""
    import torch

    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scene(height: int, width: int) -> np.ndarray:
    """Draw a deterministic tabletop-like test frame (gradient plus a block)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    image[height // 3:height // 2, width // 3:width // 2] = (220, 30, 30)
    return image


_FRAME_NUMBERS = itertools.count()
MAX_IMAGE_PIXELS = 2**25  # --image's most: vlm_node's max_image_pixels (no ROS imported here)


def new_frames(image, batch: int, shared: bool) -> list:
    """Return a batch of frames never seen before: one per row, or one that every row shares.

    The engine preprocesses each distinct frame once (frame_cache.py): a frame repeated from
    an earlier run would time a cache hit, not the preprocessing.
    """
    frames = []
    for _ in range(1 if shared else batch):
        frame = image.copy()
        frame[0, :8, 0] = np.frombuffer(next(_FRAME_NUMBERS).to_bytes(8, 'little'), np.uint8)
        frames.append(frame)
    return frames * batch if shared else frames


def time_batch(engine: 'VlmEngine', new_tokens: int, frames: list,
               ahead: Optional[list] = None, constrained: bool = False) -> dict:
    """Run one batched generate of exactly new_tokens tokens; return its timings.

    Time to first token splits into preprocessing (processor, to the device), the vision
    encoder, and the rest up to the first token (projector, prefill, sampling). With ``ahead``,
    those frames (the next batch's) are preprocessed on a second thread while this batch
    generates, as vlm_node's look-ahead does; the total includes waiting for it to finish.
    ``constrained``: the plans are written under the plan schema's grammar; 'skills' are those
    its plans' steps name. 'image' is the frames' HxW, 'threads' torch's CPU threads here.
    """
    import torch

    from ..engine.local.generate import generate

    loaded = engine.loaded
    batch = len(frames)
    if loaded.device.type == 'cuda':
        torch.cuda.synchronize(loaded.device)
    start = time.perf_counter()
    requests = [Request('plan', frame, 'pick up the red block and put it in the bin')
                for frame in frames]
    inputs = engine.preprocess(requests)
    if loaded.device.type == 'cuda':
        torch.cuda.synchronize(loaded.device)  # GPU preprocessing (gpu_preprocess.py) included
    prep = time.perf_counter() - start
    preparing = threading.Thread(target=lambda: [engine.prepare([frame])  # as the node does
                                                 for frame in ahead or []])
    preparing.start()
    timer = VisionTimer(loaded.model, loaded.device)
    constraint = (engine.plan_constraint(requests, [new_tokens] * batch)
                  if constrained else None)
    generating = time.perf_counter()
    try:
        out = generate(loaded, inputs, new_tokens,
                       {**engine.generate_kwargs(), 'min_new_tokens': new_tokens},
                       constraint=constraint, graphs=engine.decoding.graphs)
    finally:
        timer.close()
        preparing.join()
    total = time.perf_counter() - start
    vision = timer.end - timer.start if timer.start and timer.end else float('nan')
    prefilled = timer.prefilled - generating if timer.prefilled else out.time_to_first_token
    decode = loaded.processor.tokenizer.decode
    skills = {step.skill for row in out.tokens if constrained
              for step in parse_plan(decode(row, skip_special_tokens=True)).steps} - {''}
    return {'ttft': prep + out.time_to_first_token, 'total': total, 'prep': prep,
            'image': frames[0].shape[:2], 'threads': torch.get_num_threads(), 'skills': skills,
            'vision': vision,
            'prefill': prefilled - (vision if vision == vision else 0.0),  # NaN: no encoder
            'first': out.time_to_first_token - prefilled,
            'tokens': sum(len(t) for t in out.tokens),
            'checked': constraint.checked / (batch * new_tokens) if constraint else 0.0,
            'masked': constraint.masked / max(constraint.checked, 1) if constraint else 0.0,
            'decode_s': out.total_time - out.time_to_first_token,
            'step_ms': 1000 * (out.total_time - out.time_to_first_token) / max(new_tokens - 1, 1),
            'decode_tps': batch * (new_tokens - 1) / max(out.total_time -
                                                         out.time_to_first_token, 1e-9)}


def run(engine: 'VlmEngine', batch_sizes, new_tokens: int, repeats: int, image_hw,
        frames: str = 'distinct') -> list:
    """Benchmark every batch size; return one row of medians each.

    'recompiles' counts the graphs torch.compile made and the CUDA graphs captured during the
    timed runs, after the warm-up: in steady state, none.

    frames: 'distinct' (a new frame per request), 'shared' (one new frame per batch) or
    'queued' (new frames, each batch's preprocessed during the previous batch's generation).
    """
    import torch

    image = scene(*image_hw)
    rows = []
    for batch in batch_sizes:
        batches = [new_frames(image, batch, frames == 'shared') for _ in range(repeats + 2)]
        queued = frames == 'queued'
        time_batch(engine, new_tokens, batches[0], batches[1] if queued else None)  # warm-up
        if engine.loaded.device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(engine.loaded.device)
        graphs = _graphs_made(engine)
        runs = [time_batch(engine, new_tokens, batches[index],
                           batches[index + 1] if queued else None)
                for index in range(1, repeats + 1)]
        total = statistics.median(r['total'] for r in runs)
        rows.append({'batch': batch, 'ttft_ms': 1000 * statistics.median(r['ttft'] for r in runs),
                     **{f'{part}_ms': 1000 * statistics.median(r[part] for r in runs)
                        for part in ('prep', 'vision', 'prefill', 'first')},
                     'decode_tok_s': statistics.median(r['decode_tps'] for r in runs),
                     'step_ms': statistics.median(r['step_ms'] for r in runs),
                     'recompiles': _graphs_made(engine) - graphs,
                     'total_ms': 1000 * total, 'images_s': batch / total,
                     'peak_mib': peak_memory_mib(engine.loaded.device),
                     'tokens': runs[0]['tokens'] // batch, 'runs': len(runs),
                     'image': runs[0]['image'], 'threads': runs[-1]['threads']})
    return rows


def constraint_cost(engine: 'VlmEngine', batch_sizes, new_tokens: int, repeats: int,
                    image_hw) -> list:
    """Time decoding free and under the plan grammar, run for run; return a row per batch.

    The two alternate, and the cost is the median of each constrained run's ratio to the free
    run just before it: a machine that drifts mid-run (this 2-core one moves by 5 % from one
    run to the next) moves both of a pair alike, where medians taken side by side would keep
    the drift between them. 'checked' is the share of row-steps under the grammar (a row it
    lost, e.g. to min_new_tokens after its plan ended, is free from then on); 'masked', of
    those, the share whose best token the grammar refused, so that every logit had to be
    masked (the others cost one token's check); 'skills', those the constrained plans named.
    """
    image = scene(*image_hw)
    rows = []
    for batch in batch_sizes:
        for constrained in (False, True):  # warm-up
            time_batch(engine, new_tokens, new_frames(image, batch, False), None, constrained)
        runs = {False: [], True: []}
        for _ in range(repeats):
            for constrained in (False, True):
                runs[constrained].append(time_batch(engine, new_tokens,
                                                    new_frames(image, batch, False), None,
                                                    constrained))
        free, bound = ([1000 * r['decode_s'] / (new_tokens - 1) for r in runs[mode]]
                       for mode in (False, True))
        rows.append({'batch': batch, 'free_ms': statistics.median(free),
                     'constrained_ms': statistics.median(bound),
                     'overhead_pct': paired_cost_pct(free, bound), 'pairs': len(free),
                     'skills': sorted(set().union(*(r['skills'] for r in runs[True]))),
                     **{f'{part}_pct': 100 * statistics.median(r[part] for r in runs[True])
                        for part in ('checked', 'masked')}})
    return rows


def paired_cost_pct(free: list, bound: list) -> float:
    """Return the median of each bound time's ratio to its free pair, as a % added."""
    return 100 * (statistics.median(b / a for a, b in zip(free, bound, strict=True)) - 1)


def format_cost_table(title: str, rows: list) -> str:
    """Render constraint_cost's rows as a Markdown table."""
    lines = [f'### {title}', '', '| batch | free ms/step | constrained ms/step | cost (pairs) | '
             "row-steps under the grammar | of them masked | plans' skills |",
             '|---:|---:|---:|---:|---:|---:|---|']
    lines += [f"| {r['batch']} | {r['free_ms']:.2f} | {r['constrained_ms']:.2f} | "
              f"{r['overhead_pct']:+.1f}% | {r['checked_pct']:.0f}% | {r['masked_pct']:.0f}% | "
              f"{', '.join(r['skills']) or '-'} |" for r in rows]
    return '\n'.join(lines)


def _count(number: int, noun: str) -> str:
    return f'{number} {noun}' + ('' if number == 1 else 's')


def _graphs_made(engine: 'VlmEngine') -> int:
    """Graphs torch.compile made in this process plus the engine's CUDA graph captures."""
    from ..engine.local.decoding import compiled_graphs

    return compiled_graphs() + engine.status().get('cuda_graphs', 0)


def format_table(title: str, rows: list) -> str:
    """Render rows as a Markdown table (pasted as is into docs/BENCHMARKS.md)."""
    lines = [f'### {title}', '',
             '| batch | new tokens | TTFT ms | = preprocess + vision encoder + prefill + first '
             'token ms | ms/token | decode tok/s | total ms | images/s | peak MiB | recompiles |',
             '|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|']
    lines += [f"| {r['batch']} | {r['tokens']} | {r['ttft_ms']:.1f} | {r['prep_ms']:.1f} + "
              f"{r['vision_ms']:.1f} + {r['prefill_ms']:.1f} + {r['first_ms']:.1f} | "
              f"{r['step_ms']:.2f} | {r['decode_tok_s']:.1f} | {r['total_ms']:.1f} | "
              f"{r['images_s']:.2f} | {r['peak_mib']:.0f} | {r['recompiles']} |" for r in rows]
    return '\n'.join(lines)


def parse_args(argv):
    """Parse the command line."""
    parser = ArgumentParser(prog='vlm_benchmark', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--model', help='hub id or save_pretrained directory')
    source.add_argument('--random', help='random weights: a real-size config name, or '
                        'tiny:FAMILY for a test checkpoint')
    add_engine_args(parser)
    parser.add_argument('--attn', default='sdpa',
                        help="attn_implementation (default sdpa; '' = the model's own)")
    parser.add_argument('--batch-sizes', type=positive_int, nargs='+', default=[1, 4, 8])
    parser.add_argument('--new-tokens', type=positive_int, default=64)
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--image', type=_image_size, default='480x640',
                        help='HxW of the test frame')
    parser.add_argument('--frames', choices=('distinct', 'shared', 'queued'), nargs='+',
                        default=['distinct'],
                        help="a new frame per request (distinct, the default), one new "
                        "frame shared by a batch's requests (shared: preprocessed once), or "
                        "new frames preprocessed while the previous batch generates (queued: "
                        "vlm_node's preprocess_ahead); one table each")
    parser.add_argument('--constraint-cost', action='store_true',
                        help='also time each batch size decoding plans free and under the '
                        "plan schema's grammar, run for run, in one more table")
    parser.add_argument('--profile', action='store_true',
                        help='then profile one request of batch 1 (torch.profiler): where the '
                        'time goes, by operator, on the host and on the device')
    parser.add_argument('--node', action='store_true',
                        help='measure a vlm_node process instead of the engine: --streams '
                        'concurrent instruction streams, the node at each --batch-sizes value '
                        '(its max_batch_size); --frames, --repeats, --attn, --profile, '
                        '--constraint-cost, --constrain-plans and --skills time the engine alone')
    parser.add_argument('--streams', type=positive_int, default=8,
                        help='with --node: concurrent instruction streams (default 8)')
    parser.add_argument('--requests', type=positive_int, default=4,
                        help='with --node: instructions per stream (default 4)')
    parser.add_argument('--batch-wait', type=not_negative, default=0.005,
                        help="with --node: the node's batch_wait, s (default 0.005)")
    args = parser.parse_args(argv)
    _refuse_unused(parser, args)
    if args.constraint_cost and args.constrain_plans == 'off':
        parser.error('--constraint-cost times constrained plans: not with --constrain-plans off')
    if args.new_tokens < 2:  # the first token is timed apart: decoding needs a second one
        parser.error(f'--new-tokens must be >= 2, got {args.new_tokens}')
    if args.random is not None:  # the names import torch: only once the rest is good
        from ..models import FAMILIES
        from ..models.real_size import SIZES

        known = [*sorted(SIZES), *(f'tiny:{family}' for family in FAMILIES)]
        if args.random not in known:
            parser.error(f'--random {args.random}: choose one of {", ".join(known)}')
    return args


# The options that change nothing in the other mode: the node's, and the engine tables' own.
_NODE_ONLY = (('--streams', 'streams'), ('--requests', 'requests'), ('--batch-wait', 'batch_wait'))
_ENGINE_ONLY = (('--frames', 'frames'), ('--repeats', 'repeats'), ('--attn', 'attn'),
                ('--profile', 'profile'), ('--constraint-cost', 'constraint_cost'))
_GRAMMAR = (('--constrain-plans', 'constrain_plans'), ('--skills', 'skills'))


def _refuse_unused(parser: argparse.ArgumentParser, args) -> None:
    """Refuse the options given that would change nothing in the mode chosen, naming them."""
    def given(options: tuple) -> list:
        return [name for name, dest in options if getattr(args, dest) != parser.get_default(dest)]
    if args.node:
        refused = [(given(_ENGINE_ONLY + _GRAMMAR), 'with --node: its vlm_node plans under its '
                    'own constrain_plans and skills, and is timed once per batch size')]
    else:
        refused = [(given(_NODE_ONLY), 'without --node'),
                    ([] if args.constraint_cost else given(_GRAMMAR),
                     'without --constraint-cost: the other tables time free decoding')]
    said = [f'{", ".join(names)}: no effect {why}' for names, why in refused if names]
    if said:
        parser.error('; '.join(said))


def _image_size(text: str) -> tuple:
    height, sep, width = text.partition('x')
    if not (sep and height.isdigit() and width.isdigit() and min(int(height), int(width)) >= 8
            and int(height) * int(width) <= MAX_IMAGE_PIXELS):
        raise argparse.ArgumentTypeError(
            f'write HEIGHTxWIDTH in pixels, at least 8x8 (each frame is numbered in its first '
            f"8) and at most {MAX_IMAGE_PIXELS} pixels (vlm_node's max_image_pixels), not {text}")
    return int(height), int(width)


def main(argv=None) -> int:
    """Console script vlm_benchmark: a table, or the reason on stderr (exit 2: bad input)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    code, _ = reported('vlm_benchmark', lambda: _benchmark(args))
    return code


def _benchmark(args) -> int:
    from ..engine.local import VlmEngine
    from ..engine.local.loader import resolve_device
    from ..models.real_size import build_random

    # A device this machine lacks is refused before --random writes weights (gigabytes for
    # the real sizes), and before a --node's vlm_node starts on it.
    resolve_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model
        if args.random:
            model = str(build_random(args.random, scratch))
        if args.node:  # imported here: the engine's benchmark runs where ROS 2 is not installed
            from .node_speed import run_node_benchmark

            print_line(run_node_benchmark(model, args))
            return 0
        engine = VlmEngine(engine_config(args, model, attn_implementation=args.attn or None,
                                         max_image_side=640))
        start = time.perf_counter()
        engine.load()
        loaded = engine.loaded
        load_s = time.perf_counter() - start
        height, width = args.image
        params = sum(p.numel() for p in loaded.model.parameters()) / 1e6
        # As the model has them: its weights' dtype and attention, torch's threads while timed.
        attn = getattr(loaded.model.config, '_attn_implementation', None) or 'default'
        attn += '' if args.attn else " (the model's own)"
        for frames in args.frames:
            rows = run(engine, args.batch_sizes, args.new_tokens, args.repeats,
                       (height, width), frames)
            title = (f'{args.random or args.model}: {params:.2f} M params, {loaded.device} '
                     f"{loaded.dtype_name}, CPU threads {rows[0]['threads']}, attn {attn}"
                     f', decode {engine.decoding.mode} '
                     f'(warm-up {engine.decoding.warm_up_seconds:.1f} s)'
                     f'{", " + json.dumps(args.processor_kwargs) if args.processor_kwargs else ""}'
                     f", median of {_count(rows[0]['runs'], 'run')}, {rows[0]['image'][1]}x"
                     f"{rows[0]['image'][0]} image, {frames} frames, load {load_s:.1f} s")
            if not print_line(format_table(title, rows)):
                return 0  # the reader has gone (| head): no one reads the next tables
        if args.profile:
            from .request_profile import profile_request

            if not print_line(profile_request(engine, args.new_tokens, (height, width))):
                return 0
        if args.constraint_cost:
            if engine.plan_constraint([Request('plan', None)]) is None:
                raise VlmError('unsupported', 'plans are not constrained with this model and '
                               '--constrain-plans: no cost to measure')
            rows = constraint_cost(engine, args.batch_sizes, args.new_tokens, args.repeats,
                                   (height, width))
            print_line(format_cost_table(f'{args.random or args.model}: plan grammar cost per '
                                         f'decoding step, {loaded.device}, {args.new_tokens} '
                                         f"tokens, median of {_count(rows[0]['pairs'], 'pair')}",
                                         rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
