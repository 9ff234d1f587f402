"""The features parameters' observers (test_node_parameters.py): set one, see ~/features change.

Each observer turns publish_features on where it needs it, then compares the Features of a plan
before and after its parameter changes.
"""

import uuid

from engine_fixtures import TARGETS
from node_harness import RELIABLE, TIMEOUT, camera, set_ok

from vlm_ros_msgs.msg import Features

INSTRUCTION = TARGETS['plan'][0]


def _features(node, test_node):
    """Stream the camera; return a function that plans and returns (plan, its Features)."""
    collected = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(collected)
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')

    def plan():
        before = {p.request_id for p in node.plans.items()}
        node.instruct(INSTRUCTION)
        made = node.plans.wait_for(lambda p: p.request_id not in before, TIMEOUT, 'the plan')
        return made, collected.wait_for(lambda m: m.request_id == made.request_id, TIMEOUT,
                                        "the plan's features")
    return plan


def observe_publish_features(node, test_node):
    collected = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(collected)  # else features of the quiet plan could be missed
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(INSTRUCTION)
    quiet = node.plans.wait_for(lambda p: True, TIMEOUT, 'a plan without features')
    set_ok(test_node, publish_features=True)
    plan = _features(node, test_node)
    _, found = plan()
    assert found.data and found.layer == found.layers - 1
    # On this collector too: after any features of the quiet plan, from the same publisher.
    collected.wait_for(lambda m: m.request_id == found.request_id, TIMEOUT, 'the features')
    assert not [m for m in collected.items() if m.request_id == quiet.request_id]


def observe_features_layer(node, test_node):
    set_ok(test_node, publish_features=True, features_layer=1)
    plan = _features(node, test_node)
    assert plan()[1].layer == 1
    set_ok(test_node, features_layer=-2)
    _, found = plan()
    assert found.layer == found.layers - 2


def observe_features_pooling(node, test_node):
    set_ok(test_node, publish_features=True)
    plan = _features(node, test_node)
    last = plan()[1]
    assert last.pooling == 'last' and len(last.shape) == 1
    set_ok(test_node, features_pooling='tokens')
    _, found = plan()
    assert found.pooling == 'tokens' and len(found.shape) == 2 and found.shape[0] > 1


def observe_features_dtype(node, test_node):
    set_ok(test_node, publish_features=True)
    plan = _features(node, test_node)
    wide = plan()[1]
    assert wide.dtype == 'float32' and len(wide.data) == wide.shape[0]
    set_ok(test_node, features_dtype='float16')
    _, found = plan()
    assert found.dtype == 'float16' and not found.data and len(found.data16) == found.shape[0]


def observe_max_feature_bytes(node, test_node):
    set_ok(test_node, publish_features=True, features_pooling='tokens')
    plan = _features(node, test_node)
    whole = plan()[1]
    assert whole.data and not whole.problem
    set_ok(test_node, max_feature_bytes=1024)
    _, found = plan()
    assert not found.data and found.problem.endswith('max_feature_bytes is 1024'), found


def observe_features_rate(node, test_node):
    collected = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(collected)  # else features with the plan could be missed
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(INSTRUCTION)
    node.plans.wait_for(lambda p: p.instruction == INSTRUCTION, TIMEOUT, 'the plan')
    set_ok(test_node, features_rate=10.0)
    first = collected.wait_for(lambda m: m.request_id == '', TIMEOUT, 'features at the rate')
    assert first.instruction == INSTRUCTION and first.data and not first.problem, first
    # The rate's features come after any the plan had, from the same publisher.
    assert not [m for m in collected.items() if m.request_id], \
        'publish_features is off: no features with plans'
    later = collected.wait_for(lambda m: m.request_id == '' and m.header.stamp !=
                               first.header.stamp, TIMEOUT, "a later frame's features")
    assert later.instruction == INSTRUCTION
