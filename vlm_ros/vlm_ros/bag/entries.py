"""Files of entries the tools read (references, instructions): a YAML list, or JSON Lines.

One reader for both, so a file that works for one tool's option works alike for the other,
and every error names the file and the line or entry.
"""

import json
import pathlib

import yaml

from ..engine import VlmError


def bad(where: str, message: str) -> VlmError:
    """Return the bad-input error for one place in a file."""
    return VlmError('bad_input', f'{where}: {message}')


def read_text(path: pathlib.Path, what: str) -> str:
    """Return the file's text, or raise the bad-input error that says why it cannot be read."""
    try:
        return path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(str(path), f'cannot read the {what} file: {exc}') from exc


def parse_entries(path: pathlib.Path, text: str) -> list:
    """Parse the file's entries: JSON Lines for .jsonl, else one YAML (or JSON) list."""
    if path.suffix == '.jsonl':
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise bad(f'{path}:{number}', f'not a JSON object: {exc}') from exc
        return entries
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise bad(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(entries, list):
        raise bad(str(path), f'need a list of entries, got {type(entries).__name__}')
    return entries
