"""Plans under the plan schema's grammar: every answer parses, in the robot's own skills.

A tiny LLaVA with random weights and a byte-level BPE tokenizer writes anything but a plan:
free, nearly every answer is INVALID_OUTPUT; constrained, every one is a plan.
"""

import re
import uuid
from collections import Counter

import numpy as np
import pytest
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent
SKILLS = ('pick', 'place', 'push')
FORMS = ('constrained', 'constrained_closed')  # closed: the grammar wrote its last tokens


def _engine(model, **fields) -> VlmEngine:
    engine = VlmEngine(EngineConfig(model=str(model), device='cpu', dtype='float32',
                                    max_new_tokens=128, **fields))
    engine.load()
    return engine


def _instructions(count: int) -> list:
    rng = np.random.default_rng(3)
    return [Request('plan', rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                    f'sort the blocks, round {k} {uuid.uuid4().hex[:8]}') for k in range(count)]


@pytest.fixture(scope='module')
def random_llava(tmp_path_factory):
    """Return a tiny LLaVA with random weights (its generations end by themselves)."""
    from vlm_ros.models import build_tiny

    return build_tiny('llava', tmp_path_factory.mktemp('random_llava'))


def test_random_weights_plan_only_in_the_robots_skills(random_llava, record_property):
    """50 instructions: 50 whole plans, each with a step, every skill one of the robot's.

    In batches of 8, the first 8 one by one too: the same answers. The plans whose strings ran
    long are closed within max_new_tokens (closing.py): form 'constrained_closed', and a note
    that says how many tokens the grammar wrote; the others are 'constrained', with none.
    """
    engine = _engine(random_llava, skills=SKILLS)
    try:
        assert engine.status()['constrained_plans'] == 'true'  # as /diagnostics reports it
        requests = _instructions(50)
        batched = [result for start in range(0, 50, 8)
                   for result in engine.run(requests[start:start + 8])]
        single = [engine.run([request])[0] for request in requests[:8]]
    finally:
        engine.unload()
    assert len(batched) == 50
    closed = [r for r in batched if r.form == 'constrained_closed']
    record_property('plans', f'{sum(r.valid and bool(r.steps) for r in batched)} of 50 whole '
                    f'with a step, {len(closed)} of them closed at the budget; forms '
                    f'{dict(Counter(r.form for r in batched))}')
    assert all(r.form in FORMS and r.valid and r.steps for r in batched), \
        [(r.form, r.text) for r in batched if r.form not in FORMS or not r.steps]
    assert 0 < len(closed) < 50, 'random weights: about half run into their budget'
    assert all(re.fullmatch(r'max_new_tokens ran out: the plan grammar wrote the last \d+ of '
                            r'its \d+ tokens to close it, .*; raise max_new_tokens', r.note)
               for r in closed), [r.note for r in closed]
    assert all(r.note == '' for r in batched if r.form == 'constrained')
    assert {step.skill for r in batched for step in r.steps} <= set(SKILLS)
    assert [r.text for r in single] == [r.text for r in batched[:8]]


def test_skills_with_argument_names_give_every_step_its_skills_arguments(random_llava):
    """'place(object, location)': each place step carries exactly those arguments, in order."""
    skills = ('pick(object)', 'place(object, location)', 'push', 'wait')
    arguments = {'pick': ('object',), 'place': ('object', 'location'), 'push': (), 'wait': ()}
    engine = _engine(random_llava, skills=skills)
    try:
        requests = _instructions(16)
        batched = [result for start in range(0, 16, 8)
                   for result in engine.run(requests[start:start + 8])]
        single = [engine.run([request])[0] for request in requests[:4]]
    finally:
        engine.unload()
    assert all(r.form in FORMS and r.valid and r.steps for r in batched), \
        [(r.form, r.text) for r in batched if r.form not in FORMS or not r.steps]
    steps = [step for r in batched for step in r.steps]
    assert all(tuple(name for name, _ in step.args) == arguments[step.skill] for step in steps)
    assert any(step.args for step in steps), 'no step of a skill with arguments in 16 plans'
    assert [r.text for r in single] == [r.text for r in batched[:4]]


def test_free_text_from_random_weights_is_rarely_a_plan(random_llava):
    """constrain_plans 'off': constrained_plans false in /diagnostics, while it is loaded."""
    engine = _engine(random_llava, skills=SKILLS, constrain_plans='off')
    try:
        assert engine.status()['constrained_plans'] == 'false'
        assert 'unconstrained plans' in engine.describe()
        results = [engine.run([request])[0] for request in _instructions(10)]
    finally:
        engine.unload()
    assert sum(r.valid for r in results) <= 2, [r.text for r in results]
    assert 'constrained_plans' not in engine.status()  # nothing loaded, nothing to say


def test_skills_change_at_run_time_and_bad_ones_change_nothing(random_llava):
    engine = _engine(random_llava)
    try:
        request = _instructions(1)[0]
        engine.update(skills=('wait',))
        assert {step.skill for step in engine.run([request])[0].steps} == {'wait'}
        with pytest.raises(VlmError, match='not a name') as refused:
            engine.update(skills=('wait', 'pick up'))
        assert refused.value.kind == 'bad_input' and engine.config.skills == ('wait',)
    finally:
        engine.unload()


def test_captions_in_a_plan_batch_stay_free(random_llava):
    engine = _engine(random_llava)
    try:
        plan, caption = engine.run([_instructions(1)[0], Request('caption', _instructions(1)[0]
                                                                 .image)])
    finally:
        engine.unload()
    assert plan.form in (*FORMS, 'json_truncated') and caption.form == 'text'
    assert not caption.text.startswith('{"steps": [')


def test_plans_decoded_from_cuda_graph_steps_are_generates_plans(random_llava):
    """decode_mode graphs (auto's on CUDA): the grammar masks each replayed step's scores.

    The same plans, closings and log-probabilities as generate's, batched and one by one.
    """
    requests = _instructions(12)
    found = {}
    for mode in ('static', 'graphs'):
        engine = _engine(random_llava, skills=SKILLS, decode_mode=mode)
        try:
            found[mode] = (engine.run(requests[:8]) + engine.run(requests[8:]),
                           [engine.run([request])[0] for request in requests[:3]])
        finally:
            engine.unload()
    for ours, theirs in zip(found['graphs'], found['static'], strict=True):
        assert [(r.text, r.output_tokens, r.form) for r in ours] == \
            [(r.text, r.output_tokens, r.form) for r in theirs]
        assert all(r.form in FORMS and r.valid for r in ours)
        for mine, expected in zip(ours, theirs, strict=True):
            assert mine.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-5)
