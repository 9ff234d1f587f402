"""docs/PARAMETERS.md is generated from the parameter specs, and stays current.

The specs (node/params.py) are the one table of vlm_node's parameters; the document is made from
them by scripts/gen-parameters-doc (system/test_readme.py runs that command), so a spec that
changes without the document fails here with the command that fixes it.
"""

import pathlib
import re

from vlm_ros.node.params import APPLIES, SPECS
from vlm_ros.node.params_doc import COMMAND, render

DOC = pathlib.Path(__file__).resolve().parents[3] / 'docs' / 'PARAMETERS.md'


def _rows(text: str) -> dict:
    """Return {parameter name: (section heading, table row)} for each row of the document."""
    rows, heading = {}, None
    for line in text.splitlines():
        if line.startswith('## '):
            heading = line
        elif match := re.match(r'\| `(\w+)`', line):
            assert match[1] not in rows, f'{match[1]} is listed twice'
            rows[match[1]] = (heading, line)
    return rows


def test_the_committed_document_is_what_the_specs_render():
    assert DOC.read_text() == render(), (
        'docs/PARAMETERS.md is stale: it differs from the parameter specs (node/params.py); '
        f'run {COMMAND} and commit the file')


def test_every_parameter_is_listed_once_under_when_a_change_applies():
    rows = _rows(render())
    sections = list(dict.fromkeys(APPLIES.values()))  # one per explanation, in APPLIES's order
    in_order = sorted(SPECS, key=lambda spec: sections.index(APPLIES[spec.applies]))
    assert list(rows) == [spec.name for spec in in_order]
    for spec in SPECS:
        heading, row = rows[spec.name]
        assert APPLIES[spec.applies].lower() in heading.lower(), (spec.name, heading)
        assert f'`{spec.applies}`' in heading, (spec.name, heading)
        assert spec.description in row.replace('\\|', '|'), row


def test_read_only_parameters_are_marked_and_only_they():
    rows = _rows(render())
    for spec in SPECS:
        _, row = rows[spec.name]
        assert ('(read-only)' in row) == (spec.applies == 'launch'), row


def test_defaults_ranges_and_choices_are_shown_as_a_params_file_writes_them():
    rows = _rows(render())
    assert '| bool | `false` |' in rows['trust_remote_code'][1]
    assert "| string | `''` |" in rows['attn_implementation'][1]
    assert '| integer | `128` | 1 to 4096 |' in rows['max_new_tokens'][1]
    assert '| double | `0.005` | 0.0 to 1.0 |' in rows['batch_wait'][1]
    assert '`auto`, `raw`, `compressed`' in rows['image_transport'][1]
