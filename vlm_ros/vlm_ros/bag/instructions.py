"""Instructions for recordings that have none: a file of timed texts, or one text asked again.

Real robot recordings carry a camera and no instruction topic. vlm_eval (offline) and
vlm_replay (published live) then take their instructions from the command line, by these same
rules, so both tools ask the same things at the same bag times:

- ``--instructions FILE``: a YAML list or JSON Lines (.jsonl) of ``{time, text}`` (seconds
  after the recording's first message) or ``{stamp, text}`` (bag time, seconds since the
  epoch); any other suffix is plain text, one instruction a line, spread evenly over the
  recording.
- ``--instruction TEXT``: asked once at the first camera frame, at ``--at SECONDS`` into the
  recording, or at every ``--every N``-th frame.
"""

import argparse
import pathlib
from dataclasses import dataclass
from typing import Optional

from . import topics
from .arguments import not_negative, positive_int
from .entries import bad, parse_entries, read_text
from .storage import BagError


@dataclass(frozen=True)
class Instruction:
    """One instruction: its bag time (ns) and text as the node reads it (stripped)."""

    bag_time_ns: int
    text: str


def add_instruction_args(parser: argparse.ArgumentParser) -> None:
    """Add --instructions, --instruction, --every and --at (one definition for both tools)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--instructions', metavar='FILE', help='instructions for a recording '
                       'without them: YAML/JSONL of {time|stamp, text}, or plain lines spread '
                       'over the recording')
    group.add_argument('--instruction', metavar='TEXT', help='ask TEXT once at the first frame '
                       '(or see --every, --at)')
    parser.add_argument('--every', type=positive_int, metavar='N',
                        help='with --instruction: ask at every N-th camera frame')
    parser.add_argument('--at', type=not_negative, metavar='SECONDS',
                        help='with --instruction: ask once, SECONDS after the recording starts')


def check_instruction_args(parser: argparse.ArgumentParser, args) -> None:
    """Refuse --every / --at without --instruction, and both together."""
    if (args.every or args.at is not None) and args.instruction is None:
        parser.error('--every and --at go with --instruction TEXT')
    if args.every and args.at is not None:
        parser.error('--every and --at exclude each other')


def given(args) -> bool:
    """Tell whether the command line gives the instructions (instead of the recording)."""
    return args.instructions is not None or args.instruction is not None


def from_args(args, start_ns: int, end_ns: int, frame_times: list) -> list:
    """Return the instructions args give, in time order, for a recording's span and frames."""
    if args.instructions is not None:
        return from_file(args.instructions, start_ns, end_ns)
    return repeated(args.instruction, frame_times, start_ns, end_ns, args.every, args.at)


def for_replay(reader, args) -> list:
    """Return what --instructions / --instruction ask vlm_replay, at bag times.

    BagError when every one of them falls before --start: none would be played.
    """
    frame_times = []
    if args.instruction is not None and args.at is None:  # asked at camera frames
        camera = topics.image_topic(reader, args.image_topic)
        frame_times = [log_ns for _, log_ns, _ in reader.messages(
            [c for c in reader.connections if c.topic == camera])]
    asked = from_args(args, reader.start_time, reader.end_time, frame_times)
    start_ns = reader.start_time + int(args.start * 1e9)
    if all(i.bag_time_ns < start_ns for i in asked):
        raise BagError(f'every instruction is asked before --start {args.start:g} s: none '
                       'would be played')
    return asked


def from_file(path, start_ns: int, end_ns: int) -> list:
    """Read an instructions file (see the module docstring); each error names the entry."""
    path = pathlib.Path(path)
    text = read_text(path, 'instructions')
    if path.suffix in ('.yaml', '.yml', '.json', '.jsonl'):
        found = [_timed(entry, f'{path} entry {number}', start_ns, end_ns)
                 for number, entry in enumerate(parse_entries(path, text), 1)]
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        span = end_ns - start_ns
        found = [Instruction(start_ns + (k + 1) * span // (len(lines) + 1), line)
                 for k, line in enumerate(lines)]
    if not found:
        raise bad(str(path), 'no instructions in the file')
    return sorted(found, key=lambda i: i.bag_time_ns)


def repeated(text: str, frame_times: list, start_ns: int, end_ns: int,
             every: Optional[int] = None, at: Optional[float] = None) -> list:
    """Return TEXT asked at every every-th frame, at `at` s, or once at the first frame."""
    text = text.strip()
    if not text:
        raise BagError('--instruction is empty')
    if at is not None:
        when = start_ns + round(at * 1e9)
        if when > end_ns:
            raise BagError(f'--at {at:g} is after the end of the recording '
                           f'({(end_ns - start_ns) / 1e9:.3f} s long)')
        return [Instruction(when, text)]
    if not frame_times:
        raise BagError('the recording has no camera frames to ask --instruction about')
    if not every:
        return [Instruction(frame_times[0], text)]
    if every > len(frame_times):
        raise BagError(f'--every {every}: the recording has only {len(frame_times)} frames')
    return [Instruction(t, text) for t in frame_times[every - 1::every]]


def _timed(entry, where: str, start_ns: int, end_ns: int) -> Instruction:
    if not isinstance(entry, dict) or set(entry) - {'time', 'stamp', 'text'} or \
            ('time' in entry) == ('stamp' in entry):
        raise bad(where, f'need a mapping of text and either time (s after the start) or '
                  f'stamp (bag time, s), got {entry!r}')
    text = entry.get('text')
    if not isinstance(text, str) or not text.strip():
        raise bad(where, f'text must be a non-empty string, got {text!r}')
    seconds = entry.get('time', entry.get('stamp'))
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or \
            seconds != seconds or seconds < 0:
        raise bad(where, f'time/stamp must be a non-negative number of seconds, got {seconds!r}')
    when = start_ns + round(seconds * 1e9) if 'time' in entry else round(seconds * 1e9)
    if not start_ns <= when <= end_ns:
        raise bad(where, f'{seconds!r} s is outside the recording (bag time '
                  f'{start_ns / 1e9:.3f} to {end_ns / 1e9:.3f} s)')
    return Instruction(when, text.strip())
