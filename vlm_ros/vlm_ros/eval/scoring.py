"""
Reference scoring: how likely a loaded model finds given answers, on the training objective.

Generated text compares two models only through exact matches or fuzzy metrics; the
teacher-forced cross-entropy of a reference answer (what fine-tuning minimises) ranks them on
one's own data even when neither reproduces the reference word for word. Prompts go through
VlmEngine.preprocess, so a model is scored on exactly the inputs it answers at run time.
"""

import math
from dataclasses import dataclass

import torch

from ..engine import Request, VlmError
from ..engine.local import VlmEngine
from .teacher_forcing import target_log_probs, with_targets


@dataclass
class Reference:
    """A reference answer: ``target`` is what the model should say for this request.

    ``task``, ``image`` (HxWx3 uint8 RGB) and ``text`` (question or instruction, '' for a
    caption) are those of a Request.
    """

    task: str
    image: object
    text: str
    target: str


@dataclass
class Score:
    """How well a model predicts a target, teacher-forced.

    ``ce`` is the mean negative log-likelihood per target token (natural log), ``perplexity``
    is exp(ce), and ``tokens`` counts the target tokens scored, including the closing token
    that stops generation: the model is scored on stopping too, as training teaches it.
    """

    ce: float
    perplexity: float
    tokens: int


def score(engine: VlmEngine, samples: list[Reference], batch_size: int = 8) -> list[Score]:
    """Return one Score per Reference, in order, batch_size samples per model forward pass.

    Batched scores equal one-at-a-time scores up to float rounding: rows are laid out as in an
    unpadded call (see teacher_forcing). Raises VlmError('bad_input') for a batch_size below 1
    or a blank target before any work, and for a bad task, text or image as VlmEngine.run does.
    """
    if batch_size < 1:
        raise VlmError('bad_input', f'batch_size must be at least 1, not {batch_size}')
    for index, sample in enumerate(samples):
        if not sample.target.strip():
            raise VlmError('bad_input', f'reference {index} has an empty target {sample.target!r}')
    scores = []
    for start in range(0, len(samples), batch_size):
        scores.extend(_score_batch(engine, samples[start:start + batch_size]))
    return scores


def _score_batch(engine: VlmEngine, samples: list[Reference]) -> list[Score]:
    """Score a batch in one forward pass."""
    loaded = engine.loaded
    model = loaded.model
    inputs = engine.preprocess([Request(s.task, s.image, s.text) for s in samples])
    batch = with_targets(loaded.processor, model, inputs, [s.target for s in samples])
    labels = batch.pop('labels')
    if model.config.is_encoder_decoder:
        batch['labels'] = labels  # the model builds its decoder inputs from them
    # Without labels a decoder-only model skips the loss, and its vocabulary-wide float copy.
    with torch.inference_mode():
        logits = model(**batch, use_cache=False).logits
        log_probs, answer = target_log_probs(model, logits, labels)
    tokens = answer.sum(-1)
    ces = (-log_probs.sum(-1) / tokens).tolist()
    return [Score(ce, math.exp(ce), count) for ce, count in zip(ces, tokens.tolist(),
                                                                 strict=True)]


def mean_score(scores: list[Score]) -> Score:
    """Pool per-sample scores into the Score of the whole set.

    ``ce`` is the token-weighted mean (total negative log-likelihood over total tokens): the
    loss fine-tuning minimises over the set, and what a benchmark's perplexity means.
    ``perplexity`` is exp of that ce, not the mean of per-sample perplexities, which exp's
    convexity would let one badly predicted sample dominate. ``tokens`` is the total.
    """
    if not scores:
        raise VlmError('bad_input', 'no scores to pool')
    tokens = sum(s.tokens for s in scores)
    ce = sum(s.ce * s.tokens for s in scores) / tokens
    return Score(ce, math.exp(ce), tokens)
