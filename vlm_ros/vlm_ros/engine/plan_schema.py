"""The JSON schema a constrained plan must follow, built from the robot's skills.

Each skill name becomes an enum value of every step's ``skill``; with no skills, ``skill`` is
free text (as unconstrained plans have it). Strings have a bounded length so that a complete
step fits in the default token budget even when a model with random weights writes one byte
per token: a cut plan is not the plan the model meant.
"""

import json
import re

from .errors import VlmError

CONSTRAIN_MODES = ('auto', 'on', 'off')  # EngineConfig.constrain_plans (local/constrain.py)
PLAN_TASKS = ('plan', 'replan')  # the tasks whose answers follow the plan schema
MAX_SKILLS = 64
MAX_STEPS = 8
MAX_INSTRUCTION_CHARS = 64
MAX_TARGET_CHARS = 32
_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_\-]{0,47}')


def parse_skills(entries) -> tuple:
    """Return the skills parameter's names as a tuple, or raise VlmError('bad_input').

    Refused: anything but a list of strings, more than MAX_SKILLS names, a name that is not an
    identifier (letters, digits, '_' and '-', at most 48 characters), a name given twice.
    """
    if isinstance(entries, str) or not all(isinstance(entry, str) for entry in entries):
        raise VlmError('bad_input', f'skills must be a list of names; got {entries!r}'[:300])
    skills = tuple(entry.strip() for entry in entries)
    if len(skills) > MAX_SKILLS:
        raise VlmError('bad_input', f'skills has {len(skills)} names; at most {MAX_SKILLS}')
    bad = [name for name in skills if not _NAME.fullmatch(name)]
    if bad:
        raise VlmError('bad_input', f'skill {bad[0][:60]!r} is not a name (letters, digits, _ '
                       'and -, starting with a letter or _)')
    twice = sorted({name for name in skills if skills.count(name) > 1})
    if twice:
        raise VlmError('bad_input', f'skills names {", ".join(twice)} more than once')
    return skills


def _string(max_chars: int, min_chars: int = 1) -> dict:
    return {'type': 'string', 'minLength': min_chars, 'maxLength': max_chars}


def plan_schema(skills: tuple = ()) -> dict:
    """Return the JSON schema of a plan: ``{"steps": [step, ...]}``, 1 to MAX_STEPS steps.

    The keys are those the plan prompt asks for, in its order (prompts.yaml), so a model that
    follows the prompt is not pushed off its own answer.
    """
    skill = {'enum': list(skills)} if skills else _string(MAX_TARGET_CHARS, 0)
    step = {'type': 'object', 'additionalProperties': False,
            'required': ['instruction', 'skill', 'target'],
            'properties': {'instruction': _string(MAX_INSTRUCTION_CHARS), 'skill': skill,
                           'target': _string(MAX_TARGET_CHARS, 0)}}  # '': no object ('wait')
    return {'type': 'object', 'additionalProperties': False, 'required': ['steps'],
            'properties': {'steps': {'type': 'array', 'minItems': 1, 'maxItems': MAX_STEPS,
                                     'items': step}}}


def schema_key(skills: tuple) -> str:
    """Return the schema as canonical text: the key its compiled grammar is cached under."""
    return json.dumps(plan_schema(skills), sort_keys=True)


def follows(text: str, skills: tuple = ()) -> bool:
    """Tell whether text is exactly one JSON value that plan_schema(skills) accepts.

    What a remote server's structured output is checked with: a server may ignore
    ``response_format`` (transformers serve does) and answer free text, which may still parse.
    """
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return _accepts(plan_schema(skills), value)


def _accepts(schema: dict, value) -> bool:
    """Check value against the JSON Schema keywords plan_schema uses (and no others)."""
    if 'enum' in schema:
        return value in schema['enum'] and isinstance(value, str)
    kind = schema['type']
    if kind == 'string':
        return isinstance(value, str) and \
            schema['minLength'] <= len(value) <= schema['maxLength']
    if kind == 'array':
        return isinstance(value, list) and \
            schema['minItems'] <= len(value) <= schema['maxItems'] and \
            all(_accepts(schema['items'], item) for item in value)
    properties = schema['properties']
    return isinstance(value, dict) and set(schema['required']) <= set(value) and \
        set(value) <= set(properties) and \
        all(_accepts(properties[key], item) for key, item in value.items())
