"""vlm_eval --camera end to end: a two-camera recording, the installed tool, the tiny LLaVA.

Each request is answered from a frame of each camera, both in the prompt: the recorded
confidence equals the engine's own answer to the same two images, and differs from its answer
to the head camera's alone. Frames too far apart are UNSYNCHRONIZED with the skew, as vlm_node
says; ROS 1 recordings work alike.
"""

import json
import re

import pytest
from engine_fixtures import scene
from eval_bags import (
    IMAGE_TOPIC,
    INSTRUCTIONS,
    STAMPS,
    WRIST_STAMPS,
    WRIST_TOPIC,
    wrist_scene,
    write_camera_bag,
)
from test_evaluate import read_jsonl, vlm_eval
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.local import VlmEngine

CAMERAS = ['--camera', f'head={IMAGE_TOPIC}', '--camera', f'wrist={WRIST_TOPIC}']
MODEL_ARGS = ['--device', 'cpu', '--dtype', 'float32', '--max-new-tokens', '96']


def test_every_request_is_answered_from_both_cameras_at_the_defaults(tmp_path, trained_tiny):
    model = str(trained_tiny('llava'))
    out = tmp_path / 'out'
    done = vlm_eval(write_camera_bag(tmp_path / 'bag'), '--model', model, *CAMERAS,
                    *MODEL_ARGS, '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(out / 'results.jsonl')
    plans = [r for r in records if r['task'] == 'plan']
    assert [p['request'] for p in plans] == [text for _, text in INSTRUCTIONS]
    assert [p['status'] for p in plans][0] == 'NO_IMAGE'
    assert all(p['status'] in ('OK', 'INVALID_OUTPUT') for p in plans[1:]), plans
    # The third instruction's latest frames were 0.4 s apart: the next head frame was closer.
    assert [[i['frame'] for i in p['images']] for p in plans] == [
        [None, None], [0, 0], [2, 2], [2, 2]]
    assert [i['stamp_ns'] for i in plans[1]['images']] == [STAMPS[0], WRIST_STAMPS[0]]
    assert plans[2]['skew'] == pytest.approx(0.1)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['cameras'] == {'head': IMAGE_TOPIC, 'wrist': WRIST_TOPIC}
    assert f'head {IMAGE_TOPIC}, wrist {WRIST_TOPIC}' in done.stdout
    page = (out / 'report.html').read_text()
    assert re.findall(r'<img class="thumb" alt="(\w+ frame \d+)"', page) == [
        'head frame 0', 'wrist frame 0', 'head frame 2', 'wrist frame 2']

    engine = VlmEngine(EngineConfig(model=model, device='cpu', dtype='float32',
                                    max_new_tokens=96))
    engine.load()
    try:
        both, head = engine.run([
            Request('plan', None, plans[1]['request'],
                    cameras=(('head', scene('red')), ('wrist', wrist_scene(0)))),
            Request('plan', scene('red'), plans[1]['request'])])
    finally:
        engine.unload()
    assert plans[1]['text'] == both.text
    assert plans[1]['confidence_mean'] == pytest.approx(both.confidence[0], abs=1e-5)
    assert plans[1]['confidence_mean'] != pytest.approx(head.confidence[0], abs=1e-5)


def test_a_ros1_recording_whose_cameras_drift_apart_is_unsynchronized(tmp_path, trained_tiny):
    out = tmp_path / 'out'
    done = vlm_eval(write_camera_bag(tmp_path / 'cameras.bag', ros1=True), '--model',
                    str(trained_tiny('llava')), *CAMERAS, *MODEL_ARGS, '--max-skew', '0.05',
                    '--no-captions', '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = read_jsonl(out / 'results.jsonl')
    assert [p['status'] for p in plans][:2] == ['NO_IMAGE', 'OK']
    assert [p['status'] for p in plans][2:] == ['UNSYNCHRONIZED'] * 2
    assert "the cameras' frames are 0.100 s apart" in plans[2]['message']
    assert 'max_skew is 0.05 s' in plans[2]['message'] and plans[2]['batch'] is None
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['by_status'] == {'NO_IMAGE': 1, 'OK': 1, 'UNSYNCHRONIZED': 2}
