"""Features for action heads (issue 28): the prompt's hidden states, from the answer's own prefill.

For every tiny family, the features a batched request gets equal the hidden states
transformers itself returns for that request alone (generate with output_hidden_states), at
the layer and pooling asked for; asking for them changes no answer; a layer the model does not
have gives no features and says why, and the answer is made all the same.
"""

import re

import numpy as np
import pytest
import torch
from engine_fixtures import FAMILIES, TARGETS, scene
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.local import VlmEngine

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent
SPECS = [FeatureSpec(-1, 'last'), FeatureSpec(1, 'mean'), FeatureSpec(0, 'tokens')]


def _reference(engine: VlmEngine, request: Request, spec: FeatureSpec) -> np.ndarray:
    """Return the request's states at spec.layer as transformers gives them, pooled by spec."""
    loaded = engine.loaded
    inputs = engine.preprocess([Request(request.task, request.image, request.text)])
    with torch.inference_mode():
        out = loaded.model.generate(**inputs, max_new_tokens=1, do_sample=False,
                                    output_hidden_states=True, return_dict_in_generate=True,
                                    pad_token_id=loaded.processor.tokenizer.pad_token_id)
    states = out.encoder_hidden_states if loaded.is_encoder_decoder else out.hidden_states[0]
    state = states[spec.layer][0].float()  # one request: no padding
    return {'last': state[-1], 'mean': state.mean(dim=0), 'tokens': state}[spec.pooling].numpy()


@pytest.mark.parametrize('family', FAMILIES)
def test_batched_features_equal_the_models_own_hidden_states(family, trained_tiny):
    engine = VlmEngine(EngineConfig(model=str(trained_tiny(family)), device='cpu',
                                    dtype='float32', max_new_tokens=8))
    engine.load()
    try:
        texts = [TARGETS['plan'][0], 'put the green block on the blue block, then wait there',
                 'go']  # prompts of three lengths: padding in the batch
        requests = [Request('plan', scene(colour), text, features=spec) for colour, text, spec
                    in zip(('red', 'blue', 'green'), texts, SPECS, strict=True)]
        plain = [Request('plan', r.image, r.text) for r in requests]
        results = engine.run(requests + plain[:1])
        for request, result in zip(requests, results[:3], strict=True):
            expected = _reference(engine, request, request.features)
            got = result.features
            assert got.pooling == request.features.pooling and got.data.dtype == np.float32
            assert got.data.shape == expected.shape, (got.data.shape, expected.shape)
            np.testing.assert_allclose(got.data, expected, rtol=1e-4, atol=1e-4)
            assert got.layer == (got.layers - 1 if request.features.layer == -1
                                 else request.features.layer)
        assert results[2].features.tokens == results[2].features.data.shape[0]
        assert results[3].features is None, 'not asked: none'
        assert [r.text for r in engine.run(plain)] == [r.text for r in results[:3]]
        wrong = engine.run([Request('plan', scene('red'), TARGETS['plan'][0],
                                    features=FeatureSpec(99))])[0]
        assert wrong.text == results[0].text, 'the answer is made all the same'
        assert wrong.features.data.size == 0 and re.fullmatch(
            r"feature layer 99 is not one of this model's hidden states: 0 \(embeddings\) to "
            rf'{wrong.features.layers - 1} \(the last layer\), or -{wrong.features.layers} to -1 '
            r'counted from the end', wrong.features.problem), wrong.features.problem
    finally:
        engine.unload()


def test_a_feature_spec_refuses_what_it_cannot_mean():
    with pytest.raises(VlmError, match='feature pooling must be one of last, mean, tokens'):
        FeatureSpec(pooling='max')
    with pytest.raises(VlmError, match='feature layer must be an integer'):
        FeatureSpec(layer=1.5)


def test_every_decode_mode_gives_the_same_features(trained_tiny):
    """The static cache's forward is given a 4D mask: the prompt's own mask is pooled over."""
    requests = [Request('plan', scene('red'), TARGETS['plan'][0], features=FeatureSpec(-1,
                                                                                       'mean')),
                Request('plan', scene('blue'), 'go', features=FeatureSpec(2, 'last'))]
    found = {}
    for mode in ('eager', 'static', 'graphs'):
        engine = VlmEngine(EngineConfig(model=str(trained_tiny('idefics3')), device='cpu',
                                        dtype='float32', max_new_tokens=8, decode_mode=mode))
        engine.load()
        try:
            found[mode] = engine.run(requests)
        finally:
            engine.unload()
    for mode in ('static', 'graphs'):
        assert [r.text for r in found[mode]] == [r.text for r in found['eager']]
        for got, eager in zip(found[mode], found['eager'], strict=True):
            np.testing.assert_allclose(got.features.data, eager.features.data, atol=1e-5)
