"""The engine end to end on tiny real-architecture checkpoints of every fusion family.

Each checkpoint is trained (cross-entropy on the target tokens, the VLM objective) to answer
the three tasks on two images, then driven through VlmEngine exactly as the node drives it:
real processors, real ``generate``, the real parser.
"""

import threading
import uuid

import pytest
import torch
from engine_fixtures import FAMILIES, PLAN_JSON, TARGETS, never_ending, scene
from vlm_ros.benchmarks.vision_timer import vision_layers
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.inputs import reserved_tokens
from vlm_ros.engine.local.positions import position_limit
from vlm_ros.models import build_tiny

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


@pytest.fixture(scope='module', params=FAMILIES)
def engine(request, trained_tiny):
    eng = VlmEngine(EngineConfig(model=str(trained_tiny(request.param)), device='cpu',
                                 dtype='float32', max_new_tokens=96))
    eng.load()
    yield eng
    eng.unload()


def _requests():
    return [Request('caption', scene('red')), Request('vqa', scene('blue'), TARGETS['vqa'][0]),
            Request('plan', scene('red'), TARGETS['plan'][0])]


def test_caption_vqa_plan(engine):
    caption, answer, plan = engine.run(_requests()[:1]) + engine.run(_requests()[1:2]) + \
        engine.run(_requests()[2:])
    assert caption.text == TARGETS['caption'][1] and caption.valid
    assert answer.text == TARGETS['vqa'][1] and answer.valid
    assert plan.text == PLAN_JSON
    assert plan.valid and plan.form == 'constrained'  # constrain_plans: 'auto'
    assert [(s.instruction, s.skill, s.target) for s in plan.steps] == [
        ('pick up the red block', 'pick', 'red block'), ('place it in the bin', 'place', 'bin')]
    for result in (caption, answer, plan):
        assert 0 < result.time_to_first_token <= result.total_time
        assert result.output_tokens > 0 and not result.cancelled


def test_batch_equals_single_calls(engine):
    requests = _requests()
    batched = engine.run(requests)
    singles = [engine.run([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in singles]
    assert [r.output_tokens for r in batched] == [r.output_tokens for r in singles]


def test_streaming_concatenation_equals_result(engine):
    pieces = []
    result = engine.run([_requests()[2]], on_text=pieces.append)[0]
    assert len(pieces) > 1
    assert ''.join(pieces) == result.text


def test_cancel_stops_generation(engine):
    cancel = threading.Event()
    pieces = []

    def cancel_after_first(text):
        pieces.append(text)
        cancel.set()

    result = engine.run([_requests()[2]], on_text=cancel_after_first, cancel=cancel)[0]
    assert result.cancelled
    assert result.output_tokens <= 2 < engine.run([_requests()[2]])[0].output_tokens


def test_cancel_during_vision_encoding_runs_no_further_layer(engine):
    """A long prefill is interruptible: no layer runs after the cancel, not even the decoder."""
    layers = [(name, layer) for name, module in engine.loaded.model.named_modules()
              if isinstance(module, torch.nn.ModuleList) for layer in module]
    vision = vision_layers(engine.loaded.model)
    assert vision, 'every family has a vision encoder with layers'
    cancel = threading.Event()
    ran_after_cancel = []
    handles = [vision[0].register_forward_hook(lambda *args: cancel.set())]
    handles += [layer.register_forward_hook(
        lambda module, *args, name=name: ran_after_cancel.append(name) if cancel.is_set() and
        module is not vision[0] else None) for name, layer in layers]
    try:
        result = engine.run([_requests()[2]], cancel=cancel)[0]
    finally:
        for handle in handles:
            handle.remove()
    assert result.cancelled and result.output_tokens == 0 and result.text == ''
    assert ran_after_cancel == []
    assert engine.run([_requests()[2]])[0].text == PLAN_JSON, 'the hooks are gone afterwards'


def test_each_row_of_a_batch_streams_its_own_text(engine):
    requests = _requests()
    pieces = [[] for _ in requests]
    for request, row in zip(requests, pieces, strict=True):
        request.on_text = row.append
    results = engine.run(requests)
    assert [''.join(row) for row in pieces] == [r.text for r in results]
    assert all(len(row) > 1 for row in pieces)


def test_cancel_of_one_row_leaves_the_others_intact(engine):
    requests = _requests()
    requests[2].cancel = threading.Event()
    requests[2].on_text = lambda text: requests[2].cancel.set()
    batched = engine.run(requests)
    singles = [engine.run([r])[0] for r in _requests()]
    assert batched[2].cancelled and batched[2].output_tokens <= 2
    assert [(r.text, r.cancelled) for r in batched[:2]] == [(r.text, False) for r in singles[:2]]


def test_per_request_token_limit(engine):
    request = _requests()[2]
    request.max_new_tokens = 3
    assert engine.run([request])[0].output_tokens == 3


def test_a_prompt_past_the_models_positions_is_refused_as_the_texts_fault(engine):
    limit = position_limit(engine.loaded.model)
    long_text = ''.join(uuid.uuid4().hex for _ in range(limit // 16 + 8))  # ~ a token a char
    with pytest.raises(VlmError) as refused:  # a model error, for the whole batch, until now
        engine.run([_requests()[1], Request('vqa', scene('red'), long_text)])
    assert refused.value.kind == 'bad_input' and refused.value.about == 'text'
    assert str(refused.value).startswith('request 1 of 2: a prompt of '), refused.value
    assert f'the {limit} positions the model reads' in str(refused.value)
    assert str(refused.value).endswith('; shorten the text'), refused.value
    assert engine.run(_requests()[1:2])[0].text == TARGETS['vqa'][1]  # the other, alone


def test_a_special_token_in_the_text_is_refused_as_the_texts_fault(engine):
    """A text may not hold what the model reads as markup, and it is the text's fault.

    '<image>' in an instruction was read as an image placeholder (SmolVLM's processor then
    raised, and /diagnostics blamed the camera); a chat template's markers would end the turn.
    """
    special = sorted(reserved_tokens(engine.loaded.processor))
    assert special, 'a tokenizer with no special token'
    image_token = getattr(engine.loaded.processor, 'image_token', None)
    for token in {special[0], *([image_token] if image_token else [])}:
        text = f'put the cup {token} on the plate'
        with pytest.raises(VlmError) as refused:
            engine.run([_requests()[1], Request('plan', scene('red'), text)])
        assert (refused.value.kind, refused.value.about) == ('bad_input', 'text')
        assert str(refused.value).startswith(f'request 1 of 2: the text holds {token!r}, a '
                                             'special token of the model'), refused.value
        replan = Request('replan', scene('red'), 'go', context={'done': token, 'failed': ''})
        with pytest.raises(VlmError, match='special token'):  # context is text too
            engine.run([replan])
    assert engine.run(_requests()[1:2])[0].text == TARGETS['vqa'][1]


@pytest.fixture(scope='module', params=['llava', 'florence2'])
def never_ending_engine(request, tmp_path_factory):
    """Return a loaded random-weight model that never ends by itself (decoder-only, enc-dec)."""
    model = never_ending(build_tiny(request.param, tmp_path_factory.mktemp('never_ending')))
    eng = VlmEngine(EngineConfig(model=str(model), device='cpu', dtype='float32'))
    eng.load()
    yield eng
    eng.unload()


def test_an_answer_stops_where_the_models_positions_end(never_ending_engine):
    engine = never_ending_engine
    limit = position_limit(engine.loaded.model)
    text = 'x'
    while _prompt_tokens(engine, text + ' x' * 8) < limit - 2:  # a prompt that leaves 2 to 10
        text += ' x' * 8
    request = Request('vqa', scene('red'), text, max_new_tokens=4096)  # the node's highest
    room = limit if engine.loaded.model.config.is_encoder_decoder else \
        limit - _prompt_tokens(engine, text)
    assert engine.run([request])[0].output_tokens == room  # generated into every position


def _prompt_tokens(engine, text: str) -> int:
    return int(engine.preprocess([Request('vqa', scene('red'), text)])['attention_mask'].sum())
