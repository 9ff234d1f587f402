"""
Reference scoring: how likely a loaded model finds given answers, on the training objective.

Generated text compares two models only through exact matches or fuzzy metrics; the
teacher-forced cross-entropy of a reference answer (what fine-tuning minimises) ranks them on
one's own data even when neither reproduces the reference word for word. The engine scores
(Engine.score: VlmEngine.preprocess, then one teacher-forced forward pass), so a model is scored
on exactly the inputs it answers at run time; this module batches and pools.
"""

import math
from dataclasses import dataclass

from ..engine import Request, VlmError
from ..engine.interface import Engine
from ..engine.results import Score

__all__ = ['Reference', 'Score', 'mean_score', 'score']  # Score lives in the engine now


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


def score(engine: Engine, samples: list[Reference], batch_size: int = 8) -> list[Score]:
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
        batch = samples[start:start + batch_size]
        scores.extend(engine.score([Request(s.task, s.image, s.text) for s in batch],
                                   [s.target for s in batch]))
    return scores


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
