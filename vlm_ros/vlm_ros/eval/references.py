"""Reference answers for vlm_eval --references: what a model should say about given frames.

A file is a YAML list (or JSON Lines, one object a line, for .jsonl) of entries
``{stamp_ns, task, text, target}``: the header stamp of a frame on the evaluated image topic,
the task ('plan', 'caption' or 'vqa'), the instruction or question ('' for a caption) and the
answer the model should give. Entries are checked before any model loads, each error naming
the file, the entry and the field, since a labelling mistake found after minutes of loading is
a mistake found too late.
"""

import json
import pathlib

import yaml

from ..engine import VlmError
from .records import stamp_text

TASKS = ('plan', 'caption', 'vqa')
FIELDS = ('stamp_ns', 'task', 'text', 'target')


def _bad(where: str, message: str) -> VlmError:
    return VlmError('bad_input', f'{where}: {message}')


def _check(entry, where: str) -> dict:
    """Return entry as a dict of the four fields, text defaulting to ''; raise on anything else."""
    if not isinstance(entry, dict):
        raise _bad(where, f'need a mapping with {", ".join(FIELDS)}, got {entry!r}')
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise _bad(where, f'unknown field(s) {", ".join(map(str, unknown))}; '
                          f'fields are {", ".join(FIELDS)}')
    stamp = entry.get('stamp_ns')
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        raise _bad(where, f'stamp_ns must be a non-negative integer (nanoseconds), got {stamp!r}')
    if entry.get('task') not in TASKS:
        raise _bad(where, f'task must be one of {", ".join(TASKS)}, got {entry.get("task")!r}')
    text, target = entry.get('text', ''), entry.get('target')
    if not isinstance(text, str):
        raise _bad(where, f'text must be a string, got {text!r}')
    if not isinstance(target, str) or not target.strip():
        raise _bad(where, f'target must be a non-empty string, got {target!r}')
    return {'stamp_ns': stamp, 'task': entry['task'], 'text': text, 'target': target}


def _parse(path: pathlib.Path, text: str) -> list:
    """Parse the file's entries: JSON Lines for .jsonl, else one YAML (or JSON) list."""
    if path.suffix == '.jsonl':
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise _bad(f'{path}:{number}', f'not a JSON object: {exc}') from exc
        return entries
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _bad(str(path), f'not valid YAML: {exc}') from exc
    if not isinstance(entries, list):
        raise _bad(str(path), f'need a list of entries, got {type(entries).__name__}')
    return entries


def load_references(path) -> list:
    """Read and check a references file; return its entries as dicts of the four fields."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding='utf-8')
    except OSError as exc:
        raise _bad(str(path), f'cannot read the references file: {exc}') from exc
    entries = _parse(path, text)
    if not entries:
        raise _bad(str(path), 'no references in the file')
    return [_check(entry, f'{path} entry {number}')
            for number, entry in enumerate(entries, 1)]


def reference_frames(entries: list, by_stamp: dict, topic: str) -> list:
    """Return the frame (an inputs.FrameRef) of each entry, looked up by header stamp.

    Raises VlmError naming the entry, its stamp and the stamps the topic has, when a stamp
    matches no frame: scoring a reference against another frame would score the wrong thing.
    """
    frames = []
    for number, entry in enumerate(entries, 1):
        frame = by_stamp.get(entry['stamp_ns'])
        if frame is None:
            known = sorted(by_stamp)
            span = (f'its {len(known)} frames are stamped {stamp_text(known[0])} to '
                    f'{stamp_text(known[-1])}' if known else 'it has no frames')
            raise _bad(f'reference {number}',
                       f'no frame on {topic} has header stamp {entry["stamp_ns"]} '
                       f'({stamp_text(entry["stamp_ns"])}); {span}')
        frames.append(frame)
    return frames
