"""plan_confidence and answer_confidence: how sure the model was of each Plan and answer.

The released Plan, Caption and Query keep their fields (and type hashes); each confidence comes
just before its answer on a topic of its own: a Plan's (instructions and the generate_plan
action's alike) joined to it by request_id, a caption's or ~/query answer's by header and text.
"""

import math
import uuid

from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, call, camera, goal_plan, set_ok
from serve_harness import both_backends
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.msg import AnswerConfidence, Plan, PlanConfidence
from vlm_ros_msgs.srv import Query


def _check(confidence: PlanConfidence, plan: Plan, known: bool) -> None:
    assert confidence.header == plan.header and confidence.request_id == plan.request_id
    assert len(confidence.step_mean) == len(confidence.step_min) == len(plan.steps) > 1
    values = [confidence.mean, confidence.min, *confidence.step_mean, *confidence.step_min]
    if not known:
        assert all(math.isnan(value) for value in values), confidence
        return
    assert confidence.min <= confidence.mean <= 0.0, confidence
    for mean, low in zip(confidence.step_mean, confidence.step_min, strict=True):
        assert confidence.min - 1e-6 <= low <= mean <= 0.0, confidence


@both_backends
def test_every_plan_has_its_confidence_first(start_vlm_node, test_node, backend):
    node = start_vlm_node()
    node.wait_state('active')
    confidences = test_node.collect(PlanConfidence, '/plan_confidence')
    node.wait_outputs(confidences)
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])
    assert plan.status == Plan.STATUS_OK, plan.message
    confidence = confidences.wait_for(lambda c: c.request_id == plan.request_id, TIMEOUT,
                                      "the plan's confidence")
    _check(confidence, plan, known=backend == 'transformers')

    result = goal_plan(test_node, TARGETS['plan'][0])
    _check(confidences.wait_for(lambda c: c.request_id == result.request_id, TIMEOUT,
                                "the goal's plan's confidence"), result,
           known=backend == 'transformers')


def test_a_plan_below_min_confidence_says_how_sure_it_was(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    confidences = test_node.collect(PlanConfidence, '/plan_confidence')
    node.wait_outputs(confidences)
    set_ok(test_node, min_confidence=1.0)
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])
    assert plan.status == Plan.STATUS_LOW_CONFIDENCE and plan.steps, plan
    confidence = confidences.wait_for(lambda c: c.request_id == plan.request_id, TIMEOUT,
                                      "the plan's confidence")
    assert f'confidence {math.exp(confidence.mean):.3f} ' in plan.message, (plan.message,
                                                                            confidence)


@both_backends
def test_min_confidence_is_never_passed_silently_where_the_confidence_is_unknown(
        start_vlm_node, test_node, backend):
    node = start_vlm_node()
    node.wait_state('active')
    set_ok(test_node, min_confidence=1e-9)  # any known confidence is above it
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])
    assert plan.status == Plan.STATUS_OK, plan.message
    if backend == 'transformers':
        assert plan.message == ''
        return
    # transformers serve ignores logprobs: the plan says it was not checked, for as long as
    # min_confidence asks for a check.
    assert plan.message == 'confidence unknown (the server sent no logprobs): min_confidence ' \
        'not applied'
    set_ok(test_node, min_confidence=0.0)
    # The first plan's frames keep coming, so the next plan is the first to come after this:
    # not any plan of another request (plan_on_a_new_frame may have asked more than once).
    later = node.plans.from_now()
    node.instruct(TARGETS['plan'][0])
    again = later(lambda p: p.instruction == TARGETS['plan'][0], TIMEOUT, 'the next plan')
    assert (again.status, again.message) == (Plan.STATUS_OK, ''), again


def _check_answer(confidence: AnswerConfidence, known: bool) -> None:
    if not known:
        assert math.isnan(confidence.mean) and math.isnan(confidence.min), confidence
        return
    assert confidence.min <= confidence.mean <= 0.0, confidence


@both_backends
def test_captions_and_query_answers_have_their_confidence(start_vlm_node, test_node, backend):
    node = start_vlm_node(caption_rate=2.0)
    node.wait_state('active')
    answers = test_node.collect(AnswerConfidence, '/answer_confidence')
    node.wait_outputs(answers, node.captions)
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    confidence = answers.wait_for(lambda a: a.task == AnswerConfidence.TASK_CAPTION and
                                  a.header.frame_id == frame_id, TIMEOUT, "a caption's")
    node.captions.wait_for(lambda c: (c.header, c.text) == (confidence.header, confidence.text),
                           TIMEOUT, 'the caption it belongs to')
    _check_answer(confidence, known=backend == 'transformers')

    image = rgb_to_image(scene('blue'))
    image.header.frame_id = uuid.uuid4().hex
    response = call(test_node, Query, '/vlm_node/query',
                    Query.Request(question=TARGETS['vqa'][0], image=image))
    assert response.success and response.answer == TARGETS['vqa'][1], response
    confidence = answers.wait_for(lambda a: a.task == AnswerConfidence.TASK_VQA and
                                  a.header == response.image_header, TIMEOUT, "the answer's")
    assert confidence.text == response.answer
    _check_answer(confidence, known=backend == 'transformers')
