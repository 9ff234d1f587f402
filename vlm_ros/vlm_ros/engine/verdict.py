"""Yes/no answers of the verify task, read robustly from what a model actually writes.

Models answer "Yes.", "no, the block is still on the table", "**Yes**", '{"answer": "no"}' or
"It is not done". The first yes-like or no-like word decides; an answer with neither is not a
verdict (None), and the caller must say so rather than guess.
"""

import re
from typing import Optional

_YES = {'yes', 'y', 'yeah', 'yep', 'true', 'correct', 'done', 'completed', 'complete',
        'succeeded', 'success', 'affirmative'}
_NO = {'no', 'n', 'nope', 'not', 'false', 'incorrect', 'failed', 'fail', 'negative', 'never',
       "isn't", "hasn't", "wasn't", "didn't", "doesn't"}
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def parse_yes_no(text: str) -> Optional[bool]:
    """Return True for a yes, False for a no, None when the text holds neither."""
    for word in _WORD.findall(text.lower().replace('\u2019', "'")):
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None
