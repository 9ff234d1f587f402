"""The records and summary vlm_eval writes, the same whether a model ran or a recording answered.

One record per request (kind 'result') and one per reference (kind 'score'), as JSON objects,
so that a run of the evaluator and a recording of the live node compare line by line, and the
summary, the printed table and the HTML report are all computed from the records alone.
Status names are vlm_ros_msgs/Plan's STATUS_* constants without the prefix, read from the
message definition so they cannot drift from what the node publishes, and one of vlm_eval's
own: NOT_ANSWERED, an instruction a recording of the node holds no Plan for.
"""

import math
import statistics
from collections import Counter
from typing import Optional

from ..bag.storage import PLAN_TYPE, typestore
from ..engine.plan_parser import CLEAN_FORMS
from ..node.stats import Stats

STATUS_NAMES = {value: name.removeprefix('STATUS_')
                for name, _, value in typestore().fielddefs[PLAN_TYPE][0]}
ANSWERED = ('OK', 'INVALID_OUTPUT')  # the statuses under which the model produced the text
NOT_ANSWERED = 'NOT_ANSWERED'  # --recorded: the replay or the node stopped before this Plan


def stamp_text(ns: int) -> str:
    """Format a stamp as sec.nanosec, the way ROS prints builtin_interfaces/Time."""
    return f'{ns // 10**9}.{ns % 10**9:09d}'


def image_info(topic: str, frame, camera: Optional[str] = None) -> Optional[dict]:
    """Describe the input frame a request used (None: no frame), for matching and the report.

    ``camera``: the camera's name, where a request used several (a record's ``images``).
    """
    if frame is None:
        return None
    return {**({'camera': camera} if camera is not None else {}), 'topic': topic,
            'frame': frame.index, 'stamp_ns': frame.stamp_ns,
            'stamp': stamp_text(frame.stamp_ns), 'bag_time_ns': frame.bag_time_ns}


def result_record(task: str, request: str, image: Optional[dict], bag_time_ns: Optional[int],
                  start_ns: int, status: str, message: str = '', text: str = '', steps=(),
                  valid: bool = False, form: str = 'none', output_tokens=None,
                  time_to_first_token=None, total_time=None, batch=None,
                  confidence=None, boxes=(), box_cameras=()) -> dict:
    """Build the record of one request; timings and tokens stay None where nothing ran.

    ``confidence`` is the answer's (mean, min) token log-probability (engine Result); it is
    recorded as ``confidence_mean`` and ``confidence_min``, None where unknown (NaN, a recorded
    answer), as JSON has no NaN.

    ``steps`` are PlanSteps of the engine or of a recorded Plan (both have the three fields);
    ``boxes`` (engine Result) the steps' target boxes in the frame's pixels, each step's
    ``box`` [x1, y1, x2, y2] or None, and ``box_cameras`` the camera whose frame each is in,
    each step's ``camera`` ('' for the one camera, or no box);
    ``bag_time_s`` counts from the start of the input recording, for plots. ``tokens_per_s``
    is output tokens per second of total_time: what the requester waited for, so on a live
    node it includes the time the request queued.
    """
    return {
        'kind': 'result', 'task': task, 'request': request, 'image': image,
        'bag_time_ns': bag_time_ns,
        'bag_time_s': None if bag_time_ns is None else (bag_time_ns - start_ns) / 1e9,
        'status': status, 'message': message, 'text': text,
        'steps': [{'instruction': s.instruction, 'skill': s.skill, 'target': s.target,
                   'box': list(boxes[i]) if i < len(boxes) and boxes[i] else None,
                   'camera': box_cameras[i] if i < len(box_cameras) and boxes[i] else ''}
                  for i, s in enumerate(steps)],
        'valid': valid, 'form': form, 'output_tokens': output_tokens,
        'time_to_first_token': time_to_first_token, 'total_time': total_time,
        'tokens_per_s': output_tokens / total_time if output_tokens and total_time else None,
        'batch': batch, **_confidence(confidence)}


def _confidence(pair) -> dict:
    """Return the record's confidence fields: None where unknown."""
    mean, low = pair if pair is not None else (math.nan, math.nan)
    known = math.isfinite(mean) and math.isfinite(low)
    return {'confidence_mean': mean if known else None, 'confidence_min': low if known else None}


def score_record(reference: dict, image: dict, score) -> dict:
    """Build the record of one scored reference (a references-file entry and its Score)."""
    return {'kind': 'score', 'task': reference['task'], 'request': reference['text'],
            'target': reference['target'], 'image': image, 'ce': score.ce,
            'perplexity': score.perplexity, 'tokens': score.tokens}


def _rate(hits: int, total: int) -> Optional[float]:
    return hits / total if total else None


def _median(values: list) -> Optional[float]:
    return statistics.median(values) if values else None


def summarize(records: list, run: dict, mean=None) -> dict:
    """Compute the summary of a run from its records.

    ``run`` holds what records cannot tell (mode, model, device, the decode mode that ran, the
    CPU threads torch computed with, bag, topics, and answered requests per second of the
    run); ``mean`` is the pooled Score of the references, if any.
    Rates count only answered requests: a plan that had no image says nothing of the model.
    """
    results = [r for r in records if r['kind'] == 'result']
    answered = [r for r in results if r['status'] in ANSWERED]
    plans = [r for r in answered if r['task'] == 'plan']
    captions = [r for r in answered if r['task'] == 'caption']
    latencies = Stats(window=max(1, len(answered)))
    for record in answered:
        latencies.record(record['status'], record['total_time'])
    summary = {
        **run,
        'requests': len(results), 'answered': len(answered),
        'plans': sum(r['task'] == 'plan' for r in results), 'plans_answered': len(plans),
        'captions': sum(r['task'] == 'caption' for r in results),
        'by_status': dict(sorted(Counter(r['status'] for r in results).items())),
        # A plan salvaged from cut or malformed JSON, or one the plan grammar closed, has steps,
        # yet not the plan the model meant.
        'plan_validity_rate': _rate(sum(r['valid'] and r['form'] in CLEAN_FORMS for r in plans),
                                    len(plans)),
        'plans_by_form': dict(sorted(Counter(r['form'] for r in plans).items())),
        'caption_nonempty_rate': _rate(sum(bool(r['text'].strip()) for r in captions),
                                       len(captions)),
        'latency_p50_s': latencies.percentile(50) if answered else None,
        'latency_p95_s': latencies.percentile(95) if answered else None,
        'ttft_p50_s': _median([r['time_to_first_token'] for r in answered
                               if r['time_to_first_token'] is not None]),
        'tokens_per_s_p50': _median([r['tokens_per_s'] for r in answered
                                     if r['tokens_per_s'] is not None]),
        # What min_confidence is compared with: a plan's geometric mean token probability.
        'plan_confidence_p50': _median([math.exp(r['confidence_mean']) for r in plans
                                        if r.get('confidence_mean') is not None]),
        'references': sum(r['kind'] == 'score' for r in records),
    }
    if mean is not None:
        summary.update(mean_ce=mean.ce, mean_perplexity=mean.perplexity,
                       scored_tokens=mean.tokens)
    return summary


def _value(value) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.4g}' if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ', '.join(f'{k} {v}' for k, v in value.items()) or '-'
    return str(value)


_ROWS = (('mode', 'mode'), ('model', 'model'), ('device', 'device'),
         ('decoding', 'decoding'), ('CPU threads', 'cpu_threads'), ('bag', 'bag'),
         ('image topic', 'image_topic'), ('cameras', 'cameras'),
         ('instruction topic', 'instruction_topic'),
         ('requests', 'requests'), ('answered by the model', 'answered'),
         ('plans (answered)', 'plans', 'plans_answered'), ('captions', 'captions'),
         ('by status', 'by_status'), ('plan validity rate', 'plan_validity_rate'),
         ('plans by form', 'plans_by_form'),
         ('caption non-empty rate', 'caption_nonempty_rate'),
         ('latency p50 (s)', 'latency_p50_s'), ('latency p95 (s)', 'latency_p95_s'),
         ('time to first token p50 (s)', 'ttft_p50_s'),
         ('tokens/s p50 (of total time)', 'tokens_per_s_p50'),
         ('plan confidence p50 (geometric mean p)', 'plan_confidence_p50'),
         ('images/s (whole run)', 'images_per_s'),
         ('plan executions (re-plans)', 'executions', 'replans'),
         ('references scored', 'references'),
         ('mean CE (nats/token)', 'mean_ce'), ('perplexity', 'mean_perplexity'))


def summary_rows(summary: dict, settings: bool = True) -> list:
    """Return (label, text) rows of the summary: the one layout of the printed and HTML tables.

    settings=False leaves the settings out, for a page that shows them in a table of their own.
    """
    rows = []
    for label, key, *extra in _ROWS:
        if key not in summary:
            continue
        text = _value(summary[key])
        rows.append((label, f'{text} ({_value(summary[extra[0]])})' if extra else text))
    settings = summary.get('settings') if settings else None
    if settings:
        rows.append(('settings from', settings['source']))
        rows.append(('settings (not default)', _value({
            name: value for name, value in settings['values'].items()
            if value != settings['defaults'].get(name)})))
    return rows


def format_table(summary: dict) -> str:
    """Render the summary rows as an aligned two-column text table for the terminal."""
    rows = summary_rows(summary)
    width = max(len(label) for label, _ in rows)
    return '\n'.join(f'{label:<{width}}  {text}' for label, text in rows)
