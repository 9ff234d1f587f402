"""~/features over DDS: each plan's prompt hidden states, for an action head (issue 28 item 1).

The node under test runs a trained tiny model on a streamed camera (each family for the plan's
features, LLaVA for the rest); what it publishes on ~/features equals what the engine returns
for the same frame and instruction, itself checked against transformers' own hidden states
(test_features.py).
"""

import uuid

import numpy as np
import pytest
from engine_fixtures import FAMILIES, TARGETS, scene
from node_harness import RELIABLE, TIMEOUT, call, camera, set_params
from reference_features import engine_features
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.node.features_msg import bfloat16_words
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.msg import Features, Plan
from vlm_ros_msgs.srv import GetFeatures

INSTRUCTION = TARGETS['plan'][0]
RED = [(scene('red'), INSTRUCTION)]  # what stream_camera streams, and the instruction


def stream_camera(node) -> str:
    """Stream the red scene with a new frame_id; return it once a frame has arrived."""
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    return frame_id


def plan_and_features(node, features) -> tuple:
    """Send the instruction; return its Plan and the Features published for it."""
    before = {p.request_id for p in node.plans.items()}
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.request_id not in before, TIMEOUT, 'the plan')
    found = features.wait_for(lambda m: m.request_id == plan.request_id, TIMEOUT,
                              "the plan's features")
    return plan, found


@pytest.mark.parametrize('family', FAMILIES)
def test_each_plan_comes_with_the_features_of_its_own_prefill(family, start_vlm_node, test_node,
                                                              trained_tiny):
    model = str(trained_tiny(family))
    node = start_vlm_node(model=model, publish_features=True, features_layer=1,
                          features_pooling='mean')  # tiny Florence-2's encoder has one layer
    node.wait_state('active')
    features = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(features)
    frame_id = stream_camera(node)
    plan, found = plan_and_features(node, features)
    assert plan.status == Plan.STATUS_OK and plan.header.frame_id == frame_id, plan
    assert found.header == plan.header and found.instruction == INSTRUCTION
    assert (found.layer, found.pooling, found.dtype, found.problem) == (1, 'mean', 'float32', '')
    assert found.model == plan.model and found.layers > 1 and len(found.data16) == 0
    expected = engine_features(model, RED, FeatureSpec(1, 'mean'))[0]
    assert list(found.shape) == list(expected.shape)
    np.testing.assert_allclose(np.array(found.data, dtype=np.float32), expected, atol=1e-4)
    assert '"max_image_side": 640' in found.processor


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16'])
def test_half_precision_features_are_the_values_rounded(dtype, start_vlm_node, test_node,
                                                        trained_tiny):
    node = start_vlm_node(publish_features=True, features_dtype=dtype,
                          features_pooling='tokens')
    node.wait_state('active')
    features = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(features)
    stream_camera(node)
    _, found = plan_and_features(node, features)
    expected = engine_features(trained_tiny('llava'), RED, FeatureSpec(-1, 'tokens'))[0]
    assert found.dtype == dtype and len(found.data) == 0 and list(found.shape) == \
        list(expected.shape) and len(found.shape) == 2
    words = np.array(found.data16, dtype=np.uint16).reshape(expected.shape)
    values = words.view(np.float16).astype(np.float32) if dtype == 'float16' else \
        (words.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_allclose(values, expected, rtol=1e-2 if dtype == 'float16' else 1e-2,
                               atol=1e-3 if dtype == 'float16' else 2e-2)
    if dtype == 'bfloat16':  # the words are torch's own rounding of the float32 values
        import torch
        assert np.array_equal(words, torch.from_numpy(expected).to(torch.bfloat16).view(
            torch.int16).numpy().view(np.uint16))
        assert np.array_equal(bfloat16_words(expected), words)


def test_too_large_features_and_a_missing_layer_say_why_and_the_plan_is_made(
        start_vlm_node, test_node):
    node = start_vlm_node(publish_features=True, features_pooling='tokens',
                          max_feature_bytes=1024)
    node.wait_state('active')
    features = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(features)
    stream_camera(node)
    plan, found = plan_and_features(node, features)
    assert plan.status == Plan.STATUS_OK, plan
    assert found.problem.startswith('the features take ') and \
        found.problem.endswith(' float32); max_feature_bytes is 1024'), found.problem
    assert len(found.data) == 0 and len(found.shape) == 0
    assert all(r.successful for r in set_params(test_node, features_layer=999))
    plan, found = plan_and_features(node, features)
    assert plan.status == Plan.STATUS_OK, plan
    assert found.problem.startswith("feature layer 999 is not one of this model's hidden "
                                    'states'), found.problem
    refused = set_params(test_node, features_pooling='max', features_dtype='float64')
    assert not any(r.successful for r in refused)


def test_the_features_service_answers_without_a_plan(start_vlm_node, test_node, trained_tiny):
    node = start_vlm_node(features_layer=2, features_pooling='mean')  # publish_features off
    node.wait_state('active')
    node.wait_outputs()  # else a plan could be missed, not left out
    frame_id = stream_camera(node)
    model = str(trained_tiny('llava'))

    def ask(**fields):
        return call(test_node, GetFeatures, '/vlm_node/features', GetFeatures.Request(**fields))

    answer = ask(text=INSTRUCTION)
    assert answer.success, answer.message
    found = answer.features
    assert found.header.frame_id == frame_id and found.request_id == '' and \
        found.instruction == INSTRUCTION and (found.layer, found.pooling) == (2, 'mean')
    np.testing.assert_allclose(np.array(found.data, dtype=np.float32),
                               engine_features(model, RED, FeatureSpec(2, 'mean'))[0], atol=1e-4)
    question = TARGETS['vqa'][0]
    given = ask(task='vqa', text=question, image=rgb_to_image(scene('blue')))
    assert given.success, given.message
    np.testing.assert_allclose(np.array(given.features.data, dtype=np.float32),
                               engine_features(model, [(scene('blue'), question)],
                                               FeatureSpec(2, 'mean'), 'vqa')[0], atol=1e-4)
    caption = ask(task='caption', text='not in a caption prompt')
    assert caption.success and caption.features.instruction == '', caption.message
    refused = ask(task='dance', text='x')
    assert not refused.success and "task 'dance' has no prompt" in refused.message
    assert all(r.successful for r in set_params(test_node, features_layer=99))
    missing = ask(text=INSTRUCTION)
    assert not missing.success and missing.message.startswith('feature layer 99 is not')
    assert missing.features.problem == missing.message and len(missing.features.data) == 0
    values = node.wait_diag(lambda v: int(v.get('status_ok', 0)) >= 4, TIMEOUT, 'answers')
    assert values.get('status_invalid_output', '0') == '0', values
    # An instruction's plan comes after any plan published before it: the only one is its own.
    last = f'{INSTRUCTION} #{uuid.uuid4().hex[:8]}'
    node.instruct(last)
    node.plans.wait_for(lambda p: p.instruction == last, TIMEOUT, "the instruction's plan")
    assert [p.instruction for p in node.plans.items()] == [last], \
        'no plan is published for a features request'


def test_a_refused_instruction_leaves_no_instruction_for_the_rate_features(start_vlm_node,
                                                                          test_node):
    """The old plan was preempted: nothing is left to take features of until a new one."""
    node = start_vlm_node(features_rate=5.0)
    node.wait_state('active')
    features = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(features)
    stream_camera(node)
    node.instruct(INSTRUCTION)
    features.wait_for(lambda m: m.request_id == '' and m.instruction == INSTRUCTION and
                      not m.problem, TIMEOUT, 'rate features of the instruction')
    too_long = 'x' * 5000

    def of_it(text: str) -> bool:  # a refused text is echoed as far as max_text_chars
        return bool(text) and text in too_long
    node.instruct(too_long)
    refused = node.plans.wait_for(lambda p: of_it(p.instruction), TIMEOUT, 'its plan')
    assert refused.status == Plan.STATUS_BAD_INPUT and 'max_text_chars' in refused.message
    for _ in range(2):  # two /diagnostics samples (1 Hz) later: the 5 Hz rate came by often
        next_of(node.diagnostics, 'a later /diagnostics sample')
    known = {plan.request_id for plan in node.plans.items()}
    node.instruct(INSTRUCTION)
    planned = node.plans.wait_for(lambda p: p.request_id not in known, TIMEOUT, 'its plan')
    # Rate features of the new instruction, on a frame no older than its plan's: they come
    # after any features published while no instruction was left, from the same publisher.
    features.wait_for(lambda m: m.request_id == '' and m.instruction == INSTRUCTION and
                      stamp_key(m.header.stamp) >= stamp_key(planned.header.stamp), TIMEOUT,
                      'rate features of the next instruction')
    assert not [m for m in features.items() if of_it(m.instruction)]


def next_of(collector, what: str, predicate=lambda m: True):
    """Wait for a message that arrives after this call and matches predicate."""
    return collector.from_now()(predicate, TIMEOUT, what)


def stamp_key(stamp) -> tuple:
    """Return a header stamp as a tuple that orders like the time it says."""
    return stamp.sec, stamp.nanosec
