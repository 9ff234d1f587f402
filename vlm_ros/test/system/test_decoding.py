"""decode_mode: a static KV cache, compiled decoding, and the warm-up that compiles at load.

Every mode must give the eager answers (greedy decoding, the same model). The compiled mode
must compile while loading, not while answering: requests of new prompt lengths, batch sizes
and token limits after load() make no new graph.
"""

import uuid

import pytest
from decoding_harness import batched_and_single, eager_of, start_engine
from engine_fixtures import FAMILIES, scene
from vlm_ros.engine import Request, VlmError
from vlm_ros.engine.local.decoding import compiled_graphs

pytestmark = pytest.mark.distro_independent


@pytest.fixture(scope='module')
def eager_answers(trained_tiny):
    """Each family's eager answers, batched and one at a time (decoding_harness.eager_of)."""
    return eager_of(trained_tiny, FAMILIES)


@pytest.mark.parametrize('family', FAMILIES)
def test_static_cache_answers_equal_eager_answers(family, trained_tiny, eager_answers):
    engine = start_engine(trained_tiny(family), 'static')
    try:
        assert engine.decoding.mode == 'static'
        assert engine.generate_kwargs()['cache_implementation'] == 'static'
        assert batched_and_single(engine) == eager_answers[family]
    finally:
        engine.unload()


@pytest.mark.parametrize('family', ['llava', 'florence2'])  # decoder-only, encoder-decoder
def test_compiled_decoding_compiles_at_load_and_answers_as_eager(family, trained_tiny,
                                                                 eager_answers):
    engine = start_engine(trained_tiny(family), 'compiled')
    try:
        graphs = compiled_graphs()
        assert engine.decoding.mode == 'compiled' and engine.decoding.warm_up_seconds > 0
        assert engine.status()['compiled_graphs'] == graphs > 0
        assert batched_and_single(engine) == eager_answers[family]
        longer = f'{uuid.uuid4().hex[:8]}: a new instruction, longer than any so far'
        engine.run([Request('plan', scene('blue', 96, 128), longer, max_new_tokens=7)] * 5)
        assert compiled_graphs() == graphs, 'a request compiled: the warm-up missed a shape'
    finally:
        engine.unload()


def test_auto_is_eager_on_a_cpu_and_skips_the_warm_up(trained_tiny):
    engine = start_engine(trained_tiny('llava'), 'auto')
    try:
        assert (engine.decoding.mode, engine.decoding.warm_up_seconds) == ('eager', 0.0)
        assert engine.generate_kwargs() == {'do_sample': False}
        assert 'eager decoding' in engine.describe()
    finally:
        engine.unload()


def test_unknown_mode_is_refused_with_the_choices(trained_tiny):
    with pytest.raises(VlmError, match='decode_mode must be one of auto, eager, static'):
        start_engine(trained_tiny('llava'), 'fast')

