"""Constrained decoding: plan rows of a batch can only write JSON that follows the plan schema.

llguidance (the grammar engine behind llama.cpp's, vLLM's and SGLang's structured output; the
comparison with xgrammar and outlines-core is in docs/BENCHMARKS.md) computes, before each
decoding step, the set of tokens that keep a row's text a prefix of a valid plan; the other
logits become -inf. Each row has its own matcher, so plan rows and caption rows share a batch,
and a row that ended or was cancelled no longer costs anything. The mask is applied in
generate's logits processors, outside the model's forward, so the compiled decode path is
unchanged; graph decoding (graph_decode.py) calls the same processor on each replayed step's
scores. Grammars are compiled once per (schema, tokenizer) and kept (GrammarCache).
"""

import json
import threading
from typing import Optional

import numpy as np
import torch
from transformers import LogitsProcessor

from ..errors import VlmError
from ..plan_schema import CONSTRAIN_MODES, PLAN_TASKS, plan_schema, schema_key
from . import closing, grammar_tokenizer

# The plan prompt's own layout: no free whitespace, which a model with random weights would
# otherwise write until its token budget ends.
JSON_OPTIONS = {'whitespace_flexible': False, 'item_separator': ', ', 'key_separator': ': '}
_NUMPY_FLOATS = (torch.float32, torch.float64, torch.float16)  # views numpy can write into
MAX_GRAMMARS = 64  # compiled grammars kept (skills x the cameras requests name)
# Rows a kept matcher is copied for before a new one replaces it: the copies share its lexer,
# whose states (1-2 kB each) would otherwise grow for as long as the node runs.
MAX_COPIES = 4096


def _llguidance():
    """Import llguidance (in requirements.txt [local]); None where it is missing."""
    try:
        import llguidance
        import llguidance.hf
    except ImportError:
        return None
    return llguidance


class GrammarCache:
    """The tokenizer's llguidance view and the compiled grammar per schema, made once each.

    Wrapping a tokenizer takes up to a second and a grammar a few milliseconds; both are
    read-only afterwards, so every request and thread shares them. The view keeps the
    tokenizations llguidance asks for (grammar_tokenizer.py), most of a mask's cost where the
    grammar forces bytes. A row's matcher is a copy of a kept matcher of its grammar: making
    a matcher takes about 0.5 ms, a copy a few µs, and the copies share the lexer states that
    earlier copies built, so their masks and checks cost less than a new matcher's
    (docs/BENCHMARKS.md).
    """

    def __init__(self, tokenizer, eos_ids: set):
        lib = _llguidance()
        if lib is None:
            raise VlmError('unsupported', 'constrained decoding needs the llguidance package '
                           '(pip install llguidance); or set constrain_plans to off')
        eos = sorted(eos_ids)
        try:
            view = lib.hf.from_tokenizer(tokenizer, eos_token=eos)
        except Exception as exc:  # noqa: BLE001 - any tokenizer llguidance cannot read
            raise VlmError('unsupported', f'constrained decoding cannot use this tokenizer '
                           f'({type(tokenizer).__name__}: {type(exc).__name__}: '
                           f'{str(exc)[:200]}); set constrain_plans to off') from exc
        try:
            self.tokenizer = grammar_tokenizer.kept_view(lib, tokenizer, view, eos)
        except Exception:  # noqa: BLE001 - any tokenizer it cannot copy: llguidance's own view
            self.tokenizer = view
        self._lib = lib
        self.eos_ids = frozenset(eos_ids)
        self._grammars: dict = {}
        self._windows: dict = {}
        self._kept: dict = {}  # grammar: [the matcher rows copy, copies made of it]
        self.closer = closing.Closer(self.tokenizer)
        self._lock = threading.Lock()

    def grammar(self, skills: tuple, cameras: tuple = ()) -> str:
        """Return the compiled grammar of the plan schema of skills and a request's cameras.

        Raises VlmError where the grammar engine refuses it. The grammars are kept: at most
        MAX_GRAMMARS, since requests may each name other cameras.
        """
        key = schema_key(skills, cameras)
        with self._lock:
            if key not in self._grammars:
                if len(self._grammars) >= MAX_GRAMMARS:
                    self._grammars, self._windows, self._kept = {}, {}, {}
                grammar = self._lib.LLMatcher.grammar_from_json_schema(
                    json.dumps(plan_schema(skills, cameras)), overrides=JSON_OPTIONS)
                error = self._lib.LLMatcher.validate_grammar(grammar, self.tokenizer)
                if error:
                    raise VlmError('bad_input', f'the plan schema of skills {skills} is refused '
                                   f'by the grammar engine: {error[:300]}')
                self._grammars[key] = grammar
            return self._grammars[key]

    def matcher(self, grammar: str):
        """Return a matcher of grammar at the start of a plan, for one row of one batch."""
        with self._lock:
            kept = self._kept.get(grammar)
            if kept is None or kept[1] >= MAX_COPIES:
                kept = self._kept[grammar] = [
                    self._lib.LLMatcher(self.tokenizer, grammar, log_level=0), 0]
            kept[1] += 1
            return kept[0].deep_copy()

    def window(self, grammar: str) -> int:
        """Return the last tokens of a budget in which plans of grammar may need closing."""
        window = self._windows.get(grammar)
        if window is None:  # two threads may both compute it: the same number
            window = self._windows[grammar] = self.closer.window(self.matcher(grammar))
        return window


class PlanConstraint(LogitsProcessor):
    """Mask each constrained row's logits to the tokens its grammar allows next.

    ``matchers`` holds one matcher per row, None for a row left free (a caption in the batch).
    generate calls this once per step with the ids so far: the last column is the token each
    row took at the previous step, which its matcher consumes before masking the next one.
    ``budgets`` (per row: its max_new_tokens) with ``closer`` and ``window`` (the last tokens
    that may need it) close each plan in time (closing.py); without them, a plan is cut where
    generate stops. A row that took one of ``eos_ids`` has ended: generate pads it from then
    on, whatever its logits, so it costs no grammar call while the batch's other rows go on.
    """

    def __init__(self, matchers: list, vocab_size: int, greedy: bool = False,
                 budgets: Optional[list] = None, closer=None, window: int = 0,
                 eos_ids: frozenset = frozenset()):
        self._matchers = matchers
        self._eos_ids = eos_ids
        self._done = [False] * len(matchers)  # per row: ended, or its text left the grammar
        self._vocab = vocab_size
        self._greedy = greedy
        self._budgets = budgets if closer is not None else None
        self._closings = [closing.RowClosing(closer) if matcher is not None and closer else None
                          for matcher in matchers]
        self._window = window
        self._step = 0  # the tokens each row has taken so far
        self._words = (vocab_size + 31) // 32  # of a mask llguidance writes
        self._bitmask = None  # per row: its mask, or all ones (allowed); made at the first step
        self._mask_at, self._numpy = 0, False  # its address, and whether numpy views the logits
        self.checked = 0  # row-steps under the grammar (vlm_benchmark's share constrained)
        self.masked = 0  # of those, the row-steps whose logits had to be masked
        self.closed = 0  # row-steps that took the closing token instead of the model's
        self.closed_at = [None] * len(matchers)  # per row: its first such step (its token index)

    @property
    def followed(self) -> list:
        """Per row: whether the grammar kept all of the row's text (free rows: False)."""
        return [matcher is not None and not matcher.is_error() for matcher in self._matchers]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        """Advance each constrained row's matcher by its last token; mask its next logits."""
        rows, near = [], []
        if self._bitmask is None:  # one word per 32 of the model's ids, which may be more
            self._bitmask = np.full((len(scores), max(self._words, -(-scores.shape[1] // 32))),
                                    -1, dtype=np.int32)
            self._mask_at = self._bitmask.ctypes.data  # never reallocated
            # numpy reads and writes CPU tensors in place, without a tensor op's overhead
            self._numpy = scores.device.type == 'cpu' and scores.dtype in _NUMPY_FLOATS
        row_bytes, mask_at, numpy = self._bitmask.shape[1] * 4, self._mask_at, self._numpy
        if self._step:
            last = (input_ids.numpy() if numpy else input_ids)[:, -1].tolist()
        else:
            last = None
        # Greedy decoding takes the best token: where the grammar allows it, masking the others
        # changes nothing, and checking one token costs far less than the mask of all of them.
        best = _best(scores, numpy) if self._greedy else None
        for row, matcher in enumerate(self._matchers):
            if matcher is None or self._done[row]:
                continue
            if last is not None and not matcher.is_stopped() and \
                    not matcher.consume_token(last[row]):
                self._done[row] = True  # an error state: the row's text is no longer followed
                continue
            if last is not None and last[row] in self._eos_ids:
                self._done[row] = True
                continue
            self.checked += 1
            if self._budgets is not None and \
                    self._budgets[row] - self._step <= self._window:
                near.append(row)
            if best is not None and best[row] < self._vocab and \
                    matcher.validate_tokens([best[row]]) == 1:
                continue
            # Once the plan is complete (stopped), the mask allows only the end of the text.
            matcher.unsafe_compute_mask_ptr(mask_at + row * row_bytes, self._words * 4)
            rows.append(row)
        if rows:
            self._mask(rows, scores)
        if near:  # the token each row would now take: one pick over the batch, not one a row
            chosen = [None] * len(scores) if not self._greedy else \
                _best(scores, numpy) if rows else best  # unmasked: still the best
            for row in near:
                self._close_in_time(row, scores, chosen[row],
                                    last[row] if last is not None else None)
        self._step += 1
        return scores

    def _mask(self, rows: list, scores: torch.FloatTensor) -> None:
        """Set the logits the grammar refuses to -inf: one fill over the batch."""
        self.masked += len(rows)
        bits = self._bitmask
        if bits.shape[1] > self._words:  # ids beyond the tokenizer's words: no tokens
            bits[rows, self._words:] = 0
        # llguidance's masks are 32-bit words, token i at bit i % 32 of word i // 32: as
        # little-endian bytes, bit i % 8 of byte i // 8. The rows not masked are all ones.
        blocked = np.unpackbits(bits.view(np.uint8), axis=1, count=scores.shape[1],
                                bitorder='little') == 0
        bits.fill(-1)  # all allowed again, until a row's grammar writes its next mask
        if self._numpy:
            np.putmask(scores.numpy(), blocked, -np.inf)
        else:
            scores.masked_fill_(torch.from_numpy(blocked).to(scores.device), float('-inf'))

    def _close_in_time(self, row: int, scores: torch.FloatTensor, chosen: Optional[int],
                       last: Optional[int]) -> None:
        """Leave row only the closing token where chosen (greedy's pick) would cut its plan."""
        token = self._closings[row].token(self._matchers[row], self._budgets[row] - self._step,
                                          chosen if chosen is not None and chosen < self._vocab
                                          else None, last)
        if token is not None and token != chosen:
            scores[row] = float('-inf')
            scores[row, token] = 0.0
            self.closed += 1
            if self.closed_at[row] is None:
                self.closed_at[row] = self._step


def _best(scores: torch.FloatTensor, numpy: bool) -> list:
    """Return each row's best token (numpy: through a numpy view of the logits)."""
    return (scores.numpy().argmax(axis=1) if numpy else scores.argmax(dim=-1)).tolist()


def resolve(config, tokenizer, eos_ids: set) -> tuple:
    """Return (config.constrain_plans' GrammarCache or None, why plans are free or '').

    The cache has the skills' grammar compiled. 'auto' constrains wherever llguidance reads
    the tokenizer, and otherwise says why not; 'on' raises VlmError where it cannot; 'off'
    never constrains. Skills the grammar engine refuses raise VlmError.
    """
    mode = config.constrain_plans
    if mode not in CONSTRAIN_MODES:
        raise VlmError('bad_input', f'constrain_plans must be one of '
                       f'{", ".join(CONSTRAIN_MODES)}; got {mode!r}')
    if mode == 'off':
        return None, ''
    try:
        grammars = GrammarCache(tokenizer, eos_ids)
    except VlmError as exc:
        if mode == 'on':
            raise
        return None, str(exc)
    grammars.grammar(tuple(config.skills))
    return grammars, ''


def for_batch(grammars: Optional[GrammarCache], skills: tuple, tasks: list,
              greedy: bool = False, budgets: Optional[list] = None,
              cameras: Optional[list] = None):
    """Return the PlanConstraint of a batch's rows (plan rows constrained), or None.

    greedy: the batch decodes greedily (no sampling), so a row whose best token the grammar
    allows needs no mask, and the token a row is about to take is known. budgets: each row's
    max_new_tokens, within which its plan is closed (None: plans are cut where generate stops).
    cameras: each row's camera names (Request.camera_names), which its steps may name.
    """
    if grammars is None or not any(task in PLAN_TASKS for task in tasks):
        return None
    cameras = [tuple(names) for names in cameras or [()] * len(tasks)]
    # One grammar per distinct camera list: its cache key is the whole schema as text.
    grammar_of = {names: grammars.grammar(tuple(skills), names)
                  for task, names in zip(tasks, cameras, strict=True) if task in PLAN_TASKS}
    return PlanConstraint([grammars.matcher(grammar_of[names]) if task in PLAN_TASKS else None
                           for task, names in zip(tasks, cameras, strict=True)],
                          grammars.tokenizer.vocab_size, greedy, budgets,
                          grammars.closer if budgets is not None else None,
                          max(grammars.window(grammar) for grammar in grammar_of.values()),
                          grammars.eos_ids)
