"""vlm_eval end to end: a bag written here, the installed executable, the trained tiny LLaVA.

The bag has three camera frames (red, blue, green blocks) and instructions before, between and
exactly at frame times, so pairing is checked against known answers; the model is the tiny
checkpoint trained to answer the red scene, so validity and reference scores are known too.
"""

import dataclasses
import json
import math
import pathlib
import re
import struct
import uuid

import numpy as np
import pytest
import vlm_ros.bag.storage as bags
import yaml
from ament_index_python.packages import get_package_prefix
from engine_fixtures import PLAN_JSON, TARGETS
from eval_bags import (
    FRAME_TIMES,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    INSTRUCTIONS,
    REC0,
    SECOND,
    STAMPS,
    image_fields,
    write_input_bag,
    write_recorded_bag,
)
from fork_server import run_tool
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.loader import STARTING_THREADS
from vlm_ros.engine.plan_parser import CLEAN_FORMS

EXPECTED_FRAME = [None, 0, 1, 2]


def vlm_eval(*args, timeout=600):
    """Run the installed vlm_eval executable; return the CompletedProcess."""
    exe = pathlib.Path(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_eval')
    return run_tool([exe, *args], timeout)


def read_jsonl(path):
    return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


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
    assert red['status'] == 'OK' and red['valid'] and red['form'] == 'constrained'
    assert red['text'] == PLAN_JSON
    assert red['steps'][0] == {'instruction': 'pick up the red block', 'skill': 'pick',
                               'target': 'red block', 'box': None,
                               'camera': ''}  # the model drew none
    red_caption = next(c for c in captions if c['image']['frame'] == 0)
    assert red_caption['text'] == TARGETS['caption'][1] and red_caption['valid']
    answered = [r for r in records if r['status'] in ('OK', 'INVALID_OUTPUT')]
    assert len(answered) == 6
    assert {r['batch'] for r in answered} == {0, 1}  # 6 requests in batches of 3
    for record in answered:
        assert 0 < record['time_to_first_token'] <= record['total_time']
        assert record['output_tokens'] > 0
        assert record['confidence_min'] <= record['confidence_mean'] <= 0.0, record
    assert no_image['confidence_mean'] is None and no_image['confidence_min'] is None


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
    assert summary['plan_validity_rate'] == pytest.approx(  # the plans the model meant
        sum(p['valid'] and p['form'] in CLEAN_FORMS for p in plans) / len(plans))
    assert summary['caption_nonempty_rate'] == 1.0
    assert summary['latency_p50_s'] in latencies and summary['latency_p95_s'] in latencies
    assert summary['latency_p50_s'] <= summary['latency_p95_s']
    assert summary['images_per_s'] > 0
    assert (summary['model'], summary['device'], summary['dtype']) == (model, 'cpu', 'float32')
    assert 'plan validity rate' in stdout and 'latency p95 (s)' in stdout
    sure = sorted(math.exp(p['confidence_mean']) for p in plans)
    assert summary['plan_confidence_p50'] == pytest.approx(sure[1])  # the middle of three
    assert 'plan confidence p50 (geometric mean p)' in stdout
    check_report(out, frames_used=[0, 1, 2])


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
                                    'target': 'bin', 'box': None, 'camera': ''}
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
    # A recorded Plan carries no confidence (plan_confidence is a topic of its own).
    assert summary['plan_confidence_p50'] is None
    assert all(r['confidence_mean'] is None for r in records)
    check_report(out, frames_used=[0, 1, 2])
    assert '&lt;i&gt;junk&lt;/i&gt;' in (out / 'report.html').read_text()


CLOSED_PLAN = json.dumps({'steps': [{'instruction': 'tip the red block over', 'skill': 'push',
                                     'target': 'red block'}]})


def write_cut_answers(path):
    """Write a live node's Plans for the first three instructions only: the replay was cut.

    The second plan is one the plan grammar closed at max_new_tokens (its text is complete
    JSON all the same); the third's form is empty, as in a recording made before Plan had one.
    """
    step = bags.typestore().types['vlm_ros_msgs/msg/PlanStep'](
        instruction='tip the red block over', skill='push', target='red block')
    plans = [(REC0 + 10**9, INSTRUCTIONS[0][1], 2, [], '', 'none'),
             (STAMPS[0], INSTRUCTIONS[1][1], 0, [step], CLOSED_PLAN, 'constrained_closed'),
             (STAMPS[1], INSTRUCTIONS[2][1], 0, [step], CLOSED_PLAN, '')]
    with bags.bag_writer(path) as writer:
        topic = bags.add_topic(writer, '/robot1/plan', 'vlm_ros_msgs/msg/Plan')
        for number, (stamp, text, status, steps, raw, form) in enumerate(plans):
            writer.write(topic, REC0 + (number + 2) * SECOND, bags.serialize(
                'vlm_ros_msgs/msg/Plan', header=bags.header(stamp, 'camera'),
                request_id=f'cut-{number}', instruction=text, status=status, message='',
                steps=steps, form=form, text=raw, model='tiny-cut', time_to_first_token=0.125,
                total_time=0.5, output_tokens=9 if raw else 0))
    return path


def test_recorded_plans_keep_their_form_and_unanswered_instructions_are_reported(tmp_path):
    out = tmp_path / 'out'
    done = vlm_eval(write_input_bag(tmp_path / 'input'), '--recorded',
                    write_cut_answers(tmp_path / 'answers'), '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    plans = [r for r in read_jsonl(out / 'results.jsonl') if r['task'] == 'plan']
    assert [p['status'] for p in plans] == ['NO_IMAGE', 'OK', 'OK', 'NOT_ANSWERED']
    assert [p['form'] for p in plans] == ['none', 'constrained_closed', 'json', 'none']
    cut = plans[3]
    assert (cut['request'], cut['bag_time_ns']) == (INSTRUCTIONS[3][1], INSTRUCTIONS[3][0])
    assert cut['image']['frame'] == 2  # the frame the node would have answered it with
    assert 'holds no Plan for this instruction' in cut['message']
    assert cut['total_time'] is None and not cut['valid']
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['by_status'] == {'NO_IMAGE': 1, 'NOT_ANSWERED': 1, 'OK': 2}
    assert (summary['plans'], summary['plans_answered']) == (4, 2)
    assert summary['plan_validity_rate'] == 0.5  # the closed plan is not the one meant
    assert summary['plans_by_form'] == {'constrained_closed': 1, 'json': 1}
    assert 'NOT_ANSWERED 1' in done.stdout
    page = (out / 'report.html').read_text()
    assert '&#10007; invalid (NOT_ANSWERED)' in page and 'holds no Plan for this' in page


WRONG_PLAN = json.dumps({'steps': [{'instruction': 'throw the table out of the window',
                                    'skill': 'throw', 'target': 'table'}]})


def test_references_are_scored(tmp_path, trained_tiny):
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


@pytest.mark.parametrize(('options', 'forms', 'skills', 'settings'), [
    (['--constrain-plans', 'off', '--cpu-threads', STARTING_THREADS + 1], ('json',),
     {'pick', 'place'}, {'constrain_plans': 'off', 'cpu_threads': STARTING_THREADS + 1}),
    # Pushed off the skills it was trained on, the model may run into its budget: closed.
    # In bfloat16 too: the grammar holds whatever the logits' precision.
    (['--skills', 'push', 'wait', '--dtype', 'bfloat16'], ('constrained', 'constrained_closed'),
     {'push', 'wait'}, {'skills': ['push', 'wait'], 'dtype': 'bfloat16'}),
], ids=['off', 'skills'])
def test_plans_follow_constrain_plans_and_skills(tmp_path, trained_tiny, options, forms, skills,
                                                 settings):
    done = vlm_eval(write_input_bag(tmp_path / 'bag'), '--model', str(trained_tiny('llava')),
                    '--device', 'cpu', '--dtype', 'float32', '--max-new-tokens', 96,
                    '--out', tmp_path / 'out', *options)
    assert done.returncode == 0, done.stderr[-3000:]
    plan = next(r for r in read_jsonl(tmp_path / 'out' / 'results.jsonl')
                if r['task'] == 'plan' and r['status'] == 'OK')
    assert plan['form'] in forms and plan['steps'], plan
    assert {step['skill'] for step in plan['steps']} <= skills, plan
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    values = summary['settings']['values']
    assert {key: values.get(key) for key in settings} == settings, values
    assert summary['dtype'] == values['dtype']  # the weights as loaded, not the option's copy
    assert summary['cpu_threads'] == settings.get('cpu_threads', STARTING_THREADS), summary
    assert re.search(rf"(?m)^CPU threads +{summary['cpu_threads']}$", done.stdout), done.stdout


LEFT_TOPIC, OPERATOR_TOPIC = '/left/image_raw', '/operator/instruction'
# Noise: what a model sees of it changes with every resize and every preprocessing step.
LEFT_FRAMES = [np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
               for seed in (11, 12, 13)]


def write_two_feed_bag(path, asked: list):
    """Write two cameras and two instruction topics: only the options tell which to use.

    The default topics carry grey scenes and an instruction of their own; LEFT_TOPIC the
    noise frames, OPERATOR_TOPIC the asked texts, half a second after each frame.
    """
    with bags.bag_writer(path) as writer:
        cameras = {topic: bags.add_topic(writer, topic, 'sensor_msgs/msg/Image')
                   for topic in (IMAGE_TOPIC, LEFT_TOPIC)}
        feeds = {topic: bags.add_topic(writer, topic, bags.STRING_TYPE)
                 for topic in (INSTRUCTION_TOPIC, OPERATOR_TOPIC)}
        messages = [(FRAME_TIMES[0] + SECOND // 2, feeds[INSTRUCTION_TOPIC],
                     bags.serialize(bags.STRING_TYPE, data='not this one'))]
        for number, text in enumerate(asked):
            when, stamp = FRAME_TIMES[number], STAMPS[number]
            messages += [(when, cameras[topic], bags.serialize(
                'sensor_msgs/msg/Image', **image_fields(rgb, stamp + offset)))
                for topic, rgb, offset in ((IMAGE_TOPIC, np.full_like(LEFT_FRAMES[0], 128), 0),
                                           (LEFT_TOPIC, LEFT_FRAMES[number], 1000))]
            messages.append((when + SECOND // 2, feeds[OPERATOR_TOPIC],
                             bags.serialize(bags.STRING_TYPE, data=text)))
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)
    return path


def test_the_options_choose_the_feeds_the_limit_and_what_the_model_sees(tmp_path,
                                                                         untrained_llava):
    """--image-topic, --instruction-topic, --max-new-tokens, --max-image-side, --processor-kwargs.

    A model that never ends runs every answer to the limit, and each answer is the engine's
    under the same limits and processor options, not under the defaults.
    """
    asked = [f'stack the noise #{uuid.uuid4().hex[:8]}' for _ in range(2)]
    kwargs = {'do_normalize': False}
    done = vlm_eval(write_two_feed_bag(tmp_path / 'bag', asked), '--model', untrained_llava,
                    '--image-topic', LEFT_TOPIC, '--instruction-topic', OPERATOR_TOPIC,
                    '--max-new-tokens', 12, '--max-image-side', 8, '--processor-kwargs',
                    json.dumps(kwargs), '--decode-mode', 'static', '--batch-size', 1,
                    '--device', 'cpu', '--dtype', 'float32', '--out', tmp_path / 'out')
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(tmp_path / 'out' / 'results.jsonl')
    assert [(r['task'], r['request']) for r in records] == [
        ('caption', ''), ('plan', asked[0]), ('caption', ''), ('plan', asked[1])]
    assert [(r['image']['topic'], r['image']['stamp_ns']) for r in records] == [
        (LEFT_TOPIC, STAMPS[n] + 1000) for n in (0, 0, 1, 1)]
    assert [r['output_tokens'] for r in records] == [12] * 4
    assert [r['batch'] for r in records] == [0, 1, 2, 3]
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert (summary['image_topic'], summary['instruction_topic']) == (LEFT_TOPIC,
                                                                     OPERATOR_TOPIC)
    values = {**summary['settings']['values'], 'decoding': summary['decoding']}  # as it ran
    assert {key: values.get(key) for key in ('max_new_tokens', 'max_image_side',
                                             'processor_kwargs', 'decode_mode', 'decoding')} == {
        'max_new_tokens': 12, 'max_image_side': 8, 'processor_kwargs': json.dumps(kwargs),
        'decode_mode': 'static', 'decoding': 'static'}, values

    def answers(engine):
        results = [engine.run([Request(r['task'], LEFT_FRAMES[r['image']['frame']],
                                       r['request'])])[0] for r in records]
        return [r.text for r in results], [c for r in results for c in r.confidence]

    config = EngineConfig(model=str(untrained_llava), device='cpu', dtype='float32',
                          max_new_tokens=12, max_image_side=8, decode_mode='static')
    confidences = [r[key] for r in records for key in ('confidence_mean', 'confidence_min')]
    unbent = VlmEngine(config)  # the processor's defaults
    unbent.load()
    try:
        assert answers(unbent)[1] != pytest.approx(confidences, abs=1e-5)
    finally:
        unbent.unload()
    engine = VlmEngine(dataclasses.replace(config, processor_kwargs=kwargs))
    engine.load()
    try:
        texts, same = answers(engine)
        assert texts == [r['text'] for r in records]
        assert same == pytest.approx(confidences, abs=1e-5)
        engine.update(max_image_side=640)  # the frames as they are
        assert answers(engine)[1] != pytest.approx(confidences, abs=1e-5)
    finally:
        engine.unload()
