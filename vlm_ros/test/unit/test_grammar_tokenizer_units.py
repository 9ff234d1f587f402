"""The grammar's tokenizer view that keeps tokenizations masks exactly as llguidance's own.

The oracle is llguidance's own view of the same tokenizer (llguidance.hf.from_tokenizer):
along random walks through the plan grammar, taking allowed tokens at random, both views must
write the same mask at every step, forced positions (a key's name) included.
"""

import random

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, trainers
from transformers import PreTrainedTokenizerFast
from vlm_ros.engine.local import constrain, grammar_tokenizer
from vlm_ros.engine.plan_schema import plan_schema
from vlm_ros.models.tokenizer import CORPUS, build_tokenizer

SKILLS = ('pick', 'place', 'push')


def _byte_level():
    return build_tokenizer(bos_token=None, eos_token='</s>', pad_token='<pad>')


def _sentencepiece_like():
    """Train a Llama-2-style BPE: '▁' for spaces, a Prepend normalizer, <0x..> bytes."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=True, unk_token='<unk>'))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend('▁'),
                                                 normalizers.Replace(' ', '▁')])
    tokenizer.decoder = decoders.Sequence([decoders.Replace('▁', ' '), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(' ', 1, 0)])
    byte_tokens = [f'<0x{byte:02X}>' for byte in range(256)]
    tokenizer.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=700, special_tokens=['<unk>', '<s>', '</s>', *byte_tokens]))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token='<unk>',
                                   bos_token='<s>', eos_token='</s>', pad_token='</s>')


def _views(hf_tokenizer):
    lib = constrain._llguidance()
    eos = [hf_tokenizer.eos_token_id]
    view = lib.hf.from_tokenizer(hf_tokenizer, eos_token=eos)
    return lib, view, grammar_tokenizer.kept_view(lib, hf_tokenizer, view, eos)


def _grammar(lib) -> str:
    return lib.LLMatcher.grammar_from_json_schema(plan_schema(SKILLS),
                                                  overrides=constrain.JSON_OPTIONS)


@pytest.mark.parametrize('make', [_byte_level, _sentencepiece_like],
                         ids=['byte-level', 'sentencepiece-like'])
def test_the_kept_view_writes_the_masks_llguidance_own_view_writes(make):
    lib, view, kept = _views(make())
    assert kept is not view  # the kept view is used for this tokenizer
    grammar, rng = _grammar(lib), random.Random(7)
    words = (view.vocab_size + 31) // 32
    masks = np.zeros((2, words), dtype=np.int32)
    steps = forced = 0
    for _ in range(40):
        own = lib.LLMatcher(view, grammar, log_level=0)
        tested = lib.LLMatcher(kept, grammar, log_level=0)
        while not own.is_stopped() and steps < 4000:
            own.unsafe_compute_mask_ptr(masks.ctypes.data, words * 4)
            tested.unsafe_compute_mask_ptr(masks.ctypes.data + words * 4, words * 4)
            assert np.array_equal(masks[0], masks[1]), f'masks differ after {own.get_error()}'
            allowed = np.flatnonzero(np.unpackbits(masks[0].view(np.uint8), bitorder='little'))
            forced += len(allowed) == 1
            token = int(rng.choice(allowed))
            took = own.consume_token(token)  # llguidance may refuse what it allowed: alike
            assert tested.consume_token(token) == took
            steps += 1
            if not took:
                break
    assert steps > 1000 and forced > 100  # the walks went deep, through forced positions


def test_a_view_the_tokenizer_does_not_match_is_kept_as_it_is():
    lib = constrain._llguidance()
    other = _sentencepiece_like()
    view = lib.hf.from_tokenizer(other, eos_token=[other.eos_token_id])
    # _byte_level's texts and tokens are not other's: the check finds it, llguidance's own stays
    assert grammar_tokenizer.kept_view(lib, _byte_level(), view, [other.eos_token_id]) is view


def test_kept_tokenizations_are_bounded_and_stay_right_when_forgotten(monkeypatch):
    monkeypatch.setattr(grammar_tokenizer, 'MAX_KEPT', 3)
    hf_tokenizer = _byte_level()
    lib, view, _ = _views(hf_tokenizer)
    wrapper = grammar_tokenizer.KeptTokenizations(view, hf_tokenizer.backend_tokenizer)
    texts = ['pick', ' up the', ' red block', '", "', 'pick', 'bin', ' up the']
    for text in texts:
        assert wrapper(text) == hf_tokenizer.backend_tokenizer.encode(
            text, add_special_tokens=False).ids
        assert len(wrapper._kept) <= 3


def test_a_tokenizer_the_kept_view_cannot_copy_still_constrains(monkeypatch):
    def refuse(*_):
        raise ValueError('cannot copy this tokenizer')

    monkeypatch.setattr(grammar_tokenizer, 'kept_view', refuse)
    hf_tokenizer = _byte_level()
    cache = constrain.GrammarCache(hf_tokenizer, {hf_tokenizer.eos_token_id})
    matcher = cache.matcher(cache.grammar(SKILLS))
    assert matcher.consume_tokens(cache.tokenizer.tokenize_bytes(b'{"steps": [{"'))
    assert not matcher.is_error()


def test_a_tokenization_that_raises_leaves_the_row_out_of_the_grammar_not_the_process():
    hf_tokenizer = _byte_level()
    lib, view, _ = _views(hf_tokenizer)

    class Failing:
        def encode(self, text, add_special_tokens=False):
            raise RuntimeError(f'cannot tokenize {text!r}')

    kept = lib.LLTokenizer(grammar_tokenizer.KeptTokenizations(view, Failing()),
                           eos_token=[hf_tokenizer.eos_token_id])
    matcher = lib.LLMatcher(kept, _grammar(lib), log_level=0)
    # a forced position: llguidance tokenizes the forced bytes to write its mask
    assert matcher.consume_tokens(view.tokenize_bytes(b'{"steps": [{"instruction": "a", "ski'))
    words = (view.vocab_size + 31) // 32
    mask = np.zeros(words, dtype=np.int32)
    matcher.unsafe_compute_mask_ptr(mask.ctypes.data, words * 4)
    assert matcher.is_error() and 'cannot tokenize' in matcher.get_error()
