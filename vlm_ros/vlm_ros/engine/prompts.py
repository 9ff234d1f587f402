"""Prompt templates per task, from the packaged YAML, overridable by the user."""

import pathlib
import string
from collections.abc import Mapping
from typing import Optional

import yaml

from .errors import VlmError

TASKS = ('caption', 'vqa', 'plan', 'replan', 'verify', 'ground')
# Each task's placeholders; the first is the request's text, the others come with its context.
# replan: the instruction again, the steps done so far and the step that failed (closed-loop
# execution); verify: a yes/no check that a step is done, on the newest frame; ground: the
# boxes of what a phrase names (grounding.parse_boxes reads them).
_FIELDS = {'caption': (), 'vqa': ('question',), 'plan': ('instruction',),
           'replan': ('instruction', 'done', 'failed'), 'verify': ('step',),
           'ground': ('phrase',)}
_DEFAULTS = pathlib.Path(__file__).with_name('prompts.yaml')
MAX_TEMPLATE_CHARS = 8192


def load_templates(overrides: Mapping = None) -> dict:
    """Return the default templates with ``overrides`` (task -> template) applied.

    An empty override keeps the default, so a launch file can pass '' to mean "unchanged".
    Unknown tasks and templates that lack or misuse a placeholder fail here, at configuration
    time, rather than on the first request.
    """
    templates = yaml.safe_load(_DEFAULTS.read_text())
    for task, template in (overrides or {}).items():
        if task not in TASKS:
            raise VlmError('bad_input', f'unknown prompt task {task!r}; tasks are {TASKS}')
        if template:
            templates[task] = str(template)
    for task in TASKS:
        check_template(task, templates[task])
    return templates


def check_template(task: str, template: str) -> None:
    """Raise VlmError unless template is text, {{ }} escapes and the task's bare placeholder.

    Anything on the DDS domain may set a template, so str.format's mini-language is refused:
    attribute and index lookups ({instruction.x}), conversions and format specs
    ({instruction:>1000000000}) could raise or allocate without bound. What is accepted
    renders to at most the template's length plus the request text per placeholder.
    """
    if len(template) > MAX_TEMPLATE_CHARS:
        raise VlmError('bad_input', f'prompt template for {task!r} has {len(template)} '
                       f'characters; at most {MAX_TEMPLATE_CHARS}')
    allowed = _FIELDS[task] or 'none'
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion
                  in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise VlmError('bad_input', f'prompt template for {task!r} is invalid ({exc}); '
                       f'placeholders allowed: {allowed}; write braces as {{{{ and }}}}') from exc
    for name, spec, conversion in fields:
        if name not in _FIELDS[task] or spec or conversion:
            shown = '{' + name + (f'!{conversion}' if conversion else '') + \
                (f':{spec}' if spec else '') + '}'
            raise VlmError('bad_input', f'prompt template for {task!r} is invalid: {shown} '
                           f'is not a bare placeholder; placeholders allowed: {allowed}')
    for name in _FIELDS[task]:
        if '{' + name + '}' not in template:
            raise VlmError('bad_input', f'prompt template for {task!r} must contain {{{name}}}')


def text_field(task: str) -> str:
    """Name what a request of task must say ('instruction', 'question', ...); '' if nothing."""
    return (_FIELDS.get(task) or ('',))[0]


def render_task(templates: Mapping, task: str, text: str = '',
                context: Optional[Mapping] = None) -> str:
    """Fill the task's template: its first placeholder with text, the others from context."""
    if task not in TASKS:
        raise VlmError('bad_input', f'unknown task {task!r}; tasks are {TASKS}')
    fields = _FIELDS[task]
    if fields and not text.strip():
        raise VlmError('bad_input', f'{task} needs a non-empty {fields[0]}')
    values = {name: str((context or {}).get(name, '')).strip() for name in fields[1:]}
    if fields:
        values[fields[0]] = text.strip()
    return templates[task].format(**values)
