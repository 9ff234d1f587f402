"""The sample recording end to end: offline evaluation with the demo model, and ./scripts/demo."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import yaml
from ament_index_python.packages import get_package_prefix
from ros_harness import wait_exit
from vlm_ros.bag.storage import PLAN_TYPE, open_bag
from vlm_ros.demo.model import build as build_demo_model
from vlm_ros.demo.tabletop import draw_tabletop
from vlm_ros.eval.screenshot import CHROMIUM, screenshot

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / 'samples' / 'tabletop'
REFERENCES = yaml.safe_load((SAMPLE / 'references.yaml').read_text())


@pytest.fixture(scope='module')
def tiny_demo_model(tmp_path_factory):
    """Build the tiny LLaVA that MODEL=tiny ./scripts/demo uses (trained on the references)."""
    out = tmp_path_factory.mktemp('demo') / 'model'
    report = build_demo_model(out, SAMPLE / 'bag', SAMPLE / 'references.yaml')
    assert report['min_answer_prob'] >= 0.5, report
    return out


def test_vlm_eval_on_the_sample_bag_with_the_tiny_model(tiny_demo_model, tmp_path):
    out = tmp_path / 'eval'
    vlm_eval = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_eval'
    proc = subprocess.Popen([str(vlm_eval), str(SAMPLE / 'bag'), '--model', str(tiny_demo_model),
                             '--device', 'cpu', '--dtype', 'float32', '--out', str(out),
                             '--references', str(SAMPLE / 'references.yaml')],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 300)
    assert code == 0, err
    records = [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]
    answers = {(r['task'], r['image']['stamp_ns']): r['text'] for r in records
               if r['kind'] == 'result'}
    # Every instruction is answered from the frame its reference names, with the reference.
    assert answers == {(r['task'], r['stamp_ns']): r['target'] for r in REFERENCES}
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['plan_validity_rate'] == 1.0 and summary['requests'] == len(REFERENCES)
    assert summary['mean_ce'] < 0.1 and 1.0 <= summary['mean_perplexity'] < 1.1
    assert 'plan validity rate' in stdout
    if pathlib.Path(CHROMIUM).is_file():
        from PIL import Image

        png = screenshot(out / 'report.html', tmp_path / 'report.png', height=1400)
        pixels = np.asarray(Image.open(png).convert('RGB')).reshape(-1, 3).astype(np.int16)
        assert len(np.unique(pixels, axis=0)) > 500
        wood = draw_tabletop(0.0)[440, 20].astype(np.int16)  # the table, near its front edge
        near = np.all(np.abs(pixels - wood) <= 24, axis=1).sum()
        assert near > 4 * 2000, f'the tabletop thumbnails are missing: {near} wood pixels'


def test_demo_command_runs_offline_with_model_tiny(tmp_path):
    out = tmp_path / 'demo'
    env = {**os.environ, 'MODEL': 'tiny', 'OUT': str(out), 'DEVICE': 'cpu'}
    proc = subprocess.Popen([str(ROOT / 'scripts' / 'demo')], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    assert stdout.count('[/plan] STATUS_OK') == 4, stdout
    with open_bag(out / 'answers') as reader:
        plans = [c for c, _, _ in reader.messages() if c.msgtype == PLAN_TYPE]
    assert len(plans) == 4
    summary = json.loads((out / 'report' / 'summary.json').read_text())
    assert summary['plan_validity_rate'] == 1.0
    # The scripted head fails the second step once: the first instruction is re-planned, and
    # its execution resumes from the failed step to DONE.
    first = summary['plan_executions'][0]
    assert first['instruction'] == REFERENCES[0]['text'], first
    assert first['outcome'] == 'DONE' and len(first['replans']) == 1, first
    assert [(s['attempt'], s['instruction']) for s in first['steps']] == [
        (0, 'pick up the red block'), (0, 'place it in the bin'), (1, 'place it in the bin')]
    assert summary['replans'] == 1 and summary['executions'].get('DONE', 0) >= 1, summary
    assert 'Plan executions' in (out / 'report' / 'report.html').read_text()
    assert (out / 'report' / 'report.html').is_file()
    assert (out / 'report' / 'report.png').is_file() == pathlib.Path(CHROMIUM).is_file()
