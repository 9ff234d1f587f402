"""The vlm_eval HTML report: self-contained, escaped, and really drawn by a browser.

The browser test renders a report in headless Chromium and looks at the pixels: a page that
parses but shows nothing (a broken data URL, a style hiding everything) fails here.
"""

import html
import pathlib
import re

import numpy as np
import pytest
from engine_fixtures import scene
from report_samples import EVIL, START, make_report
from vlm_ros.bag.storage import (
    PROGRESS_TYPE,
    add_topic,
    bag_writer,
    open_bag,
    serialize,
    typestore,
)
from vlm_ros.eval.executions import read_executions
from vlm_ros.eval.records import summary_rows
from vlm_ros.eval.report import render, thumbnail_jpeg
from vlm_ros.eval.screenshot import ScreenshotError, screenshot
from vlm_ros.eval.settings import node_settings


def test_report_is_self_contained_and_escaped(tmp_path):
    page = make_report(tmp_path).read_text()
    tags = re.findall(r'<(img|script|link|iframe|object|embed|source)\b([^>]*)>', page)
    assert len(tags) == 4  # three thumbnails and the plot, nothing else that loads
    assert all(name == 'img' and re.search(r' src="data:image/(jpeg|png);base64,', attrs)
               for name, attrs in tags)
    assert len(re.findall(r'class="thumb"[^>]*src="data:image/jpeg;base64,', page)) == 3
    assert '<img src=http' not in page and '</pre><h1>junk' not in page
    assert '&lt;img src=http://example.com/x.png onerror=alert(1)&gt;' in page
    assert 'no image' in page and '&#10007; invalid (INVALID_OUTPUT)' in page


def test_thumbnail_keeps_aspect_and_shrinks_only():
    import cv2

    big = cv2.imdecode(np.frombuffer(thumbnail_jpeg(scene('red', 480, 640)), np.uint8),
                       cv2.IMREAD_COLOR)
    small = cv2.imdecode(np.frombuffer(thumbnail_jpeg(scene('red')), np.uint8),
                         cv2.IMREAD_COLOR)
    assert big.shape == (168, 224, 3) and small.shape == (48, 64, 3)


def test_screenshot_errors_are_clear(tmp_path):
    with pytest.raises(ScreenshotError, match='no browser at /nonexistent/chromium'):
        screenshot(tmp_path / 'r.html', tmp_path / 'r.png', browser='/nonexistent/chromium')


def write_progress(path: pathlib.Path, events: list) -> None:
    """Write (seconds, plan_id, state, index, steps, attempt, message) as a recorded bag."""
    step = typestore().types['vlm_ros_msgs/msg/PlanStep']
    with bag_writer(path) as writer:
        connection = add_topic(writer, '/plan_progress', PROGRESS_TYPE)
        for seconds, plan_id, state, index, steps, attempt, message in events:
            writer.write(connection, START + int(seconds * 1e9), serialize(
                PROGRESS_TYPE, header={'stamp': {'sec': 0, 'nanosec': 0}, 'frame_id': ''},
                plan_id=plan_id, instruction=f'do {plan_id}', state=state, index=index,
                steps=[step(instruction=s, skill='', target='') for s in steps],
                done=[], attempt=attempt, message=message))


def test_each_step_has_its_outcome_reason_and_time_from_the_recorded_progress(tmp_path):
    failed_twice = "step 1 ('b') failed: again; no re-plan left (max_replans 1)"
    write_progress(tmp_path / 'answers', [
        (0.0, 'p1', 0, 0, ['a', 'b'], 0, 'step 1 of 2: a'),
        (1.0, 'p1', 0, 1, ['a', 'b'], 0, 'step 2 of 2: b'),
        (1.5, 'p1', 0, 1, ['a', 'b'], 1, f"re-plan 1 of 1: step 2 ('b') failed: {EVIL}"),
        (3.0, 'p1', 0, 0, ['b'], 1, 'step 1 of 1: b'),
        (3.25, 'p1', 2, 0, ['b'], 1, failed_twice),
        (4.0, 'p2', 0, 0, ['c'], 0, 'step 1 of 1: c'),
        (4.5, 'p2', 3, 0, ['c'], 0, 'preempted by a new instruction'),
        (5.0, 'p3', 0, 0, ['d'], 0, 'step 1 of 1: d')])  # the recording ends meanwhile
    with open_bag(tmp_path / 'answers') as reader:
        executions = read_executions(reader)
    steps = {ex['plan_id']: [(s['attempt'], s['instruction'], s['outcome'], s['reason'],
                              s['time_s']) for s in ex['steps']] for ex in executions}
    assert steps == {
        'p1': [(0, 'a', 'succeeded', '', 1.0),
               (0, 'b', 'failed', f"step 2 ('b') failed: {EVIL}", 0.5),
               (1, 'b', 'failed', failed_twice, 0.25)],
        'p2': [(0, 'c', 'preempted', 'preempted by a new instruction', 0.5)],
        'p3': [(0, 'd', 'running', '', None)]}
    assert [ex['outcome'] for ex in executions] == ['FAILED', 'PREEMPTED', 'EXECUTING']
    page = render({'plan_executions': executions}, [], {}, b'')
    assert EVIL not in page and html.escape(EVIL) in page
    assert page.count('&#10007; failed</span> <span class="meta">in ') == 2
    assert 'a <span class="step succeeded">&#10003; succeeded</span> <span class="meta">in ' \
        '1.000 s</span>' in page
    assert 'd <span class="step running">&#8230; running</span></div>' in page


def test_report_shows_answer_speeds_and_the_settings_not_at_their_defaults(tmp_path):
    page = make_report(tmp_path).read_text()
    # Each answered request: its time to first token, tokens and tokens per second.
    assert page.count('TTFT 0.050 s, 9 tokens, 22.5 tokens/s') == 4
    recorded = {'node': f'/vlm{EVIL}', 'parameters': {
        'model': 'm', 'device': 'cpu', 'max_new_tokens': 128, 'caption_rate': 2.0,
        'prompt_plan': EVIL, 'use_sim_time': False, 'some_other_node_setting': 3}}
    settings = node_settings(recorded)
    assert settings['values'] == {'model': 'm', 'device': 'cpu', 'caption_rate': 2.0,
                                  'prompt_plan': EVIL}
    page = render({'settings': settings}, [], {}, b'')
    assert EVIL not in page
    assert '<tr><th>caption_rate</th><td>2.0</td><td>0.0</td></tr>' in page
    rows = dict(summary_rows({'settings': settings}))
    assert rows['settings from'] == f'parameters of /vlm{EVIL}'
    assert rows['settings (not default)'] == f'model m, device cpu, caption_rate 2.0, ' \
        f'prompt_plan {EVIL}'
