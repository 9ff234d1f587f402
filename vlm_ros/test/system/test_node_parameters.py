"""Every run-time parameter takes effect on a live node: set it, then observe what changed.

The list comes from the node's own table (params.RUN_TIME): a parameter added there without an
observer here fails test_every_run_time_parameter_is_observed.
"""

import re
import uuid

import camera_harness
import features_harness
import pytest
from engine_fixtures import GROUND, TARGETS, scene
from loop_harness import LOOP_OBSERVERS
from node_harness import TIMEOUT, call, camera, set_ok, set_params, transition
from rclpy.qos import QoSReliabilityPolicy, qos_profile_sensor_data
from ros_harness import wait_future
from sensor_msgs.msg import Image
from vlm_ros.engine.prompts import load_templates
from vlm_ros.node import params
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Ground, Query

INSTRUCTION = TARGETS['plan'][0]


def _plan(node, text=INSTRUCTION, echo=None) -> Plan:
    """Send one instruction and return its Plan (whose instruction is echo, else text)."""
    before = {p.request_id for p in node.plans.items()}
    node.instruct(text)
    echo = text if echo is None else echo
    return node.plans.wait_for(lambda p: p.request_id not in before and p.instruction == echo,
                               TIMEOUT, 'the plan')


def _streaming(node, fmt='raw', stamp_offset=0.0) -> str:
    frame_id = uuid.uuid4().hex
    make = camera(frame_id, fmt)

    def old(stamp):
        msg = make(stamp)
        msg.header.stamp.sec -= int(stamp_offset)
        return msg
    node.stream(old).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    return frame_id


def observe_max_new_tokens(node, test_node):
    _streaming(node)
    whole = _plan(node)
    assert whole.output_tokens > 3 and whole.form == Plan.FORM_CONSTRAINED, whole
    set_ok(test_node, max_new_tokens=3)
    plan = _plan(node)
    assert plan.output_tokens == 3 and TARGETS['plan'][1].startswith(plan.text.strip()), plan
    # A few tokens short of the model's plan (its count has the closing EOS): the plan grammar
    # closes it, and the Plan says so.
    set_ok(test_node, max_new_tokens=whole.output_tokens - 3)
    closed = _plan(node)
    assert (closed.status, closed.form) == (Plan.STATUS_OK, Plan.FORM_CONSTRAINED_CLOSED), closed
    assert closed.steps and closed.output_tokens < whole.output_tokens, closed
    assert re.fullmatch(r'max_new_tokens ran out: the plan grammar wrote the last \d+ of its '
                        r'\d+ tokens to close it, .*', closed.message), closed.message


def observe_min_confidence(node, test_node):
    _streaming(node)
    sure = _plan(node)
    assert sure.status == Plan.STATUS_OK, sure  # trained on it: nearly sure of every token
    set_ok(test_node, min_confidence=1.0)  # no text is that sure
    low = _plan(node)
    assert low.status == Plan.STATUS_LOW_CONFIDENCE and low.steps == sure.steps, low
    assert re.fullmatch(r'confidence 0\.\d{3} \(geometric mean token probability\) is below '
                        r'min_confidence 1', low.message), low.message
    node.wait_diag(lambda v: v.get('status_low_confidence') == '1', TIMEOUT, 'it counted')
    set_ok(test_node, min_confidence=0.0)  # off again: the same plan is OK again
    again = _plan(node)
    assert again.status == Plan.STATUS_OK and again.steps == sure.steps, again


def observe_max_image_side(node, test_node):
    _streaming(node)
    _plan(node)
    assert node.wait_diag(lambda v: v.get('last_image_size'), TIMEOUT, 'an image size')[
        'last_image_size'] == '64x48'
    set_ok(test_node, max_image_side=32)
    _plan(node)
    node.wait_diag(lambda v: v.get('last_image_size') == '32x24', TIMEOUT, 'the smaller size')


def observe_image_transport(node, test_node):
    set_ok(test_node, image_transport='compressed')
    frame_id = _streaming(node, fmt='png')
    plan = _plan(node)
    assert plan.status == Plan.STATUS_OK and plan.header.frame_id == frame_id, plan.message


def observe_image_reliability(node, test_node):
    def reliability():
        return [info.qos_profile.reliability
                for info in test_node.node.get_subscriptions_info_by_topic('/image')]
    assert reliability() == [QoSReliabilityPolicy.BEST_EFFORT]
    set_ok(test_node, image_reliability='reliable', wait_for_image=0.3)
    wait_until(lambda: reliability() == [QoSReliabilityPolicy.RELIABLE], TIMEOUT,
               'a reliable image subscription')
    # A best-effort camera's frames never reach it, and the answer says so.
    camera_pub = test_node.node.create_publisher(Image, '/image', qos_profile_sensor_data)
    frame = rgb_to_image(scene('red'))
    timer = test_node.node.create_timer(0.05, lambda: camera_pub.publish(frame))
    said = {}

    def told() -> bool:
        said['plan'] = _plan(node)
        return 'publishes best effort' in said['plan'].message
    try:
        wait_until(told, TIMEOUT, 'the reason no frame arrives', poll=0.0)
        assert said['plan'].status == Plan.STATUS_NO_IMAGE
        assert said['plan'].message.endswith(
            'best effort, which a reliable subscription never receives; set '
            'image_reliability:=best_effort'), said['plan'].message
        # /diagnostics says it too, and no more once the subscription is best effort again.
        hint = node.wait_diag(lambda v: 'publishes best effort' in v['image_input'], TIMEOUT,
                              'the reason in /diagnostics')['image_input']
        assert hint.startswith('/image (') and hint.endswith(
            'best effort, which a reliable subscription never receives; set '
            'image_reliability:=best_effort'), hint
        set_ok(test_node, image_reliability='best_effort')
        node.wait_diag(lambda v: int(v['frames_received']) > 0 and v['image_input'] == '',
                       TIMEOUT, "the best-effort camera's frames, and the reason gone")
    finally:
        test_node.node.destroy_timer(timer)
        test_node.node.destroy_publisher(camera_pub)


def observe_max_image_age(node, test_node):
    _streaming(node, stamp_offset=10.0)
    assert _plan(node).status == Plan.STATUS_OK
    set_ok(test_node, max_image_age=1.0)
    plan = _plan(node)
    assert plan.status == Plan.STATUS_STALE_IMAGE and 'max_image_age 1 s' in plan.message
    set_ok(test_node, max_image_age=60.0)  # the same 10 s old frames, young enough now
    assert _plan(node).status == Plan.STATUS_OK


def observe_wait_for_image(node, test_node):
    set_ok(test_node, wait_for_image=60.0)
    set_ok(test_node, wait_for_image=0.3)
    plan = _plan(node)  # the value before would wait 60 s, past _plan's TIMEOUT
    assert plan.status == Plan.STATUS_NO_IMAGE and 'within 0.3 s' in plan.message


def observe_caption_rate(node, test_node):
    _streaming(node)
    # A frame sent is not yet received: with none, the first caption waits for the timer.
    node.wait_diag(lambda v: int(v['frames_received']) > 0, TIMEOUT, 'a frame received')
    assert node.captions.items() == []
    # The first caption comes at once, not one period later: the wait ends long before.
    set_ok(test_node, caption_rate=1 / (10 * TIMEOUT))
    node.captions.wait_for(lambda c: True, TIMEOUT, 'a caption before the first period')


def observe_skills(node, test_node):
    _streaming(node)
    before = _plan(node)
    assert before.form == Plan.FORM_CONSTRAINED and {s.skill for s in before.steps} == \
        {'pick', 'place'}, before  # what the model was trained to write
    set_ok(test_node, skills=['push', 'wait'])
    after = _plan(node)
    # Pushed off the skills it was trained on, the model may write until its budget runs out,
    # and the plan grammar then closes the plan.
    assert after.status == Plan.STATUS_OK and after.form in (
        Plan.FORM_CONSTRAINED, Plan.FORM_CONSTRAINED_CLOSED), after
    assert after.steps and {s.skill for s in after.steps} <= {'push', 'wait'}, after.steps
    refused = set_params(test_node, skills=['pick', 'pick'])[0]
    assert not refused.successful and 'pick more than once' in refused.reason
    numbers = set_params(test_node, skills=[1, 2])[0]
    assert not numbers.successful
    assert numbers.reason == 'skills must be a string array, e.g. [pick, place]; got [1, 2]'
    set_ok(test_node, skills=[])  # an empty list goes as a byte array: free skills again
    free = _plan(node)
    assert free.status == Plan.STATUS_OK and {s.skill for s in free.steps} == {'pick', 'place'}


def observe_replan_period(node, test_node):
    _streaming(node)
    first = _plan(node)
    set_ok(test_node, replan_period=0.3)
    node.plans.wait_for(lambda p: p.request_id != first.request_id and
                        p.instruction == INSTRUCTION, TIMEOUT, 'a re-plan without instruction')


def observe_queue_size(node, test_node):
    set_ok(test_node, queue_size=1, wait_for_image=30.0)  # no camera: the first request waits
    texts = [f'queued {i} {uuid.uuid4().hex}' for i in range(4)]
    for text in texts:
        node.instruct(text)
    # One waits in the worker, at most one in the queue: at least two of four are dropped
    # (three when the second arrives before the worker took the first).
    wait_until(lambda: sum(p.instruction in texts and p.status == Plan.STATUS_DROPPED
                           for p in node.plans.items()) >= 2, TIMEOUT, 'two of four dropped')
    _streaming(node)  # the first gets its frame; the queued one's answer comes after it
    answered = {p.instruction: p for p in node.answers(texts)}  # then nothing waits
    dropped = [p for p in answered.values() if p.status == Plan.STATUS_DROPPED]
    assert answered[texts[0]].status == Plan.STATUS_OK, answered  # the first always gets in
    assert len(dropped) >= 2 and all('queue_size=1' in p.message for p in dropped), dropped
    assert {p.status for p in answered.values()} == {Plan.STATUS_OK, Plan.STATUS_DROPPED}
    assert _plan(node).status == Plan.STATUS_OK  # one at a time, none is dropped


def observe_prompt_plan(node, test_node):
    _streaming(node)
    assert _plan(node).text == TARGETS['plan'][1]
    set_ok(test_node, prompt_plan='Robot, what now? {instruction}')
    assert _plan(node).text != TARGETS['plan'][1]
    set_ok(test_node, prompt_plan='')
    assert _plan(node).text == TARGETS['plan'][1]


def observe_prompt_vqa(node, test_node):
    def ask(question, colour):
        request = Query.Request(question=question, image=rgb_to_image(scene(colour)))
        return call(test_node, Query, '/vlm_node/query', request).answer
    assert ask(TARGETS['vqa'][0], 'blue') == TARGETS['vqa'][1]
    # Questions rendered with the plan's template are plan prompts: the model plans.
    plan_template = load_templates()['plan'].replace('{instruction}', '{question}')
    set_ok(test_node, prompt_vqa=plan_template)
    assert ask(TARGETS['plan'][0], 'red') == TARGETS['plan'][1]


def observe_prompt_ground(node, test_node):
    def ground(phrase, colour):
        request = Ground.Request(phrase=phrase, image=rgb_to_image(scene(colour)))
        return call(test_node, Ground, '/vlm_node/ground', request)
    assert ground(GROUND[0], 'red').text == GROUND[1]
    set_ok(test_node, prompt_ground='{phrase}')  # a phrase is now prompted as a question is
    answered = ground(TARGETS['vqa'][0], 'blue')
    assert answered.text == TARGETS['vqa'][1] and not answered.success, answered.message


def observe_prompt_caption(node, test_node):
    _streaming(node)
    set_ok(test_node, caption_rate=5.0)
    node.captions.wait_for(lambda c: c.text == TARGETS['caption'][1], TIMEOUT, 'the caption')
    set_ok(test_node, prompt_caption='Say anything at all.')
    changed = test_node.node.get_clock().now().nanoseconds  # frames are stamped with this clock
    caption = node.captions.wait_for(
        lambda c: c.header.stamp.sec * 10**9 + c.header.stamp.nanosec > changed, TIMEOUT,
        'a caption of a frame taken after the change')
    assert caption.text != TARGETS['caption'][1]


def observe_max_text_chars(node, test_node):
    # No camera: a request that waited for an image would be answered after 60 s, past TIMEOUT.
    set_ok(test_node, max_text_chars=10, wait_for_image=60.0)
    plan = _plan(node, text='x' * 11, echo='x' * 10)  # its first max_text_chars characters
    assert plan.status == Plan.STATUS_BAD_INPUT and 'max_text_chars is 10' in plan.message


def observe_max_image_pixels(node, test_node):
    _streaming(node)  # 64x48 = 3072 pixels
    assert _plan(node).status == Plan.STATUS_OK
    set_ok(test_node, max_image_pixels=3000)
    plan = _plan(node)
    assert plan.status == Plan.STATUS_BAD_INPUT and 'max_image_pixels' in plan.message


def observe_max_batch_size(node, test_node):
    """Eight instructions at once, twice: one engine run each, then fewer runs than eight."""
    _streaming(node)

    def burst(total: int) -> tuple:
        texts = [f'{INSTRUCTION} #{uuid.uuid4().hex[:6]}' for _ in range(8)]
        for text in texts:
            node.instruct(text)
        plans = node.answers(texts)
        # Unique texts are not the trained instruction: answered by the model, not all OK.
        assert all(p.status in (Plan.STATUS_OK, Plan.STATUS_INVALID_OUTPUT) for p in plans), \
            [p.message for p in plans]
        values = node.wait_diag(lambda v: int(v['engine_requests']) >= total, TIMEOUT,
                                f'{total} requests counted')
        return int(values['engine_runs']), int(values['engine_requests'])
    assert burst(8) == (8, 8)
    set_ok(test_node, max_batch_size=8)
    runs, requests = burst(16)
    assert requests == 16 and runs - 8 < 8


def observe_batch_wait(node, test_node):
    """Check that a lone request is held for company with batch_wait > 0, and not with 0.

    The worker says whether it held the batch: last_batch_wait_s is exactly 0.000 when the
    batch started at once. How long it holds one, and that requests which keep coming each
    within batch_wait of the one before join it, are scheduler.gather's (test_gather_units.py):
    over DDS, whether the next request comes within batch_wait (1 s at most) is the machine's
    speed, so which batches a burst of requests forms is not specified here.
    """
    _streaming(node)
    set_ok(test_node, max_batch_size=8, batch_wait=0.0)
    assert _plan(node).status == Plan.STATUS_OK
    # The worker's own account, not the machine's speed: the batch started at once.
    assert node.wait_diag(lambda v: int(v['engine_requests']) >= 1, TIMEOUT, 'a run')[
        'last_batch_wait_s'] == '0.000'
    set_ok(test_node, batch_wait=0.5)
    assert _plan(node).status == Plan.STATUS_OK
    assert node.wait_diag(lambda v: int(v['engine_requests']) >= 2, TIMEOUT, 'two runs')[
        'last_batch_wait_s'] != '0.000', 'a lone request was not held for company'
    set_ok(test_node, batch_wait=0.0)  # a lone request runs at once again
    assert _plan(node).status == Plan.STATUS_OK
    assert node.wait_diag(lambda v: int(v['engine_requests']) >= 3, TIMEOUT, 'three runs')[
        'last_batch_wait_s'] == '0.000'


def observe_preprocess_ahead(node, test_node):
    """Check that queries waiting behind a running one get their images preprocessed.

    Six queries on six new frames, sent at once, are answered one at a time: with the
    look-ahead, the frame cache counts frames prepared ahead as reused by their own batch.
    """
    client = test_node.node.create_client(Query, '/vlm_node/query')
    assert client.wait_for_service(timeout_sec=TIMEOUT)

    def burst(first: int) -> int:
        frames = [scene('blue') for _ in range(6)]
        for index, frame in enumerate(frames):
            frame[0, 0] = first + index  # pixels never seen before
        futures = [client.call_async(Query.Request(question=TARGETS['vqa'][0],
                                                   image=rgb_to_image(frame)))
                   for frame in frames]
        answers = [wait_future(f, TIMEOUT, 'an answer').answer for f in futures]
        assert answers == [TARGETS['vqa'][1]] * 6  # prepared ahead or not, the same inputs
        values = node.wait_diag(lambda v: int(v['engine_requests']) == first + 6, TIMEOUT,
                                f'{first + 6} requests')
        return int(values['frames_reused'])
    set_ok(test_node, preprocess_ahead=True)
    assert burst(0) >= 1
    set_ok(test_node, preprocess_ahead=False)
    reused = node.wait_diag(lambda v: int(v['engine_requests']) == 6, TIMEOUT, '6')[
        'frames_reused']
    assert burst(6) == int(reused)


OBSERVERS = {**{name[len('observe_'):]: value for name, value in globals().items()
                if name.startswith('observe_')}, **LOOP_OBSERVERS,
             'max_skew': camera_harness.observe_max_skew,
             'use_depth': camera_harness.observe_use_depth,
             **{name[len('observe_'):]: getattr(features_harness, name)
                for name in dir(features_harness) if name.startswith('observe_')}}


def test_every_run_time_parameter_is_observed():
    assert sorted(OBSERVERS) == sorted(params.RUN_TIME)


@pytest.mark.parametrize('name', params.RUN_TIME)
def test_run_time_parameter_takes_effect(name, start_vlm_node, test_node, request):
    # The closed loop's observers need the model trained on the re-plan and verify prompts.
    loop = {'model': str(request.getfixturevalue('closed_loop_llava')),
            'max_new_tokens': 160} if name in LOOP_OBSERVERS else {}
    cameras = camera_harness.START_PARAMS if name == 'max_skew' else {}
    node = start_vlm_node(**loop, **cameras)
    node.wait_state('active')
    OBSERVERS[name](node, test_node)


def test_launch_only_parameters_are_refused_and_switched_off_ones_said(start_vlm_node, test_node):
    node = start_vlm_node(batch_wait=0.05, verify_by='likelihood')
    node.wait_state('active')
    # Set, but switched off by another setting: said once at configure, and accepted
    assert 'no effect: batch_wait:=0.05 while max_batch_size:=1 (no batch waits for company); ' \
        'verify_by:=likelihood while verify_steps:=false' in node.log_text(), node.log_text()
    # Set at run time: said as it is made, not at the next configure (the log is written
    # before the change's answer is sent)
    template = f'is {{step}} done ({uuid.uuid4().hex})? answer yes or no'
    assert set_params(test_node, prompt_verify=template)[0].successful
    assert f'no effect: prompt_verify:={template} while verify_steps:=false (only step checks ' \
        'use it)' in node.log_text(), node.log_text()[-3000:]
    launch_only = [spec.name for spec in params.SPECS if spec.applies == 'launch']
    # What decides which code runs and where images and keys go is never set over DDS.
    assert sorted(launch_only) == ['api_key_env', 'autostart', 'backend', 'base_url',
                                   'instruction_qos_depth', 'trust_remote_code']
    hostile = {'api_key_env': 'HOME', 'autostart': False, 'backend': 'openai',
               'base_url': 'http://attacker.example/v1', 'instruction_qos_depth': 1,
               'trust_remote_code': True}
    for name in launch_only:
        result = set_params(test_node, **{name: hostile[name]})[0]
        assert not result.successful and 'read-only' in result.reason, result.reason
    assert transition(test_node, 'deactivate') and transition(test_node, 'cleanup')
    for name in launch_only:  # not after a cleanup either
        assert not set_params(test_node, **{name: hostile[name]})[0].successful, name

