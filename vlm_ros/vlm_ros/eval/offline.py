"""Offline evaluation: a recording's requests answered by an engine, in batches.

Writes the results, summary, latency plot and HTML report; vlm_eval (tools/evaluate.py) drives
it.
"""

import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from ..engine import Engine, Request, VlmError
from .inputs import BagInputs, FrameRef, Views, decode_frames, pair_instructions, synchronized
from .records import image_info, result_record, score_record, stamp_text
from .report import latency_png, render
from .scoring import Reference, mean_score, score


@dataclass(frozen=True)
class Pending:
    """A request to make: task and text on a frame (None: none logged before), at a bag time.

    ``views``: with several cameras, the frame of each (frame is the first camera's).
    """

    task: str
    text: str
    frame: Optional[FrameRef]
    bag_time_ns: int
    views: Optional[Views] = None


@dataclass(frozen=True)
class Sync:
    """How several cameras' frames are taken together: vlm_node's max_skew and wait_for_image."""

    max_skew: float
    wait_s: float


def frame_key(camera: int, name: str, index: int):
    """Key of a decoded frame: its index for the first camera, (name, index) for the others."""
    return index if camera == 0 else (name, index)


def plan_requests(inputs: BagInputs, captions: bool, sync: Optional[Sync] = None) -> list:
    """List a plan per instruction and a caption per frame some instruction uses, in bag time.

    With several cameras (inputs.cameras), each request gets one frame per camera, taken as
    the node takes them (synchronized in inputs.py, under sync), and a caption is made per set of
    frames some answerable plan used.
    """
    if inputs.cameras:
        return _camera_requests(inputs, captions, sync or Sync(0.0, 0.0))
    pairs = pair_instructions(inputs)
    pending = [Pending('plan', i.text, None if index is None else inputs.frames[index],
                       i.bag_time_ns) for i, index in zip(inputs.instructions, pairs, strict=True)]
    if captions:
        used = sorted({index for index in pairs if index is not None})
        pending += [Pending('caption', '', inputs.frames[i], inputs.frames[i].bag_time_ns)
                    for i in used]
    return sorted(pending, key=lambda p: p.bag_time_ns)  # stable: a plan before its caption


def _camera_requests(inputs: BagInputs, captions: bool, sync: Sync) -> list:
    pending = []
    for instruction in inputs.instructions:
        views = synchronized(inputs.cameras, instruction.bag_time_ns, sync.max_skew, sync.wait_s)
        pending.append(Pending('plan', instruction.text, views.frames[0],
                               instruction.bag_time_ns, views))
    if captions:
        used = {p.views for p in pending if _unsynchronized(inputs, p.views, sync) is None}
        pending += [Pending('caption', '', views.frames[0],
                            max(f.bag_time_ns for f in views.frames), views)
                    for views in sorted(used, key=lambda v: [f.index for f in v.frames])]
    return sorted(pending, key=lambda p: p.bag_time_ns)


def _unsynchronized(inputs: BagInputs, views: Views, sync: Sync) -> Optional[tuple]:
    """Return (status, message) where the cameras' frames cannot be used, as the node says."""
    names = [camera.name for camera in inputs.cameras]
    missing = [name for name, frame in zip(names, views.frames, strict=True) if frame is None]
    if missing:
        return 'NO_IMAGE', (f'no image from camera {", ".join(missing)} was logged at or '
                            'before this request')
    if 0 < sync.max_skew < views.skew:
        stamps = ', '.join(f'{name} {stamp_text(frame.stamp_ns)}'
                           for name, frame in zip(names, views.frames, strict=True))
        return 'UNSYNCHRONIZED', (f"the cameras' frames are {views.skew:.3f} s apart "
                                  f'({stamps}); max_skew is {sync.max_skew:g} s and no closer '
                                  f'ones were logged within {sync.wait_s:g} s')
    return None


def _request_fields(item: Pending, inputs: BagInputs) -> tuple:
    """Return the leading result_record arguments: what was asked, on which frame, when."""
    return (item.task, item.text, image_info(inputs.image_topic, item.frame), item.bag_time_ns,
            inputs.start_ns)


def _views_fields(item: Pending, inputs: BagInputs) -> dict:
    """Return the record's per-camera fields: each camera's frame and their skew."""
    if item.views is None:
        return {}
    return {'images': [image_info(camera.topic, frame, camera.name) or
                       {'camera': camera.name, 'topic': camera.topic, 'frame': None}
                       for camera, frame in zip(inputs.cameras, item.views.frames, strict=True)],
            'skew': item.views.skew}


def _refused(item: Pending, images: dict, inputs: BagInputs, sync: Sync) -> Optional[tuple]:
    """Return (status, message) for a request the model cannot be asked, as the node does."""
    if item.views is not None:
        problem = _unsynchronized(inputs, item.views, sync)
        if problem:
            return problem
    elif item.frame is None:
        return 'NO_IMAGE', 'no image was logged at or before this instruction'
    if item.task == 'plan' and not item.text:
        return 'BAD_INPUT', 'empty instruction'
    for name, image in _images(item, images, inputs):
        if isinstance(image, Exception):
            return 'BAD_INPUT', f'camera {name}: {image}' if item.views else str(image)
    return None


def _images(item: Pending, images: dict, inputs: BagInputs) -> list:
    """Return (camera name, decoded image or its error) of each frame item is answered with."""
    if item.views is None:
        return [('', images[item.frame.index])]
    return [(camera.name, images[frame_key(number, camera.name, frame.index)])
            for number, (camera, frame) in enumerate(zip(inputs.cameras, item.views.frames,
                                                         strict=True))]


def other_frames(reader, inputs: BagInputs, pending: list, records: list) -> dict:
    """Decode the frames of cameras after the first that pending requests or records use.

    Keys are frame_key's; records (a live node's, --recorded) name theirs in ``images``.
    """
    decoded = {}
    for number, camera in enumerate(inputs.cameras[1:], 1):
        used = {p.views.frames[number].index for p in pending
                if p.views and p.views.frames[number] is not None}
        used |= {r['images'][number]['frame'] for r in records
                 if r.get('images') and r['images'][number]['frame'] is not None}
        decoded.update({frame_key(number, camera.name, index): image for index, image in
                        decode_frames(reader, inputs, used, camera).items()})
    return decoded


def _request(item: Pending, images: dict, inputs: BagInputs) -> Request:
    """Return the engine Request of item: its image, or every camera's after its name."""
    found = _images(item, images, inputs)
    if item.views is None:
        return Request(item.task, found[0][1], item.text)
    return Request(item.task, None, item.text, cameras=tuple(found))


def _record(item: Pending, inputs: BagInputs, *outcome, **answer) -> dict:
    """Return the record of item: what was asked, on which frames, when, and the outcome."""
    return {**result_record(*_request_fields(item, inputs), *outcome, **answer),
            **_views_fields(item, inputs)}


def run_engine(engine: Engine, inputs: BagInputs, pending: list, images: dict,
               batch_size: int, sync: Optional[Sync] = None) -> tuple:
    """Answer pending requests in batches; return (records in order, seconds spent in the model).

    The seconds add up every batch's preprocessing and generation, so answered requests over
    them is the run's throughput without model loading and bag reading. A batch that fails
    (a bad image, out of memory) gives its requests a BAD_INPUT or MODEL_ERROR record with the
    reason, and the run goes on with the next batch. ``sync``: how several cameras' frames
    must agree (plan_requests).
    """
    sync = sync or Sync(0.0, 0.0)
    records, runnable = [None] * len(pending), []
    for position, item in enumerate(pending):
        refused = _refused(item, images, inputs, sync)
        if refused is None:
            runnable.append(position)
        else:
            records[position] = _record(item, inputs, *refused)
    batches = [runnable[s:s + batch_size] for s in range(0, len(runnable), batch_size)]
    seconds = 0.0
    for batch, positions in enumerate(batches):
        items = [pending[p] for p in positions]
        started = time.perf_counter()
        try:
            results = engine.run([_request(i, images, inputs) for i in items])
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
            if failure:
                records[position] = _record(item, inputs, *failure, batch=batch)
            else:
                records[position] = _record(
                    item, inputs, 'OK' if result.valid else 'INVALID_OUTPUT', message=result.note,
                    text=result.text, steps=result.steps, valid=result.valid, form=result.form,
                    output_tokens=result.output_tokens,
                    time_to_first_token=result.time_to_first_token,
                    total_time=result.total_time, batch=batch, confidence=result.confidence,
                    boxes=result.boxes, box_cameras=result.box_cameras)
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
    """Write results.jsonl, summary.json, latency.png and report.html into out, all or none.

    An earlier run's report in out is never left mixed with this one's: every file is made
    first, then written into a hidden folder in out (a full disk fails there), and only then
    do the four replace their namesakes, by renames, which need no space. Other files in out
    are left alone: --out may be a folder of the user's.
    """
    plot = latency_png(records, f'{summary["model"]} on {summary["device"]}')
    made = {'results.jsonl': ''.join(json.dumps(record, ensure_ascii=False) + '\n'
                                     for record in records).encode('utf-8'),
            'summary.json': (json.dumps(summary, indent=2) + '\n').encode('utf-8'),
            'latency.png': plot,
            'report.html': render(summary, records, thumbnails, plot).encode('utf-8')}
    out.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix='.vlm_eval.', suffix='.partial', dir=out))
    try:
        for name, data in made.items():
            (staging / name).write_bytes(data)
        for name in made:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
