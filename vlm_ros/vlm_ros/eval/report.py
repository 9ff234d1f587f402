"""The vlm_eval report: one self-contained HTML page and a latency plot, from the records.

The page is mailed, attached to tickets and opened on machines without the bag, so nothing is
linked: frame thumbnails are JPEG and the plot PNG data URLs, the style sheet is inline, and
no script runs. Every string that came from a model or a recording is HTML-escaped, since a
model can answer with markup as easily as with a plan.
"""

import base64
import html
import io
from typing import Optional

import cv2

from .records import summary_rows

THUMB_SIDE = 224  # px: the longer side of a thumbnail, enough to see what the model saw
_STYLE = """
body { font-family: 'DejaVu Sans', sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { margin: 0 0 12px; font-size: 24px; } h2 { font-size: 18px; margin: 24px 0 8px; }
.top { display: flex; gap: 24px; align-items: flex-start; flex-wrap: wrap; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
.plot { max-width: 100%; border: 1px solid #ccc; }
.frame { display: flex; gap: 16px; border-top: 1px solid #ddd; padding: 12px 0; }
.thumb { width: 224px; flex: none; border: 1px solid #999; }
.noimage { width: 224px; height: 120px; flex: none; display: flex; align-items: center;
  justify-content: center; background: #f4f4f4; color: #a00; border: 1px dashed #a00; }
.answers { flex: 1; font-size: 14px; }
.meta { color: #666; font-size: 12px; margin: 0 0 6px; }
.answer { border-left: 6px solid #999; padding: 4px 10px; margin: 6px 0; background: #fafafa; }
.answer.valid { border-color: #2a9d3a; } .answer.invalid { border-color: #d33; }
.mark { font-weight: bold; } .valid .mark { color: #2a7d32; } .invalid .mark { color: #c62828; }
pre { white-space: pre-wrap; font-size: 12px; margin: 4px 0; }
.step.succeeded { color: #2a7d32; } .step.failed { color: #c62828; font-weight: bold; }
"""


def _esc(value) -> str:
    return html.escape('' if value is None else str(value), quote=True)


BOX_COLOUR = (255, 0, 255)  # RGB magenta: rare in camera frames, seen on wood, sky and steel


def thumbnail_jpeg(rgb, side: int = THUMB_SIDE, boxes=()) -> bytes:
    """Shrink an RGB frame to at most side pixels on its longer side and encode it as JPEG.

    ``boxes``: [x1, y1, x2, y2] in the frame's pixels (the steps' targets a model grounded),
    drawn as outlines so the report shows where the plan points.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, side / max(height, width))
    small = cv2.resize(rgb, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    if boxes:
        small = small.copy()
        for box in boxes:
            x1, y1, x2, y2 = (round(value * scale) for value in box)
            cv2.rectangle(small, (x1, y1), (x2, y2), BOX_COLOUR, 2)
    ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError(f'OpenCV could not encode a {rgb.shape} thumbnail as JPEG')
    return encoded.tobytes()


def boxes_by_frame(records: list) -> dict:
    """Map each frame's thumbnail key to the boxes the records' plan steps grounded in it.

    The keys are _frame's: the first camera's frame index, (camera, frame index) for the
    others; a step's box is drawn on the frame of the camera it names (the first: none).
    """
    boxes = {}
    for record in records:
        if record['kind'] != 'result' or not record['image']:
            continue
        views = {view['camera']: view for view in record.get('images') or [] if view}
        first = (record.get('images') or [None])[0]
        for step in record['steps']:
            view = views.get(step.get('camera'))
            if step.get('box'):
                key = record['image']['frame'] if view is None or view is first else \
                    (view['camera'], view['frame'])
                boxes.setdefault(key, []).append(step['box'])
    return boxes


def latency_png(records: list, title: str) -> bytes:
    """Plot each answered request's latency against its time in the bag; return PNG bytes.

    Drawn with matplotlib's Agg canvas directly (no pyplot), so it needs no display and leaves
    no global figure state behind in a process that makes several reports.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 3.3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    timed = [r for r in records if r['kind'] == 'result' and r['total_time'] is not None
             and r['bag_time_s'] is not None]
    for task, marker in (('plan', 'o'), ('caption', 's'), ('vqa', '^')):
        points = [(r['bag_time_s'], r['total_time']) for r in timed if r['task'] == task]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker,
                         label=f'{task} ({len(points)})')
    if timed:
        axes.legend(loc='best', fontsize=8)
        axes.set_ylim(0, 1.15 * max(r['total_time'] for r in timed) or 1.0)
    else:
        axes.text(0.5, 0.5, 'no answered requests', ha='center', va='center',
                  transform=axes.transAxes)
    axes.set_xlabel('time in the recording (s since its start)')
    axes.set_ylabel('latency per request (s)')
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png')
    return buffer.getvalue()


def _data_url(mime: str, data: bytes) -> str:
    return f'data:{mime};base64,{base64.b64encode(data).decode("ascii")}'


def _answer(record: dict) -> str:
    """One request's answer: the mark, the request, the text or the plan steps."""
    ok = record['valid']
    mark = ('&#10003; valid' if ok else '&#10007; invalid') + (
        '' if record['status'] == 'OK' else f' ({_esc(record["status"])})')
    head = f'<span class="mark">{mark}</span> <b>{_esc(record["task"])}</b>'
    if record['request']:
        head += f': {_esc(record["request"])}'
    timing = [f'asked at {record["bag_time_s"]:.3f} s'] if record['bag_time_s'] is not None \
        else []
    if record['total_time'] is not None:
        timing.append(f'answered in {record["total_time"]:.3f} s')
    if record['time_to_first_token'] is not None:
        timing.append(f'TTFT {record["time_to_first_token"]:.3f} s')
    if record['output_tokens'] is not None:
        timing.append(f'{record["output_tokens"]} tokens')
    if record['tokens_per_s'] is not None:
        timing.append(f'{record["tokens_per_s"]:.1f} tokens/s')
    head += f' <span class="meta">{", ".join(timing)}</span>'
    parts = [f'<div class="answer {"valid" if ok else "invalid"}"><div>{head}</div>']
    if record['message']:
        parts.append(f'<div class="meta">{_esc(record["message"])}</div>')
    if record['steps']:
        parts.append('<ol>' + ''.join(
            f'<li>{_esc(s["instruction"])} <span class="meta">skill {_esc(s["skill"] or "-")}'
            f', target {_esc(s["target"] or "-")}</span></li>' for s in record['steps'])
            + '</ol>')
    if record['text'] and (record['task'] != 'plan' or not record['steps']):
        parts.append(f'<pre>{_esc(record["text"])}</pre>')
    elif record['text']:
        parts.append(f'<details><summary>raw output</summary><pre>{_esc(record["text"])}'
                     '</pre></details>')
    return ''.join(parts) + '</div>'


def _groups(records: list) -> list:
    """Group result records by input frames, in order of first use; each unpaired one alone."""
    groups = {}
    for position, record in enumerate(r for r in records if r['kind'] == 'result'):
        image = record['image']
        others = tuple(view['frame'] for view in record.get('images', ())[1:])
        key = ('frame', image['frame'], others) if image else ('none', position)
        groups.setdefault(key, []).append(record)
    return list(groups.values())


def _picture(image: Optional[dict], jpeg: Optional[bytes]) -> str:
    """Render one camera's thumbnail, or a placeholder saying why there is none."""
    if jpeg is not None:
        camera = f'{_esc(image["camera"])} ' if 'camera' in image else ''
        return (f'<img class="thumb" alt="{camera}frame {image["frame"]}" '
                f'src="{_data_url("image/jpeg", jpeg)}">')
    missing = image is None or image['frame'] is None
    return f'<div class="noimage">{"no image" if missing else "undecodable"}</div>'


def _meta(image: dict) -> str:
    camera = f'{_esc(image["camera"])}: ' if 'camera' in image else ''
    if image['frame'] is None:
        return f'{camera}no frame on {_esc(image["topic"])}'
    return (f'{camera}frame {image["frame"]} on {_esc(image["topic"])}, header stamp '
            f'{image["stamp"]}')


def _frame(records: list, thumbnails: dict) -> str:
    """Render a group's frames (one per camera, frame_key's thumbnails) beside its answers."""
    image = records[0]['image']
    views = records[0].get('images') or [image]
    keys = [view and (view['frame'] if number == 0 else (view['camera'], view['frame']))
            for number, view in enumerate(views)]
    pictures = ''.join(_picture(view, thumbnails.get(key) if view else None)
                       for view, key in zip(views, keys, strict=True))
    meta = ('<br>'.join(_meta(view) for view in views) if image or len(views) > 1
            else 'no frame had been recorded before this request')
    answers = ''.join(_answer(r) for r in records)
    return (f'<div class="frame">{pictures}<div class="answers"><p class="meta">{meta}</p>'
            f'{answers}</div></div>')


def _scores(records: list) -> str:
    rows = [r for r in records if r['kind'] == 'score']
    if not rows:
        return ''
    body = ''.join(
        f'<tr><td>{r["image"]["stamp"]}</td><td>{_esc(r["task"])}</td><td>{_esc(r["request"])}'
        f'</td><td>{_esc(r["target"])}</td><td>{r["ce"]:.4f}</td><td>{r["perplexity"]:.3f}</td>'
        f'<td>{r["tokens"]}</td></tr>' for r in rows)
    return ('<h2>Reference scores</h2><table><tr><th>frame stamp</th><th>task</th>'
            '<th>request</th><th>target</th><th>CE (nats/token)</th><th>perplexity</th>'
            f'<th>tokens</th></tr>{body}</table>')


_OUTCOME_MARKS = {'succeeded': '&#10003;', 'failed': '&#10007;'}


def _step(step: dict) -> str:
    """One commanded step: attempt.step, instruction, outcome, time, and why it failed."""
    outcome, time_s = step['outcome'], step['time_s']
    line = (f'{step["attempt"]}.{step["index"] + 1} {_esc(step["instruction"])} '
            f'<span class="step {_esc(outcome)}">{_OUTCOME_MARKS.get(outcome, "&#8230;")} '
            f'{_esc(outcome)}</span>'
            + (f' <span class="meta">in {time_s:.3f} s</span>' if time_s is not None else ''))
    if step['reason'] and outcome != 'succeeded':
        line += f'<div class="meta">{_esc(step["reason"])}</div>'
    return f'<div>{line}</div>'


def _executions(executions: list) -> str:
    """Render the plan executions: each step's outcome and time, re-plans, the outcome."""
    if not executions:
        return ''
    rows = []
    for ex in executions:
        steps = ''.join(_step(s) for s in ex['steps']) or '-'
        replans = '<br>'.join(_esc(reason) for reason in ex['replans']) or '-'
        rows.append(f'<tr><td>{_esc(ex["instruction"])}<br><span class="meta">'
                    f'{_esc(ex["plan_id"])}</span></td><td>{steps}</td><td>{replans}</td>'
                    f'<td><b>{_esc(ex["outcome"])}</b>: {_esc(ex["message"])}</td></tr>')
    return ('<h2>Plan executions</h2><table><tr><th>instruction</th>'
            '<th>steps commanded (attempt.step): outcome, time</th><th>re-plans</th>'
            f'<th>outcome</th></tr>{"".join(rows)}</table>')


def _settings(settings) -> str:
    """Render the run's settings: the model, the device and every value not at its default."""
    if not settings:
        return ''
    rows = ''.join(f'<tr><th>{_esc(name)}</th><td>{_esc(value)}</td>'
                   f'<td>{_esc(settings["defaults"].get(name))}</td></tr>'
                   for name, value in settings['values'].items())
    return (f'<div><h2>Settings</h2><p class="meta">{_esc(settings["source"])}, where not at '
            f'vlm_node\'s defaults</p><table class="settings"><tr><th>setting</th>'
            f'<th>value</th><th>default</th></tr>{rows}</table></div>')


def render(summary: dict, records: list, thumbnails: dict, plot_png: bytes) -> str:
    """Return the report page: summary, settings, latency plot, executions, frames, scores.

    ``thumbnails`` maps frame index (a record's image['frame']) to JPEG bytes, and for the
    further cameras of a record's ``images`` (camera name, frame index).
    """
    table = ''.join(f'<tr><th>{_esc(label)}</th><td>{_esc(text)}</td></tr>'
                    for label, text in summary_rows(summary, settings=False))
    frames = ''.join(_frame(group, thumbnails) for group in _groups(records))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<title>vlm_eval: {_esc(summary.get("bag"))}</title><style>{_STYLE}</style></head>'
        f'<body><h1>vlm_eval report</h1><div class="top"><div><h2>Summary</h2>'
        f'<table class="summary">{table}</table></div>{_settings(summary.get("settings"))}'
        f'<div><h2>Latency</h2>'
        f'<img class="plot" alt="latency per request over time in the recording" '
        f'src="{_data_url("image/png", plot_png)}"></div></div>'
        f'{_executions(summary.get("plan_executions", []))}'
        f'<h2>Frames, captions and plans</h2>{frames or "<p>no requests</p>"}'
        f'{_scores(records)}</body></html>\n')
