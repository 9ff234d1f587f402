"""decode_mode 'graphs': greedy steps replayed from CUDA graphs (graph_decode.py).

On a CPU the same steps run eagerly (compiled on request): the tokens, log-probabilities,
streams and cancels must be generate's, with the decoder's projections fused
(fused_projections.py) against eager decoding without. On CUDA,
vlm_ros.benchmarks.cuda_checks --graphs checks the captured graphs the same way.
"""

import threading

import pytest
from decoding_harness import batched_and_single, eager_of, start_engine
from engine_fixtures import scene
from vlm_ros.engine import Request, VlmError
from vlm_ros.engine.local.decoding import graph_decoder
from vlm_ros.engine.local.fused_projections import FusedPart
from vlm_ros.engine.local.generate import generate
from vlm_ros.engine.local.graph_decode import CHUNK

pytestmark = pytest.mark.distro_independent


GRAPH_FAMILIES = ['llava', 'idefics3', 'qwen2_vl']  # decoder-only, one position a token


@pytest.fixture(scope='module')
def eager_answers(trained_tiny):
    """Return the graph families' eager answers, batched and one at a time."""
    return eager_of(trained_tiny, GRAPH_FAMILIES)


@pytest.mark.parametrize('family', GRAPH_FAMILIES)
def test_graph_decoding_answers_equal_eager_answers(family, trained_tiny, eager_answers):
    engine = start_engine(trained_tiny(family), 'graphs')
    try:
        assert engine.decoding.mode == 'graphs' and 'graphs decoding' in engine.describe()
        layer = engine.loaded.model.get_decoder().layers[-1]  # q/k/v and gate/up: one product
        assert isinstance(layer.self_attn.v_proj, FusedPart) and isinstance(layer.mlp.up_proj,
                                                                             FusedPart)
        assert batched_and_single(engine) == eager_answers[family]
    finally:
        engine.unload()


@pytest.mark.parametrize('family', ['idefics3', 'qwen2_vl'])  # 1-D and 3-D rotary positions
def test_graph_decoding_gives_generates_log_probabilities_and_stream(family, trained_tiny):
    model = trained_tiny(family)
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
