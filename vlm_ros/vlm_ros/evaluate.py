"""vlm_eval: evaluate a VLM offline on a rosbag2 recording, without a ROS graph.

    vlm_eval BAG --model DIR_OR_HUB_ID [--out eval_out] [--batch-size 4] [--no-captions]
    vlm_eval BAG --recorded ANSWERS_BAG [--out DIR]         (answers of a live vlm_node)
    vlm_eval BAG --model M --references refs.yaml            (also cross-entropy of references)

Every instruction in the bag is answered with the latest camera frame logged at or before it,
as the live node would have seen it, and every frame so used is also captioned. Writes
results.jsonl (one record per request and per reference), summary.json, latency.png and a
self-contained report.html into --out, and prints the summary table.
"""

import argparse
import contextlib
import json
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Optional

from .bag_inputs import (
    BagInputs,
    FrameRef,
    decode_frames,
    frames_by_stamp,
    pair_instructions,
    read_inputs,
)
from .bags import open_bag
from .engine import Reference, Request, VlmEngine, VlmError, mean_score, score
from .engine_cli import add_engine_args, engine_config
from .eval_records import (
    ANSWERED,
    format_table,
    image_info,
    result_record,
    score_record,
    summarize,
)
from .params import BY_NAME
from .recorded import recorded_records
from .references import load_references, reference_frames
from .report import latency_png, render, thumbnail_jpeg

# The live node's defaults: offline answers are comparable only under the same limits.
NODE_DEFAULTS = {name: BY_NAME[name].default for name in ('max_new_tokens', 'max_image_side')}


@dataclass(frozen=True)
class Pending:
    """A request to make: task and text on a frame (None: none logged before), at a bag time."""

    task: str
    text: str
    frame: Optional[FrameRef]
    bag_time_ns: int


def plan_requests(inputs: BagInputs, captions: bool) -> list:
    """List a plan per instruction and a caption per frame some instruction uses, in bag time."""
    pairs = pair_instructions(inputs)
    pending = [Pending('plan', i.text, None if index is None else inputs.frames[index],
                       i.bag_time_ns) for i, index in zip(inputs.instructions, pairs, strict=True)]
    if captions:
        used = sorted({index for index in pairs if index is not None})
        pending += [Pending('caption', '', inputs.frames[i], inputs.frames[i].bag_time_ns)
                    for i in used]
    return sorted(pending, key=lambda p: p.bag_time_ns)  # stable: a plan before its caption


def _request_fields(item: Pending, inputs: BagInputs) -> tuple:
    """Return the leading result_record arguments: what was asked, on which frame, when."""
    return (item.task, item.text, image_info(inputs.image_topic, item.frame), item.bag_time_ns,
            inputs.start_ns)


def _refused(item: Pending, images: dict) -> Optional[tuple]:
    """Return (status, message) for a request the model cannot be asked, as the node does."""
    if item.frame is None:
        return 'NO_IMAGE', 'no image was logged at or before this instruction'
    if item.task == 'plan' and not item.text:
        return 'BAD_INPUT', 'empty instruction'
    image = images[item.frame.index]
    return ('BAD_INPUT', str(image)) if isinstance(image, Exception) else None


def run_engine(engine: VlmEngine, inputs: BagInputs, pending: list, images: dict,
               batch_size: int) -> tuple:
    """Answer pending requests in batches; return (records in order, seconds spent in the model).

    The seconds add up every batch's preprocessing and generation, so answered requests over
    them is the run's throughput without model loading and bag reading. A batch that fails
    (a bad image, out of memory) gives its requests a BAD_INPUT or MODEL_ERROR record with the
    reason, and the run goes on with the next batch.
    """
    records, runnable = [None] * len(pending), []
    for position, item in enumerate(pending):
        refused = _refused(item, images)
        if refused is None:
            runnable.append(position)
        else:
            records[position] = result_record(*_request_fields(item, inputs), *refused)
    batches = [runnable[s:s + batch_size] for s in range(0, len(runnable), batch_size)]
    seconds = 0.0
    for batch, positions in enumerate(batches):
        items = [pending[p] for p in positions]
        started = time.perf_counter()
        try:
            results = engine.run([Request(i.task, images[i.frame.index], i.text) for i in items])
            failure = None
        except VlmError as exc:
            results = [None] * len(items)
            failure = ('BAD_INPUT' if exc.kind == 'bad_input' else 'MODEL_ERROR', str(exc))
        took = time.perf_counter() - started
        seconds += took
        print(f'vlm_eval: batch {batch + 1}/{len(batches)}: {len(items)} requests in '
              f'{took:.2f} s{f" FAILED: {failure[1]}" if failure else ""}', file=sys.stderr,
              flush=True)
        for position, item, result in zip(positions, items, results, strict=True):
            fields = _request_fields(item, inputs)
            if failure:
                records[position] = result_record(*fields, *failure, batch=batch)
            else:
                records[position] = result_record(
                    *fields, 'OK' if result.valid else 'INVALID_OUTPUT', text=result.text,
                    steps=result.steps, valid=result.valid, form=result.form,
                    output_tokens=result.output_tokens,
                    time_to_first_token=result.time_to_first_token,
                    total_time=result.total_time, batch=batch)
    return records, seconds


def score_references(engine: VlmEngine, inputs: BagInputs, entries: list, frames: list,
                     images: dict, batch_size: int) -> tuple:
    """Score the references on their frames; return (score records, pooled Score)."""
    for entry, frame in zip(entries, frames, strict=True):
        if isinstance(images[frame.index], Exception):
            raise VlmError('bad_input', f'reference frame stamped {entry["stamp_ns"]} cannot be '
                                        f'decoded: {images[frame.index]}')
    scores = score(engine, [Reference(e['task'], images[f.index], e['text'], e['target'])
                            for e, f in zip(entries, frames, strict=True)], batch_size)
    records = [score_record(e, image_info(inputs.image_topic, f), s)
               for e, f, s in zip(entries, frames, scores, strict=True)]
    return records, mean_score(scores)


def write_outputs(out: pathlib.Path, records: list, summary: dict, thumbnails: dict) -> None:
    """Write results.jsonl, summary.json, latency.png and report.html into out."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / 'results.jsonl', 'w', encoding='utf-8') as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + '\n')
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n', encoding='utf-8')
    plot = latency_png(records, f'{summary["model"]} on {summary["device"]}')
    (out / 'latency.png').write_bytes(plot)
    (out / 'report.html').write_text(render(summary, records, thumbnails, plot),
                                     encoding='utf-8')


def parse_args(argv):
    """Parse the command line; --model is needed unless --recorded answers without references."""
    parser = argparse.ArgumentParser(prog='vlm_eval', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help='rosbag2 directory (or .mcap / .db3 file) with the inputs')
    parser.add_argument('--model', help='hub id or save_pretrained directory')
    parser.add_argument('--recorded', metavar='OUT_BAG',
                        help='take the answers from this recording of a live vlm_node instead '
                        'of running a model')
    parser.add_argument('--references', metavar='FILE',
                        help='YAML or JSONL list of {stamp_ns, task, text, target} to score')
    parser.add_argument('--image-topic', help='default: the one Image topic, else the one '
                        'CompressedImage topic')
    parser.add_argument('--instruction-topic', help="default: the one std_msgs/String topic "
                        "whose name ends in 'instruction'")
    parser.add_argument('--out', default='eval_out', help='output directory')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--no-captions', dest='captions', action='store_false',
                        help='skip captioning the frames the instructions used')
    add_engine_args(parser)
    parser.add_argument('--max-new-tokens', type=int, default=NODE_DEFAULTS['max_new_tokens'],
                        help='generation limit per request (as vlm_node)')
    parser.add_argument('--max-image-side', type=int,
                        default=NODE_DEFAULTS['max_image_side'],
                        help="longer image side fed to the model, pixels (as vlm_node's)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, not {args.batch_size}')
    if args.model is None and (args.recorded is None or args.references):
        parser.error('--model is required' + (' to score --references' if args.recorded
                                               else ' (or --recorded ANSWERS_BAG)'))
    return args


def evaluate(args) -> dict:
    """Run the evaluation args describe, write its outputs; return the summary."""
    with contextlib.closing(open_bag(args.bag)) as reader:
        inputs = read_inputs(reader, args.image_topic, args.instruction_topic)
        entries = load_references(args.references) if args.references else []
        ref_frames = reference_frames(entries, frames_by_stamp(inputs), inputs.image_topic)
        if args.recorded:
            records, run = recorded_records(inputs, args.recorded)
            pending = []
        else:
            pending = plan_requests(inputs, args.captions)
            records, run = [], {'mode': 'engine'}
        used = [r['image']['frame'] for r in records if r['image']] + \
            [p.frame.index for p in pending if p.frame] + [f.index for f in ref_frames]
        images = decode_frames(reader, inputs, used)
    engine, mean = None, None
    if pending or entries:
        engine = VlmEngine(engine_config(args, args.model, max_new_tokens=args.max_new_tokens,
                                         max_image_side=args.max_image_side))
        engine.load()
        run.update(model=args.model, device=str(engine.loaded.device),
                   dtype=str(engine.loaded.dtype).replace('torch.', ''))
    if pending:
        records, seconds = run_engine(engine, inputs, pending, images, args.batch_size)
        answered = sum(r['status'] in ANSWERED for r in records)
        run['images_per_s'] = answered / seconds if seconds > 0 else None
    if entries:
        scored, mean = score_references(engine, inputs, entries, ref_frames, images,
                                        args.batch_size)
        records += scored
    run.update(bag=inputs.path, image_topic=inputs.image_topic,
               instruction_topic=inputs.instruction_topic, frames=len(inputs.frames),
               instructions=len(inputs.instructions))
    summary = summarize(records, run, mean)
    thumbnails = {index: thumbnail_jpeg(image) for index, image in images.items()
                  if not isinstance(image, Exception)}
    write_outputs(pathlib.Path(args.out), records, summary, thumbnails)
    return summary


def main(argv=None) -> int:
    """Console script vlm_eval: exit 0 with a report, 1 with the reason on stderr."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        summary = evaluate(args)
    except VlmError as exc:
        print(f'vlm_eval: error: {exc}', file=sys.stderr)
        return 1
    print(format_table(summary))
    print(f'wrote {args.out}/results.jsonl, summary.json, latency.png, report.html', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
