"""The plan constraint masks what the grammar forbids, row by row, and nothing else.

The oracle is the grammar engine's own validate_tokens, asked token by token: the mask that
generate applies (bit-unpacked, per row, padded to the model's vocabulary) must equal it.
"""

import pytest
import torch
from vlm_ros.engine.local import constrain
from vlm_ros.models.tokenizer import build_tokenizer

SKILLS = ('pick', 'place')


@pytest.fixture(scope='module')
def grammars():
    tokenizer = build_tokenizer(bos_token=None, eos_token='</s>', pad_token='<pad>')
    return constrain.GrammarCache(tokenizer, {tokenizer.eos_token_id}), tokenizer


def _grammar_allows(cache, prefix: list) -> set:
    matcher = cache.matcher(cache.grammar(SKILLS))
    assert matcher.consume_tokens(prefix)
    return {token for token in range(cache.tokenizer.vocab_size)
            if matcher.validate_tokens([token]) == 1}


def _step(constraint, rows: list, width: int, dtype=torch.float32) -> torch.Tensor:
    """Call the constraint as generate does: the ids so far, then fresh logits."""
    return constraint(torch.tensor(rows, dtype=torch.long),
                      torch.zeros(len(rows), width, dtype=dtype))


# bfloat16 logits have no numpy view: they take the fill a GPU's logits take
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
@pytest.mark.parametrize('tasks', [('plan', 'plan'), ('plan', 'caption', 'plan')])
def test_each_plan_row_allows_what_its_grammar_allows_and_free_rows_anything(grammars, tasks,
                                                                              dtype):
    cache, tokenizer = grammars
    constraint = constrain.for_batch(cache, SKILLS, list(tasks))
    width = cache.tokenizer.vocab_size + 7  # a model's vocabulary padded past the tokenizer's
    prefix = tokenizer.encode('{"steps": [{"instruction": "go", "skill": "p',
                              add_special_tokens=False)
    scores = _step(constraint, [[0]] * len(tasks), width, dtype)  # the first consumes nothing
    for token in prefix:
        scores = _step(constraint, [[token]] * len(tasks), width, dtype)
    expected = _grammar_allows(cache, prefix)
    letter = tokenizer.convert_tokens_to_ids
    assert {letter('i'), letter('l')} <= expected and letter('x') not in expected  # pick, place
    for row, task in enumerate(tasks):
        allowed = set(torch.nonzero(scores[row] > float('-inf')).flatten().tolist())
        if task == 'plan':
            assert allowed == expected, (row, sorted(allowed ^ expected)[:10])
        else:
            assert allowed == set(range(width))
    assert constraint.masked == (len(prefix) + 1) * tasks.count('plan')


def test_a_complete_plan_allows_only_its_end_and_counts_as_followed(grammars):
    cache, tokenizer = grammars
    constraint = constrain.for_batch(cache, SKILLS, ['plan', 'caption'])
    plan = tokenizer.encode('{"steps": [{"instruction": "go", "skill": "pick", "target": ""}]}',
                            add_special_tokens=False)
    width = cache.tokenizer.vocab_size
    _step(constraint, [[0], [0]], width)
    for token in plan:
        scores = _step(constraint, [[token], [token]], width)
    allowed = torch.nonzero(scores[0] > float('-inf')).flatten().tolist()
    assert allowed == [tokenizer.eos_token_id]  # no text after the plan: it ends
    _step(constraint, [[tokenizer.eos_token_id], [0]], width)
    assert constraint.followed == [True, False]  # the caption row was never constrained


def test_rows_copy_a_kept_matcher_which_is_made_anew_after_max_copies(monkeypatch):
    """Copies cost µs where a matcher costs 0.5 ms, yet each row's text is its own.

    The copies share the lexer states they build, so a kept matcher serves MAX_COPIES rows
    and then gives way to a new one: those states cannot grow for as long as a node runs.
    """
    tokenizer = build_tokenizer(bos_token=None, eos_token='</s>', pad_token='<pad>')
    cache = constrain.GrammarCache(tokenizer, {tokenizer.eos_token_id})
    grammar = cache.grammar(SKILLS)
    made = []

    class Counting:  # llguidance's LLMatcher, counting the matchers made
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, *args, **kwargs):
            made.append(real(*args, **kwargs))
            return made[-1]

    real = cache._lib.LLMatcher
    monkeypatch.setattr(cache._lib, 'LLMatcher', Counting())
    monkeypatch.setattr(constrain, 'MAX_COPIES', 3)
    rows = [cache.matcher(grammar) for _ in range(7)]
    assert len(made) == 3  # rows 1-3, 4-6, 7
    plan = tokenizer.encode('{"steps": [{"instruction": "go", "skill": "pick", "target": ""}]}',
                            add_special_tokens=False)
    assert rows[0].consume_tokens(plan) and rows[0].is_accepting()
    for row in rows[1:]:  # neither the first row's text nor the kept matchers moved
        assert not row.is_accepting() and row.validate_tokens(plan) == len(plan)
    assert all(not kept.is_accepting() for kept in made)


def test_a_row_that_ended_costs_no_grammar_call_while_the_batch_goes_on(grammars):
    """After its EOS generate pads a row whatever its logits: the grammar leaves them be."""
    cache, tokenizer = grammars
    constraint = constrain.for_batch(cache, SKILLS, ['plan', 'plan'])
    short, long = (tokenizer.encode(f'{{"steps": [{{"instruction": "{words}", "skill": "pick", '
                                    f'"target": ""}}]}}', add_special_tokens=False)
                   for words in ('go', 'go to the table and wait there'))
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = cache.tokenizer.vocab_size
    rows = list(zip([*short, eos] + [pad] * (len(long) - len(short) - 1), long, strict=True))
    alone = constrain.for_batch(cache, SKILLS, ['plan'])  # the long plan in a batch of its own
    _step(constraint, [[0], [0]], width)
    _step(alone, [[0]], width)
    for at, (first, second) in enumerate(rows):
        checked, masked = constraint.checked, constraint.masked
        scores = _step(constraint, [[first], [second]], width)
        ended = at >= len(short)
        assert bool(torch.isfinite(scores[0]).all()) == ended  # an ended row's logits untouched
        assert (constraint.checked - checked, constraint.masked - masked) == \
            ((1, 1) if ended else (2, 2)), at  # not greedy: every row it checks is masked
        assert torch.equal(scores[1], _step(alone, [[second]], width)[0])  # the other goes on
    assert constraint.followed == [True, True]


def _word_level():
    """Return a tokenizer of whole words, which llguidance cannot read (no bytes behind them)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({'<unk>': 0, '</s>': 1, 'pick': 2}, unk_token='<unk>'))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token='<unk>', eos_token='</s>')


@pytest.mark.parametrize('mode', ['auto', 'on', 'off'])
def test_each_mode_constrains_where_it_can_and_auto_says_why_it_cannot(grammars, mode):
    from vlm_ros.engine import EngineConfig, VlmError

    config = EngineConfig(model='m', constrain_plans=mode, skills=SKILLS)
    readable = constrain.resolve(config, grammars[1], {grammars[1].eos_token_id})
    assert (readable[0] is None, readable[1]) == (mode == 'off', '')
    if mode == 'on':
        with pytest.raises(VlmError, match='constrained decoding cannot use this tokenizer'):
            constrain.resolve(config, _word_level(), {1})
        return
    cache, why = constrain.resolve(config, _word_level(), {1})
    assert cache is None
    assert why.startswith('constrained decoding cannot use this tokenizer') == (mode == 'auto')


@pytest.mark.parametrize(('name', 'followed'), [('wrist', [True, False, False]),
                                              ('right', [False, True, False])])
def test_a_row_names_only_its_own_cameras_and_a_lone_image_none(grammars, name, followed):
    """One batch, each row with its request's cameras: a row of one image has none to name."""
    cache, tokenizer = grammars
    rows = [('head', 'wrist'), ('left', 'right'), ()]
    constraint = constrain.for_batch(cache, SKILLS, ['plan'] * 3, cameras=rows)
    width = cache.tokenizer.vocab_size
    _step(constraint, [[0]] * 3, width)
    text = f'{{"steps": [{{"instruction": "go", "skill": "pick", "target": "cup", "camera": ' \
        f'"{name}"}}]}}'
    for token in tokenizer.encode(text, add_special_tokens=False):
        _step(constraint, [[token]] * 3, width)
    assert constraint.followed == followed
