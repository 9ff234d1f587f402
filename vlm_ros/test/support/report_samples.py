"""A vlm_eval report both tiers of the report tests look at."""

import pathlib

from engine_fixtures import PLAN_JSON, scene
from vlm_ros.engine import parse_plan
from vlm_ros.eval.inputs import FrameRef
from vlm_ros.eval.records import image_info, result_record, summarize
from vlm_ros.eval.report import latency_png, render, thumbnail_jpeg

COLOURS = {'red': (220, 30, 30), 'blue': (30, 60, 220), 'green': (30, 200, 60)}


START = 10**18


EVIL = '<img src=http://example.com/x.png onerror=alert(1)>'


def make_report(tmp_path: pathlib.Path) -> pathlib.Path:
    """Render a report of three frames: a valid plan, an invalid one, a caption, a NO_IMAGE."""
    frames = [FrameRef(i, START + (i + 1) * 10**9, START + i * 10**9) for i in range(3)]
    images = {i: scene(colour, 240, 320) for i, colour in enumerate(COLOURS)}
    plan = parse_plan(PLAN_JSON)

    def record(task, frame, text, status, result_text, **timing):
        image = image_info('/cam', frame)
        when = frame.bag_time_ns + 10**8 if frame else START
        return result_record(task, text, image, when, START, status, text=result_text,
                             **timing)

    timing = {'time_to_first_token': 0.05, 'total_time': 0.4, 'output_tokens': 9, 'batch': 0}
    records = [
        record('plan', None, 'too early', 'NO_IMAGE', ''),
        record('caption', frames[0], '', 'OK', f'red {EVIL}', valid=True, form='text',
               **timing),
        record('plan', frames[0], 'put the red block in the bin', 'OK', PLAN_JSON,
               steps=plan.steps, valid=True, form='json', **timing),
        record('plan', frames[1], f'do {EVIL}', 'INVALID_OUTPUT', '</pre><h1>junk', **timing),
        record('caption', frames[2], '', 'OK', 'a green block', valid=True, form='text',
               **timing)]
    summary = summarize(records, {'mode': 'engine', 'model': f'm{EVIL}', 'device': 'cpu',
                                  'images_per_s': 2.5})
    page = render(summary, records, {i: thumbnail_jpeg(a) for i, a in images.items()},
                  latency_png(records, 'tiny on cpu'))
    path = tmp_path / 'report.html'
    path.write_text(page, encoding='utf-8')
    return path
