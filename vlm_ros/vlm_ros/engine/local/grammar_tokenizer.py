"""llguidance's view of a tokenizer, which keeps the tokenizations the grammar asks for.

Where the plan grammar forces bytes (a key's name, the separator after a value), llguidance's
mask is the first token of those bytes as the tokenizer writes them after the row's last token,
so it tokenizes them at every such step: 5-10 µs in the Rust HF tokenizer for a few bytes, most
of what a mask costs there. The texts are the schema's few pieces after one of the vocabulary's
tokens, so they come back in every plan. llguidance takes a Python tokenizer (its
TokenizerWrapper protocol: the tokens' bytes and a function from text to ids); this one gives
it the same bytes and the same ids as its own HF view, remembered. It is used only where it
proves equal to that view (every token's bytes, special flags and probe texts); elsewhere the
HF view is kept as it is. Making and checking it adds to configure what making llguidance's own
view takes, less the HF JSON: 0.14 s for a 49k vocabulary, 0.6 s for 151k (docs/BENCHMARKS.md).
"""

import copy

from tokenizers import normalizers

MAX_KEPT = 65536  # tokenizations kept; then forgotten all at once, and kept again as asked
# Texts whose tokens must be the same both ways before the kept view is used: the plan's own
# pieces, text beyond ASCII, and bytes that are not UTF-8 (llguidance tokenizes those itself).
_PROBES = (b'{"steps": [{"instruction": "', b'", "skill": "', b'"}, {"', b'"}]}',
           b'Stack the red cup on the plate, then turn left.',
           'vérifier la tasse · 把杯子 🙂'.encode(), b'\xe2\x82', b'a\xff\xfeb', b'  \n\t x')


class KeptTokenizations:
    """A tokenizer in llguidance's TokenizerWrapper protocol, with its tokenizations kept."""

    is_tokenizer_wrapper = True  # what llguidance checks before it reads the attributes below

    def __init__(self, view, backend):
        """Take every token's bytes from llguidance's own view, and texts' ids from backend."""
        self.eos_token_id = view.eos_token
        self.bos_token_id = None  # llguidance keeps it but never reads it
        self.tokens = [view.decode_bytes([token]) for token in range(view.vocab_size)]
        self.special_token_ids = [token for token in range(view.vocab_size)
                                  if view.is_special_token(token)]
        self._encode = backend.encode
        self._kept: dict = {}

    def __call__(self, text: str) -> list:
        """Return the ids of text, kept for the next time it is asked for."""
        ids = self._kept.get(text)
        if ids is None:
            if len(self._kept) >= MAX_KEPT:
                self._kept = {}
            ids = self._kept[text] = self._encode(text, add_special_tokens=False).ids
        return ids


def kept_view(lib, hf_tokenizer, view, eos_ids: list):
    """Return a view of hf_tokenizer that keeps its tokenizations, or view where they differ.

    view is llguidance's own (lib.hf.from_tokenizer). Texts are tokenized as llguidance does:
    without padding, truncation and the Prepend steps of a Sequence normalizer. The kept view
    is checked against view before it is used.
    """
    backend = copy.copy(hf_tokenizer.backend_tokenizer)
    backend.no_padding()
    backend.no_truncation()
    if isinstance(backend.normalizer, normalizers.Sequence):
        backend.normalizer = normalizers.Sequence(
            [step for step in backend.normalizer if not isinstance(step, normalizers.Prepend)])
    wrapper = KeptTokenizations(view, backend)
    kept = lib.LLTokenizer(wrapper, eos_token=eos_ids)
    special = set(wrapper.special_token_ids)
    same = (kept.vocab_size == view.vocab_size and kept.eos_tokens == view.eos_tokens
            and kept.is_canonical == view.is_canonical
            and all(kept.decode_bytes([token]) == wrapper.tokens[token]
                    and kept.is_special_token(token) == (token in special)
                    for token in range(view.vocab_size))
            and all(kept.tokenize_bytes(text) == view.tokenize_bytes(text) for text in _PROBES))
    return kept if same else view
