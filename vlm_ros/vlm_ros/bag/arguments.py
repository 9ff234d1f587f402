"""Argument types of the recording tools: finite numbers only, refused by argparse (exit 2).

float('nan') and float('inf') parse, and a rate of nan once played a whole bag at once: every
number a tool takes goes through these.
"""

import argparse
import contextlib
import faulthandler
import math
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Optional

from ..engine import VlmError


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text}') from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'must be finite, got {text}')
    return value


def positive(text: str) -> float:
    """Parse a finite number > 0 (a rate, a frequency)."""
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def not_negative(text: str) -> float:
    """Parse a finite number >= 0 (seconds)."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0, got {text}')
    return value


def whole(text: str, low: int, high: Optional[int] = None) -> int:
    """Parse a whole number from low to high (argparse.ArgumentTypeError saying why not)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a whole number: {text}') from None
    if value < low:
        raise argparse.ArgumentTypeError(f'must be >= {low}, got {text}')
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f'must be <= {high}, got {text}')
    return value


def positive_int(text: str) -> int:
    """Parse a whole number >= 1 (a count)."""
    return whole(text, 1)


def not_negative_int(text: str) -> int:
    """Parse a whole number >= 0 (a count where 0 means a default)."""
    return whole(text, 0)


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr (exit 2), not the usage text."""

    def error(self, message: str):
        """Print 'prog: error: message' and where the usage is; exit 2."""
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def output_folder(text: str) -> pathlib.Path:
    """Return --out as an absolute path; VlmError where no folder can be written there.

    Checked before a model is loaded, so a typing error costs no inference run.
    """
    out = pathlib.Path(text).resolve()  # '.' is a folder with a name once resolved
    if out.exists() and not out.is_dir():
        raise VlmError('bad_input', f'--out {text} is a file; name a folder')
    if not out.parent.is_dir():
        raise VlmError('bad_input', f'--out {text}: {out.parent} is not a folder')
    where = out if out.exists() else out.parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise VlmError('bad_input', f'--out {text}: {where} cannot be written')
    return out


def reported(prog: str, call: Callable):
    """Return (0, call()), or (the exit code, None) with a VlmError's reason on stderr.

    One line, 'prog: error: reason', as argparse reports bad arguments: exit 2 for bad input,
    1 for what failed (VlmError.exit_code, or an OSError); Ctrl-C: 'prog: interrupted', 130.
    An abort (a supervisor's, or a test's on a run that does not stop) prints every thread's
    Python stack first, as vlm_node's does (spin.py), so a hang says where it was.
    """
    faulthandler.enable()
    try:
        return 0, call()
    except VlmError as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return exc.exit_code, None
    except OSError as exc:  # a file that could not be written after all (a full disk)
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 1, None
    except KeyboardInterrupt:
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130, None


def print_line(text: str) -> bool:
    """Print a line on standard output; False when that is closed (`vlm_client ... | head`).

    A closed output is a reader that has what it wanted, not an error: what follows goes to
    /dev/null, and no traceback ends the thread that printed (a ROS callback's ended the
    spinning).
    """
    try:
        print(text, flush=True)
        return True
    except OSError:  # BrokenPipeError
        with contextlib.suppress(OSError):  # nothing left to flush at exit either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return False
