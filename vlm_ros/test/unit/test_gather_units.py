"""scheduler.gather alone: how long a batch waits for company, on a scripted clock.

Requests arrive at the times a test gives; the condition's wait moves the clock to the next
arrival, or by its whole timeout when none comes sooner. No thread and no real time: a paced
system test would split the batch whenever its sender stalled longer than the slack.
"""

import pytest
from vlm_ros.node import scheduler


class Arrivals:
    """A clock and a condition: one request is queued at the start, the rest at ``times``."""

    def __init__(self, times: list):
        self.now, self.queued, self.waits = 0.0, 1, []
        self._times = sorted(times)

    def monotonic(self) -> float:
        return self.now

    def wait(self, timeout: float) -> None:
        self.waits.append(timeout)
        if self._times and self._times[0] <= self.now + timeout:
            self.now = self._times.pop(0)
            self.queued += 1
        else:
            self.now += timeout


def gather(monkeypatch, times: list, size: int = 8, wait: float = 1.0) -> tuple:
    """Return (seconds held, requests queued when the batch started)."""
    arrivals = Arrivals(times)
    monkeypatch.setattr(scheduler, 'time', arrivals)
    held = scheduler.gather(arrivals, lambda: arrivals.queued, size, wait, lambda: True)
    return held, arrivals.queued


def test_requests_each_within_batch_wait_of_the_last_join_past_batch_wait(monkeypatch):
    assert gather(monkeypatch, [0.5, 1.0, 1.5]) == (2.5, 4)


def test_a_gap_longer_than_batch_wait_starts_the_batch_without_the_late_one(monkeypatch):
    assert gather(monkeypatch, [0.5, 2.0]) == (1.5, 2)


def test_a_lone_request_waits_batch_wait_then_runs_alone(monkeypatch):
    assert gather(monkeypatch, []) == (1.0, 1)


def test_a_full_batch_starts_when_the_last_one_comes(monkeypatch):
    assert gather(monkeypatch, [0.1, 0.2, 5.0], size=3) == (0.2, 3)


@pytest.mark.parametrize('size, wait', [(1, 1.0), (8, 0.0)])
def test_no_wait_at_all_says_exactly_zero(monkeypatch, size, wait):
    assert gather(monkeypatch, [0.5], size=size, wait=wait) == (0.0, 1)


def test_a_stopping_worker_starts_at_once(monkeypatch):
    arrivals = Arrivals([0.5])
    monkeypatch.setattr(scheduler, 'time', arrivals)
    assert scheduler.gather(arrivals, lambda: arrivals.queued, 8, 1.0, lambda: False) == 0.0
    assert arrivals.waits == []
