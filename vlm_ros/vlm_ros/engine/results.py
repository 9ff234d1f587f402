"""What every backend takes and returns: requests, parsed results, and stage 3 (parse).

Plain dataclasses with no torch and no rclpy, so the remote backend, the node and the offline
tools share them without importing a model runtime.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from . import confidence
from .features import Features, FeatureSpec
from .grounding import parse_boxes, place
from .plan_parser import parse_plan
from .plan_schema import PLAN_TASKS


@dataclass
class Request:
    """One task on one image, with the text (and context) its prompt template needs.

    Tasks: 'caption', 'vqa' (text = question), 'plan' (text = instruction), 'replan' (text =
    instruction, context = {'done': ..., 'failed': ...}), 'verify' (text = the step to
    check; answered yes or no, read by verdict.parse_yes_no) and 'ground' (text = a phrase;
    answered with boxes, grounding.parse_boxes).

    ``image`` is an HxWx3 uint8 RGB array; ``max_new_tokens`` 0 means the engine's default.
    ``cameras``: several cameras' images instead, as (name, HxWx3 array) pairs; each enters
    the prompt after its name ('head:'), in order, for models that take several images (others
    answer VlmError 'unsupported'). ``image`` is then the first camera's.
    ``on_text`` receives this request's text increments as they are generated, and setting
    ``cancel`` stops this request alone, also inside a batch (every engine: interface.py).
    """

    task: str
    image: object
    text: str = ''
    max_new_tokens: int = 0
    on_text: Optional[Callable[[str], None]] = None
    cancel: Optional[threading.Event] = None
    context: Optional[dict] = None  # the template's other placeholders (prompts.py)
    cameras: tuple = ()
    features: Optional[FeatureSpec] = None  # the prompt's hidden states too (features.py)

    def __post_init__(self):
        """With cameras, image is the first camera's (what one-image code reads)."""
        if self.cameras:
            self.image = self.cameras[0][1]

    def views(self) -> tuple:
        """Return the request's images as (camera name, image) pairs: '' for a lone image."""
        return tuple(self.cameras) or (('', self.image),)

    def camera_names(self) -> tuple:
        """Return the names of the request's cameras, which a plan step may name (none alone)."""
        return tuple(name for name, _ in self.cameras)


@dataclass
class Result:
    """What the model said, parsed, with timings.

    ``valid`` is False when the model answered but nothing usable could be parsed (a plan with
    no steps, an empty caption); the raw ``text`` is always kept.
    """

    task: str
    text: str
    steps: tuple
    valid: bool
    form: str
    output_tokens: int
    time_to_first_token: float
    total_time: float
    cancelled: bool = False
    image_size: tuple = (0, 0)  # (width, height) the model was given, after max_image_side
    # How sure the model was (confidence.py): its text's tokens' log-probabilities, their
    # (mean, min), and (mean, min) per step; NaN where the backend gives none.
    token_logprobs: tuple = ()
    confidence: tuple = confidence.UNKNOWN
    step_confidence: tuple = ()
    # What the backend did other than asked, for the user (a Plan's message): e.g. a server
    # that ignored the plan schema. '' when nothing.
    note: str = ''
    # Per step: its target's box in the frame's pixels, (x1, y1, x2, y2), or None where the
    # model wrote none; box_problems: why a box the model wrote is none ('' otherwise). A
    # 'ground' answer: each box it wrote, in order (valid when one of them is a box).
    # box_cameras: the camera whose image each box is in ('' for a lone image); box_labels:
    # what the model named each box ('' where it did not: Qwen2.5-VL's "label").
    boxes: tuple = ()
    box_problems: tuple = ()
    box_cameras: tuple = ()
    box_labels: tuple = ()
    # The request's features (features.py) from the prefill of this answer; None unless asked.
    features: Optional[Features] = None


# A Result's status (status_of): what the node maps to STATUS_OK, _INVALID_OUTPUT, _CANCELLED.
RESULT_STATUSES = ('ok', 'invalid', 'cancelled')


def status_of(result: Result) -> str:
    """Return the RESULT_STATUSES entry of a result: cancelled first, then (in)valid."""
    if result.cancelled:
        return 'cancelled'
    return 'ok' if result.valid else 'invalid'


@dataclass
class Score:
    """How well a model predicts a target answer, teacher-forced (Engine.score).

    ``ce`` is the mean negative log-likelihood per target token (natural log), ``perplexity``
    is exp(ce), and ``tokens`` counts the target tokens scored, including the closing token
    that stops generation: the model is scored on stopping too, as training teaches it.
    """

    ce: float
    perplexity: float
    tokens: int


def parse_output(task: str, text: str, constrained: bool = False) -> tuple:
    """Stage 3 of 3: (steps, valid, form) of the model's text for the task.

    ``constrained``: the text was written under the plan schema's grammar to its end, so a
    complete JSON plan has form 'constrained' (a cut one keeps 'json_truncated').
    """
    if task in PLAN_TASKS:
        parsed = parse_plan(text)
        form = 'constrained' if constrained and parsed.form == 'json' else parsed.form
        return parsed.steps, parsed.valid, form
    return (), bool(text.strip()), 'text'


CLOSED_BOX = 'the plan grammar wrote numbers of this box when max_new_tokens ran out'


def mark_closed(result: Result, forced: int, written: str) -> None:
    """Say that the plan grammar wrote a constrained plan's last ``forced`` tokens, ``written``.

    Where max_new_tokens ran out first, the grammar closes the plan (local/closing.py): it
    parses and its skills are the robot's, but the step those tokens fall in, its last, may
    hold a skill or target the model never wrote, and a robot must not take it for the
    model's. So its form is 'constrained_closed', not among the plans the model meant
    (CLEAN_FORMS), and its note says so and what to change. The schema's only numbers are a
    box's or a point's: where the grammar wrote a digit, or ended a number the model was
    writing, the last step's box is not the model's either, and is dropped with the reason
    (plan_targets).
    """
    if forced <= 0 or result.form != 'constrained':
        return
    result.form = 'constrained_closed'
    result.note = (f'max_new_tokens ran out: the plan grammar wrote the last {forced} of its '
                   f'{result.output_tokens} tokens to close it, so its last step may hold a '
                   f'skill or target the model did not write; raise max_new_tokens')
    before = result.text[:len(result.text) - len(written)] if result.text.endswith(written) \
        else ''
    if (any(char.isdigit() for char in written) or before[-1:].isdigit()) and result.boxes \
            and result.boxes[-1] is not None:
        result.boxes = (*result.boxes[:-1], None)
        result.box_problems = (*result.box_problems[:-1], CLOSED_BOX)


def make_result(task: str, text: str, output_tokens: int, time_to_first_token: float,
                total_time: float, cancelled: bool, image_size: tuple = (0, 0),
                constrained: bool = False, logprobs: tuple = (), ends: tuple = (),
                views: tuple = (), features: Optional[Features] = None) -> Result:
    """Parse text and wrap it with its timings: every backend's answers end here alike.

    logprobs: the log-probability of each of the text's tokens (none: unknown); ends: where
    each token's text ends in text, for the steps' confidences (none: unknown). views: what
    the model saw of each frame, (camera name, grounding.View) pairs, to map the boxes to the
    frames' pixels: a step's box to the camera it names, a 'ground' answer's to the first.
    """
    steps, valid, form = parse_output(task, text, constrained)
    steps_confidence = confidence.of_steps(text, list(ends), list(logprobs), [
        step.instruction for step in steps]) if ends and len(ends) == len(logprobs) else \
        tuple(confidence.UNKNOWN for _ in steps)
    written = [(box, '') for box in parse_boxes(text)] if task == 'ground' else \
        [(step.box, step.camera) for step in steps]
    placed = [place(box, camera, views) for box, camera in written]
    boxes, problems, cameras = (tuple(item[i] for item in placed) for i in range(3))
    if task == 'ground':
        valid = any(box is not None for box in boxes)
    return Result(task, text, steps, valid, form, output_tokens, time_to_first_token, total_time,
                  cancelled, image_size, tuple(logprobs), confidence.summary(logprobs),
                  steps_confidence, boxes=boxes, box_problems=problems, box_cameras=cameras,
                  box_labels=tuple(box.label if box else '' for box, _ in written),
                  features=features)
