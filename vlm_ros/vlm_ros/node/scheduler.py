"""The worker threads that run inference, and the bounded queue they take requests from.

Executor callbacks only enqueue; the worker takes requests in FIFO order, has each batch
answered (batches.py: the image, the engine run, the outcome) and hands every request exactly
one outcome (jobs.py), whatever happens: the node's answering contract lives here, without ROS.
An in-process model gets one thread; a remote server, which batches what arrives together,
gets as many as the engine's concurrency.
"""

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Optional

from ..engine.prompts import text_field
from .batches import BatchRunner
from .frames import FrameSet
from .jobs import MAX_CANDIDATES, Job, Limits, Outcome, Status


def cancel_job(worker, job: Job, reason: str) -> None:
    """Cancel job through the worker that holds it; with none running (going down), mark it."""
    if worker is not None:
        worker.cancel(job, reason)
    else:
        job.cancel.set()


def refusal(job: Job, max_text_chars: int) -> str:
    """Say why job is refused before it is queued (no or too much text), or ''.

    Before a camera frame is taken: a client's blank question is its own error, which
    /diagnostics must not count as a fault of the node's camera.
    """
    field = text_field(job.task)
    if field and not job.text.strip():
        return f'{job.task} needs a non-empty {field}'
    if len(job.text) > max_text_chars:
        return (f'{job.task} text has {len(job.text)} characters; max_text_chars is '
                f'{max_text_chars}')
    if len(job.candidates) > MAX_CANDIDATES:
        return f'{len(job.candidates)} candidates; at most {MAX_CANDIDATES} are scored at once'
    for index, text in enumerate(job.candidates):
        if len(text) > max_text_chars:
            return (f'candidate {index} has {len(text)} characters; max_text_chars is '
                    f'{max_text_chars}')
        if not text.strip():
            return f'candidate {index} is blank: nothing to score'
    return ''


def gather(cond: threading.Condition, queued: Callable[[], int], size: int, wait: float,
           running: Callable[[], bool]) -> float:
    """Wait while requests keep coming, until queued() reaches size (called with cond held).

    The batch starts once the queue holds size jobs, or no request came for wait (the
    limits' batch_wait) s, and after size x wait s at most. Streams answered by one batch send
    their next requests within milliseconds of each other, not at once: a fixed wait from the
    first one started most batches before the last ones were in. Returns the seconds the batch
    was held for company: exactly 0.0 when it started at once (/diagnostics shows it).
    """
    start = time.monotonic()
    deadline, seen, held = start + wait, queued(), False
    while running() and size > 1 and queued() < size:
        now = time.monotonic()
        if queued() > seen:  # one more came: give the next one as long again
            deadline, seen = min(now + wait, start + size * wait), queued()
        if now >= deadline:
            break
        held = True
        cond.wait(deadline - now)
    return time.monotonic() - start if held else 0.0


def admit(job: Job, queue: deque, running: list, slots: int, queue_size: int) -> tuple:
    """Decide whether job enters the queue, and which yielding jobs (Job.yields) give way to it.

    A job that does not yield takes the place of the yielding ones waiting, and of those
    running when no thread would be free for it: ``slots`` threads serve ``running``, and the
    jobs queued ahead of it take the free ones first. Nothing gives way to a job that the full
    queue drops, nor to one that yields itself. Returns (accepted, the queue, the waiting ones
    taken off it, to be answered CANCELLED, and the running ones cancelled, which their thread
    answers at its next check).
    """
    ahead = list(queue) if job.yields else [other for other in queue if not other.yields]
    if len(ahead) >= queue_size:
        return False, queue, [], []
    if job.yields:
        return True, deque([*queue, job]), [], []
    waiting = [other for other in queue if other.yields]
    stopped = [other for other in running if other.yields] \
        if len(running) + len(ahead) >= slots else []
    for other in waiting + stopped:
        other.yielded_to = f'{job.task} request {job.request_id}'
        other.cancel_reason = f'yielded to {other.yielded_to}'
        other.cancel.set()
    return True, deque([*ahead, job]), waiting, stopped


class Worker:
    """A bounded FIFO of jobs served by ``threads`` threads; every job gets exactly one outcome.

    Jobs start in FIFO order; with more than one thread they may finish out of order. With one
    thread (an in-process model), the thread takes up to ``limits.max_batch_size`` waiting
    jobs at once and answers them with one batched generate; each keeps its own image, status,
    text stream and cancel. A yielding job (Job.yields) is cancelled by any other job that
    would wait for it. Meanwhile a look-ahead thread preprocesses the images that waiting
    jobs carry (``limits.preprocess_ahead``), so the next batch starts generating sooner.
    """

    _ids = itertools.count(1)

    def __init__(self, engine, frames: FrameSet, convert: Callable, now: Callable[[], float],
                 limits: Limits, log_error: Callable[[str], None], threads: int = 1):
        self._engine = engine
        self._frames = frames
        self.convert = convert  # explicit images (query, goal); the node swaps it
        # Why no frame may have come from the cameras named ('' if unknown).
        self.no_image_hint: Callable[[list], str] = lambda names: ''
        self.limits = limits
        self._runner = BatchRunner(engine, frames, now, lambda: self.limits,
                                   lambda: self.convert,
                                   lambda names: self.no_image_hint(names))
        self._log_error = log_error
        self._queue = deque()
        self._cond = threading.Condition()
        self._current = {}  # id -> job being served (a Job compares by value: no set)
        self.last_batch_wait = 0.0  # s the last batch was held for company (gather)
        self._slots = threads  # jobs served at once, beyond which a new one waits
        self._running = True
        self._threads = [threading.Thread(target=self._loop, name=f'vlm-worker-{index}',
                                          daemon=True) for index in range(threads)]
        self._batching = threads == 1  # with several, waiting jobs start as soon as taken
        if self._batching:
            self._threads.append(threading.Thread(target=self._look_ahead, daemon=True,
                                                  name='vlm-look-ahead'))
        for thread in self._threads:
            thread.start()

    @property
    def batches(self) -> int:
        """Engine runs so far; with ``batched``, the requests they answered: the batching ratio."""
        return self._runner.batches

    @property
    def batched(self) -> int:
        """Requests answered by the engine runs so far."""
        return self._runner.batched

    def new_request_id(self) -> str:
        """Return a process-unique id, so answers match requests in logs and bags."""
        return f'{next(self._ids)}-{int(time.time() * 1000) % 100000000:08d}'

    def submit(self, job: Job) -> bool:
        """Enqueue job; when the queue is full, answer it STATUS_DROPPED at once (False)."""
        job.request_id = job.request_id or self.new_request_id()
        refused = refusal(job, self.limits.max_text_chars)
        if refused:  # before it costs anything
            # The answer echoes the text: a megabyte, kept with an action's result for its
            # client (goal_book.RESULT_TIMEOUT), would be held as often as a peer sends it.
            job.text = job.text[:self.limits.max_text_chars]
            self._finish(Outcome(job, Status.BAD_INPUT, refused))
            return False
        with self._cond:
            accepted, waiting, running = False, [], []
            if self._running:
                accepted, self._queue, waiting, running = admit(
                    job, self._queue, list(self._current.values()), self._slots,
                    self.limits.queue_size)
            if accepted:
                self._cond.notify_all()  # a worker thread, and the look-ahead while busy
        if running:
            self._frames.wake()  # it may be waiting for a frame
        for other in waiting:
            self._finish(Outcome(other, Status.CANCELLED, other.cancel_reason))
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
                self.last_batch_wait = gather(self._cond, lambda: len(self._queue), size,
                                              self.limits.batch_wait, lambda: self._running)
                if not self._running:
                    return
                jobs = [self._queue.popleft() for _ in range(min(size, len(self._queue)))]
                for job in jobs:
                    self._current[id(job)] = job
                self._cond.notify_all()  # busy now: the look-ahead may start on the rest
            for outcome in self._runner.serve(jobs):
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

    def _finish(self, outcome: Outcome) -> None:
        try:
            outcome.job.done(outcome)
        except Exception as exc:  # noqa: BLE001 - one bad answer must not stop the worker
            self._log_error(f'answering request {outcome.job.request_id} failed: {exc!r}')

