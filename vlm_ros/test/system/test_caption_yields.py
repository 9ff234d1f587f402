"""A periodic caption yields: a request that comes before it is done cancels it.

caption_rate's captions are best-effort (skipped while the worker is busy); a re-plan, an
instruction or a query must not wait for one that started just before it. The worker
(scheduler.py) serves a real tiny LLaVA that never ends a generation by itself, so each
generation runs to its token budget unless cancelled. A caption is held in its first streamed
piece until the other request is submitted: it is running then, whatever the machine's load.
No DDS: the node's part is test_node_topics.py's.
"""

import contextlib
import threading
import time

import pytest
from engine_fixtures import scene
from serve_harness import remote_config
from vlm_ros.engine import EngineConfig, make_engine
from vlm_ros.engine.local import VlmEngine
from vlm_ros.node.frames import FrameSet
from vlm_ros.node.jobs import Job, Limits, Status
from vlm_ros.node.scheduler import Worker

BUDGET = 40  # tokens of a generation that is not cancelled
TIMEOUT = 60.0


@pytest.fixture(scope='module')
def engine(untrained_llava):
    """Return the never-ending tiny LLaVA, loaded on the CPU with a BUDGET-token answer."""
    loaded = VlmEngine(EngineConfig(model=str(untrained_llava), device='cpu', dtype='float32',
                                    max_new_tokens=BUDGET, constrain_plans='off'))
    loaded.load()
    yield loaded
    loaded.unload()


class Answers:
    """Each job's outcome, in the order the worker gave them."""

    def __init__(self):
        self.outcomes = []
        self._cond = threading.Condition()

    def done(self, outcome) -> None:
        with self._cond:
            self.outcomes.append(outcome)
            self._cond.notify_all()

    def of(self, job: Job):
        """Wait for job's outcome and return it."""
        with self._cond:
            assert self._cond.wait_for(lambda: any(o.job is job for o in self.outcomes),
                                       TIMEOUT), f'no outcome for {job.task} {job.request_id}'
            return next(o for o in self.outcomes if o.job is job)


@contextlib.contextmanager
def serving(engine):
    """Give a worker of the engine with a camera frame, as an active node has them.

    It is stopped on the way out, also when the test failed, and must have logged no error.
    """
    frames = FrameSet()
    frames.primary.set_converters({'raw': lambda image: image})
    frames.primary.put(None, time.monotonic(), scene('red'), 'raw')
    errors = []
    worker = Worker(engine, frames, lambda image: image, time.monotonic, Limits(),
                    errors.append, engine.concurrency)
    try:
        yield worker
    finally:
        worker.stop('test over')
    assert errors == []


@pytest.fixture
def worker(engine):
    """Yield a one-thread worker (an in-process model's)."""
    with serving(engine) as one:
        yield one


def held_caption(answers: Answers, yields: bool, released: threading.Event) -> tuple:
    """Return a caption job held in its first streamed piece until released, and an event.

    The event is set when the job got there: its generation is running.
    """
    streaming = threading.Event()

    def first_piece(_text):
        streaming.set()
        assert released.wait(TIMEOUT)
    return Job('caption', '', answers.done, on_text=first_piece, yields=yields), streaming


def while_a_caption_runs(worker, yields: bool, make_next) -> tuple:
    """Submit a held caption, then the job make_next(done) once it generates; release it.

    Return the Answers, the caption and the next job.
    """
    answers, released = Answers(), threading.Event()
    caption, streaming = held_caption(answers, yields, released)
    worker.submit(caption)
    assert streaming.wait(TIMEOUT), 'the caption never started generating'
    following = make_next(answers.done)
    worker.submit(following)
    released.set()
    return answers, caption, following


def a_query(done) -> Job:
    return Job('vqa', 'what is there?', done, max_new_tokens=3)


def test_a_running_periodic_caption_is_cancelled_by_a_request(worker):
    answers, caption, query = while_a_caption_runs(worker, True, a_query)
    cancelled, answered = answers.of(caption), answers.of(query)
    assert cancelled.status == Status.CANCELLED and caption.yielded_to
    assert cancelled.message == f'yielded to vqa request {query.request_id} during generation'
    assert 0 < cancelled.result.output_tokens < BUDGET, 'stopped at a decoding step'
    assert answered.status != Status.CANCELLED and answered.result.output_tokens == 3
    assert answers.outcomes.index(cancelled) < answers.outcomes.index(answered)


def test_a_requested_caption_is_not_cancelled_by_the_next_request(worker):
    """A ~/query or goal caption is somebody's answer: it yields to nothing."""
    answers, caption, query = while_a_caption_runs(worker, False, a_query)
    finished = answers.of(caption)
    assert finished.status != Status.CANCELLED and finished.result.output_tokens == BUDGET
    assert not caption.yielded_to and answers.of(query).result.output_tokens == 3


def test_a_waiting_periodic_caption_leaves_the_queue_for_a_request(worker):
    """It is answered at once, while the request before it still runs, and never runs."""
    answers, released = Answers(), threading.Event()
    running, streaming = held_caption(answers, False, released)
    worker.submit(running)
    assert streaming.wait(TIMEOUT), 'the first request never started generating'
    caption = Job('caption', '', answers.done, yields=True)
    worker.submit(caption)
    assert worker.queue_length() == 1
    instruction = Job('plan', 'pick up the red block', answers.done, max_new_tokens=3)
    worker.submit(instruction)
    cancelled = answers.of(caption)
    assert not released.is_set() and answers.outcomes == [cancelled], 'answered at once'
    assert cancelled.status == Status.CANCELLED and cancelled.result is None
    assert cancelled.message == f'yielded to plan request {instruction.request_id}'
    assert worker.queue_length() == 1, 'only the instruction waits'
    released.set()
    assert answers.of(instruction).result.output_tokens == 3


def test_a_periodic_caption_does_not_cancel_another(worker):
    answers, first, second = while_a_caption_runs(
        worker, True, lambda done: Job('caption', '', done, yields=True))
    assert answers.of(first).result.output_tokens == BUDGET
    assert answers.of(second).result.output_tokens == BUDGET
    assert not first.yielded_to and not second.yielded_to


@contextlib.contextmanager
def caption_at_a_frozen_server(fault_server):
    """Yield a worker of an inference server's engine (2 threads), ask() and a caption.

    The periodic caption is at the server, which stays frozen until the block ends, so what
    runs stays running; ask() submits a query and returns it. On the way out the caption must
    have been cancelled and, the server unfrozen, every query answered.
    """
    engine = make_engine(remote_config(fault_server, max_concurrency=2))
    engine.load()
    answers, asked = Answers(), []
    caption = Job('caption', '', answers.done, yields=True)

    def ask() -> Job:
        asked.append(a_query(answers.done))
        worker.submit(asked[-1])
        return asked[-1]
    fault_server.block()
    try:
        with serving(engine) as worker:
            worker.submit(caption)
            fault_server.wait_for_request(count=1)
            yield worker, ask, caption
            assert answers.of(caption).status == Status.CANCELLED
            fault_server.unblock()
            assert [answers.of(job).status for job in asked] == [Status.OK] * len(asked)
    finally:
        fault_server.unblock()
        engine.unload()


def test_with_a_thread_free_a_periodic_caption_is_not_cancelled(fault_server):
    """An inference server's engine runs max_concurrency requests at once, a thread each.

    A request that a free thread takes at once waits for no caption; the next one would.
    """
    with caption_at_a_frozen_server(fault_server) as (worker, ask, caption):
        ask()
        fault_server.wait_for_request(count=2)
        assert worker.serving() == 2 and not caption.cancel.is_set(), 'a thread was free'
        last = ask()
        assert caption.yielded_to == f'vqa request {last.request_id}'


def test_the_second_of_two_requests_for_one_free_thread_cancels_a_periodic_caption(
        fault_server):
    """Submitted back to back: the first takes the free thread, the second would wait.

    Whether or not a thread has taken the first by then, the second counts it as ahead.
    """
    with caption_at_a_frozen_server(fault_server) as (_, ask, caption):
        ask()
        assert not caption.cancel.is_set(), 'the free thread is for the first'
        last = ask()
        assert caption.yielded_to == f'vqa request {last.request_id}'
