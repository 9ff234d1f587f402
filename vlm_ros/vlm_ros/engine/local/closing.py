"""Closing a constrained plan in time: the fewest tokens found that complete it from here.

A plan cut by max_new_tokens before its first step ends has no step at all, and a model with
random weights, or a small one that rambles, writes its strings until the budget is gone. The
plan constraint (constrain.py) asks this module, in a row's last tokens only, what completing
the plan would take now and after the token the model is about to write; where that token would
leave too few, the row takes the first token of the completion instead. A plan that ends within
its budget on its own is never touched: the completion found closes strings, arrays and objects
first and gives the shortest value where one is required, so wherever it does not fit, the
model's own ending could not fit either. It is not always the shortest: where the grammar offers
keys or enum values, the search takes the first its candidates reach (``bbox_2d``, four
numbers, before ``point_2d``, two), so a completion known from earlier may be shorter, and a
row keeps whichever is shorter.
"""

from typing import Optional

# Tried in this order where the grammar forces no bytes: closers first, then the separator of
# an array that needs more items (a box's four numbers), then the bytes that can start a
# required value (a string's first character, a digit, the rest of a skill's name), then UTF-8
# continuation bytes, which end a character whose first bytes a token left open (the least
# second byte of each lead byte is one of 0x80, 0x90 and 0xa0).
_CANDIDATES = (b'"', b']', b'}', b',') + tuple(
    bytes([byte]) for byte in b'abcdefghijklmnopqrstuvwxyz0123456789_-ABCDEFGHIJKLMNOPQRSTUVWXYZ '
) + (b'\x80', b'\x90', b'\xa0')
MAX_CLOSING_BYTES = 256  # beyond any completion of the plan schema (plan_schema.py)
MAX_CACHED = 4096  # texts whose tokens a Closer keeps (the pieces of a schema's completions)


class Closer:
    """Completions of plans, for one tokenizer (llguidance's view of it); shared by threads.

    Tokenizing costs 13 µs a call in llguidance's own view (0.5 µs where the view of
    grammar_tokenizer.py kept it), and the same few pieces come back in every search: their
    tokens are kept here too. A search runs on the row's matcher itself and rolls its tokens
    back: the first token a copy of a matcher consumes costs 60-140 µs (the copy's parser
    state is made then), against 3 µs on the matcher.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.eos = tokenizer.eos_token
        self._tokens: dict = {}
        self._candidates = [(candidate, tokens) for candidate in _CANDIDATES
                            if (tokens := tokenizer.tokenize_bytes(candidate))]

    def tokens(self, text: bytes) -> list:
        """Return the tokens of text, kept for the next search."""
        tokens = self._tokens.get(text)
        if tokens is None:
            if len(self._tokens) >= MAX_CACHED:
                self._tokens = {}  # a new dict: a thread still reading the old one is fine
            tokens = self._tokens[text] = self._tokenizer.tokenize_bytes(text)
        return tokens

    def closing_tokens(self, matcher) -> Optional[list]:
        """Return the tokens that complete matcher's text into an accepted plan, or None.

        matcher is left as it was: the search consumes its pieces on it, then rolls them back.
        [] means the plan is complete. None: no completion found (an error state, or a grammar
        this search does not cover); the caller then leaves the row to the model.
        """
        consumed, text = 0, b''
        try:
            while not matcher.is_accepting():
                if matcher.is_error() or len(text) > MAX_CLOSING_BYTES:
                    return None
                piece = matcher.compute_ff_bytes()
                piece, tokens = (piece, self.tokens(piece)) if piece else \
                    self._first_allowed(matcher)
                if tokens and self.completes(matcher, tokens):
                    text += piece  # the last piece: consuming it would stop the matcher (30 µs)
                    break
                taken = matcher.try_consume_tokens(tokens) if tokens else 0
                consumed += taken
                if not tokens or taken != len(tokens):
                    return None
                text += piece
        finally:
            if consumed and not matcher.rollback(consumed):
                raise RuntimeError(f'the grammar matcher could not roll back {consumed} tokens')
        tokens = self.tokens(text) if text else []
        # The text as one piece is tokenized at least as tightly as piece by piece; check that
        # the grammar takes those tokens (it judges bytes: any tokenization of allowed text).
        if matcher.validate_tokens(tokens) != len(tokens):
            return None
        return tokens

    def completes(self, matcher, tokens: list) -> bool:
        """Tell whether tokens, after matcher's text, make a whole plan (matcher unchanged).

        The grammar takes the end of the text (EOS) only where the plan is whole: one check of
        the tokens with EOS after them, about 1 µs, where consuming them on a copy took 60.
        """
        if not tokens:
            return matcher.is_accepting()
        return matcher.validate_tokens([*tokens, self.eos]) == len(tokens) + 1

    def rest_after(self, matcher, chosen: int, known: list) -> Optional[list]:
        """Return the rest of known's text after chosen's, where it completes the plan; or None.

        A token that writes the first bytes of a known completion (``",`` of ``", "skill"``)
        leaves the rest of it to write: a few µs to check, where a search takes 50-150.
        """
        text, start = self._tokenizer.decode_bytes(known), self._tokenizer.decode_bytes([chosen])
        if not text.startswith(start):
            return None
        rest = self.tokens(text[len(start):]) if len(text) > len(start) else []
        return rest if self.completes(matcher, [chosen, *rest]) else None

    def _first_allowed(self, matcher) -> tuple:
        for candidate, tokens in self._candidates:
            if matcher.validate_tokens(tokens) == len(tokens):
                return candidate, tokens
        return b'', []

    def window(self, matcher) -> int:
        """Return how many last tokens of a budget need the search, from a fresh matcher.

        No state needs more than the whole least plan, which the fresh matcher's completion
        is; one more token covers the look-ahead of the model's next token.
        """
        tokens = self.closing_tokens(matcher)
        return (len(tokens) if tokens is not None else MAX_CLOSING_BYTES) + 2


class RowClosing:
    """Close one row's plan in time, keeping a known completion from one token to the next.

    A known completion (tokens that complete the row's text) is checked again after a token in
    a few µs, where a search takes 100-250: the search runs only where the known one would not
    fit, or no longer completes the text. Where the row must take a completion's first token
    now, the shorter of the known one and the search's decides. Nothing is shared between
    rows: a row decodes the same whatever other rows and plans were closed before it.
    """

    def __init__(self, closer: Closer):
        self._closer = closer
        self._known = None  # tokens completing the text as the last decision left it
        self._expected = None  # the token that decision let through or forced; None: any
        self._shortest = False  # whether a search from here finds no shorter one than known

    def token(self, matcher, left: int, chosen: Optional[int],
              last: Optional[int]) -> Optional[int]:
        """Return the token the row must take to stay completable in left tokens, or None.

        left counts the token about to be taken; last is the token the row took before (which
        matcher has consumed). chosen is the token the model would take (greedy decoding knows
        it; None when sampling, which is then only stopped at the last moment). None: the
        model's own token still leaves room, or no completion is found.
        """
        known, shortest = self._known, self._shortest
        closer = self._closer
        if known is not None and last != self._expected and not closer.completes(matcher, known):
            known = None  # a sampled token changed what completes the text
        if known is None or len(known) >= left and not shortest:
            known, shortest = self._search(matcher, known), True
        if not known:
            return self._keep(None, None)  # complete (only its end is allowed), or not found
        if len(known) >= left:
            return self._take(known, shortest)  # the last moment: any other token cuts the plan
        if chosen is None:
            return self._keep(known, None, shortest)
        if chosen == known[0]:
            return self._keep(known[1:], chosen, shortest)  # the model closes it itself
        if closer.completes(matcher, [chosen, *known]):
            return self._keep(known, chosen)  # it fits after the model's token: left - 1 more
        rest = closer.rest_after(matcher, chosen, known)  # the model's token began known's text
        if rest is not None and len(rest) <= left - 1:
            return self._keep(rest, chosen)
        rest = self._after(matcher, chosen)
        if rest is not None and len(rest) <= left - 1:
            return self._keep(rest, chosen, True)
        if not shortest:
            known, shortest = self._search(matcher, known) or known, True
        return self._take(known, shortest)

    def _search(self, matcher, known: Optional[list]) -> Optional[list]:
        """Return the search's completion, or known where that is shorter (or none is found).

        Known completes the text too, and fits the tokens left: taking a longer one at the last
        moment would cut the plan.
        """
        found = self._closer.closing_tokens(matcher)
        return known if found is None or known is not None and len(known) < len(found) \
            else found

    def _after(self, matcher, chosen: int) -> Optional[list]:
        """Return the search's completion after chosen (None: none), matcher as it was."""
        if matcher.try_consume_tokens([chosen]) != 1:
            return None
        try:
            return self._closer.closing_tokens(matcher)
        finally:
            if not matcher.rollback(1):
                raise RuntimeError('the grammar matcher could not roll back the token tried')

    def _keep(self, known: Optional[list], expected: Optional[int],
              shortest: bool = False) -> None:
        self._known, self._expected, self._shortest = known, expected, shortest

    def _take(self, known: list, shortest: bool = False) -> int:
        self._keep(known[1:], known[0], shortest)
        return known[0]
