"""The caption timer's choices (node/topics.py), without DDS: caption, skip, or nothing new.

Topics takes from the rclpy node only the operations that create and destroy its endpoints;
caption_due() itself reads the latest frame and the worker through plain callables, so a
frame store and a worker that say what a test sets stand in for them here.
"""

from types import SimpleNamespace

from vlm_ros.node.stats import Stats
from vlm_ros.node.topics import Topics


class Worker:
    """Busy or idle as a test sets it; keeps the jobs submitted."""

    def __init__(self):
        self.busy, self.jobs = True, []

    def idle(self) -> bool:
        return not self.busy

    def submit(self, job) -> bool:
        self.jobs.append(job)
        return True


def _topics(frame: SimpleNamespace, worker: Worker, stats: Stats) -> Topics:
    def unused(*_args, **_kwargs):
        raise AssertionError('caption_due() creates and destroys nothing')
    node = SimpleNamespace(create_publisher=unused, create_subscription=unused,
                           create_timer=unused, destroy_subscription=unused,
                           destroy_timer=unused, get_logger=lambda: None)
    return Topics(node, SimpleNamespace(worker=lambda: worker), lambda: None,
                  lambda: SimpleNamespace(latest=lambda: frame), lambda: None, stats)


def test_a_frame_whose_caption_waits_on_a_busy_worker_is_skipped_once():
    frame, worker, stats = SimpleNamespace(seq=1), Worker(), Stats()
    topics = _topics(frame, worker, stats)
    for _ in range(5):  # the timer comes 5 times while one frame waits
        topics.caption_due()
    assert stats.captions_skipped == 1 and not worker.jobs
    frame.seq = 2  # a new frame, still busy: one more skipped
    topics.caption_due()
    topics.caption_due()
    assert stats.captions_skipped == 2

    worker.busy = False  # idle: the newest frame is captioned, once
    topics.caption_due()
    topics.caption_due()
    assert [job.task for job in worker.jobs] == ['caption'] and stats.captions_skipped == 2
