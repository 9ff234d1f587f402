"""The positions a model reads: a prompt and what follows it must fit in them.

Past max_position_embeddings a model with learnt positions (Florence-2's BART) fails with an
IndexError, which would fail every request batched with the long one as a model fault; a model
with rotary positions (Llama, Qwen2) answers from positions it never learnt. So a prompt that
leaves no room is refused as 'bad_input' (the caller's text to change) before the model runs,
with the numbers a user needs, an answer stops where the positions end, and a scored target
must fit whole. Token counts include the image's tokens: the processors put them in input_ids.
"""

from typing import Optional

from ..errors import VlmError


def position_limit(model) -> Optional[int]:
    """Return the positions the model's text side reads (None when its config does not say)."""
    limit = getattr(model.config.get_text_config(), 'max_position_embeddings', None)
    return limit if isinstance(limit, int) and limit > 0 else None


def overflow(model, prompt: int, target: int) -> Optional[str]:
    """Return why a prompt of ``prompt`` tokens and a target of ``target`` do not fit, or None.

    An encoder-decoder reads the prompt in its encoder and the target in its decoder, each
    with its own positions.
    """
    limit = position_limit(model)
    if limit is None:
        return None
    if not model.config.is_encoder_decoder:
        total = prompt + target
        return (f'a prompt of {prompt} tokens (image and text) and {target} target tokens are '
                f'{total} in all, more than the {limit} positions the model reads'
                ) if total > limit else None
    if prompt > limit:
        return (f'a prompt of {prompt} tokens (image and text) is more than the {limit} '
                'positions the model reads in its encoder')
    if target > limit:
        return (f'{target} target tokens are more than the {limit} positions the model reads '
                'in its decoder')
    return None


def fitted_limits(model, attention_mask, limits: list) -> list:
    """Return each request's token limit cut to the positions its prompt leaves.

    An answer stops there as it would at max_new_tokens: a high max_new_tokens that short
    answers never reach keeps working. A prompt that leaves no position for an answer is
    refused, about the text. Rows of one batch are generated as far as the longest limit,
    which rotary positions take past the limit harmlessly (those tokens are cut), and learnt
    decoder positions in an encoder-decoder never reach: they count the answer alone.
    """
    limit = position_limit(model)
    if limit is None:
        return limits
    encoder_decoder = model.config.is_encoder_decoder
    prompts = attention_mask.sum(-1).tolist()
    fitted = []
    for index, (prompt, wanted) in enumerate(zip(prompts, limits, strict=True)):
        room = limit if encoder_decoder else limit - prompt
        if prompt > limit or room < 1:
            which = f'request {index} of {len(prompts)}: ' if len(prompts) > 1 else ''
            reason = overflow(model, prompt, 0) if encoder_decoder else (
                f'a prompt of {prompt} tokens (image and text) leaves no room for an answer in '
                f'the {limit} positions the model reads')
            raise VlmError('bad_input', f'{which}{reason}; shorten the text', about='text')
        fitted.append(min(wanted, room))
    return fitted
