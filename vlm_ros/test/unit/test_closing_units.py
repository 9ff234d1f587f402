"""A constrained plan is whole when its token budget ends, and one that fits is never touched.

The model is a scorer the test writes (greedy decoding takes its best allowed token): one that
follows a plan's own tokens, and adversaries that take the lowest-id or highest-id token, or
write letters for as long as the grammar lets them. The oracle is the plan schema, checked
here by hand from json.loads, not by the grammar engine that does the closing.
"""

import json

import pytest
import torch
from vlm_ros.engine.local import constrain
from vlm_ros.engine.plan_schema import (
    MAX_BOX_VALUE,
    MAX_INSTRUCTION_CHARS,
    MAX_STEPS,
    MAX_TARGET_CHARS,
)
from vlm_ros.models.tokenizer import build_tokenizer

SKILLS = ('pick', 'place', 'push')
PLAN = ('{"steps": [{"instruction": "pick up the red block", "skill": "pick", "target": "red '
        'block"}, {"instruction": "put it in the bin", "skill": "place", "target": "bin"}]}')


@pytest.fixture(scope='module')
def grammars():
    tokenizer = build_tokenizer(bos_token=None, eos_token='</s>', pad_token='<pad>')
    return constrain.GrammarCache(tokenizer, {tokenizer.eos_token_id}), tokenizer


def _valid_plan(text: str) -> bool:
    """Check text against the plan schema (plan_schema.py) with these skills, by hand."""
    plan = json.loads(text)
    steps = plan['steps']
    return list(plan) == ['steps'] and 1 <= len(steps) <= MAX_STEPS and all(
        list(step)[:3] == ['instruction', 'skill', 'target']
        and _in_order(list(step)[3:], ['bbox_2d', 'point_2d'])  # no cameras: none named
        and step['skill'] in SKILLS
        and 1 <= len(step['instruction']) <= MAX_INSTRUCTION_CHARS
        and len(step['target']) <= MAX_TARGET_CHARS
        and _box(step.get('bbox_2d', [0, 0, 0, 0]), 4)
        and _box(step.get('point_2d', [0, 0]), 2) for step in steps)


def _in_order(keys: list, optional: list) -> bool:
    return keys == [key for key in optional if key in keys]


def _box(values, count: int) -> bool:
    return len(values) == count and all(type(v) is int and 0 <= v <= MAX_BOX_VALUE
                                        for v in values)


def _drive(cache, tokenizer, prefer, budget: int, greedy: bool = True):
    """Decode one plan row as generate does, taking the best token after the constraint."""
    constraint = constrain.for_batch(cache, SKILLS, ['plan'], greedy=greedy, budgets=[budget])
    width, ids = cache.tokenizer.vocab_size, []
    for _ in range(budget):
        scores = prefer(ids, width).unsqueeze(0)
        token = int(constraint(torch.tensor([[ids[-1] if ids else 0]]), scores)[0].argmax())
        if token == tokenizer.eos_token_id:
            break
        ids.append(token)
    return tokenizer.decode(ids), constraint


def _follower(tokenizer, text: str):
    target = tokenizer.encode(text, add_special_tokens=False)

    def prefer(ids, width):
        scores = torch.zeros(width)
        scores[target[len(ids)] if len(ids) < len(target) else tokenizer.eos_token_id] = 1.0
        return scores
    return prefer, len(target)


def _letters(tokenizer):
    letter = tokenizer.convert_tokens_to_ids('a')

    def prefer(ids, width):
        scores = torch.zeros(width)
        scores[letter] = 1.0  # and otherwise the lowest id the grammar allows
        return scores
    return prefer


ADVERSARIES = {'lowest-id': lambda ids, width: -torch.arange(width, dtype=torch.float),
               'highest-id': lambda ids, width: torch.arange(width, dtype=torch.float)}


def test_every_prefix_of_a_plan_closes_into_a_valid_plan(grammars):
    """Cut after each byte, one token a byte: inside a character of several bytes too.

    Also inside a step's box, where a cut one needs its other numbers.
    """
    cache, tokenizer = grammars
    plan = PLAN.replace('red block"}', 'red blöck → 左", "bbox_2d": [12, 345, 6789, 0]}')
    tokens = [token for byte in plan.encode() for token in cache.tokenizer.tokenize_bytes(
        bytes([byte]))]
    assert len(tokens) == len(plan.encode()) > len(plan)
    for cut in range(len(tokens) + 1):
        matcher = cache.matcher(cache.grammar(SKILLS))
        assert matcher.consume_tokens(tokens[:cut])
        rest = cache.closer.closing_tokens(matcher)
        text = cache.tokenizer.decode_bytes(tokens[:cut] + rest).decode()
        assert _valid_plan(text), (cut, text)
        # The search rolled back what it tried: the matcher takes the rest of the plan.
        assert matcher.is_accepting() == (cut == len(tokens))
        assert matcher.consume_tokens(tokens[cut:]) and matcher.is_accepting()
    assert rest == []  # a complete plan needs nothing more


@pytest.mark.parametrize('name', ['lowest-id', 'highest-id', 'letters'])
def test_whatever_the_model_prefers_its_plan_is_whole_when_the_budget_ends(grammars, name):
    """From the least budget that holds a plan up: a whole plan, steps in the skills."""
    cache, tokenizer = grammars
    prefer = _letters(tokenizer) if name == 'letters' else ADVERSARIES[name]
    least = cache.window(cache.grammar(SKILLS)) - 2
    for budget in (least, least + 1, least + 7, 64, 128):
        text, constraint = _drive(cache, tokenizer, prefer, budget)
        assert _valid_plan(text), (budget, text)
        assert len(tokenizer.encode(text, add_special_tokens=False)) <= budget


def test_a_plan_that_fits_its_budget_is_never_touched(grammars):
    cache, tokenizer = grammars
    prefer, length = _follower(tokenizer, PLAN)
    for budget in (length, length + 1, length + 20):
        text, constraint = _drive(cache, tokenizer, prefer, budget)
        assert text == PLAN and constraint.closed == 0 and constraint.closed_at == [None], budget
    text, constraint = _drive(cache, tokenizer, prefer, length - 1)  # one token short
    assert _valid_plan(text) and constraint.closed > 0, text
    assert json.loads(text)['steps'][0] == json.loads(PLAN)['steps'][0], text
    # Where the grammar's tokens began: the model's own up to there (its plan's prefix).
    ids = tokenizer.encode(text, add_special_tokens=False)
    at = constraint.closed_at[0]
    assert 0 < at < len(ids) and PLAN.startswith(tokenizer.decode(ids[:at])), at
    assert not PLAN.startswith(tokenizer.decode(ids[:at + 1]))


def test_sampling_is_closed_at_the_last_moment(grammars):
    """Without greedy decoding the next token is not known: the plan closes when it must."""
    cache, tokenizer = grammars
    text, constraint = _drive(cache, tokenizer, _letters(tokenizer), 48, greedy=False)
    assert _valid_plan(text) and constraint.closed > 0, text
    assert 'a' * 16 in json.loads(text)['steps'][0]['instruction'], text


def test_without_budgets_a_plan_is_cut_where_generation_stops(grammars):
    cache, tokenizer = grammars
    constraint = constrain.for_batch(cache, SKILLS, ['plan'], greedy=True)
    ids = []
    for _ in range(24):
        scores = _letters(tokenizer)(ids, cache.tokenizer.vocab_size).unsqueeze(0)
        ids.append(int(constraint(torch.tensor([[ids[-1] if ids else 0]]), scores)[0].argmax()))
    assert constraint.closed == 0 and not _ends_a_plan(tokenizer.decode(ids))


def _ends_a_plan(text: str) -> bool:
    try:
        return _valid_plan(text)
    except (ValueError, KeyError, TypeError):
        return False


# Optional keys after the required ones: a search completes with the first key its candidates
# reach (bbox_2d, four numbers) where point_2d (two) is shorter.
BOXED = ('{"steps": [{"instruction": "a", "skill": "push", "target": "", "bbox_2d": [1, 2, 3, '
         '4], "point_2d": [5, 6]}, {"instruction": "b", "skill": "push", "target": "", '
         '"point_2d": [7, 8]}, {"instruction": "c", "skill": "pick", "target": "d"}]}')


def test_a_follower_of_a_plan_with_optional_keys_closes_at_every_budget(grammars):
    """Every budget from the least plan's up to the whole plan's: a whole plan within it."""
    cache, tokenizer = grammars
    prefer, length = _follower(tokenizer, BOXED)
    for budget in range(cache.window(cache.grammar(SKILLS)) - 2, length + 1):
        text, _ = _drive(cache, tokenizer, prefer, budget)
        assert _ends_a_plan(text), (budget, text)
        assert len(tokenizer.encode(text, add_special_tokens=False)) <= budget


def test_what_other_plans_closed_before_changes_no_plan(grammars):
    """A row decodes the same after any other plans: a batch's answers are a single one's."""
    cache, tokenizer = grammars
    before, before_length = _follower(tokenizer, '{"steps": [{"instruction": "a", "skill": '
                                      '"push", "target": "", "bbox_2d": [1, 2, 3, 4], '
                                      '"point_2d": [5, 6]}]}')
    prefer, length = _follower(tokenizer, '{"steps": [{"instruction": "b", "skill": "push", '
                               '"target": "", "point_2d": [7, 8]}]}')
    for budget in range(cache.window(cache.grammar(SKILLS)) - 2, length + 1):
        fresh = constrain.GrammarCache(tokenizer, {tokenizer.eos_token_id})
        alone, _ = _drive(fresh, tokenizer, prefer, budget)
        _drive(fresh, tokenizer, before, before_length)  # closes it with point_2d's keys
        after, _ = _drive(fresh, tokenizer, prefer, budget)
        assert _ends_a_plan(alone) and after == alone, (budget, alone, after)


class _Unsteady(constrain.closing.Closer):
    """A Closer whose searches after its first spell their completions a byte a token.

    Its first search (where the row enters its last tokens) finds what the real one finds;
    every later one a longer completion, as a search does where it takes a longer key.
    """

    searched = False

    def closing_tokens(self, matcher):
        tokens = super().closing_tokens(matcher)
        if not tokens or not self.searched:
            self.searched = True
            return tokens
        spelt = [token for byte in self._tokenizer.decode_bytes(tokens)
                 for token in self._tokenizer.tokenize_bytes(bytes([byte]))]
        return spelt if matcher.validate_tokens(spelt) == len(spelt) else tokens


@pytest.mark.parametrize('name', ['lowest-id', 'highest-id', 'letters'])
def test_a_search_longer_than_the_completion_known_does_not_cut_the_plan(name):
    """Where the row must close now, it takes the shorter of the known and the searched one."""
    tokenizer = build_tokenizer(bos_token=None, eos_token='</s>', pad_token='<pad>')
    cache = constrain.GrammarCache(tokenizer, {tokenizer.eos_token_id})
    least = cache.window(cache.grammar(SKILLS)) - 2
    prefer = _letters(tokenizer) if name == 'letters' else ADVERSARIES[name]
    for budget in range(least, least + 24):
        cache.closer = _Unsteady(cache.tokenizer)  # one row: its first search is the real one
        text, _ = _drive(cache, tokenizer, prefer, budget)
        assert _ends_a_plan(text), (budget, text)


class _Counting(constrain.closing.Closer):
    """A Closer that counts its searches."""

    searches = 0

    def closing_tokens(self, matcher):
        self.searches += 1
        return super().closing_tokens(matcher)


def test_a_token_that_begins_the_known_completion_leaves_its_rest_unsearched(grammars):
    """The model's `"` where the completion known begins with `",`: the rest is `, "skill"...`."""
    cache, tokenizer = grammars
    closer = _Counting(cache.tokenizer)
    prefix = tokenizer.encode('{"steps": [{"instruction": "go', add_special_tokens=False)
    matcher = cache.matcher(cache.grammar(SKILLS))
    assert matcher.consume_tokens(prefix)
    known = closer.closing_tokens(matcher)
    quote, letter = (cache.tokenizer.tokenize_bytes(text)[0] for text in (b'"', b'x'))
    assert known[0] != quote  # this tokenizer writes `",` as one token
    rest = closer.rest_after(matcher, quote, known)
    assert _valid_plan(tokenizer.decode(prefix + [quote] + rest))
    assert closer.rest_after(matcher, letter, known) is None  # not how the completion begins
    row = constrain.closing.RowClosing(closer)
    closer.searches = 0
    assert row.token(matcher, 2 * len(known), None, None) is None  # enters its window: a search
    assert row.token(matcher, 2 * len(known), quote, None) is None  # the `"` fits: let through
    assert closer.searches == 1
