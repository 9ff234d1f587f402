"""The command blocks of README.md and docs/*.md, each with its test marker.

The documentation is executable: every bash or python block is preceded by a marker,
`<!-- tested: ... -->` naming the tests (or .ci/run) that run its commands, or
`<!-- needs: ... -->` saying what this machine lacks (a robot with ROS 2 from apt, a GPU, a
server). Tests find a block by its first line, wherever it lives, so a block can move between
the README and docs/ without losing its test.
"""

import pathlib
import re
from typing import NamedTuple

REPO = pathlib.Path(__file__).resolve().parents[3]
BLOCK = re.compile(r'(?:<!-- (tested|needs): ([^>]*) -->\n)?```(bash|python)\n(.*?)```', re.S)


class Block(NamedTuple):
    """One fenced bash or python block: where it is, its marker (kind '' = none), its text."""

    path: str  # relative to the repository root
    kind: str  # 'tested', 'needs' or ''
    marker: str
    language: str
    body: str


def documents() -> list:
    """Return the documents that hold command blocks: README.md first, then docs/*.md."""
    return [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]


def blocks() -> list:
    """Return every bash and python block of the documents, in document order."""
    return [Block(str(path.relative_to(REPO)), *found) for path in documents()
            for found in BLOCK.findall(path.read_text())]


def block(first_line: str) -> Block:
    """Return the one block, in any document, whose text starts with first_line."""
    found = [each for each in blocks() if each.body.startswith(first_line)]
    assert len(found) == 1, (f'block starting {first_line!r} in README.md or docs/*.md: '
                             f'{[each.path for each in found]}')
    return found[0]
