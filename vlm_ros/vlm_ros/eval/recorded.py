"""vlm_eval --recorded: the records of a live vlm_node's answers, taken from a recording of them.

Replaying a bag through the running node and recording its Plans and Captions measures what a
robot gets (queueing, dropped frames, the node's own pairing), where running the engine offline
measures the model alone. Both make the same records, so one report format serves both.
Answers are matched to input frames by header stamp, which the node copies from the frame it
used, and Plans to input instructions by text in order, since every instruction gets exactly
one Plan; an instruction left without one (the replay was interrupted, the node stopped) is a
NOT_ANSWERED record. Log times of the two bags come from different clocks and are never
compared. What the node published beside them (steps' boxes, each camera's image) is joined in
by companions.py.
"""

import contextlib
from collections import defaultdict, deque

from ..bag.node_settings import read_settings
from ..bag.storage import CAPTION_TYPE, PLAN_TYPE, BagError, open_bag, stamp_ns
from ..bag.topics import describe_topics
from ..engine import parse_plan
from .companions import CameraFrames, read_companions
from .executions import execution_summary, read_executions
from .inputs import BagInputs, frames_by_stamp, latest_at_or_before
from .messages import read_messages
from .records import (
    ANSWERED,
    NOT_ANSWERED,
    STATUS_NAMES,
    image_info,
    result_record,
)
from .settings import node_settings


def _answer_topics(reader) -> dict:
    """Return {topic: type} of the one Plan topic and the one Caption topic the bag has."""
    chosen = {}
    for msgtype in (PLAN_TYPE, CAPTION_TYPE):
        found = sorted(t for t, info in reader.topics.items() if info.msgtype == msgtype)
        if len(found) > 1:
            raise BagError(f'{len(found)} {msgtype} topics in {reader.paths[0]}: '
                           f'{", ".join(found)}; record one node per bag to evaluate it')
        chosen.update(dict.fromkeys(found, msgtype))
    if not chosen:
        raise BagError(f'no {PLAN_TYPE} or {CAPTION_TYPE} topic in {reader.paths[0]}; record '
                       f"the node's plan and caption topics. Topics: {describe_topics(reader)}")
    return chosen


def _plan_record(msg, inputs: BagInputs, frame, pending: dict, targets: tuple = ((), ())
                 ) -> dict:
    """Record one recorded Plan; its bag time is that of the instruction it answered.

    Its form is the one the node recorded: the text of a plan the plan grammar closed parses
    as complete JSON, yet it is not the plan the model meant. A recording made before Plan
    had the field has none (its own definition): its text is parsed, as is an empty field.

    ``targets``: its steps' boxes and their cameras, from its PlanTargets (companions.py).
    """
    status = STATUS_NAMES.get(msg.status, f'UNKNOWN_{msg.status}')
    queue = pending.get(msg.instruction)
    if queue:
        bag_time = queue.popleft()
    else:  # a replan, or an instruction not in the input bag: the frame's time is the best
        bag_time = frame.bag_time_ns if frame else None
    answered = status in ANSWERED
    return result_record(
        'plan', msg.instruction, image_info(inputs.image_topic, frame), bag_time, inputs.start_ns,
        status, message=msg.message, text=msg.text, steps=msg.steps, valid=status == 'OK',
        form=(getattr(msg, 'form', '') or parse_plan(msg.text).form) if answered else 'none',
        output_tokens=int(msg.output_tokens) if answered else None,
        time_to_first_token=float(msg.time_to_first_token) if answered else None,
        total_time=float(msg.total_time), boxes=targets[0], box_cameras=targets[1])


def _unanswered(inputs: BagInputs, pending: dict) -> list:
    """Record each input instruction that no recorded Plan answered: NOT_ANSWERED.

    The replay was interrupted, or the node stopped, before it answered; the record's frame is
    the one the node would have answered with (the latest logged at or before), so the report
    shows what was asked, and on what.
    """
    left = sorted((bag_time, text) for text, queue in pending.items() for bag_time in queue)
    frames = latest_at_or_before([f.bag_time_ns for f in inputs.frames], [t for t, _ in left])
    return [result_record('plan', text, image_info(inputs.image_topic, None if index is None
                                                   else inputs.frames[index]),
                          bag_time, inputs.start_ns, NOT_ANSWERED,
                          message='the recording of the answers holds no Plan for this '
                          'instruction: the replay ended, or the node stopped, before it was '
                          'answered')
            for (bag_time, text), index in zip(left, frames, strict=True)]


def _caption_record(msg, inputs: BagInputs, frame) -> dict:
    """Record one recorded Caption: the node publishes only captions whose status was OK."""
    return result_record(
        'caption', '', image_info(inputs.image_topic, frame),
        frame.bag_time_ns if frame else None, inputs.start_ns, 'OK', text=msg.text,
        valid=bool(msg.text.strip()), form='text', total_time=float(msg.total_time))


def recorded_records(inputs: BagInputs, path) -> tuple:
    """Read the answers recorded in the bag at path; return (records, run facts for summary).

    The run's images per second count answered requests from the first request's arrival
    (its answer's log time less its total_time) to the last answer, in the recording's clock.
    The node's settings are those vlm_replay --record stored beside the answers, if any.
    """
    by_stamp = frames_by_stamp(inputs.frames)
    pending = defaultdict(deque)
    for instruction in inputs.instructions:
        pending[instruction.text].append(instruction.bag_time_ns)
    records, models, spans = [], set(), []
    cameras = CameraFrames(inputs)
    with contextlib.closing(open_bag(path)) as reader:
        topics = _answer_topics(reader)
        companions = read_companions(reader)
        cameras.check(companions.sources, path)
        connections = [c for c in reader.connections if c.topic in topics]
        for connection, log_ns, msg in read_messages(reader, connections):
            frame = by_stamp.get(stamp_ns(msg))
            if topics[connection.topic] == PLAN_TYPE:
                records.append({**_plan_record(msg, inputs, frame, pending,
                                               companions.boxes.get(msg.request_id, ((), ()))),
                                **cameras.fields(companions.sources.get(msg.request_id))})
            else:
                records.append({**_caption_record(msg, inputs, frame), **cameras.fields(
                    companions.sources.get((stamp_ns(msg), 'caption')))})
            models.add(msg.model)
            if records[-1]['status'] in ANSWERED:
                spans.append((log_ns - int(msg.total_time * 1e9), log_ns))
        executions = read_executions(reader)
    records += _unanswered(inputs, pending)
    seconds = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1e9 \
        if spans else 0.0
    settings = node_settings(read_settings(path))
    device = settings['values'].get('device') if settings else None
    run = {'mode': 'recorded', 'recorded_bag': str(path), 'model': ', '.join(sorted(models)),
           'device': f'{device} (live vlm_node)' if device else 'live vlm_node',
           'answer_topics': sorted(topics), 'settings': settings,
           'images_per_s': len(spans) / seconds if seconds > 0 else None,
           **execution_summary(executions), 'plan_executions': executions}
    records.sort(key=lambda r: (r['bag_time_ns'] is None, r['bag_time_ns'] or 0))
    return records, run
