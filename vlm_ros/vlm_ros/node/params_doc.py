"""docs/PARAMETERS.md, rendered from the parameter specs (``params.SPECS`` and ``params.APPLIES``).

The table of parameters exists once, in params.py; the document is made from it by
``scripts/gen-parameters-doc`` so that it cannot drift, and a unit test (test_parameters_doc.py)
fails when the committed file differs from ``render()``.
"""

import pathlib
import sys
from typing import Optional

from .params import APPLIES, SPECS, ParamSpec

COMMAND = 'scripts/gen-parameters-doc'
HEADER = f"""\
# vlm_node parameters

<!-- Generated from vlm_ros/vlm_ros/node/params.py by {COMMAND}; do not edit by hand. -->

Every parameter of `vlm_node`, from the table the node declares them with
(`vlm_ros/vlm_ros/node/params.py`: `SPECS`). **Defaults** are the node's declared defaults;
`config/vlm.yaml`, the launch file's default params file, holds the same values
(`test_launch_files.py` checks), and the presets `config/vlm_gpu.yaml` (a GPU) and
`config/vlm_remote.yaml` (the openai backend, `docs/REMOTE.md`) change some of them.

Set a parameter at start-up (`-p NAME:=VALUE`, a params file, a launch argument) or on a live
node (`ros2 param set /vlm_node NAME VALUE`, `vlm_client param set NAME VALUE`). Every value is
checked against its type, choices and range, and a bad one is refused with the reason. The
sections below group the parameters by when a change applies; more on some of them in
[NODE.md](NODE.md#parameters).
"""


def _value(value: object) -> str:
    """Write a value as a params file (YAML) would: true/false, '' for an empty text."""
    if isinstance(value, bool):
        return f'`{str(value).lower()}`'
    if value == '':
        return "`''`"
    if value == ():
        return '`[]`'
    return f'`{value}`'


def _kind(spec: ParamSpec) -> str:
    """Name the parameter's ROS type (a value of another type is refused)."""
    return {bool: 'bool', int: 'integer', float: 'double', str: 'string',
            tuple: 'string array'}[type(spec.default)]


def _accepts(spec: ParamSpec) -> str:
    """Say which values pass validation beyond the type: choices or a closed range."""
    if spec.choices:
        return ', '.join(f'`{choice}`' for choice in spec.choices)
    if spec.low is not None:
        number = int if isinstance(spec.default, int) else float
        return f'{number(spec.low)} to {number(spec.high)}'
    return ''


def _cell(text: str) -> str:
    """Keep a table cell on one row: escape the column separator."""
    return text.replace('|', '\\|')


def _groups() -> list:
    """Return [(applies keys, explanation)] in APPLIES's order, one per distinct explanation."""
    groups = {}
    for key, text in APPLIES.items():
        groups.setdefault(text, []).append(key)
    return [(keys, text) for text, keys in groups.items()]


def _section(keys: list, text: str) -> list:
    """Render one group's heading and table, each read-only parameter marked."""
    names = ', '.join(f'`{key}`' for key in keys)
    lines = ['', f'## {text[0].upper()}{text[1:]} ({names})', '',
             '| name | type | default | accepts | meaning |', '|---|---|---|---|---|']
    for spec in SPECS:
        if spec.applies in keys:
            name = f'`{spec.name}`' + (' (read-only)' if spec.applies == 'launch' else '')
            lines.append(f'| {name} | {_kind(spec)} | {_cell(_value(spec.default))} | '
                         f'{_cell(_accepts(spec))} | {_cell(spec.description)} |')
    return lines


def render() -> str:
    """Return docs/PARAMETERS.md as it must read for the specs of this version."""
    lines = HEADER.splitlines()
    for keys, text in _groups():
        lines += _section(keys, text)
    return '\n'.join(lines) + '\n'


def main(argv: Optional[list] = None) -> int:
    """Write render() to the path given (the command line's one argument)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f'usage: {COMMAND} [OUT]  (default: docs/PARAMETERS.md)', file=sys.stderr)
        return 2
    path = pathlib.Path(args[0])
    path.write_text(render())
    print(f'wrote {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
