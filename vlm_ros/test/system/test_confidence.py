"""Confidences: each generated token's log-probability is the model's own.

Teacher forcing (teacher_forcing.py, the training objective) computes the same numbers for the
same answer, in a batch or not.
"""

import math

import numpy as np
import pytest
import torch
from engine_fixtures import TARGETS, scene
from vlm_ros.engine import EngineConfig, Request

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


def _teacher_forced(engine, request: Request, answer: str) -> list:
    """Return the log-probability of each of answer's tokens (its closing EOS last)."""
    from vlm_ros.engine.local import teacher_forcing

    model, processor = engine.loaded.model, engine.loaded.processor
    batch = teacher_forcing.with_targets(processor, model, engine.preprocess([request]),
                                         [answer])
    labels = batch.pop('labels')
    if model.config.is_encoder_decoder:
        batch['labels'] = labels
    with torch.inference_mode():
        logits = model(**batch, use_cache=False).logits
        log_probs, answer_mask = teacher_forcing.target_log_probs(model, logits, labels)
    return log_probs[0][answer_mask[0]].tolist()


@pytest.fixture(scope='module', params=['llava', 'florence2'])
def engine(request, trained_tiny):
    from vlm_ros.engine.local import VlmEngine

    engine = VlmEngine(EngineConfig(model=str(trained_tiny(request.param)), device='cpu',
                                    dtype='float32'))
    engine.load()
    yield engine
    engine.unload()


@pytest.mark.parametrize('task', ['vqa', 'plan'])
def test_token_logprobs_are_the_teacher_forced_ones_of_the_answer(engine, task):
    prompt, answer = TARGETS[task]
    request = Request(task, scene('blue' if task == 'vqa' else 'red'), prompt)
    result = engine.run([request])[0]
    assert result.text == answer
    expected = _teacher_forced(engine, request, answer)[:-1]  # the EOS is no text
    assert np.allclose(result.token_logprobs, expected, atol=1e-4), (
        result.token_logprobs, expected)
    mean, low = result.confidence
    assert math.isclose(mean, sum(expected) / len(expected), abs_tol=1e-4)
    assert math.isclose(low, min(expected), abs_tol=1e-4)
    if task == 'plan':
        assert len(result.step_confidence) == len(result.steps) > 1
        for step_mean, step_min in result.step_confidence:
            assert low - 1e-9 <= step_min <= step_mean <= 0.0, result.step_confidence


def test_a_batch_gives_each_answer_the_confidence_it_has_alone(engine):
    requests = [Request('plan', scene('red'), TARGETS['plan'][0]),
                Request('vqa', scene('blue'), TARGETS['vqa'][0]),
                Request('caption', scene('red'))]
    batched = engine.run(requests)
    for request, together in zip(requests, batched, strict=True):
        alone = engine.run([request])[0]
        assert together.text == alone.text
        assert np.allclose(together.token_logprobs, alone.token_logprobs, atol=1e-4), \
            request.task
        assert len(alone.token_logprobs) == alone.output_tokens - 1  # all but the EOS
