"""
Turn a vision-language model's free-form answer into plan steps for a VLA policy.

Models prompted for ``{"steps": [{"instruction", "skill", "target"}]}`` still wrap it in prose or
fences, use Python quotes, rename keys, answer with a list, or hit ``max_new_tokens``. So the
parser is tolerant and total: it never raises, never evaluates the text, and runs in time about
linear in its length (a hand-written scanner; no regular expression here can backtrack badly).
"""

import json
import re
from dataclasses import dataclass
from typing import Optional

from .grounding import ViewBox, parse_box, step_box
from .plan_schema import CAMERA_KEY


@dataclass(frozen=True)
class PlanStep:
    """One step for the policy; skill and target stay '' when the model did not give them.

    args: the skill's arguments as (name, value) pairs, in the model's order ('args' object).
    box: the target's box (or point) in the model's view, where the model wrote one
    (grounding.py); camera: the camera whose image it is in, where the step names one.
    """

    instruction: str
    skill: str = ''
    target: str = ''
    args: tuple = ()
    box: Optional[ViewBox] = None
    camera: str = ''


@dataclass(frozen=True)
class ParsedPlan:
    """
    The steps and how they were found.

    ``form`` is 'json', 'json_truncated' (the text ended inside the JSON), 'json_salvaged' (the
    JSON was malformed and the steps come from a part of it that parsed), 'list' or 'none';
    ``valid`` is True when at least one step was parsed. A JSON plan with no usable step keeps its
    JSON form with ``valid=False``: "planned nothing" or "cut before the first step" is not "did
    not answer in a known format".
    """

    steps: tuple[PlanStep, ...]
    valid: bool
    form: str


_NONE = ParsedPlan((), False, 'none')
# The plan the model meant, not one salvaged from broken JSON ('constrained': results.py).
CLEAN_FORMS = ('constrained', 'json', 'list')
_MAX_DEPTH = 32  # Deeper nesting is not a plan; the bound also keeps recursion safe.
_MAX_ATTEMPTS = 32  # JSON starts tried per source: bounds the work on bracket-rich prose.

# Precedence is the tuple order. 'action' is ambiguous: it is the instruction only when no
# dedicated instruction key is present, and the skill only when it was not used as instruction.
_INSTRUCTION_KEYS = ('instruction', 'description', 'step', 'task', 'subtask', 'text', 'command',
                     'action')
_SKILL_KEYS = ('skill', 'verb', 'primitive', 'action')
_TARGET_KEYS = ('target', 'object', 'target_object', 'obj', 'item')
_ARGS_KEYS = ('args', 'arguments', 'parameters', 'params')
_PLAN_KEYS = ('steps', 'plan', 'actions', 'subtasks', 'tasks')

_WS = re.compile(r'\s*')
_OPEN = re.compile(r'[{\[]')
_STRING_BODY = {'"': re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.S),
                "'": re.compile(r"[^'\\]*(?:\\.[^'\\]*)*", re.S)}
_SCALAR = re.compile(r'-?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|true|false|null|none', re.I)
_WORD = re.compile(r'[A-Za-z_]\w*')
_ESCAPE = re.compile(r'\\(u[0-9a-fA-F]{4}|.)', re.S)
_ESCAPES = {'n': '\n', 't': '\t', 'r': '\r', 'b': '\b', 'f': '\f'}
# A list item: '1. ', '1) ', '1: ', '1 - ', 'Step 1: ', '**Step 1:** ', or a '-', '*', '+', '•'
# or '–' bullet. At most three digits, so years and measurements ("2024: ...") are not items.
_ITEM = re.compile(r'\s*(?:(?P<num>(?:\*\*)?(?:step\s*)?\d{1,3}\s*[.):\-](?:\*\*)?)|[-*+•–])'
                   r'\s+(?P<text>.*\S)', re.I | re.S)


class _NotValueError(Exception):
    """The text at the current position is not a value, even read tolerantly."""


class _CutDict(dict):
    """An object that the end of the text cut short: half a step must not become a step."""


class _CutStr(str):
    """A string that the end of the text cut short."""


class _Reader:
    """
    Lenient JSON: either quote, bare keys, extra or missing commas, Python literals.

    At the end of the text it sets ``cut`` and returns what it read, marking the open object or
    string as cut instead of failing.
    """

    def __init__(self, text: str, pos: int):
        self.text, self.pos, self.cut = text, pos, False

    def _peek(self) -> str:
        self.pos = _WS.match(self.text, self.pos).end()
        return self.text[self.pos:self.pos + 1]

    def _end(self, partial):
        self.pos, self.cut = len(self.text), True
        return partial

    def _skip_comma(self) -> None:  # Optional: small models drop commas between objects.
        if self._peek() == ',':
            self.pos += 1

    def value(self, depth: int = 0):
        if depth > _MAX_DEPTH:
            raise _NotValueError
        char = self._peek()
        if char == '{':
            return self._object(depth)
        if char == '[':
            return self._array(depth)
        if char in _STRING_BODY:
            return self._string(char)
        scalar = _SCALAR.match(self.text, self.pos)
        if scalar:  # A number (a box's coordinate) or a literal (None: never a step).
            self.pos = scalar.end()
            return _number(scalar.group())
        word = _WORD.match(self.text, self.pos)  # A word at the very end may be a cut 'true'.
        if not char or (word and word.end() == len(self.text)):
            return self._end(None)
        raise _NotValueError

    def _array(self, depth: int) -> list:
        self.pos += 1
        items = []
        while self._peek() != ']':
            items.append(self.value(depth + 1))
            if self.cut:
                return items
            self._skip_comma()
        self.pos += 1
        return items

    def _object(self, depth: int) -> dict:
        self.pos += 1
        obj = {}
        while (char := self._peek()) != '}':
            word = _WORD.match(self.text, self.pos)  # Bare keys, as in JavaScript.
            if char in _STRING_BODY:
                key = self._string(char)
            elif word:
                key, self.pos = word[0], word.end()
            elif char:
                raise _NotValueError
            if self.cut or not self._peek():
                return self._end(_CutDict(obj))
            if self.text[self.pos] != ':':
                raise _NotValueError
            self.pos += 1
            obj[key] = self.value(depth + 1)
            if self.cut:
                return _CutDict(obj)
            self._skip_comma()
        self.pos += 1
        return obj

    def _string(self, quote: str) -> str:
        end = _STRING_BODY[quote].match(self.text, self.pos + 1).end()
        body = _unescape(self.text[self.pos + 1:end])
        if end < len(self.text) and self.text[end] == quote:
            self.pos = end + 1
            return body
        return self._end(_CutStr(body))


def _number(text: str):
    """Return a JSON number's value; None for a literal (true, false, null, none)."""
    try:
        return float(text)
    except ValueError:
        return None


def _unescape(body: str) -> str:
    """Decode JSON/Python escapes by hand: json.loads would reject the lenient strings."""
    if '\\' not in body:
        return body
    body = _ESCAPE.sub(lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5
                       else _ESCAPES.get(m[1], m[1]), body)
    try:  # Join UTF-16 surrogate pairs written as two \u escapes (emoji).
        return body.encode('utf-16', 'surrogatepass').decode('utf-16')
    except UnicodeError:
        return body


def _norm(key: str) -> str:
    return key.strip().lower().replace(' ', '_').replace('-', '_')


def _step(item) -> PlanStep:
    """Map one list item to a step; an instruction of '' means the item is not a step."""
    if isinstance(item, str):  # A string item may still carry its list marker: "1. pick".
        marked = _ITEM.match(item)
        return PlanStep((marked['text'] if marked else item).strip(), box=parse_box(item))
    fields = {_norm(k): v.strip() for k, v in item.items() if isinstance(v, str)}
    used = next((k for k in _INSTRUCTION_KEYS
                 if fields.get(k) and not fields[k].isdecimal()), '')  # "step": "2" is an index.
    skill = next((fields[k] for k in _SKILL_KEYS if k != used and fields.get(k)), '')
    target = next((fields[k] for k in _TARGET_KEYS if fields.get(k)), '')
    args = next((v for k, v in item.items() if _norm(k) in _ARGS_KEYS and isinstance(v, dict)),
                {})
    return PlanStep(fields.get(used, ''), skill, target,
                    tuple((k, v.strip()) for k, v in args.items() if isinstance(v, str)),
                    step_box(item), _camera(item))


def _camera(item: dict) -> str:
    """Return the camera a step names: its name, '' for none, or a non-name as JSON text.

    A value that is not a string (5, ["wrist"]) is kept as its JSON text, which names no camera,
    so its box is reported as in no camera's image rather than placed in the first one's.
    """
    value = next((v for k, v in item.items() if _norm(k) == CAMERA_KEY), None)
    if value is None or isinstance(value, str):
        return (value or '').strip()
    return json.dumps(value)[:60]


def _steps(items: list) -> tuple[PlanStep, ...]:
    """Keep the complete string and object items that make a step, in order."""
    steps = (_step(item) for item in items
             if isinstance(item, (str, dict)) and not isinstance(item, (_CutStr, _CutDict)))
    return tuple(step for step in steps if step.instruction)


def _plan_items(obj: dict):
    """
    Find the steps in an object: under a plan key, as the object itself, or in a nested object.

    Lists under other keys are never taken: ``{"objects": ["cup"]}`` is no plan (None).
    """
    fields = {_norm(k): v for k, v in obj.items()}
    for key in _PLAN_KEYS:
        value = fields.pop(key, None)
        if isinstance(value, list):
            return value
        found = _plan_items(value) if isinstance(value, dict) else None
        if found is not None:
            return found
    if _step(obj).instruction:
        return [obj]
    for value in fields.values():  # Plan keys were popped: each object is searched once.
        found = _plan_items(value) if isinstance(value, dict) else None
        if found is not None:
            return found
    return None


def _parse_json(source: str) -> ParsedPlan:
    """Try JSON at successive '{' or '[': the first plan with steps wins, else the first plan."""
    match, empty = _OPEN.search(source), _NONE
    malformed_to = -1  # how far a JSON value that turned out malformed had been read
    for _ in range(_MAX_ATTEMPTS):
        if not match:
            break
        reader = _Reader(source, match.start())
        try:
            value = reader.value()
        except _NotValueError:
            malformed_to = max(malformed_to, reader.pos)
            match = _OPEN.search(source, match.start() + 1)
            continue
        form = 'json_truncated' if reader.cut else \
            'json_salvaged' if match.start() < malformed_to else 'json'
        items = _plan_items(value) if isinstance(value, dict) else value
        steps = _steps(items or [])
        if steps:
            return ParsedPlan(steps, True, form)
        if empty is _NONE and isinstance(value, dict) and items is not None:
            empty = ParsedPlan((), False, form)  # A bare list without steps is no plan at all.
        match = _OPEN.search(source, reader.pos)  # Skip the whole value: it held no steps.
    return empty


def _parse_list(text: str) -> ParsedPlan:
    """Numbered items win over bullets: bullets under numbered steps are details, not steps."""
    numbered, bulleted = [], []
    for line in text.splitlines():
        item = _ITEM.match(line)
        if item:
            (numbered if item['num'] else bulleted).append(
                PlanStep(item['text'].strip(), box=parse_box(item['text'])))
    steps = tuple(numbered or bulleted)
    return ParsedPlan(steps, True, 'list') if steps else _NONE


def parse_plan(text: str) -> ParsedPlan:
    """
    Parse a model's answer into plan steps; never raises, whatever the string.

    JSON is tried first, inside each ``` code fence and then in the whole text, so a fence that
    closes a truncated JSON still counts as its end. When the text ends inside the JSON (the
    generation hit ``max_new_tokens``), the steps closed before the cut are kept and the step cut
    in half is dropped, since half an instruction can send the robot wrong: the result is valid
    when at least one complete step was recovered, with form 'json_truncated' either way. Without a
    JSON plan with steps, numbered or bulleted lines are read as steps; a "Plan:" heading or prose
    around them is ignored. Steps found anywhere beat an empty JSON plan (a reasoning model may
    show a draft ``{"steps": []}`` before its answer). Missing skill or target stay '': they are
    never guessed.
    """
    if not isinstance(text, str) or not text.strip():
        return _NONE
    fallback = _NONE
    for source in text.split('```')[1::2] + [text]:
        plan = _parse_json(source)
        if plan.valid:
            return plan
        fallback = plan if fallback is _NONE else fallback
    plan = _parse_list(text)
    return plan if plan.valid else fallback
