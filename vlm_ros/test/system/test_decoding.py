"""decode_mode: a static KV cache, compiled decoding, and the warm-up that compiles at load.

Every mode must give the eager answers (greedy decoding, the same model). The compiled mode
must compile while loading, not while answering: requests of new prompt lengths, batch sizes
and token limits after load() make no new graph.
"""

import uuid

import pytest
from engine_fixtures import FAMILIES, TARGETS, scene
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.decoding import compiled_graphs

pytestmark = pytest.mark.distro_independent


def _engine(model, mode: str) -> VlmEngine:
    engine = VlmEngine(EngineConfig(model=str(model), device='cpu', dtype='float32',
                                    max_new_tokens=96, decode_mode=mode))
    engine.load()
    return engine


def _requests():
    """Three tasks on two frames, with prompts of different lengths."""
    return [Request('caption', scene('red')), Request('vqa', scene('blue'), TARGETS['vqa'][0]),
            Request('plan', scene('red'), TARGETS['plan'][0])]


def _answers(engine, requests):
    return [(r.text, r.output_tokens) for r in engine.run(requests)]


@pytest.fixture(scope='module')
def eager_answers(trained_tiny):
    """Each family's eager answers to _requests(), batched and one at a time."""
    answers = {}
    for family in FAMILIES:
        engine = _engine(trained_tiny(family), 'eager')
        answers[family] = (_answers(engine, _requests()),
                           [_answers(engine, [r])[0] for r in _requests()])
        engine.unload()
    return answers


@pytest.mark.parametrize('family', FAMILIES)
def test_static_cache_answers_equal_eager_answers(family, trained_tiny, eager_answers):
    engine = _engine(trained_tiny(family), 'static')
    try:
        assert engine.decode_mode == 'static'
        assert engine.generate_kwargs()['cache_implementation'] == 'static'
        batched, single = eager_answers[family]
        assert _answers(engine, _requests()) == batched
        assert [_answers(engine, [r])[0] for r in _requests()] == single
    finally:
        engine.unload()


@pytest.mark.parametrize('family', ['llava', 'florence2'])  # decoder-only, encoder-decoder
def test_compiled_decoding_compiles_at_load_and_answers_as_eager(family, trained_tiny,
                                                                 eager_answers):
    engine = _engine(trained_tiny(family), 'compiled')
    try:
        graphs = compiled_graphs()
        assert engine.decode_mode == 'compiled' and engine.warm_up_seconds > 0
        assert engine.status()['compiled_graphs'] == graphs > 0
        batched, single = eager_answers[family]
        assert _answers(engine, _requests()) == batched
        assert [_answers(engine, [r])[0] for r in _requests()] == single
        longer = f'{uuid.uuid4().hex[:8]}: a new instruction, longer than any so far'
        engine.run([Request('plan', scene('blue', 96, 128), longer, max_new_tokens=7)] * 5)
        assert compiled_graphs() == graphs, 'a request compiled: the warm-up missed a shape'
    finally:
        engine.unload()


def test_auto_is_eager_on_a_cpu_and_skips_the_warm_up(trained_tiny):
    engine = _engine(trained_tiny('llava'), 'auto')
    try:
        assert (engine.decode_mode, engine.warm_up_seconds) == ('eager', 0.0)
        assert engine.generate_kwargs() == {'do_sample': False}
        assert 'eager decoding' in engine.describe()
    finally:
        engine.unload()


def test_unknown_mode_is_refused_with_the_choices(trained_tiny):
    with pytest.raises(VlmError, match='decode_mode must be one of auto, eager, static'):
        _engine(trained_tiny('llava'), 'fast')
