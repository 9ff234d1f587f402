"""The JSON schema a constrained plan must follow, built from the robot's skills.

Each skill name becomes an enum value of every step's ``skill``; with no skills, ``skill`` is
free text (as unconstrained plans have it). A skill with argument names ('place(object,
location)') makes its steps carry ``"args": {"object": ..., "location": ...}``. Strings have a
bounded length so that a complete step fits in the default token budget even when a model with
random weights writes one byte per token: a cut plan is not the plan the model meant.
"""

import json
import re
from typing import NamedTuple

from .errors import VlmError

CONSTRAIN_MODES = ('auto', 'on', 'off')  # EngineConfig.constrain_plans (local/constrain.py)
PLAN_TASKS = ('plan', 'replan')  # the tasks whose answers follow the plan schema
MAX_SKILLS = 64
MAX_ARGS = 8  # arguments of one skill
MAX_STEPS = 8
MAX_INSTRUCTION_CHARS = 64
MAX_TARGET_CHARS = 32
MAX_BOX_VALUE = 9999  # a box's whole-number coordinates: pixels, or 0-1000 (grounding.py)
BOX_KEY = 'bbox_2d'  # a step's optional box, as Qwen2.5-VL writes it (grounding.BOX_KEYS)
POINT_KEY = 'point_2d'  # or its point (grounding.POINT_KEYS)
CAMERA_KEY = 'camera'  # the camera whose image the box is in (several cameras)
_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_\-]{0,47}')


class Skill(NamedTuple):
    """One of the robot's skills: its name and the names of its arguments, in order."""

    name: str
    args: tuple = ()


def parse_skills(entries) -> tuple:
    """Return the skills parameter's entries as Skills, or raise VlmError('bad_input').

    An entry is a name ('push') or a name with its argument names ('place(object, location)').
    Refused: anything but a list of strings, more than MAX_SKILLS entries, a name that is not an
    identifier (letters, digits, '_' and '-', at most 48 characters), a name given twice, more
    than MAX_ARGS arguments or an argument named twice.
    """
    if isinstance(entries, str) or not all(isinstance(entry, str) for entry in entries):
        raise VlmError('bad_input', f'skills must be a list of names; got {entries!r}'[:300])
    if len(entries) > MAX_SKILLS:
        raise VlmError('bad_input', f'skills has {len(entries)} names; at most {MAX_SKILLS}')
    skills = tuple(_skill(entry) for entry in entries)
    names = [skill.name for skill in skills]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise VlmError('bad_input', f'skills names {", ".join(twice)} more than once')
    return skills


def _skill(entry: str) -> Skill:
    """Read one entry of the skills parameter: 'name' or 'name(arg, ...)'."""
    name, _, rest = entry.strip().partition('(')
    name = name.strip()
    if not _NAME.fullmatch(name) or (rest and not rest.rstrip().endswith(')')):
        raise VlmError('bad_input', f'skill {entry[:60]!r} is not a name (letters, digits, _ '
                       'and -, starting with a letter or _, at most 48 characters), optionally '
                       "with its argument names in brackets: 'place(object, location)'")
    args = tuple(arg.strip() for arg in rest.rstrip()[:-1].split(',')) if rest else ()
    args = () if args == ('',) else args
    bad = [arg for arg in args if not _NAME.fullmatch(arg)]
    if bad or len(args) > MAX_ARGS or len(set(args)) < len(args):
        raise VlmError('bad_input', f'skill {entry[:60]!r}: arguments must be up to {MAX_ARGS} '
                       'different names (letters, digits, _ and -)')
    return Skill(name, args)


def takes_arguments(entries) -> bool:
    """Tell whether any skill names arguments: then plans carry them (PlanArguments)."""
    return any(skill.args for skill in parse_skills(entries))


def _string(max_chars: int, min_chars: int = 1) -> dict:
    return {'type': 'string', 'minLength': min_chars, 'maxLength': max_chars}


def plan_schema(entries: tuple = (), cameras: tuple = ()) -> dict:
    """Return the JSON schema of a plan: ``{"steps": [step, ...]}``, 1 to MAX_STEPS steps.

    The keys are those the plan prompt asks for, in its order (prompts.yaml), so a model that
    follows the prompt is not pushed off its own answer. A skill with arguments gets a step of
    its own kind, with ``"args": {name: value, ...}`` after them (every argument required, ''
    where the model gives none); the skills without arguments share one kind without ``args``.
    Every step may end with the camera its target is seen in (``"camera": NAME``, one of the
    request's ``cameras``; a request of one image has none) and its target's box, ``"bbox_2d":
    [x1, y1, x2, y2]``, or point, ``"point_2d": [x, y]`` (none required), whole numbers as
    Qwen2.5-VL writes them (a model with random weights writes fractions without end): a server
    that honours the schema can still ground its steps (plan_targets).
    """
    skills = parse_skills(entries)
    plain = [skill.name for skill in skills if not skill.args]
    kinds = [_step({'enum': plain}, (), cameras)] if plain or not skills else []
    kinds += [_step({'enum': [skill.name]}, skill.args, cameras) for skill in skills
              if skill.args]
    if not skills:
        kinds = [_step(_string(MAX_TARGET_CHARS, 0), (), cameras)]
    return {'type': 'object', 'additionalProperties': False, 'required': ['steps'],
            'properties': {'steps': {'type': 'array', 'minItems': 1, 'maxItems': MAX_STEPS,
                                     'items': kinds[0] if len(kinds) == 1 else
                                     {'anyOf': kinds}}}}


def _step(skill: dict, args: tuple, cameras: tuple) -> dict:
    """Return the schema of one kind of step: its skill schema, its arguments if any.

    A step's camera is one of cameras: a name not among them would make its box a problem
    (grounding.place), and a model with random weights writes any name it can.
    """
    properties = {'instruction': _string(MAX_INSTRUCTION_CHARS), 'skill': skill,
                  'target': _string(MAX_TARGET_CHARS, 0)}  # '': no object ('wait')
    if args:
        properties['args'] = {'type': 'object', 'additionalProperties': False,
                              'required': list(args),
                              'properties': {arg: _string(MAX_TARGET_CHARS, 0) for arg in args}}
    required = list(properties)
    if cameras:
        properties[CAMERA_KEY] = {'enum': list(cameras)}
    for key, count in ((BOX_KEY, 4), (POINT_KEY, 2)):
        properties[key] = {'type': 'array', 'minItems': count, 'maxItems': count, 'items': {
            'type': 'integer', 'minimum': 0, 'maximum': MAX_BOX_VALUE}}
    return {'type': 'object', 'additionalProperties': False, 'required': required,
            'properties': properties}


def schema_key(skills: tuple, cameras: tuple = ()) -> str:
    """Return the schema as canonical text: the key its compiled grammar is cached under."""
    return json.dumps(plan_schema(skills, cameras), sort_keys=True)


def follows(text: str, skills: tuple = (), cameras: tuple = ()) -> bool:
    """Tell whether text is exactly one JSON value that plan_schema(skills, cameras) accepts.

    What a remote server's structured output is checked with: a server may ignore
    ``response_format`` (transformers serve does) and answer free text, which may still parse.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return _accepts(plan_schema(skills, cameras), value)


def _accepts(schema: dict, value) -> bool:
    """Check value against the JSON Schema keywords plan_schema uses (and no others)."""
    if 'anyOf' in schema:
        return any(_accepts(kind, value) for kind in schema['anyOf'])
    if 'enum' in schema:
        return value in schema['enum'] and isinstance(value, str)
    kind = schema['type']
    if kind == 'string':
        return isinstance(value, str) and \
            schema['minLength'] <= len(value) <= schema['maxLength']
    if kind == 'integer':
        return isinstance(value, int) and not isinstance(value, bool) and \
            schema['minimum'] <= value <= schema['maximum']
    if kind == 'array':
        return isinstance(value, list) and \
            schema['minItems'] <= len(value) <= schema['maxItems'] and \
            all(_accepts(schema['items'], item) for item in value)
    properties = schema['properties']
    return isinstance(value, dict) and set(schema['required']) <= set(value) and \
        set(value) <= set(properties) and \
        all(_accepts(properties[key], item) for key, item in value.items())
