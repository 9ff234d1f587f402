"""
Reference scoring on tiny checkpoints trained on the test targets.

The scores are checked against a direct computation from the model's logits, written here
without the teacher-forcing helpers, for a decoder-only (LLaVA) and the encoder-decoder
(Florence-2) family; batching is checked on every family.
"""

import math

import pytest
import torch
from engine_fixtures import FAMILIES, TARGETS, scene, training_samples
from vlm_ros.engine import EngineConfig
from vlm_ros.engine.chat import build_inputs
from vlm_ros.engine.local import VlmEngine
from vlm_ros.eval.scoring import Reference, score
from vlm_ros.models.train import STOP_PROB

DIRECT_FAMILIES = ('llava', 'florence2')
# A wrong answer per task for the trained references' image and prompt.
WRONG = {'caption': 'a blue block on a grey table', 'vqa': 'red', 'plan': 'go'}


@pytest.fixture(scope='module')
def engine_for(trained_tiny):
    """Return a factory: family -> loaded engine of the trained tiny checkpoint."""
    engines = {}

    def get(family: str) -> VlmEngine:
        if family not in engines:
            engines[family] = VlmEngine(EngineConfig(model=str(trained_tiny(family)),
                                                     device='cpu', dtype='float32'))
            engines[family].load()
        return engines[family]

    yield get
    for engine in engines.values():
        engine.unload()


def task_samples() -> list:
    """Return the training samples of caption, vqa and plan, in TARGETS order.

    The samples after those three repeat the plan on other frames (JPEG): left out here.
    """
    return training_samples()[:len(TARGETS)]


def trained_references() -> list:
    """Return the task samples as References."""
    return [Reference(task, image, TARGETS[task][0], target)
            for task, (image, _, target) in zip(TARGETS, task_samples(), strict=True)]


def direct_score(engine: VlmEngine, image, prompt: str, target: str) -> tuple[float, int]:
    """Return (mean NLL per target token, token count) from one unpadded forward pass."""
    processor, model = engine.loaded.processor, engine.loaded.model
    inputs = build_inputs(processor, [image], [prompt])
    eos = model.generation_config.eos_token_id
    ids = processor.tokenizer(target, add_special_tokens=False)['input_ids']
    ids.append(eos[0] if isinstance(eos, list) else eos)
    target_ids = torch.tensor([ids])
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            start = torch.tensor([[model.generation_config.decoder_start_token_id]])
            decoder_ids = torch.cat([start, target_ids[:, :-1]], dim=1)
            logits = model(**inputs, decoder_input_ids=decoder_ids).logits[0]
        else:
            prompt_length = inputs['input_ids'].shape[1]
            full = torch.cat([inputs['input_ids'], target_ids], dim=1)
            logits = model(**{**inputs, 'input_ids': full,
                              'attention_mask': torch.ones_like(full)}).logits[0]
            logits = logits[prompt_length - 1:-1]
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return -log_probs[torch.arange(len(ids)), ids].mean().item(), len(ids)


@pytest.mark.parametrize('family', DIRECT_FAMILIES)
def test_score_equals_direct_computation(engine_for, family):
    engine = engine_for(family)
    references = trained_references()
    wrong = [Reference(r.task, r.image, r.text, WRONG[r.task]) for r in references]
    prompts = [prompt for _, prompt, _ in task_samples()] * 2
    for reference, prompt, result in zip(references + wrong, prompts,
                                         score(engine, references + wrong), strict=True):
        ce, tokens = direct_score(engine, reference.image, prompt, reference.target)
        assert result.tokens == tokens
        assert result.ce == pytest.approx(ce, abs=1e-5)
        assert result.perplexity == pytest.approx(math.exp(ce), rel=1e-5)


@pytest.mark.parametrize('family', DIRECT_FAMILIES)
def test_trained_target_beats_wrong_target(engine_for, family):
    engine = engine_for(family)
    for reference in trained_references():
        wrong = Reference(reference.task, reference.image, reference.text, WRONG[reference.task])
        trained_score, wrong_score = score(engine, [reference, wrong])
        # Training stops once every target token has probability >= STOP_PROB.
        assert trained_score.ce <= -math.log(STOP_PROB) < 1 < wrong_score.ce


@pytest.mark.parametrize('family', FAMILIES)
def test_batches_equal_single_samples(engine_for, family):
    engine = engine_for(family)
    references = trained_references()
    references += [Reference(r.task, r.image, r.text, WRONG[r.task]) for r in references]
    # A frame larger than max_image_side, so the batch also holds a resized image.
    references.append(Reference('vqa', scene('green', 720, 960), 'what is on the table?',
                                'a green block'))
    singles = score(engine, references, batch_size=1)
    batched = score(engine, references, batch_size=4)
    assert [s.tokens for s in batched] == [s.tokens for s in singles]
    torch.testing.assert_close(torch.tensor([s.ce for s in batched]),
                               torch.tensor([s.ce for s in singles]), atol=1e-4, rtol=0)
