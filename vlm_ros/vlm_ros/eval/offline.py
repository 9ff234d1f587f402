"""Offline evaluation: a recording's requests answered by an engine, in batches.

Writes the results, summary, latency plot and HTML report; vlm_eval (tools/evaluate.py) drives
it.
"""

import json
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Optional

from ..engine import Engine, Request, VlmError
from .inputs import BagInputs, FrameRef, pair_instructions
from .records import image_info, result_record, score_record
from .report import latency_png, render
from .scoring import Reference, mean_score, score


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


def run_engine(engine: Engine, inputs: BagInputs, pending: list, images: dict,
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
                    *fields, 'OK' if result.valid else 'INVALID_OUTPUT', message=result.note,
                    text=result.text, steps=result.steps, valid=result.valid, form=result.form,
                    output_tokens=result.output_tokens,
                    time_to_first_token=result.time_to_first_token,
                    total_time=result.total_time, batch=batch, confidence=result.confidence,
                    boxes=result.boxes)
    return records, seconds


def score_references(engine: Engine, inputs: BagInputs, entries: list, frames: list,
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
