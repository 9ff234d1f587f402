"""vlm_eval end to end: a bag written here, the installed executable, the trained tiny LLaVA.

The bag has three camera frames (red, blue, green blocks) and instructions before, between and
exactly at frame times, so pairing is checked against known answers; the model is the tiny
checkpoint trained to answer the red scene, so validity and reference scores are known too.
"""

import json
import math
import os
import pathlib
import struct
import subprocess

import numpy as np
import pytest
import vlm_ros.bag.storage as bags
from ament_index_python.packages import get_package_prefix
from engine_fixtures import PLAN_JSON, TARGETS, scene
from vlm_ros.engine import VlmError
from vlm_ros.eval.inputs import latest_at_or_before, read_inputs

T0 = 1_700_000_000 * 10**9  # bag log time of the start of the recording
SECOND = 10**9
FRAME_TIMES = [T0 + 1 * SECOND, T0 + 2 * SECOND, T0 + 3 * SECOND]
STAMPS = [t - 5_000_000 for t in FRAME_TIMES]  # header stamps: 5 ms before logging
COLOURS = ['red', 'blue', 'green']
HOSTILE = '<b>put</b> the red block in the bin & <script>x</script>'
INSTRUCTIONS = [(T0 + SECOND // 2, TARGETS['plan'][0]),  # before any frame: NO_IMAGE
                (T0 + SECOND + SECOND // 2, TARGETS['plan'][0]),  # -> frame 0 (red)
                (T0 + 2 * SECOND + SECOND // 2, HOSTILE),  # -> frame 1 (blue)
                (T0 + 3 * SECOND, 'put the green block in the bin')]  # same ns as frame 2
IMAGE_TOPIC, INSTRUCTION_TOPIC = '/camera/image_raw', '/robot/instruction'
EXPECTED_FRAME = [None, 0, 1, 2]


def vlm_eval(*args, timeout=600):
    """Run the installed vlm_eval executable; return the CompletedProcess."""
    exe = pathlib.Path(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_eval')
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=timeout)


def image_fields(rgb, stamp):
    height, width = rgb.shape[:2]
    return {'header': bags.header(stamp, 'camera'), 'height': height, 'width': width,
            'encoding': 'rgb8', 'is_bigendian': 0, 'step': width * 3,
            'data': np.ascontiguousarray(rgb).reshape(-1)}


def write_input_bag(path, compressed=False, extra_image_topic=None):
    """Write the test recording: three frames, the instructions, and a distracting String."""
    import cv2

    with bags.bag_writer(path) as writer:
        msgtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
        images = bags.add_topic(writer, IMAGE_TOPIC, msgtype)
        text = bags.add_topic(writer, INSTRUCTION_TOPIC, bags.STRING_TYPE)
        status = bags.add_topic(writer, '/robot/status', bags.STRING_TYPE)
        extra = extra_image_topic and bags.add_topic(writer, extra_image_topic, msgtype)
        messages = []
        for when, stamp, colour in zip(FRAME_TIMES, STAMPS, COLOURS, strict=True):
            rgb = scene(colour)
            if compressed:
                data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].reshape(-1)
                fields = {'header': bags.header(stamp, 'camera'), 'format': 'png', 'data': data}
            else:
                fields = image_fields(rgb, stamp)
            messages.append((when, images, bags.serialize(msgtype, **fields)))
            if extra:
                messages.append((when, extra, bags.serialize(msgtype, **fields)))
        for when, instruction in INSTRUCTIONS:
            messages.append((when, text, bags.serialize(bags.STRING_TYPE, data=instruction)))
        messages.append((T0, status, bags.serialize(bags.STRING_TYPE, data='ready')))
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)
    return path


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def test_latest_at_or_before():
    frames = [10, 20, 30]
    assert latest_at_or_before(frames, [5, 10, 15, 20, 29, 30, 99]) == [None, 0, 0, 1, 1, 2, 2]
    assert latest_at_or_before([], [1, 2]) == [None, None]
    assert latest_at_or_before(frames, []) == []


def test_read_inputs_detects_topics(tmp_path):
    with bags.open_bag(write_input_bag(tmp_path / 'bag')) as reader:
        inputs = read_inputs(reader)
    assert (inputs.image_topic, inputs.instruction_topic) == (IMAGE_TOPIC, INSTRUCTION_TOPIC)
    assert [f.stamp_ns for f in inputs.frames] == STAMPS
    assert [i.text for i in inputs.instructions] == [t for _, t in INSTRUCTIONS]


def test_ambiguous_wrong_and_missing_topics_name_the_topics(tmp_path):
    with bags.open_bag(write_input_bag(tmp_path / 'two', extra_image_topic='/cam2')) as reader:
        with pytest.raises(bags.BagError, match=r'/cam2, /camera/image_raw.*--image-topic'):
            read_inputs(reader)
        with pytest.raises(bags.BagError, match=r'--image-topic /robot/status is a '
                           r'std_msgs/msg/String topic'):
            read_inputs(reader, '/robot/status')
        with pytest.raises(bags.BagError, match=r'--instruction-topic /nothing is not in .*'
                           r'/camera/image_raw \(sensor_msgs/msg/Image, 3 msgs\)'):
            read_inputs(reader, '/cam2', '/nothing')
    with bags.open_bag(write_recorded_bag(tmp_path / 'answers')) as reader:
        with pytest.raises(bags.BagError, match=r'no sensor_msgs/msg/Image or .*CompressedImage '
                           r'topic in .* name one with --image-topic\. Topics: /robot1/caption'):
            read_inputs(reader)


def check_pairing(records):
    """Every answered request's frame is the latest logged at or before its bag time."""
    for record in records:
        image = record['image']
        if image is None:
            assert record['status'] == 'NO_IMAGE'
            assert record['bag_time_ns'] < FRAME_TIMES[0]
            continue
        assert image['bag_time_ns'] <= record['bag_time_ns']
        assert not any(image['bag_time_ns'] < t <= record['bag_time_ns'] for t in FRAME_TIMES)
        assert image['stamp_ns'] == STAMPS[image['frame']]
        assert image['stamp'] == f'{STAMPS[image["frame"]] // SECOND}.' \
                                 f'{STAMPS[image["frame"]] % SECOND:09d}'


def check_report(out, frames_used):
    """report.html links nothing, has a data: JPEG per used frame, and escapes model text."""
    import re

    page = (out / 'report.html').read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith('data:image/') for s in sources), sources[:3]
    assert not re.search(r'(?:src|href)\s*=\s*"?(?:https?:)?//', page)
    thumbs = re.findall(r'<img class="thumb" alt="frame (\d+)" src="data:image/jpeg;base64,',
                        page)
    assert sorted(map(int, thumbs)) == sorted(frames_used)
    assert page.count('src="data:image/png;base64,') == 1
    assert '<script>' not in page and '<b>put</b>' not in page
    assert '&lt;b&gt;put&lt;/b&gt; the red block in the bin &amp; &lt;script&gt;' in page
    png = (out / 'latency.png').read_bytes()
    assert png.startswith(b'\x89PNG\r\n\x1a\n')
    width, height = struct.unpack('>II', png[16:24])
    assert width > 300 and height > 200


@pytest.fixture(scope='module')
def engine_run(tmp_path_factory, trained_tiny):
    """One vlm_eval run on the raw-image bag with captions, batch size 3: (out, stdout, model)."""
    tmp = tmp_path_factory.mktemp('eval')
    model = str(trained_tiny('llava'))
    done = vlm_eval(write_input_bag(tmp / 'bag'), '--model', model,
                    '--device', 'cpu', '--dtype', 'float32', '--max-new-tokens', 96,
                    '--batch-size', 3, '--out', tmp / 'out')
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / 'out', done.stdout, model


def test_engine_records_pair_and_answer(engine_run):
    out, _, _ = engine_run
    records = read_jsonl(out / 'results.jsonl')
    assert all(r['kind'] == 'result' for r in records)
    plans = [r for r in records if r['task'] == 'plan']
    captions = [r for r in records if r['task'] == 'caption']
    assert [p['request'] for p in plans] == [t for _, t in INSTRUCTIONS]
    assert [p['image'] and p['image']['frame'] for p in plans] == EXPECTED_FRAME
    assert [p['bag_time_ns'] for p in plans] == [t for t, _ in INSTRUCTIONS]
    assert sorted(c['image']['frame'] for c in captions) == [0, 1, 2]
    check_pairing(records)
    no_image, red = plans[0], plans[1]
    assert no_image['status'] == 'NO_IMAGE' and no_image['batch'] is None
    assert red['status'] == 'OK' and red['valid'] and red['form'] == 'json'
    assert red['text'] == PLAN_JSON
    assert red['steps'][0] == {'instruction': 'pick up the red block', 'skill': 'pick',
                               'target': 'red block'}
    red_caption = next(c for c in captions if c['image']['frame'] == 0)
    assert red_caption['text'] == TARGETS['caption'][1] and red_caption['valid']
    answered = [r for r in records if r['status'] in ('OK', 'INVALID_OUTPUT')]
    assert len(answered) == 6
    assert {r['batch'] for r in answered} == {0, 1}  # 6 requests in batches of 3
    for record in answered:
        assert 0 < record['time_to_first_token'] <= record['total_time']
        assert record['output_tokens'] > 0


def test_engine_summary_matches_records(engine_run):
    out, stdout, model = engine_run
    records = read_jsonl(out / 'results.jsonl')
    summary = json.loads((out / 'summary.json').read_text())
    plans = [r for r in records if r['task'] == 'plan' and r['status'] != 'NO_IMAGE']
    latencies = sorted(r['total_time'] for r in records if r['total_time'] is not None)
    assert summary['requests'] == len(records) == 7
    assert summary['plans'] == 4 and summary['plans_answered'] == len(plans) == 3
    assert summary['captions'] == 3
    assert summary['by_status']['NO_IMAGE'] == 1
    assert sum(summary['by_status'].values()) == len(records)
    assert summary['plan_validity_rate'] == pytest.approx(
        sum(p['valid'] for p in plans) / len(plans))
    assert summary['caption_nonempty_rate'] == 1.0
    assert summary['latency_p50_s'] in latencies and summary['latency_p95_s'] in latencies
    assert summary['latency_p50_s'] <= summary['latency_p95_s']
    assert summary['images_per_s'] > 0
    assert (summary['model'], summary['device'], summary['dtype']) == (model, 'cpu', 'float32')
    assert 'plan validity rate' in stdout and 'latency p95 (s)' in stdout
    check_report(out, frames_used=[0, 1, 2])


REC0 = 5_000 * SECOND  # the recording of the answers runs on another clock


def write_recorded_bag(path):
    """Write what a live node would have answered: Plans (one per instruction) and Captions."""
    store = bags.typestore()
    step = store.types['vlm_ros_msgs/msg/PlanStep']
    steps = [step(instruction='pick up the red block', skill='pick', target='red block'),
             step(instruction='place it in the bin', skill='place', target='bin')]
    plans = [  # (log offset s, stamp, instruction, status, steps, text, total_time)
        (0.6, REC0 + 600 * 10**6, INSTRUCTIONS[0][1], 2, [], '', 0.001),
        (1.8, STAMPS[0], INSTRUCTIONS[1][1], 0, steps, PLAN_JSON, 0.25),
        (2.9, STAMPS[1], HOSTILE, 1, [], '<i>junk</i>', 0.375),
        (3.4, STAMPS[2], INSTRUCTIONS[3][1], 0, steps[:1], PLAN_JSON, 0.5)]
    captions = [(1.2, STAMPS[0], 'a red block on a grey table', 0.125),
                (3.2, STAMPS[2], 'a green block', 0.25)]
    with bags.bag_writer(path) as writer:
        plan_conn = bags.add_topic(writer, '/robot1/plan', 'vlm_ros_msgs/msg/Plan')
        caption_conn = bags.add_topic(writer, '/robot1/caption', 'vlm_ros_msgs/msg/Caption')
        messages = []
        for number, (offset, stamp, text, status, plan_steps, raw, total) in enumerate(plans):
            messages.append((offset, plan_conn, bags.serialize(
                'vlm_ros_msgs/msg/Plan', header=bags.header(stamp, 'camera'),
                request_id=str(number), instruction=text, status=status,
                message='no image' if status == 2 else '', steps=plan_steps, text=raw,
                model='tiny-live', time_to_first_token=total / 4 if raw else 0.0,
                total_time=total, output_tokens=7 if raw else 0,
                form='json' if plan_steps else 'none')))
        for offset, stamp, text, total in captions:
            messages.append((offset, caption_conn, bags.serialize(
                'vlm_ros_msgs/msg/Caption', header=bags.header(stamp, 'camera'), text=text,
                model='tiny-live', total_time=total)))
        for offset, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, REC0 + int(offset * SECOND), data)
    return path


def test_recorded_answers_make_the_same_records(tmp_path):
    out = tmp_path / 'out'
    done = vlm_eval(write_input_bag(tmp_path / 'input'), '--recorded',
                    write_recorded_bag(tmp_path / 'answers'), '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(out / 'results.jsonl')
    plans = [r for r in records if r['task'] == 'plan']
    captions = [r for r in records if r['task'] == 'caption']
    assert [p['image'] and p['image']['frame'] for p in plans] == EXPECTED_FRAME
    assert [p['bag_time_ns'] for p in plans] == [t for t, _ in INSTRUCTIONS]
    assert [p['status'] for p in plans] == ['NO_IMAGE', 'OK', 'INVALID_OUTPUT', 'OK']
    assert [p['valid'] for p in plans] == [False, True, False, True]
    assert [p['form'] for p in plans] == ['none', 'json', 'none', 'json']
    assert plans[1]['steps'][1] == {'instruction': 'place it in the bin', 'skill': 'place',
                                    'target': 'bin'}
    assert [p['total_time'] for p in plans] == pytest.approx([0.001, 0.25, 0.375, 0.5])
    assert plans[1]['time_to_first_token'] == pytest.approx(0.0625)
    assert plans[0]['time_to_first_token'] is None and plans[1]['output_tokens'] == 7
    assert [(c['image']['frame'], c['text']) for c in captions] == [
        (0, 'a red block on a grey table'), (2, 'a green block')]
    assert [c['bag_time_ns'] for c in captions] == [FRAME_TIMES[0], FRAME_TIMES[2]]
    check_pairing(records)
    summary = json.loads((out / 'summary.json').read_text())
    assert (summary['mode'], summary['model']) == ('recorded', 'tiny-live')
    assert (summary['requests'], summary['answered'], summary['plans_answered']) == (6, 5, 3)
    assert summary['plan_validity_rate'] == pytest.approx(2 / 3)
    assert summary['latency_p50_s'] == pytest.approx(0.25)
    # 5 answers from the first arrival (1.2 s - 0.125 s) to the last answer (3.4 s)
    assert summary['images_per_s'] == pytest.approx(5 / (3.4 - 1.075), rel=1e-3)
    check_report(out, frames_used=[0, 1, 2])
    assert '&lt;i&gt;junk&lt;/i&gt;' in (out / 'report.html').read_text()


WRONG_PLAN = json.dumps({'steps': [{'instruction': 'throw the table out of the window',
                                    'skill': 'throw', 'target': 'table'}]})


def test_references_are_scored(tmp_path, trained_tiny):
    import yaml

    references = [
        {'stamp_ns': STAMPS[0], 'task': 'plan', 'text': TARGETS['plan'][0], 'target': PLAN_JSON},
        {'stamp_ns': STAMPS[0], 'task': 'plan', 'text': TARGETS['plan'][0],
         'target': WRONG_PLAN},
        {'stamp_ns': STAMPS[0], 'task': 'caption', 'target': TARGETS['caption'][1]},
        {'stamp_ns': STAMPS[0], 'task': 'caption', 'target': 'a purple elephant in the sky'}]
    (tmp_path / 'refs.yaml').write_text(yaml.safe_dump(references))
    out = tmp_path / 'out'
    done = vlm_eval(write_input_bag(tmp_path / 'bag', compressed=True), '--model',
                    trained_tiny('llava'), '--device', 'cpu', '--dtype', 'float32',
                    '--no-captions', '--batch-size', 2, '--references', tmp_path / 'refs.yaml',
                    '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(out / 'results.jsonl')
    results = [r for r in records if r['kind'] == 'result']
    scores = [r for r in records if r['kind'] == 'score']
    assert {r['task'] for r in results} == {'plan'}  # --no-captions
    assert results[1]['text'] == PLAN_JSON  # PNG frames decode to the trained red scene
    assert [s['target'] for s in scores] == [r['target'] for r in references]
    assert all(s['image']['stamp_ns'] == STAMPS[0] for s in scores)
    ces = [s['ce'] for s in scores]
    assert all(math.isfinite(ce) and ce > 0 for ce in ces)
    assert ces[0] < ces[1] and ces[2] < ces[3]
    assert all(s['perplexity'] == pytest.approx(math.exp(s['ce'])) for s in scores)
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['references'] == 4
    tokens = [s['tokens'] for s in scores]
    assert summary['mean_ce'] == pytest.approx(
        sum(c * t for c, t in zip(ces, tokens, strict=True)) / sum(tokens))
    assert summary['mean_perplexity'] == pytest.approx(math.exp(summary['mean_ce']))
    page = (out / 'report.html').read_text()
    assert 'Reference scores' in page and 'mean CE (nats/token)' in page


def test_reference_without_a_frame_names_its_stamp(tmp_path):
    (tmp_path / 'refs.jsonl').write_text(json.dumps(
        {'stamp_ns': 123456789, 'task': 'caption', 'text': '', 'target': 'x'}) + '\n')
    done = vlm_eval(write_input_bag(tmp_path / 'bag'), '--model', tmp_path / 'never-loaded',
                    '--references', tmp_path / 'refs.jsonl', '--out', tmp_path / 'out')
    assert done.returncode == 2
    assert 'reference 1' in done.stderr and '123456789 (0.123456789)' in done.stderr
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('entry, complaint', [
    ({'stamp_ns': 1, 'task': 'plan', 'text': 'x'}, 'target must be a non-empty string'),
    ({'stamp_ns': 1, 'task': 'dance', 'target': 'x'}, 'task must be one of plan, caption'),
    ({'stamp_ns': '1', 'task': 'vqa', 'target': 'x'}, 'stamp_ns must be a non-negative'),
    ({'stamp_ns': 1, 'task': 'vqa', 'target': 'x', 'stamp': 2}, 'unknown field'),
])
def test_references_file_errors_name_entry_and_field(tmp_path, entry, complaint):
    from vlm_ros.eval.references import load_references

    path = tmp_path / 'refs.yaml'
    path.write_text(json.dumps([{'stamp_ns': 5, 'task': 'caption', 'target': 'ok'}, entry]))
    with pytest.raises(VlmError, match=f'refs.yaml entry 2: {complaint}'):
        load_references(path)


def test_failed_batches_and_bad_inputs_become_records(tmp_path):
    """Empty instructions, undecodable frames and failing batches are records, not crashes."""
    from vlm_ros.engine import Result
    from vlm_ros.eval.inputs import FrameRef
    from vlm_ros.eval.offline import Pending, run_engine

    class Engine:
        def __init__(self):
            self.calls = 0

        def run(self, requests):
            self.calls += 1
            if self.calls == 2:
                raise VlmError('out_of_memory', 'CUDA out of memory')
            return [Result(r.task, 'ok', (), True, 'text', 1, 0.1, 0.2) for r in requests]

    with bags.open_bag(write_input_bag(tmp_path / 'bag')) as reader:
        inputs = read_inputs(reader)
    frame = FrameRef(0, FRAME_TIMES[0], STAMPS[0])
    broken = FrameRef(1, FRAME_TIMES[1], STAMPS[1])
    pending = [Pending('caption', '', frame, 1), Pending('plan', '', frame, 2),
               Pending('caption', '', broken, 3), Pending('vqa', 'what?', frame, 4),
               Pending('plan', 'go', None, 5)]
    images = {0: scene('red'), 1: ValueError('truncated frame')}
    records, seconds = run_engine(Engine(), inputs, pending, images, batch_size=1)
    assert [(r['status'], r['batch']) for r in records] == [
        ('OK', 0), ('BAD_INPUT', None), ('BAD_INPUT', None), ('MODEL_ERROR', 1),
        ('NO_IMAGE', None)]
    assert records[1]['message'] == 'empty instruction'
    assert records[2]['message'] == 'truncated frame'
    assert 'CUDA out of memory' in records[3]['message'] and seconds >= 0
