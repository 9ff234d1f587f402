"""decode_mode 'graphs': greedy steps replayed from CUDA graphs (graph_decode.py).

On a CPU the same steps run eagerly (compiled on request): the tokens, log-probabilities,
streams and cancels must be generate's, with the decoder's projections fused
(fused_projections.py) against eager decoding without. On CUDA,
vlm_ros.benchmarks.cuda_checks --graphs checks the captured graphs the same way.
"""

import threading

import pytest
import torch
from decoding_harness import batched_and_single, eager_of, start_engine
from engine_fixtures import scene
from vlm_ros.engine import Request, VlmError
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.local.decoding import compiled_graphs, graph_decoder, warm_up
from vlm_ros.engine.local.fused_projections import FusedPart
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
        layer = engine.loaded.model.get_decoder().layers[-1]  # q/k/v and gate/up: one product
        assert isinstance(layer.self_attn.v_proj, FusedPart) and isinstance(layer.mlp.up_proj,
                                                                             FusedPart)
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


@pytest.mark.parametrize('family', ['florence2', 'mllama', 'idefics2', 'qwen2_vl'])
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


@pytest.fixture(scope='module')
def compiled(trained_tiny):
    """Yield a tiny Idefics3 engine, a GraphDecoder compiled as on CUDA, and its warm-up's graphs.

    The graphs the warm-up made are counted here: the worker may have compiled others before.
    """
    engine = start_engine(trained_tiny('idefics3'), 'static')
    loaded = engine.loaded
    graphs = GraphDecoder(loaded.model, eos_token_ids(loaded.model, loaded.processor.tokenizer),
                          compiled=True)
    before = compiled_graphs()
    warm_up(loaded, engine.preprocess, engine.generate_kwargs(), engine.config.max_image_side,
            graphs)
    yield engine, graphs, compiled_graphs() - before
    engine.unload()


def test_compiled_steps_and_prefill_answer_as_generate_and_compile_only_in_the_warm_up(
        compiled):
    """On CUDA the graphed step and the first forward's decoder run compiled (fused kernels).

    The warm-up compiles each of them for batch 1 and for any batch, no more (this model has
    two KV heads: a first batch of two rows would add a prefill for batch 2 alone). The answers
    are generate's, and no request after the warm-up compiles again, whatever its batch size,
    prompt length or cache length (each compile takes seconds on a GPU).
    """
    engine, graphs, warm_up_graphs = compiled
    assert warm_up_graphs == 4, 'prefill and step, each for batch 1 and for any batch'
    made = compiled_graphs()
    colours = ('red', 'blue', 'red', 'blue')
    for batch, tokens in ((3, 30), (1, 30), (2, 300), (4, 20), (1, 5)):
        inputs = engine.preprocess([Request('vqa', scene(colour), 'what colour? ' * (row + 1))
                                    for row, colour in enumerate(colours[:batch])])
        expected = generate(engine.loaded, inputs, tokens,
                            {**engine.generate_kwargs(), 'min_new_tokens': tokens})
        answered = generate(engine.loaded, inputs, tokens,
                            {'do_sample': False, 'min_new_tokens': tokens}, graphs=graphs)
        assert answered.tokens == expected.tokens
        assert answered.logprobs == [pytest.approx(row, abs=1e-5)
                                     for row in expected.logprobs]
    assert compiled_graphs() == made


def test_cancel_after_vision_encoding_stops_before_the_compiled_decoder(compiled):
    """The compiled decoder is checked once, before it runs (its layers run inside a graph)."""
    engine, graphs, _ = compiled
    vision = [layer for name, module in engine.loaded.model.named_modules()
              if isinstance(module, torch.nn.ModuleList) and 'vision' in name for layer in module]
    cancel = threading.Event()
    decoder_ran = []
    ran = graphs.prefill.compiled.register_forward_hook(lambda *args: decoder_ran.append(1))
    cancelling = vision[-1].register_forward_hook(lambda *args: cancel.set())
    inputs = engine.preprocess([Request('caption', scene('red'))])
    try:
        cancelled = generate(engine.loaded, inputs, 20, {'do_sample': False}, cancels=[cancel],
                             graphs=graphs)
        cancelling.remove()
        assert cancelled.cancelled == [True] and cancelled.tokens == [[]] and decoder_ran == []
        answered = generate(engine.loaded, inputs, 20, {'do_sample': False}, graphs=graphs)
    finally:
        cancelling.remove()
        ran.remove()
    assert len(answered.tokens[0]) > 3 and decoder_ran == [1], 'the prefill ran it, once'


def test_features_take_the_eager_prefill_and_equal_eagers(compiled):
    """output_hidden_states would compile another graph: a features request runs eagerly."""
    engine, graphs, _ = compiled
    made = compiled_graphs()
    inputs = engine.preprocess([Request('caption', scene('blue'))])
    specs = [FeatureSpec(-1, 'mean')]
    expected = generate(engine.loaded, inputs, 10, engine.generate_kwargs(), features=specs)
    answered = generate(engine.loaded, inputs, 10, {'do_sample': False}, graphs=graphs,
                        features=specs)
    assert answered.tokens == expected.tokens
    assert answered.features[0].data == pytest.approx(expected.features[0].data, abs=1e-5)
    assert compiled_graphs() == made
