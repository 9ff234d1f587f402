"""Several cameras' recordings end to end: vlm_eval --camera, and vlm_replay into cameras:=[...].

Each request is answered from a frame of each camera, both in the prompt: the recorded
confidence equals the engine's own answer to the same two images, and differs from its answer
to the head camera's alone. Frames too far apart are UNSYNCHRONIZED with the skew, as vlm_node
says; ROS 1 recordings work alike. A live node's answers, recorded by vlm_replay with their
image_sources and plan_targets, give the same per-camera records and the boxes in the report.
"""

import base64
import json
import re
import subprocess
import uuid

import cv2
import numpy as np
import pytest
import vlm_ros.bag.storage as bags
from engine_fixtures import scene
from eval_bags import (
    IMAGE_TOPIC,
    INSTRUCTIONS,
    STAMPS,
    T0,
    TARGET_BOX,
    WRIST_BOX,
    WRIST_STAMPS,
    WRIST_TOPIC,
    image_fields,
    wrist_scene,
    write_camera_bag,
    write_recorded_bag,
)
from node_harness import TIMEOUT, node_executable
from test_evaluate import read_jsonl, vlm_eval
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.local import VlmEngine
from vlm_ros.eval.report import BOX_COLOUR

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
    """--wait-for-image 0.3: the third instruction's closer frames come 0.4 s later, too late."""
    out = tmp_path / 'out'
    done = vlm_eval(write_camera_bag(tmp_path / 'cameras.bag', ros1=True), '--model',
                    str(trained_tiny('llava')), *CAMERAS, *MODEL_ARGS, '--max-skew', '0.05',
                    '--wait-for-image', '0.3', '--no-captions', '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = read_jsonl(out / 'results.jsonl')
    assert [p['status'] for p in plans][:2] == ['NO_IMAGE', 'OK']
    assert [p['status'] for p in plans][2:] == ['UNSYNCHRONIZED'] * 2
    # Waiting 2 s (the default) would have found frames [2, 2], 0.1 s apart.
    assert [[i['frame'] for i in p['images']] for p in plans[2:]] == [[1, 1], [2, 2]]
    assert "the cameras' frames are 0.400 s apart" in plans[2]['message']
    assert "the cameras' frames are 0.100 s apart" in plans[3]['message']
    assert 'max_skew is 0.05 s and no closer ones were logged within 0.3 s' in \
        plans[2]['message'] and plans[2]['batch'] is None
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['by_status'] == {'NO_IMAGE': 1, 'OK': 1, 'UNSYNCHRONIZED': 2}


def test_recorded_answers_show_every_camera_and_the_boxes(tmp_path):
    out = tmp_path / 'out'
    done = vlm_eval(write_camera_bag(tmp_path / 'bag'), '--recorded',
                    write_recorded_bag(tmp_path / 'answers', companions=True), *CAMERAS,
                    '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    first = next(r for r in read_jsonl(out / 'results.jsonl')
                 if r['task'] == 'plan' and r['image'] and r['image']['frame'] == 0)
    assert [(i['camera'], i['frame']) for i in first['images']] == [('head', 0), ('wrist', 0)]
    assert first['steps'][0]['box'] == list(TARGET_BOX)
    page = (out / 'report.html').read_text()
    thumbs = dict(re.findall(r'<img class="thumb" alt="(\w+ frame \d+)" '
                             r'src="data:image/jpeg;base64,([^"]+)"', page))
    assert {'head frame 0', 'wrist frame 0', 'head frame 1'} <= set(thumbs)
    for thumb, box in (('head frame 0', TARGET_BOX), ('wrist frame 0', WRIST_BOX)):
        drawn = cv2.imdecode(np.frombuffer(base64.b64decode(thumbs[thumb]), np.uint8),
                             cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)
        magenta = np.nonzero(np.abs(drawn - BOX_COLOUR).sum(axis=2) < 90)
        assert magenta[0].size and magenta[1].min() >= box[0] - 2, f'{thumb}: the box, there'
    assert (first['steps'][1]['box'], first['steps'][1]['camera']) == (list(WRIST_BOX), 'wrist')


@pytest.mark.parametrize('companions, cameras, complaint', [
    (False, CAMERAS, 'has no image_sources messages'),
    (True, ['--camera', f'wrist={WRIST_TOPIC}', '--camera', f'head={IMAGE_TOPIC}'],
     'the node named its cameras head, wrist (first: head)'),
    (True, ['--camera', f'front={IMAGE_TOPIC}'], 'give --camera those names'),
], ids=['no-sources', 'another-order', 'other-names'])
def test_recorded_answers_that_cannot_give_each_camera_its_frames_are_refused(
        tmp_path, companions, cameras, complaint):
    out = tmp_path / 'out'
    done = vlm_eval(write_camera_bag(tmp_path / 'bag'), '--recorded',
                    write_recorded_bag(tmp_path / 'answers', companions=companions), *cameras,
                    '--out', out)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert not out.exists()


def test_a_two_camera_recording_replays_into_a_node_with_cameras(start_vlm_node, tmp_path):
    """The user's path: vlm_replay into cameras:=[head, wrist], then vlm_eval --recorded."""
    node = start_vlm_node(cameras='[head, wrist]')
    node.wait_state('active')
    head, wrist = '/robot/head/image_raw', '/robot/wrist/image_raw'
    times = [T0 + k * 500_000_000 for k in range(6)]
    texts = [f'put the red block in the bin #{uuid.uuid4().hex[:8]}' for _ in range(3)]
    with bags.bag_writer(tmp_path / 'bag') as writer:
        topics = {topic: bags.add_topic(writer, topic, 'sensor_msgs/msg/Image')
                  for topic in (head, wrist)}
        text = bags.add_topic(writer, '/instruction', bags.STRING_TYPE)
        events = [(when, topics[head], image_fields(scene('red'), when)) for when in times]
        events += [(when + 20_000_000, topics[wrist], image_fields(wrist_scene(0),
                                                                    when + 20_000_000))
                   for when in times]
        messages = [(when, conn, bags.serialize('sensor_msgs/msg/Image', **fields))
                    for when, conn, fields in events]
        messages += [(times[2 * k] + 50_000_000, text, bags.serialize(bags.STRING_TYPE, data=t))
                     for k, t in enumerate(texts)]
        for when, conn, data in sorted(messages, key=lambda m: m[0]):
            writer.write(conn, when, data)
    answers = tmp_path / 'answers'
    replay = subprocess.run(
        [node_executable('vlm_replay'), tmp_path / 'bag', '--remap', f'{head}:=/head/image',
         f'{wrist}:=/wrist/image', '--record', answers, '--wait-for-subscribers',
         str(TIMEOUT), '--linger', str(TIMEOUT)], capture_output=True, text=True,
        timeout=3 * TIMEOUT)
    assert replay.returncode == 0, replay.stderr[-3000:]
    out = tmp_path / 'out'
    done = vlm_eval(tmp_path / 'bag', '--recorded', answers, '--camera', f'head={head}',
                    '--camera', f'wrist={wrist}', '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = [r for r in read_jsonl(out / 'results.jsonl') if r['task'] == 'plan']
    assert sorted(p['request'] for p in plans) == sorted(texts)
    for plan in plans:
        assert plan['status'] != 'UNSYNCHRONIZED', plan['message']
        assert [i['camera'] for i in plan['images']] == ['head', 'wrist'], plan
        head_frame, wrist_frame = (i['frame'] for i in plan['images'])
        assert head_frame is not None and wrist_frame is not None, plan['images']
        assert plan['images'][1]['stamp_ns'] - plan['images'][0]['stamp_ns'] in \
            (20_000_000, -480_000_000), plan['images']
