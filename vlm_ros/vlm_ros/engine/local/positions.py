"""The positions a model reads: a prompt and what follows it must fit in them.

Past max_position_embeddings a model with learnt positions (Florence-2's BART) fails with an
IndexError, which would fail every request batched with the long one as a model fault; a model
with rotary positions (Llama, Qwen2) answers from positions it never learnt. Either way the input
is the caller's to change, so it is refused as 'bad_input' before the model runs, with the
numbers a user needs. Token counts include the image's tokens: the processors put them in
input_ids.
"""

from typing import Optional

from ..errors import VlmError


def position_limit(model) -> Optional[int]:
    """Return the positions the model's text side reads (None when its config does not say)."""
    limit = getattr(model.config.get_text_config(), 'max_position_embeddings', None)
    return limit if isinstance(limit, int) and limit > 0 else None


def overflow(model, prompt: int, after: int, what: str) -> Optional[str]:
    """Return why a prompt of ``prompt`` tokens and ``after`` more do not fit, or None.

    what names the tokens after the prompt ('new tokens', 'target tokens'). An encoder-decoder
    reads the prompt in its encoder and the rest in its decoder, each with its own positions.
    """
    limit = position_limit(model)
    if limit is None:
        return None
    if not model.config.is_encoder_decoder:
        total = prompt + after
        return (f'a prompt of {prompt} tokens (image and text) and {after} {what} are {total} '
                f'in all, more than the {limit} positions the model reads'
                ) if total > limit else None
    if prompt > limit:
        return (f'a prompt of {prompt} tokens (image and text) is more than the {limit} '
                'positions the model reads in its encoder')
    if after > limit:
        return f'{after} {what} are more than the {limit} positions the model reads in its decoder'
    return None


def check_prompts(model, attention_mask, new_tokens: int) -> None:
    """Refuse a batch in which a request's prompt and new_tokens more do not fit.

    new_tokens is the batch's longest limit: every row is generated that far (the shorter
    ones are cut afterwards), so that is the length each row's positions must hold.
    """
    prompts = attention_mask.sum(-1).tolist()
    for index, prompt in enumerate(prompts):
        reason = overflow(model, prompt, new_tokens, 'new tokens (max_new_tokens)')
        if reason:
            which = f'request {index} of {len(prompts)}: ' if len(prompts) > 1 else ''
            raise VlmError('bad_input', f'{which}{reason}; {_remedy(model, prompt, new_tokens)}',
                           about='text')


def _remedy(model, prompt: int, new_tokens: int) -> str:
    """Say which of the two to change: the one that cannot fit even alone, else either."""
    if overflow(model, prompt, 0, '') is not None:
        return 'shorten the text'
    if overflow(model, 0, new_tokens, '') is not None:
        return 'lower max_new_tokens'
    return 'shorten the text, or lower max_new_tokens'
