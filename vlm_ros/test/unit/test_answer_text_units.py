"""An answer's text keeps the box markup its tokenizer makes special tokens, and nothing else."""

import pytest
from engine_fixtures import QWEN2_GROUND
from vlm_ros.engine.grounding import is_markup_token, parse_box, without_boxes
from vlm_ros.engine.local.answer_text import answer_text
from vlm_ros.engine.local.inputs import reserved_tokens
from vlm_ros.models.tokenizer import build_tokenizer

QWEN_MARKERS = ['<|object_ref_start|>', '<|object_ref_end|>', '<|box_start|>', '<|box_end|>']


def _qwen_tokenizer():
    """Qwen2-VL's layout: chat markers and box markers all special tokens."""
    return build_tokenizer(bos_token=None, eos_token='<|im_end|>', pad_token='<|endoftext|>',
                           special_tokens=['<|im_start|>', *QWEN_MARKERS])


def _florence_tokenizer():
    """Florence-2's: its location bins special tokens beside </s>."""
    return build_tokenizer(bos_token='<s>', eos_token='</s>', pad_token='<pad>',
                           special_tokens=[f'<loc_{n}>' for n in range(1000)])


@pytest.mark.parametrize('tokenizer, text', [
    (_qwen_tokenizer(), QWEN2_GROUND),
    (_florence_tokenizer(), 'red block<loc_328><loc_333><loc_500><loc_667>'),
])
def test_box_markup_stays_and_end_of_text_and_padding_go(tokenizer, text):
    tokens = [tokenizer.pad_token_id] + tokenizer.encode(text, add_special_tokens=False) + [
        tokenizer.eos_token_id]
    assert tokenizer.decode(tokens, skip_special_tokens=True) != text  # what it was before
    assert answer_text(tokenizer, tokens) == text
    assert parse_box(answer_text(tokenizer, tokens)) is not None


def test_a_text_without_markup_decodes_as_without_special_tokens():
    tokenizer = _qwen_tokenizer()
    for text in ('pick up the red block', '{"steps": [{"skill": "pick"}]}', ' a\n b '):
        tokens = tokenizer.encode('<|im_start|>' + text, add_special_tokens=False) + [
            tokenizer.eos_token_id, tokenizer.pad_token_id]
        assert answer_text(tokenizer, tokens) == tokenizer.decode(
            tokens, skip_special_tokens=True) == text


def test_markup_tokens_are_box_notations_only():
    assert all(is_markup_token(token) for token in [*QWEN_MARKERS, '<loc_0>', '<loc0512>'])
    assert not any(is_markup_token(token) for token in (
        '<|im_end|>', '<|endoftext|>', '</s>', '<pad>', '<image>', '<|box_start|>x', 'loc_5'))


def test_a_targets_words_leave_qwen2_vls_markers_out():
    assert without_boxes(QWEN2_GROUND) == 'the red block'


@pytest.mark.parametrize('tokenizer, markup', [(_qwen_tokenizer(), QWEN_MARKERS),
                                               (_florence_tokenizer(), ['<loc_0>', '<loc_999>'])])
def test_a_text_may_hold_box_markup_but_no_other_special_token(tokenizer, markup):
    """Re-plans and verifies quote a plan's steps, markup and all: it must not be refused."""
    reserved = reserved_tokens(tokenizer)
    assert not reserved & set(markup) and tokenizer.eos_token in reserved
    assert '<|im_start|>' in reserved or tokenizer.bos_token in reserved
