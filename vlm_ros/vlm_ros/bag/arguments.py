"""Argument types of the recording tools: finite numbers only, refused by argparse (exit 2).

float('nan') and float('inf') parse, and a rate of nan once played a whole bag at once: every
number a tool takes goes through these.
"""

import argparse
import math
import sys
from collections.abc import Callable

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


def positive_int(text: str) -> int:
    """Parse a whole number >= 1 (a count)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a whole number: {text}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1, got {text}')
    return value


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr (exit 2), not the usage text."""

    def error(self, message: str):
        """Print 'prog: error: message' and where the usage is; exit 2."""
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def reported(prog: str, call: Callable):
    """Return (0, call()), or (the exit code, None) with a VlmError's reason on stderr.

    One line, 'prog: error: reason', as argparse reports bad arguments: exit 2 for bad input,
    1 for what failed (VlmError.exit_code).
    """
    try:
        return 0, call()
    except VlmError as exc:
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return exc.exit_code, None
