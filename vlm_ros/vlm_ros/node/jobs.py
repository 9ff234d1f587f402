"""The node's answering contract as data: requests (Job), their outcomes, and the limits.

A Job is one request the node serves; every Job gets exactly one Outcome, whose Status is the
one published (vlm_ros_msgs/Plan's STATUS_* values). Limits are the run-time adjustable bounds
the Worker (scheduler.py) applies to each job.
"""

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from ..engine import Result
from ..engine.features import FeatureSpec

MAX_CANDIDATES = 8  # a ~/score request's candidates: one forward pass, each row its own image
# The prompts a ~/score candidate is scored under and a ~/features request is read with.
PROMPT_TASKS = ('vqa', 'caption', 'plan')


class Status(enum.IntEnum):
    """Outcome of a request; the values are vlm_ros_msgs/Plan's STATUS_* constants."""

    OK = 0
    INVALID_OUTPUT = 1
    NO_IMAGE = 2
    STALE_IMAGE = 3
    BAD_INPUT = 4
    MODEL_ERROR = 5
    DROPPED = 6
    CANCELLED = 7
    LOW_CONFIDENCE = 8
    UNSYNCHRONIZED = 9


@dataclass
class Job:
    """One request: a task on an explicit image or on the latest camera frame."""

    task: str
    text: str
    done: Callable[['Outcome'], None]
    image_msg: object = None  # None: use the latest camera frame
    max_new_tokens: int = 0
    on_text: Optional[Callable[[str], None]] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    received: float = field(default_factory=time.monotonic)
    request_id: str = ''
    cancel_reason: str = 'cancelled'
    context: Optional[dict] = None  # the prompt's other placeholders (replan: done, failed)
    converted: object = None  # image_msg as RGB, when converted ahead of the job's batch
    looked_ahead: bool = False
    candidates: tuple = ()  # a ~/score request: texts scored as answers, nothing generated
    sources: tuple = ()  # several cameras: each camera's (name, header) of the frames taken
    skew: float = 0.0  # s between those frames' stamps
    frame_sizes: tuple = ()  # (camera name, (width, height)) of each image used ('': a lone one)
    cameras: tuple = ()  # ~/query_cameras: the names of the cameras to use (empty: every one)
    features_only: bool = False  # ~/features (service): its features are the answer
    # False for a timer's job (replan_period, features_rate): it waits for frames no longer
    # than max_skew (another camera's frame of the same moment may still be on its way), not
    # wait_for_image, holding the worker; the timer comes again with the next frame.
    waits: bool = True
    # True for a timer's caption or re-plan (caption_rate, replan_period): best-effort, so a
    # request that comes while it waits or runs cancels it (scheduler.py) instead of waiting.
    yields: bool = False
    yielded_to: str = ''  # the request it was cancelled for ('': none)


@dataclass
class Outcome:
    """What a job ended with; header is the used image's header (None when none was used).

    With several cameras, header is the first camera's, and the job's sources hold them all.
    """

    job: Job
    status: Status
    message: str = ''
    header: object = None
    result: Optional[Result] = None
    scores: Optional[list] = None  # a ~/score request's: one engine Score per candidate
    text_refused: bool = False  # BAD_INPUT for the request's text, whatever image it had

    def header_of(self, camera: str):
        """Return the header of the image the job used from camera ('' or unknown: header)."""
        return dict(self.job.sources).get(camera, self.header)

    @property
    def yielded(self) -> bool:
        """Tell whether this is a yielding job cancelled for another request (scheduler.py).

        Not one that ended before it saw the cancel: that one's status is its own.
        """
        return self.status == Status.CANCELLED and bool(self.job.yielded_to)

    @property
    def total_time(self) -> float:
        """Seconds from the request's arrival to now (the outcome is published right away)."""
        return time.monotonic() - self.job.received


@dataclass
class Limits:
    """The run-time adjustable limits the worker reads for every job."""

    wait_for_image: float = 2.0
    max_image_age: float = 0.0
    queue_size: int = 8
    max_text_chars: int = 4096
    max_batch_size: int = 1
    batch_wait: float = 0.005
    preprocess_ahead: bool = False
    min_confidence: float = 0.0  # plans less sure than this are LOW_CONFIDENCE
    max_skew: float = 0.1  # s between the stamps of the cameras' frames a request uses
    features: FeatureSpec = FeatureSpec()  # what a request's features are (features_*)
    publish_features: bool = False  # plan requests ask for them
