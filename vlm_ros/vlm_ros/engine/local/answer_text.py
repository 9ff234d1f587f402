"""An answer's text from its tokens: control tokens dropped, box and location markup kept.

``decode(skip_special_tokens=True)`` drops every special token, and the notations grounding
models write boxes in are special tokens of their own tokenizers: Qwen2-VL's ``<|box_start|>``
and ``<|object_ref_start|>`` markers, Florence-2's ``<loc_N>`` bins. Dropped, a written box
loses what says it is one (grounding.py reads the notations). Here only the special tokens
that are not such markup are dropped: end of text, padding, chat turn markers.
"""

import weakref

from ..grounding import is_markup_token

_DROPPED = weakref.WeakKeyDictionary()  # tokenizer -> the ids its answers' texts leave out


def special_tokens(tokenizer) -> dict:
    """Return {id: text} of tokenizer's special tokens: added ones marked special, its own."""
    special = {index: getattr(token, 'content', str(token))
               for index, token in tokenizer.added_tokens_decoder.items()
               if getattr(token, 'special', False)}
    special.update(zip(tokenizer.all_special_ids,
                       tokenizer.convert_ids_to_tokens(tokenizer.all_special_ids), strict=True))
    return special


def dropped_ids(tokenizer) -> frozenset:
    """Return the ids of tokenizer's special tokens that are not box or location markup."""
    if tokenizer not in _DROPPED:
        _DROPPED[tokenizer] = frozenset(index for index, text in special_tokens(tokenizer).items()
                                        if not is_markup_token(text))
    return _DROPPED[tokenizer]


def answer_text(tokenizer, tokens) -> str:
    """Return the text of tokens as decode(skip_special_tokens=True), box markup kept."""
    dropped = dropped_ids(tokenizer)
    return tokenizer.decode([token for token in tokens if int(token) not in dropped],
                            skip_special_tokens=False)
