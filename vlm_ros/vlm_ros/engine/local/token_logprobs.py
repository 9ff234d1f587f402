"""The log-probability of each token a batch generates, from the model's own distribution.

A logits processor sees the scores of a step before the token is taken, and the token only at
the next step (the last column of the ids): it keeps one step's log-softmax, reads the taken
token's entry from it a step later, and the last step's after generate returns. It runs first
among the batch's processors, so the plan grammar's mask (constrain.py) does not change what
the model itself believed; generate's own processors (none under greedy decoding) run before it.
The grammar is called by the recorder (``then``) rather than listed beside it: transformers'
LogitsProcessorList reads each listed processor's signature at every step (about 10 µs each on
a CPU), which on the tiny test models is a share of a step worth saving.
"""

import torch
from transformers import LogitsProcessor

from .answer_text import answer_text


class TokenLogProbs(LogitsProcessor):
    """Record, per row, the natural-log probability of every token the row takes."""

    def __init__(self, batch: int, then=None):
        self.rows = [[] for _ in range(batch)]
        self._last = None  # the previous step's log-softmax, batch x vocabulary
        self._then = then  # the processor that runs next (the plan grammar), or None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """Read the previous step's log-probability of each row's token; keep this step's."""
        if self._last is not None:
            self._take(input_ids[:, -1])
        self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores if self._then is None else self._then(input_ids, scores)

    def finish(self, last_tokens: torch.LongTensor) -> list:
        """Add the last step's tokens (no call follows them); return the rows' lists."""
        if self._last is not None:
            self._take(last_tokens)
            self._last = None
        return self.rows

    def _take(self, tokens: torch.LongTensor) -> None:
        picked = self._last.gather(1, tokens.to(self._last.device).unsqueeze(1)).squeeze(1)
        for row, value in zip(self.rows, picked.tolist(), strict=True):
            row.append(value)


def text_logprobs(tokenizer, tokens: list, logprobs: list, eos: set, steps: bool) -> tuple:
    """Return (logprobs, ends) of the text's tokens: the closing EOS is no text.

    ends[i] is where token i's text ends in the decoded text, computed only for answers with
    steps (a decode per token); () otherwise.
    """
    count = len(tokens) - (1 if tokens and tokens[-1] in eos else 0)
    if not steps:
        return tuple(logprobs[:count]), ()
    ends = tuple(len(answer_text(tokenizer, tokens[:index + 1]))
                 for index in range(count))
    return tuple(logprobs[:count]), ends
