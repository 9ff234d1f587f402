"""Requests, their outcomes, and the worker threads that run inference.

Executor callbacks only enqueue; the worker takes requests in FIFO order, picks the image
(an explicit one, or the latest fresh camera frame), runs the engine and hands every request
exactly one outcome, whatever happens: the node's answering contract lives here, without ROS.
An in-process model gets one thread; a remote server, which batches what arrives together,
gets as many as the engine's concurrency.
"""

import enum
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from ..engine import Request, Result, VlmError
from .frames import FrameStore


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


def cancel_job(worker, job: Job, reason: str) -> None:
    """Cancel job through the worker that holds it; with none running (going down), mark it."""
    if worker is not None:
        worker.cancel(job, reason)
    else:
        job.cancel.set()


@dataclass
class Outcome:
    """What a job ended with; header is the used image's header (None when none was used)."""

    job: Job
    status: Status
    message: str = ''
    header: object = None
    result: Optional[Result] = None

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


class Worker:
    """A bounded FIFO of jobs served by ``threads`` threads; every job gets exactly one outcome.

    Jobs start in FIFO order; with more than one thread they may finish out of order. With one
    thread (an in-process model), the thread takes up to ``limits.max_batch_size`` waiting
    jobs at once and answers them with one batched generate; each keeps its own image, status,
    text stream and cancel. Meanwhile a look-ahead thread preprocesses the images that waiting
    jobs carry (``limits.preprocess_ahead``), so the next batch starts generating sooner.
    """

    _ids = itertools.count(1)

    def __init__(self, engine, frames: FrameStore, convert: Callable, now: Callable[[], float],
                 limits: Limits, log_error: Callable[[str], None], threads: int = 1):
        self._engine = engine
        self._frames = frames
        self.convert = convert  # explicit images (query, goal); the node swaps it
        self.no_image_hint: Callable[[], str] = str  # why no frame may have come ('' if unknown)
        self._now = now
        self.limits = limits
        self._log_error = log_error
        self._queue = deque()
        self._cond = threading.Condition()
        self._current = {}  # id -> job being served (a Job compares by value: no set)
        self._running = True
        self.batches = 0  # engine runs, and the requests they answered: the batching ratio
        self.batched = 0
        self._threads = [threading.Thread(target=self._loop, name=f'vlm-worker-{index}',
                                          daemon=True) for index in range(threads)]
        self._batching = threads == 1  # with several, waiting jobs start as soon as taken
        if self._batching:
            self._threads.append(threading.Thread(target=self._look_ahead, daemon=True,
                                                  name='vlm-look-ahead'))
        for thread in self._threads:
            thread.start()

    def new_request_id(self) -> str:
        """Return a process-unique id, so answers match requests in logs and bags."""
        return f'{next(self._ids)}-{int(time.time() * 1000) % 100000000:08d}'

    def submit(self, job: Job) -> bool:
        """Enqueue job; when the queue is full, answer it STATUS_DROPPED at once (False)."""
        job.request_id = job.request_id or self.new_request_id()
        if len(job.text) > self.limits.max_text_chars:  # refused before it costs anything
            self._finish(Outcome(job, Status.BAD_INPUT, f'{job.task} text has {len(job.text)} '
                                 f'characters; max_text_chars is {self.limits.max_text_chars}'))
            return False
        with self._cond:
            accepted = self._running and len(self._queue) < self.limits.queue_size
            if accepted:
                self._queue.append(job)
                self._cond.notify_all()  # a worker thread, and the look-ahead while busy
        if not accepted:
            reason = (f'request queue full (queue_size={self.limits.queue_size})'
                      if self._running else 'node is not active')
            status = Status.DROPPED if self._running else Status.CANCELLED
            self._finish(Outcome(job, status, reason))
        return accepted

    def idle(self) -> bool:
        """Tell whether nothing runs and nothing waits: a due caption may go."""
        with self._cond:
            return not self._current and not self._queue

    def serving(self) -> int:
        """Jobs being served right now."""
        with self._cond:
            return len(self._current)

    def queue_length(self) -> int:
        """Jobs waiting (not counting those being served)."""
        with self._cond:
            return len(self._queue)

    def cancel(self, job: Job, reason: str) -> None:
        """Cancel one job: answered CANCELLED at once if waiting, by its thread if running.

        A running job stops waiting for an image, or generating, at its next check.
        """
        with self._cond:
            job.cancel_reason = reason
            job.cancel.set()
            queued = any(j is job for j in self._queue)  # a Job compares by value
            if queued:
                self._queue = deque(j for j in self._queue if j is not job)
        self._frames.wake()
        if queued:
            self._finish(Outcome(job, Status.CANCELLED, reason))

    def stop(self, message: str) -> None:
        """Cancel the running jobs, answer waiting ones CANCELLED, and join the threads.

        A job waiting for an image is woken at once; a generation stops between two decoding
        steps (or streamed pieces), so this returns as soon as the current step is done.
        """
        with self._cond:
            self._running = False
            pending = list(self._queue)
            self._queue.clear()
            for job in self._current.values():
                job.cancel_reason = message
                job.cancel.set()
            self._cond.notify_all()
        self._frames.wake()
        for job in pending:
            self._finish(Outcome(job, Status.CANCELLED, message))
        for thread in self._threads:
            thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._queue:
                    self._cond.wait()
                if not self._running:
                    return
                size = self.limits.max_batch_size if self._batching else 1
                self._gather(size)
                if not self._running:
                    return
                jobs = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
                for job in jobs:
                    self._current[id(job)] = job
                self._cond.notify_all()  # busy now: the look-ahead may start on the rest
            for outcome in self._serve(jobs):
                self._finish(outcome)
            with self._cond:
                for job in jobs:
                    del self._current[id(job)]

    def _look_ahead(self) -> None:
        """While a batch runs, convert and preprocess the images that waiting jobs carry.

        Only explicit images (queries, goals) are known ahead: a camera job takes the frame
        that is newest when its batch starts, which usually arrives after this one started.
        """
        while True:
            with self._cond:
                while self._running and self._ahead() is None:
                    self._cond.wait()
                if not self._running:
                    return
                job = self._ahead()
                job.looked_ahead = True
            try:
                job.converted = self.convert(job.image_msg)
                self._engine.prepare([job.converted])
            except Exception:  # noqa: BLE001 - its own batch converts it again and says why
                job.converted = None

    def _ahead(self) -> Optional[Job]:
        """Return the first waiting job with an image not looked at yet (called locked)."""
        if not (self._current and self.limits.preprocess_ahead):
            return None
        return next((job for job in self._queue if job.image_msg is not None
                     and not job.looked_ahead), None)

    def _gather(self, size: int) -> None:
        """Wait while requests keep coming, until the queue holds size jobs (called locked).

        The batch starts once the queue holds size jobs, or no request came for
        limits.batch_wait s, and after size x batch_wait s at most. Streams answered by one
        batch send their next requests within milliseconds of each other, not at once: a fixed
        wait from the first one started most batches before the last ones were in.
        """
        wait = self.limits.batch_wait
        start = time.monotonic()
        deadline, seen = start + wait, len(self._queue)
        while self._running and size > 1 and len(self._queue) < size:
            now = time.monotonic()
            if len(self._queue) > seen:  # one more came: give the next one as long again
                deadline, seen = min(now + wait, start + size * wait), len(self._queue)
            if now >= deadline:
                return
            self._cond.wait(deadline - now)

    def _finish(self, outcome: Outcome) -> None:
        try:
            outcome.job.done(outcome)
        except Exception as exc:  # noqa: BLE001 - one bad answer must not stop the worker
            self._log_error(f'answering request {outcome.job.request_id} failed: {exc!r}')

    def _fresh(self, frame) -> bool:
        max_age = self.limits.max_image_age
        return max_age <= 0 or self._now() - frame.stamp <= max_age

    def _image(self, job: Job):
        """Return (header, rgb) for job, or an Outcome saying why there is none."""
        if job.image_msg is not None:
            if job.converted is not None:  # by the look-ahead
                return job.image_msg.header, job.converted
            return self._converted(job, job.image_msg.header, self.convert, job.image_msg)
        wait = self.limits.wait_for_image
        frame = self._frames.wait_for(self._fresh, wait, job.cancel.is_set)
        if job.cancel.is_set():
            return Outcome(job, Status.CANCELLED, job.cancel_reason)
        if frame is None:
            hint = self.no_image_hint()
            return Outcome(job, Status.NO_IMAGE, f'no image arrived within {wait:g} s' +
                           (f': {hint}' if hint else ''))
        if not self._fresh(frame):
            age = self._now() - frame.stamp
            return Outcome(job, Status.STALE_IMAGE, f'latest image is {age:.2f} s old '
                           f'(max_image_age {self.limits.max_image_age:g} s) and no fresh '
                           f'one arrived within {wait:g} s', frame.header)
        return self._converted(job, frame.header, self._frames.image, frame)

    @staticmethod
    def _converted(job: Job, header, convert: Callable, source):
        """Return (header, rgb), or a BAD_INPUT outcome that still names the bad image."""
        try:
            return header, convert(source)
        except VlmError as exc:
            return Outcome(job, Status.BAD_INPUT, str(exc), header)

    def _serve(self, jobs: list) -> list:
        """Return one outcome per job: those without an image at once, the rest batched."""
        outcomes, ready = [], []
        for job in jobs:
            found = self._prepared(job)
            (outcomes if isinstance(found, Outcome) else ready).append(found)
        if len(ready) > 1:
            try:
                return outcomes + self._answered(ready)
            except Exception as exc:  # noqa: BLE001 - answered as statuses, never silence
                if not (isinstance(exc, VlmError) and exc.kind == 'bad_input'):
                    return outcomes + [self._failed(job, header, exc)
                                       for job, header, _ in ready]
                # One request the processor refused fails its batch: answer each on its own.
        for item in ready:
            try:
                outcomes += self._answered([item])
            except Exception as exc:  # noqa: BLE001 - answered as a status, never silence
                outcomes.append(self._failed(item[0], item[1], exc))
        return outcomes

    def _prepared(self, job: Job):
        """Return (job, header, Request) ready to run, or the Outcome that answers job now."""
        try:
            if job.cancel.is_set():
                return Outcome(job, Status.CANCELLED, job.cancel_reason)
            found = self._image(job)
            if isinstance(found, Outcome):
                return found
            header, image = found
            if job.cancel.is_set():  # e.g. while the frame was converted
                return Outcome(job, Status.CANCELLED, job.cancel_reason, header)
        except Exception as exc:  # noqa: BLE001 - answered as a model error, never silence
            return self._failed(job, None, exc)
        # A request may ask for fewer tokens than the node allows, never for more.
        limit = self._engine.config.max_new_tokens
        tokens = min(job.max_new_tokens, limit) if job.max_new_tokens > 0 else 0
        return job, header, Request(job.task, image, job.text, tokens, on_text=job.on_text,
                                    cancel=job.cancel, context=job.context)

    def _answered(self, ready: list) -> list:
        """Run the requests of ready in one engine call; return their outcomes in order."""
        # Each request carries its own text stream and cancel (engine.Request).
        results = self._engine.run([request for _, _, request in ready])
        self.batches += 1
        self.batched += len(ready)
        return [self._outcome(job, header, result)
                for (job, header, _), result in zip(ready, results, strict=True)]

    @staticmethod
    def _failed(job: Job, header, exc: Exception) -> Outcome:
        if isinstance(exc, VlmError):
            status = Status.BAD_INPUT if exc.kind == 'bad_input' else Status.MODEL_ERROR
            return Outcome(job, status, str(exc), header)
        return Outcome(job, Status.MODEL_ERROR, f'inference failed: {exc!r}', header)

    @staticmethod
    def _outcome(job: Job, header, result: Result) -> Outcome:
        if result.cancelled:
            return Outcome(job, Status.CANCELLED, f'{job.cancel_reason} during generation',
                           header, result)
        if not result.valid:
            what = 'no plan steps could be parsed' if job.task == 'plan' else 'empty answer'
            return Outcome(job, Status.INVALID_OUTPUT, f'model output invalid: {what}', header,
                           result)
        return Outcome(job, Status.OK, '', header, result)
