"""scheduler.admit alone: which request enters the queue, and what yields to it, without threads.

A periodic caption or re-plan (Job.yields) gives way to a request that would wait for it, and
only to one that is accepted; test_caption_yields.py runs the same rule through real workers.
"""

from collections import deque

from vlm_ros.node.jobs import Job
from vlm_ros.node.scheduler import admit


def job(name: str, yields: bool = False) -> Job:
    return Job('caption' if yields else 'vqa', '', lambda outcome: None, request_id=name,
               yields=yields)


def test_a_waiting_periodic_job_leaves_the_queue_for_a_request():
    periodic, request = job('periodic', yields=True), job('request')
    accepted, queue, waiting, stopped = admit(request, deque([periodic]), [], 1, 8)
    assert accepted and list(queue) == [request] and waiting == [periodic] and stopped == []
    assert periodic.cancel.is_set() and periodic.yielded_to == 'vqa request request'
    assert periodic.cancel_reason == 'yielded to vqa request request'


def test_a_running_periodic_job_is_cancelled_when_no_thread_is_free():
    periodic, request = job('periodic', yields=True), job('request')
    accepted, queue, _, stopped = admit(request, deque(), [periodic], 1, 8)
    assert accepted and list(queue) == [request] and stopped == [periodic]
    assert periodic.cancel.is_set()


def test_with_a_thread_free_a_running_periodic_job_goes_on():
    periodic, request = job('periodic', yields=True), job('request')
    accepted, _, _, stopped = admit(request, deque(), [periodic], 2, 8)
    assert accepted and stopped == [] and not periodic.cancel.is_set()


def test_the_jobs_queued_ahead_take_the_free_threads_first():
    periodic, first, second = job('periodic', yields=True), job('first'), job('second')
    accepted, queue, _, stopped = admit(second, deque([first]), [periodic], 2, 8)
    assert accepted and list(queue) == [first, second] and stopped == [periodic]


def test_nothing_gives_way_to_a_request_the_full_queue_drops():
    periodic, first, second = job('periodic', yields=True), job('first'), job('second')
    queued = deque([first])
    accepted, queue, waiting, stopped = admit(second, queued, [periodic], 2, 1)
    assert not accepted and queue is queued and list(queue) == [first]
    assert waiting == stopped == [] and not periodic.cancel.is_set()


def test_a_waiting_periodic_job_makes_room_in_a_full_queue():
    periodic, request = job('periodic', yields=True), job('request')
    accepted, queue, waiting, _ = admit(request, deque([periodic]), [], 1, 1)
    assert accepted and list(queue) == [request] and waiting == [periodic]


def test_a_periodic_job_cancels_no_other():
    running, waiting_one, new = (job(name, yields=True) for name in ('running', 'waiting', 'new'))
    accepted, queue, waiting, stopped = admit(new, deque([waiting_one]), [running], 1, 8)
    assert accepted and list(queue) == [waiting_one, new] and waiting == stopped == []
    assert not running.cancel.is_set() and not waiting_one.cancel.is_set()
