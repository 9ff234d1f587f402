"""
Teacher forcing: a model's encoded prompts plus target answers, and the answers' log-probs.

Training (models.train) fits a model to these batches and scoring (VlmEngine.score, which
eval.scoring batches) measures a model on them, so both see exactly the same token layout: the
standard VLM objective, cross-entropy on the answer tokens only, each answer closed by the
token that stops generation.

Generated text compares two models only through exact matches or fuzzy metrics; the
teacher-forced cross-entropy of a reference answer (what fine-tuning minimises) ranks them on
one's own data even when neither reproduces the reference word for word.
"""

import math
from collections.abc import Sequence

import torch

from ..chat import build_inputs
from ..errors import VlmError
from ..results import Score
from .positions import overflow

IGNORE_INDEX = -100  # the label of a position outside every answer, as transformers uses it
# Model inputs with one entry per prompt token; all others (pixels, tiles) are per image.
TOKEN_KEYS = ('input_ids', 'attention_mask', 'cross_attention_mask', 'mm_token_type_ids',
              'token_type_ids')


def _answer_ids(processor, model, target: str) -> torch.Tensor:
    """Tokenize a target and close it with the token that stops generation."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    ids = processor.tokenizer(target, add_special_tokens=False)['input_ids']
    return torch.tensor([*ids, eos])


def _pad_right(rows: list[torch.Tensor], value) -> torch.Tensor:
    """Stack sequences of different lengths, padding after the end of each."""
    length = max(row.shape[0] for row in rows)
    padded = [torch.cat([row, row.new_full((length - row.shape[0], *row.shape[1:]), value)])
              for row in rows]
    return torch.stack(padded)


def _decoder_only_batch(inputs, answers: list[torch.Tensor], pad_id: int) -> dict:
    """
    Append each answer right after its row's prompt tokens and mask the prompt out of the loss.

    Prompt tokens are taken where the attention mask is set, whatever the padding side, and rows
    are right-padded, so every row keeps the positions it has in an unpadded inference call.
    Per-token inputs other than ids (attention and cross-attention masks) extend their last
    prompt position over the answer, as generate() does for every new token.
    """
    batch = {key: value for key, value in inputs.items() if key not in TOKEN_KEYS}
    keys = [key for key in TOKEN_KEYS if key in inputs]
    rows = {key: [] for key in [*keys, 'labels']}
    for index, answer in enumerate(answers):
        keep = inputs['attention_mask'][index].bool()
        for key in keys:
            prompt = inputs[key][index][keep]
            extra = answer if key == 'input_ids' else prompt[-1:].expand(
                len(answer), *prompt.shape[1:])
            rows[key].append(torch.cat([prompt, extra]))
        prompt_labels = torch.full((int(keep.sum()),), IGNORE_INDEX, device=answer.device)
        rows['labels'].append(torch.cat([prompt_labels, answer]))
    pads = {'input_ids': pad_id, 'labels': IGNORE_INDEX}
    batch.update({key: _pad_right(value, pads.get(key, 0)) for key, value in rows.items()})
    return batch


def with_targets(processor, model, inputs, targets: Sequence[str]) -> dict:
    """
    Return encoded prompts (one row per target) extended into a batch with labels.

    For an encoder-decoder the answer becomes the decoder labels (the model shifts them right
    behind its decoder start token); for a decoder-only model it continues the prompt. Answers
    are put on the prompts' device, so prompts already moved there by the engine stay put.
    """
    device = inputs['input_ids'].device
    answers = [_answer_ids(processor, model, target).to(device) for target in targets]
    _check_context(model, inputs['attention_mask'].sum(-1).tolist(), answers)
    if model.config.is_encoder_decoder:
        return {**inputs, 'labels': _pad_right(answers, IGNORE_INDEX)}
    return _decoder_only_batch(inputs, answers, processor.tokenizer.pad_token_id)


def _check_context(model, prompt_lengths: list, answers: list) -> None:
    """Refuse (VlmError 'bad_input') a target the model cannot read after its prompt.

    Past its positions a model either fails or scores from positions it never learnt: neither
    is a score (positions.py).
    """
    for index, (prompt, answer) in enumerate(zip(prompt_lengths, answers, strict=True)):
        reason = overflow(model, prompt, len(answer))
        if reason:
            raise VlmError('bad_input', f'target {index}: {reason}')


def teacher_forced_batch(processor, model, samples: Sequence[tuple]) -> dict:
    """
    Build one batch of model inputs with labels from (image, prompt, target) samples.

    The prompt side is encoded by chat.build_inputs, exactly as inference encodes it.
    """
    images, prompts, targets = zip(*samples, strict=True)
    return with_targets(processor, model, build_inputs(processor, images, prompts), targets)


def target_log_probs(model, logits: torch.Tensor,
                     labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """
    Return the log-probability of each label under the logits, and the mask of answer tokens.

    A decoder-only model's logits at position i predict token i + 1, so they are shifted by one
    against the labels; an encoder-decoder's decoder logits already line up with its labels.
    Log-softmax runs in float32 (half-precision logits lose the small probabilities) and only
    over answer positions, which spares a vocabulary-wide copy of every prompt position.
    Outside the mask the log-probability is 0.
    """
    if not model.config.is_encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    answer = labels != IGNORE_INDEX
    log_probs = torch.zeros(answer.shape, dtype=torch.float32, device=logits.device)
    picked = logits[answer].float().log_softmax(-1)
    log_probs[answer] = picked.gather(-1, labels[answer].unsqueeze(-1)).squeeze(-1)
    return log_probs, answer


def check_targets(requests: Sequence, targets: Sequence, model: str) -> None:
    """Refuse (VlmError 'bad_input') anything but one non-empty target string per request."""
    if not isinstance(targets, (list, tuple)):
        raise VlmError('bad_input', f'targets must be a list of strings; got a '
                       f'{type(targets).__name__}', model)
    if len(requests) != len(targets):
        raise VlmError('bad_input', f'{len(requests)} requests but {len(targets)} targets: '
                       'score needs one target per request', model)
    for index, target in enumerate(targets):
        if not isinstance(target, str) or not target.strip():
            raise VlmError('bad_input', f'target {index} is empty ({target!r}): nothing to '
                           'score', model)


def score_batch(model, processor, inputs, targets: Sequence[str]) -> list[Score]:
    """Score targets on encoded prompts (one row each) in one forward pass.

    Rows are laid out as in an unpadded call (with_targets), so a batch's scores equal
    one-at-a-time scores up to float rounding.
    """
    batch = with_targets(processor, model, inputs, targets)
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
