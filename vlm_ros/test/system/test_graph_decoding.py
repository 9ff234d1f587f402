"""decode_mode 'graphs': greedy steps replayed from CUDA graphs (graph_decode.py).

On a CPU the same steps run eagerly (compiled on request): the tokens, log-probabilities,
streams and cancels must be generate's. On CUDA, vlm_ros.benchmarks.cuda_checks --graphs checks
the captured graphs the same way.
"""

import threading

import pytest
from decoding_harness import batched_and_single, eager_of, start_engine
from engine_fixtures import scene
from vlm_ros.engine import Request, VlmError
from vlm_ros.engine.local.decoding import graph_decoder
from vlm_ros.engine.local.generate import eos_token_ids, generate
from vlm_ros.engine.local.graph_decode import CHUNK, GraphDecoder

pytestmark = pytest.mark.distro_independent


GRAPH_FAMILIES = ['llava', 'idefics3']  # decoder-only, one position per token, no window


@pytest.fixture(scope='module')
def eager_answers(trained_tiny):
    """Return the graph families' eager answers, batched and one at a time."""
    return eager_of(trained_tiny, GRAPH_FAMILIES)


@pytest.mark.parametrize('family', GRAPH_FAMILIES)
def test_graph_decoding_answers_equal_eager_answers(family, trained_tiny, eager_answers):
    engine = start_engine(trained_tiny(family), 'graphs')
    try:
        assert engine.decoding.mode == 'graphs' and 'graphs decoding' in engine.describe()
        assert batched_and_single(engine) == eager_answers[family]
    finally:
        engine.unload()


def test_graph_decoding_gives_generates_log_probabilities_and_stream(trained_tiny):
    model = trained_tiny('idefics3')
    eager, graphs = start_engine(model, 'eager'), start_engine(model, 'graphs')
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
    engine = start_engine(trained_tiny('llava'), 'graphs')
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
        start_engine(trained_tiny(family), 'graphs')


def test_graph_decoding_stops_a_row_when_its_cancel_is_set_and_keeps_the_others(trained_tiny):
    engine = start_engine(trained_tiny('llava'), 'graphs')
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
    engine = start_engine(trained_tiny('idefics3'), 'static')
    try:
        loaded = engine.loaded
        eos = eos_token_ids(loaded.model, loaded.processor.tokenizer)
        graphs = GraphDecoder(loaded.model, eos, compiled=True)
        for batch in (3, 2):  # one compile (dynamic shapes; batch 1 would make a second)
            inputs = engine.preprocess([Request('caption', scene(colour))
                                        for colour in ('red', 'blue', 'red')[:batch]])
            expected = generate(engine.loaded, inputs, 30, engine.generate_kwargs())
            answered = generate(engine.loaded, inputs, 30, {'do_sample': False}, graphs=graphs)
            assert answered.tokens == expected.tokens
            assert answered.logprobs == [pytest.approx(row, abs=1e-5)
                                         for row in expected.logprobs]
    finally:
        engine.unload()
