"""How sure the model was of what it wrote: token log-probabilities summed up per answer and step.

A plan's confidence is the mean and the minimum natural-log probability of its text's tokens
(the model's own distribution, before any grammar); each step has those of the tokens from
where its instruction starts to where the next one's starts. exp(mean) is the geometric mean
token probability, what min_confidence is compared with. Unknown (a backend that gives no
log-probabilities) is NaN. Plain Python: no torch, no rclpy.
"""

import math

UNKNOWN = (math.nan, math.nan)


def summary(logprobs) -> tuple:
    """Return (mean, min) of logprobs; UNKNOWN when there are none."""
    logprobs = list(logprobs)
    if not logprobs:
        return UNKNOWN
    return sum(logprobs) / len(logprobs), min(logprobs)


def of_steps(text: str, ends: list, logprobs: list, instructions: list) -> tuple:
    """Return (mean, min) per step: the tokens from its instruction's start to the next one's.

    ends[i] is where token i's text ends in text. A step whose instruction is not found as
    written in text (JSON escapes, a salvaged plan) is UNKNOWN.
    """
    starts, position = [], 0
    for instruction in instructions:
        found = text.find(instruction, position) if instruction else -1
        starts.append(found)
        position = found + len(instruction) if found >= 0 else position
    begins = [0, *ends[:-1]]  # where each token's text starts
    result = []
    for index, start in enumerate(starts):
        later = [s for s in starts[index + 1:] if s >= 0]
        stop = later[0] if later else len(text)
        result.append(UNKNOWN if start < 0 else summary(
            value for value, begin, end in zip(logprobs, begins, ends, strict=True)
            if end > start and begin < stop))
    return tuple(result)
