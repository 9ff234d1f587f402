"""Reference answers for vlm_eval --references: what a model should say about given frames.

A file is a YAML list (or JSON Lines, one object a line, for .jsonl: bag/entries.py) of entries
``{stamp_ns, task, text, target}``: the header stamp of a frame on the evaluated image topic,
the task ('plan', 'caption' or 'vqa'), the instruction or question ('' for a caption) and the
answer the model should give. Entries are checked before any model loads, each error naming
the file, the entry and the field, since a labelling mistake found after minutes of loading is
a mistake found too late.
"""

import pathlib

from ..bag.entries import bad, parse_entries, read_text
from .records import stamp_text

TASKS = ('plan', 'caption', 'vqa')
FIELDS = ('stamp_ns', 'task', 'text', 'target')


def _check(entry, where: str) -> dict:
    """Return entry as a dict of the four fields, text defaulting to ''; raise on anything else."""
    if not isinstance(entry, dict):
        raise bad(where, f'need a mapping with {", ".join(FIELDS)}, got {entry!r}')
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise bad(where, f'unknown field(s) {", ".join(map(str, unknown))}; '
                          f'fields are {", ".join(FIELDS)}')
    stamp = entry.get('stamp_ns')
    if isinstance(stamp, bool) or not isinstance(stamp, int) or stamp < 0:
        raise bad(where, f'stamp_ns must be a non-negative integer (nanoseconds), got {stamp!r}')
    if entry.get('task') not in TASKS:
        raise bad(where, f'task must be one of {", ".join(TASKS)}, got {entry.get("task")!r}')
    text, target = entry.get('text', ''), entry.get('target')
    if not isinstance(text, str):
        raise bad(where, f'text must be a string, got {text!r}')
    if not isinstance(target, str) or not target.strip():
        raise bad(where, f'target must be a non-empty string, got {target!r}')
    return {'stamp_ns': stamp, 'task': entry['task'], 'text': text, 'target': target}


def load_references(path) -> list:
    """Read and check a references file; return its entries as dicts of the four fields."""
    path = pathlib.Path(path)
    entries = parse_entries(path, read_text(path, 'references'))
    if not entries:
        raise bad(str(path), 'no references in the file')
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
            raise bad(f'reference {number}',
                       f'no frame on {topic} has header stamp {entry["stamp_ns"]} '
                       f'({stamp_text(entry["stamp_ns"])}); {span}')
        frames.append(frame)
    return frames
