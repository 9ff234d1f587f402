"""vlm_node's ~/score service: candidates ranked by the model's own likelihood, refusals named.

The scores are checked against the engine's teacher-forced scoring (Engine.score, the same
cross-entropy the tiny model was trained with) run in this process on the same image.
"""

import uuid

import numpy as np
import pytest
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, call, camera, transition
from serve_harness import both_backends
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.node.image_conversion import rgb_to_image
from vlm_ros.node.jobs import MAX_CANDIDATES

from vlm_ros_msgs.srv import Score

SERVICE = '/vlm_node/score'


def _random_texts(count: int, seed: int) -> list:
    """Candidates of the answer's kind and no meaning: letters in words of 3 to 7."""
    rng = np.random.default_rng(seed)
    return [' '.join(''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), rng.integers(3, 8)))
                     for _ in range(rng.integers(1, 4))) for _ in range(count)]


@pytest.mark.parametrize('task', ['vqa', 'caption', 'plan'])
def test_the_models_own_answer_ranks_first_and_scores_equal_the_engines(
        start_vlm_node, test_node, trained_tiny, task):
    from vlm_ros.engine.local import VlmEngine

    node = start_vlm_node()
    node.wait_state('active')
    prompt, answer = TARGETS[task]
    colour = 'blue' if task == 'vqa' else 'red'
    candidates = [*_random_texts(3, 1), answer, *_random_texts(3, 2)]
    request = Score.Request(task=task, prompt=prompt, candidates=candidates,
                            image=rgb_to_image(scene(colour)))
    request.image.header.frame_id = uuid.uuid4().hex
    response = call(test_node, Score, SERVICE, request)
    assert response.success and response.message == '', response.message
    assert response.image_header.frame_id == request.image.header.frame_id
    assert int(np.argmax(response.log_prob)) == candidates.index(answer), response.log_prob
    assert 'no answer published' not in node.log_text()  # a score is no answer to publish

    engine = VlmEngine(EngineConfig(model=str(trained_tiny('llava')), device='cpu',
                                    dtype='float32'))
    engine.load()
    try:
        scores = engine.score([Request(task, scene(colour), prompt)] * len(candidates),
                              candidates)
    finally:
        engine.unload()
    assert list(response.tokens) == [score.tokens for score in scores]
    assert np.allclose(response.mean_log_prob, [-score.ce for score in scores], atol=1e-4)
    assert np.allclose(response.log_prob, [-score.ce * score.tokens for score in scores],
                       atol=1e-4)


def test_the_latest_camera_frame_is_scored_when_no_image_is_given(start_vlm_node, test_node):
    node = start_vlm_node(wait_for_image=1.0)
    node.wait_state('active')
    request = Score.Request(prompt=TARGETS['vqa'][0], candidates=['blue', 'red'])
    missing = call(test_node, Score, SERVICE, request)
    assert not missing.success and 'no image' in missing.message, missing.message
    assert list(missing.log_prob) == []
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    response = call(test_node, Score, SERVICE, request)
    assert response.success, response.message
    assert response.image_header.frame_id == frame_id and len(response.log_prob) == 2


def test_hostile_requests_are_refused_with_the_reason_and_the_node_serves_on(
        start_vlm_node, test_node):
    """Each refusal names what to change; a good request is answered after all of them."""
    node = start_vlm_node(max_text_chars=4000)
    node.wait_state('active')
    image = rgb_to_image(scene('blue'))
    prompt = TARGETS['vqa'][0]
    refused = {
        'unknown task': ('dance', ['blue'], "task 'dance' cannot be scored; use one of vqa, "
                         'caption, plan'),
        'none': ('vqa', [], 'no candidates to score'),
        'too many': ('vqa', ['blue'] * (MAX_CANDIDATES + 1),
                     f'{MAX_CANDIDATES + 1} candidates; at most {MAX_CANDIDATES}'),
        'blank': ('vqa', ['blue', ' \n'], 'candidate 1 is blank: nothing to score'),
        'too long': ('vqa', ['blue', 'x' * 4001],
                     'candidate 1 has 4001 characters; max_text_chars is 4000'),
        # Random hex: about a token a character, past the tiny model's 1024 positions.
        'past the context': ('vqa', ['blue', ''.join(uuid.uuid4().hex for _ in range(120))],
                             'more than the 1024 positions the model reads'),
    }
    for what, (task, candidates, reason) in refused.items():
        response = call(test_node, Score, SERVICE, Score.Request(
            task=task, prompt=prompt, candidates=candidates, image=image))
        assert not response.success and reason in response.message, (what, response.message)
        assert list(response.log_prob) == [], what
    good = call(test_node, Score, SERVICE, Score.Request(prompt=prompt, candidates=['blue'],
                                                         image=image))
    assert good.success and len(good.log_prob) == 1, good.message
    # A client's text, even past the model's positions, is the client's error: no model fault.
    values = node.wait_diag(lambda v: int(v.get('status_ok', 0)) >= 1,
                            TIMEOUT, 'the good answer counted')
    assert values['errors_model'] == '0' and values['last_error_kind'] == '', values

    assert transition(test_node, 'deactivate')
    inactive = call(test_node, Score, SERVICE, Score.Request(prompt=prompt, candidates=['blue'],
                                                             image=image))
    assert not inactive.success and 'is inactive' in inactive.message, inactive.message
    assert transition(test_node, 'activate')
    again = call(test_node, Score, SERVICE, Score.Request(prompt=prompt, candidates=['blue'],
                                                          image=image))
    assert again.success and again.log_prob == good.log_prob, again.message


@both_backends
def test_a_backend_that_cannot_score_says_so(start_vlm_node, test_node, backend):
    node = start_vlm_node()
    node.wait_state('active')
    response = call(test_node, Score, SERVICE, Score.Request(
        prompt=TARGETS['vqa'][0], candidates=['blue'], image=rgb_to_image(scene('blue'))))
    if backend == 'openai':
        assert not response.success and 'cannot score' in response.message, response.message
    else:
        assert response.success and len(response.log_prob) == 1, response.message
