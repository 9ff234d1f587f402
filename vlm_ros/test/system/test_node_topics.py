"""vlm_node over topics: plans stamped with their image, the answering contract, inputs."""

import uuid

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Time
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, call, camera
from sensor_msgs.msg import CompressedImage, Image
from serve_harness import both_backends
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Query

INSTRUCTION = TARGETS['plan'][0]


def _stamp_key(stamp):
    return stamp.sec, stamp.nanosec


@both_backends
def test_plan_round_trip_keeps_the_image_stamp(start_vlm_node, backend):
    node = start_vlm_node()
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    sent = node.stream(camera(frame_id))
    sent.wait_for(lambda m: True, TIMEOUT, 'the first camera frame to go out')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK, plan.message
    assert _stamp_key(plan.header.stamp) in {_stamp_key(m.header.stamp) for m in sent.items()}
    assert plan.instruction == INSTRUCTION and plan.request_id
    assert [(s.instruction, s.skill, s.target) for s in plan.steps] == [
        ('pick up the red block', 'pick', 'red block'), ('place it in the bin', 'place', 'bin')]
    assert plan.text == TARGETS['plan'][1]
    assert 0 < plan.time_to_first_token <= plan.total_time and plan.output_tokens > 0
    node.vla.wait_for(lambda m: m.data == 'pick up the red block', TIMEOUT, 'vla_instruction')
    values = node.wait_diag(lambda v: int(v.get('status_ok', 0)) >= 1, TIMEOUT, 'ok counted')
    assert int(values['frames_received']) > 0 and float(values['latency_p50_s']) > 0, values
    assert values['model_loaded'] == 'True' and values['backend'] == backend
    if backend == 'openai':
        assert values['device'] == values['base_url'] and values['backend_reachable'] == 'True'
    else:  # the tiny model's tokenizer takes the plan grammar (constrain_plans auto)
        assert values['device'] == 'cpu' and values['constrained_plans'] == 'true'


def test_burst_of_20_with_queue_4_answers_each_exactly_once(start_vlm_node):
    node = start_vlm_node(queue_size=4)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    texts = [f'{INSTRUCTION} #{uuid.uuid4().hex[:8]}' for _ in range(20)]
    for text in texts:
        node.instruct(text)
    node.answers(texts)
    node.wait_diag(lambda v: int(v.get('requests_served', 0)) >= 20, TIMEOUT, '20 answers')
    plans = [p for p in node.plans.items() if p.instruction in texts]
    assert sorted(p.instruction for p in plans) == sorted(texts)  # once each
    assert len({p.request_id for p in plans}) == 20
    dropped = [p for p in plans if p.status == Plan.STATUS_DROPPED]
    assert dropped and all('queue full' in p.message for p in dropped)
    assert len(dropped) <= 20 - 4 - 1  # 4 wait, 1 runs: those are never dropped
    node.wait_diag(lambda v: v['status_dropped'] == str(len(dropped)), TIMEOUT,
                   'each dropped answer counted')


def test_no_image_answers_within_wait_for_image(start_vlm_node):
    node = start_vlm_node(wait_for_image=1.0)
    node.wait_state('active')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: True, TIMEOUT, 'the NO_IMAGE plan')
    assert plan.status == Plan.STATUS_NO_IMAGE and 'no image arrived within 1 s' in plan.message
    node.wait_diag(lambda v: v['status_no_image'] == '1', TIMEOUT, 'the NO_IMAGE answer counted')


def test_old_stamp_is_stale(start_vlm_node):
    node = start_vlm_node(max_image_age=0.5, wait_for_image=0.5)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    fresh = camera(frame_id)

    def old(stamp):
        stamp.sec -= 10
        return fresh(stamp)
    node.stream(old).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.wait_first_frame()  # else a late first frame answers NO_IMAGE
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: True, TIMEOUT, 'the STALE plan')
    assert plan.status == Plan.STATUS_STALE_IMAGE, plan.message
    assert plan.header.frame_id == frame_id and 'old' in plan.message
    node.wait_diag(lambda v: v['status_stale_image'] == '1', TIMEOUT, 'the STALE answer counted')


@pytest.mark.parametrize('fmt', ['png', 'jpeg'])
def test_compressed_input(start_vlm_node, fmt):
    node = start_vlm_node(image_transport='compressed')
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id, fmt)).wait_for(lambda m: True, TIMEOUT, 'a frame')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1], plan.message


def _malformed(kind: str):
    msg = rgb_to_image(scene('red'))
    if kind == 'size_mismatch':
        msg.data = bytes(msg.data)[:-7]
    elif kind == 'step_too_small':
        msg.step = msg.width
    elif kind == 'unknown_encoding':
        msg.encoding = 'not_an_encoding'
    elif kind == 'zero_size':
        msg.width = msg.height = msg.step = 0
        msg.data = b''
    return msg


def test_malformed_images_give_bad_input_and_the_node_keeps_serving(start_vlm_node):
    node = start_vlm_node(wait_for_image=1.0)
    node.wait_state('active')
    for kind in ('size_mismatch', 'step_too_small', 'unknown_encoding', 'zero_size'):
        frame_id = f'{kind}-{uuid.uuid4().hex}'

        def make(stamp, kind=kind, frame_id=frame_id):
            msg = _malformed(kind)
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            return msg
        plan = node.plan_on_new_frames(make, frame_id, INSTRUCTION, kind)
        assert plan.status == Plan.STATUS_BAD_INPUT, (kind, plan.message)
        assert plan.message
    plan = node.plan_on_a_new_frame(INSTRUCTION, 'the good plan')
    assert plan.status == Plan.STATUS_OK, plan.message
    values = node.wait_diag(lambda v: int(v.get('frames_invalid', 0)) >= 4, TIMEOUT, 'invalid')
    assert int(values['status_bad_input']) >= 4


def test_frames_lost_before_the_node_are_estimated_from_stamp_gaps(start_vlm_node):
    """A 30 Hz camera whose every fifth frame never arrives (after 20 that all did)."""
    node = start_vlm_node()
    node.wait_state('active')
    make, index = camera(uuid.uuid4().hex), [-1]
    skipped = 0

    def gappy(_now):
        nonlocal skipped
        index[0] += 1
        if index[0] > 20 and index[0] % 5 == 0:
            index[0] += 1  # this stamp's frame is lost on the way
            skipped += 1
        return make(Time(sec=1000 + index[0] // 30, nanosec=(index[0] % 30) * 33_333_333))
    # Stamps 33 ms apart, sent 200 ms apart: a best-effort, keep-last subscriber loses frames
    # whenever its process stalls longer than the gap between two (other tests share the
    # CPUs), and one lost while the node still learns the period could not be counted.
    sent = node.stream(gappy, rate_hz=5.0)
    sent.wait_for(lambda m: len(sent.items()) >= 70, TIMEOUT, '70 frames sent')
    node.stop_stream()
    stamps = index[0] + 1
    # A frame lost before the period is known (the first 8) cannot be counted: allow for one.
    values = node.wait_diag(lambda v: int(v['frames_received']) + int(
        v['frames_lost_estimate']) >= stamps - 1, TIMEOUT, 'every stamp accounted for')
    assert stamps - 1 <= int(values['frames_received']) + int(
        values['frames_lost_estimate']) <= stamps
    assert int(values['frames_lost_estimate']) >= skipped


def test_auto_transport_prefers_raw_frames_when_a_camera_publishes_both(start_vlm_node):
    """image_transport publishers offer raw and compressed of each frame: one is used."""
    node = start_vlm_node()  # image_transport auto
    node.wait_state('active')
    raw, compressed = camera('raw-' + uuid.uuid4().hex), camera('jpeg-' + uuid.uuid4().hex,
                                                                'jpeg')

    def both():
        stamp = node.ros.get_clock().now().to_msg()
        node.image_pub.publish(raw(stamp))
        node.compressed_pub.publish(compressed(stamp))
    timer = node.ros.create_timer(0.05, both)
    try:
        node.wait_diag(lambda v: int(v['frames_received']) >= 5, TIMEOUT, 'frames')
        node.instruct(INSTRUCTION)
        plan = node.plans.wait_for(lambda p: p.instruction == INSTRUCTION, TIMEOUT, 'the plan')
    finally:
        node.ros.destroy_timer(timer)
    assert plan.status == Plan.STATUS_OK and plan.header.frame_id.startswith('raw-')


def test_a_camera_hint_is_said_until_frames_come_and_again_when_the_camera_goes(
        start_vlm_node):
    """A camera under its own name, and one remapped onto image with the wrong type, are named.

    A camera of the right type on image is named next, until its first frame arrives; once
    that camera's publisher is gone, nothing publishes there again, until it is back.
    """
    node = start_vlm_node(wait_for_image=0.5)
    node.wait_state('active')
    for publisher in (node.image_pub, node.compressed_pub):  # the harness's own camera
        node.ros.destroy_publisher(publisher)
    node.wait_diag(lambda v: v['image_input'] == 'nothing publishes on /image or '
                   '/image/compressed; no topic on the graph carries images', TIMEOUT,
                   'the hint with no camera on the graph')
    # Its own participant: one participant cannot use a topic name with two types.
    context = rclpy.Context()
    rclpy.init(context=context)
    other = rclpy.create_node('other_camera', context=context)
    try:
        elsewhere = other.create_publisher(CompressedImage, '/raspicam/image/compressed', 10)
        mistyped = other.create_publisher(CompressedImage, '/image', 10)
        wait_until(lambda: [i.topic_type for i in node.ros.get_publishers_info_by_topic(
            '/image')] == ['sensor_msgs/msg/CompressedImage'], TIMEOUT, 'the mistyped one')
        node.wait_diag(lambda v: '/raspicam/image/compressed' in v['image_input'], TIMEOUT,
                       'the hint in /diagnostics')
        for publisher in (elsewhere, mistyped):
            publisher.publish(camera('x', 'jpeg')(other.get_clock().now().to_msg()))
        node.instruct(INSTRUCTION)
        plan = node.plans.wait_for(lambda p: p.instruction == INSTRUCTION, TIMEOUT, 'the plan')
    finally:
        other.destroy_node()
        rclpy.try_shutdown(context=context)
    assert plan.status == Plan.STATUS_NO_IMAGE
    assert 'nothing publishes on /image or /image/compressed' in plan.message, plan.message
    assert '/image (CompressedImage), /raspicam/image/compressed (CompressedImage)' in \
        plan.message, plan.message
    wait = node.diag_from_now()  # the hint says nothing publishes on /image: none there
    node.image_pub = node.ros.create_publisher(Image, 'image', 10)
    driver = node.ros.get_fully_qualified_name()
    said = wait(lambda v: f'/image ({driver}) has a publisher' in v['image_input'], TIMEOUT,
                'the hint to name the camera on /image')['image_input']
    assert said.startswith(f'/image ({driver}) has a publisher, but no frame has arrived '
                           'since the node subscribed') and 'nothing publishes' not in said, said
    node.stream(camera(uuid.uuid4().hex))
    node.wait_diag(lambda v: int(v['frames_received']) > 0 and v['image_input'] == '', TIMEOUT,
                   'the hint to clear once a frame has arrived')
    # The camera goes (its driver stopped), and comes back.
    wait = node.diag_from_now()  # not a message from before the first frame's hint cleared
    node.stop_stream()
    node.ros.destroy_publisher(node.image_pub)
    gone = wait(lambda v: int(v['frames_received']) > 0 and v['image_input'], TIMEOUT,
                'the hint once the camera has gone')
    assert gone['image_input'].startswith(
        'nothing publishes on /image or /image/compressed; '), gone['image_input']
    wait = node.diag_from_now()
    node.image_pub = node.ros.create_publisher(Image, 'image', 10)
    # Back, but no frame yet (a restarted driver whose frames are lost): still named.
    back = wait(lambda v: f'/image ({driver}) has a publisher, but no frame has arrived' in
                v['image_input'], TIMEOUT, 'the hint to name the camera back without frames')
    assert 'no frame has arrived since the camera was last silent' in back['image_input']
    node.stream(camera(uuid.uuid4().hex))
    node.wait_diag(lambda v: int(v['frames_received']) > int(gone['frames_received']) and
                   v['image_input'] == '', TIMEOUT, 'the hint to clear once frames are back')


def test_empty_instruction_is_bad_input(start_vlm_node):
    node = start_vlm_node()
    node.wait_state('active')
    node.instruct('   ')
    plan = node.plans.wait_for(lambda p: True, TIMEOUT, 'the BAD_INPUT plan')
    assert plan.status == Plan.STATUS_BAD_INPUT and 'empty' in plan.message


def test_captions_at_caption_rate(start_vlm_node):
    node = start_vlm_node(caption_rate=4.0)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    sent = node.stream(camera(frame_id), rate_hz=30.0)
    first = node.captions.wait_for(lambda c: c.header.frame_id == frame_id, TIMEOUT, 'caption')
    node.captions.wait_for(lambda c: c.header.stamp != first.header.stamp, TIMEOUT, 'another')
    captions = [c for c in node.captions.items() if c.header.frame_id == frame_id]
    assert all(c.text == TARGETS['caption'][1] for c in captions)
    # 30 frames a second, 4 captions: most frames are replaced before anything used them.
    node.wait_diag(lambda v: int(v['frames_dropped']) > 0, TIMEOUT, 'frames replaced unused')
    stamps = {_stamp_key(m.header.stamp) for m in sent.items()}
    assert all(_stamp_key(c.header.stamp) in stamps for c in captions)
    assert np.all(np.diff([c.header.stamp.sec + c.header.stamp.nanosec * 1e-9
                           for c in captions[:3]]) > 0)


def test_a_periodic_re_plan_yields_to_the_next_instruction(start_vlm_node, untrained_llava):
    """The old instruction's re-plan is answered CANCELLED at once, not finished first.

    The first instruction comes before any frame (answered NO_IMAGE at once, yet re-planned
    on the frames that follow), so only the re-plan runs 4096 tokens of a never-ending model.
    """
    node = start_vlm_node(model=str(untrained_llava), replan_period=0.2, max_new_tokens=4096,
                          constrain_plans='off', wait_for_image=0.1)
    node.wait_state('active')
    first, second = (f'instruction {uuid.uuid4().hex}' for _ in range(2))
    node.instruct(first)
    assert node.plans.wait_for(lambda p: p.instruction == first, TIMEOUT,
                               'the first plan').status == Plan.STATUS_NO_IMAGE
    node.stream(camera(uuid.uuid4().hex))
    node.wait_diag(lambda v: v.get('requests_served') == '1' and
                   v.get('requests_in_progress') == '1', TIMEOUT, 'a re-plan running')
    node.instruct(second)
    re_plan = node.plans.wait_for(lambda p: p.instruction == first and
                                  p.status != Plan.STATUS_NO_IMAGE, TIMEOUT, 'the re-plan')
    assert re_plan.status == Plan.STATUS_CANCELLED, re_plan
    assert 'yielded' not in node.log_text(), 'an expected cancel is not a warning'
    node.stop()  # the next plan, 4096 tokens, is cancelled
    planned = node.plans.wait_for(lambda p: p.instruction == second, TIMEOUT, 'the next plan')
    assert re_plan.message == f'yielded to plan request {planned.request_id} during generation'


def test_a_periodic_caption_yields_to_a_query(start_vlm_node, untrained_llava, test_node):
    """The caption, 4096 tokens of a model that never ends one, is cancelled for the query."""
    node = start_vlm_node(model=str(untrained_llava), caption_rate=2.0, max_new_tokens=4096)
    node.wait_state('active')
    node.stream(camera(uuid.uuid4().hex))
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1', TIMEOUT, 'a caption running')
    question = f'what is there? {uuid.uuid4().hex}'
    answer = call(test_node, Query, '/vlm_node/query',
                  Query.Request(question=question, max_new_tokens=2))
    assert 'yielded' not in answer.message and 'cancelled' not in answer.message, answer
    values = node.wait_diag(lambda v: v.get('captions_yielded') == '1', TIMEOUT,
                            'the caption counted as yielded')
    assert int(values['status_cancelled']) >= 1


def test_undecodable_compressed_frame_is_bad_input(start_vlm_node):
    node = start_vlm_node(image_transport='compressed', wait_for_image=1.0)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    good = camera(frame_id, 'png')

    def garbage(stamp):
        msg = good(stamp)
        msg.data = b'\x89PNG not really an image'
        return msg
    node.stream(garbage).wait_for(lambda m: True, TIMEOUT, 'a corrupt frame')
    node.wait_first_frame()  # else a late first frame answers NO_IMAGE
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_BAD_INPUT and 'decode' in plan.message, plan.message


def test_replan_period_replans_the_last_instruction_on_fresh_frames(start_vlm_node):
    node = start_vlm_node(replan_period=0.5)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(INSTRUCTION)
    first = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    again = node.plans.wait_for(
        lambda p: p.header.frame_id == frame_id and p.request_id != first.request_id,
        TIMEOUT, 'a re-plan')
    assert again.instruction == INSTRUCTION and again.status == Plan.STATUS_OK
    assert _stamp_key(again.header.stamp) != _stamp_key(first.header.stamp)
