"""decode_mode 'graphs' as on CUDA: the greedy step and the prefill's decoder compiled.

torch.compile runs on a CPU too: the compiled step and the first forward's compiled decoder
(compiled_prefill.py) must answer as generate, compile only in the warm-up, and leave the
cancel checks and the features' eager prefill as they are, for 1-D (Idefics3) and 3-D
(Qwen2-VL) rotary positions. On CUDA, vlm_ros.benchmarks.cuda_checks --graphs checks the
captured graphs.
"""

import threading

import pytest
from decoding_harness import start_engine
from engine_fixtures import scene
from vlm_ros.benchmarks.vision_timer import vision_layers
from vlm_ros.engine import Request
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.local.decoding import compiled_graphs, warm_up
from vlm_ros.engine.local.generate import eos_token_ids, generate
from vlm_ros.engine.local.graph_decode import GraphDecoder

pytestmark = pytest.mark.distro_independent


@pytest.fixture(scope='module', params=['idefics3', 'qwen2_vl'])
def compiled(request, trained_tiny):
    """Yield a tiny engine, a GraphDecoder compiled as on CUDA, and its warm-up's graphs.

    Idefics3's positions count one a token, Qwen2-VL's are 3-D. The graphs the warm-up made are
    counted here: the worker may have compiled others before.
    """
    engine = start_engine(trained_tiny(request.param), 'static')
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
    vision = vision_layers(engine.loaded.model)
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
