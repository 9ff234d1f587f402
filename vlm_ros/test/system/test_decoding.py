"""decode_mode: a static KV cache, compiled decoding, and the warm-up that compiles at load.

Every mode must give the eager answers (greedy decoding, the same model). The compiled mode
must compile while loading, not while answering: requests of new prompt lengths, batch sizes
and token limits after load() make no new graph.
"""

import threading
import uuid

import pytest
from engine_fixtures import FAMILIES, TARGETS, scene
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.decoding import compiled_graphs, graph_decoder
from vlm_ros.engine.local.generate import eos_token_ids, generate
from vlm_ros.engine.local.graph_decode import CHUNK, GraphDecoder

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
        assert engine.decoding.mode == 'static'
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
        assert engine.decoding.mode == 'compiled' and engine.decoding.warm_up_seconds > 0
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
        assert (engine.decoding.mode, engine.decoding.warm_up_seconds) == ('eager', 0.0)
        assert engine.generate_kwargs() == {'do_sample': False}
        assert 'eager decoding' in engine.describe()
    finally:
        engine.unload()


def test_unknown_mode_is_refused_with_the_choices(trained_tiny):
    with pytest.raises(VlmError, match='decode_mode must be one of auto, eager, static'):
        _engine(trained_tiny('llava'), 'fast')


GRAPH_FAMILIES = ['llava', 'idefics3']  # decoder-only, one position per token, no window


@pytest.mark.parametrize('family', GRAPH_FAMILIES)
def test_graph_decoding_answers_equal_eager_answers(family, trained_tiny, eager_answers):
    engine = _engine(trained_tiny(family), 'graphs')
    try:
        assert engine.decoding.mode == 'graphs' and 'graphs decoding' in engine.describe()
        batched, single = eager_answers[family]
        assert _answers(engine, _requests()) == batched
        assert [_answers(engine, [r])[0] for r in _requests()] == single
    finally:
        engine.unload()


def test_graph_decoding_gives_generates_log_probabilities_and_stream(trained_tiny):
    model = trained_tiny('idefics3')
    eager, graphs = _engine(model, 'eager'), _engine(model, 'graphs')
    try:
        request = Request('caption', scene('red'))  # a plan would decode under its grammar
        expected = eager.run([request])[0]
        pieces = []
        answer = graphs.run([request], on_text=pieces.append)[0]
        assert answer.text == expected.text and ''.join(pieces) == answer.text
        assert answer.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-5)
        assert len(answer.token_logprobs) == len(expected.token_logprobs) > 3
    finally:
        eager.unload()
        graphs.unload()


def test_graph_decoding_keeps_eos_away_for_min_new_tokens(trained_tiny):
    """The warm-up and the benchmarks ask for exactly N tokens, past the model's EOS."""
    engine = _engine(trained_tiny('llava'), 'graphs')
    try:
        inputs = engine.preprocess([Request('caption', scene('red'))])
        graphs = graph_decoder('graphs', engine.loaded)
        short = generate(engine.loaded, inputs, 90, {'do_sample': False}, graphs=graphs)
        assert len(short.tokens[0]) < 90
        full = generate(engine.loaded, inputs, 90, {'do_sample': False, 'min_new_tokens': 90},
                        graphs=graphs)
        reference = generate(engine.loaded, inputs, 90,
                             {'do_sample': False, 'min_new_tokens': 90})
        assert full.tokens == reference.tokens and len(full.tokens[0]) == 90
    finally:
        engine.unload()


@pytest.mark.parametrize('family', ['florence2', 'mllama', 'idefics2'])
def test_graph_decoding_refuses_the_families_it_cannot_run_exactly(family, trained_tiny):
    with pytest.raises(VlmError, match="decode_mode 'graphs' decodes the families llava"):
        _engine(trained_tiny(family), 'graphs')


def test_graph_decoding_stops_a_row_when_its_cancel_is_set_and_keeps_the_others(trained_tiny):
    engine = _engine(trained_tiny('llava'), 'graphs')
    try:
        inputs = engine.preprocess([Request('caption', scene('red'))] * 2)
        cancels = [threading.Event(), threading.Event()]
        tokens = []

        def cancel_after_five(text):
            tokens.append(text)
            if len(tokens) == 5:
                cancels[0].set()
        generated = generate(engine.loaded, inputs, 200,
                             {'do_sample': False, 'min_new_tokens': 200},
                             [cancel_after_five, None], cancels,
                             graphs=graph_decoder('graphs', engine.loaded))
        assert generated.cancelled == [True, False]
        assert 5 <= len(generated.tokens[0]) < 5 + 2 * CHUNK + 1
        assert len(generated.tokens[1]) == 200
    finally:
        engine.unload()


def test_compiled_graph_steps_answer_as_generate(trained_tiny):
    """On CUDA the graphed step is compiled first (fused kernels): the same tokens."""
    engine = _engine(trained_tiny('idefics3'), 'static')
    try:
        loaded = engine.loaded
        eos = eos_token_ids(loaded.model, loaded.processor.tokenizer)
        graphs = GraphDecoder(loaded.model, eos, compiled=True)
        for batch in (1, 3, 2):
            inputs = engine.preprocess([Request('caption', scene(colour))
                                        for colour in ('red', 'blue', 'red')[:batch]])
            expected = generate(engine.loaded, inputs, 30, engine.generate_kwargs())
            answered = generate(engine.loaded, inputs, 30, {'do_sample': False}, graphs=graphs)
            assert answered.tokens == expected.tokens
            assert answered.logprobs == [pytest.approx(row, abs=1e-5)
                                         for row in expected.logprobs]
    finally:
        engine.unload()
