"""On the way out: answers get time to leave, and closing the outputs waits once, not per topic."""

from types import SimpleNamespace

from vlm_ros.node import shutdown


class _Clock:
    """The time the waits below let pass, without waiting."""

    def __init__(self):
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class _Publisher:
    """A publisher whose subscribers never acknowledge: each wait runs out its timeout."""

    def __init__(self, clock: _Clock, waits: list):
        self._clock, self._waits = clock, waits

    def wait_for_all_acked(self, timeout) -> bool:
        self._waits.append(timeout.nanoseconds / 1e9)
        self._clock.now += timeout.nanoseconds / 1e9
        return False


def test_outputs_share_one_acknowledgement_deadline(monkeypatch):
    """Five topics whose last messages are never acknowledged: 0.5 s in all, not 2.5."""
    clock, waits, destroyed = _Clock(), [], []
    monkeypatch.setattr(shutdown, 'time', SimpleNamespace(monotonic=clock.monotonic))
    publishers = [_Publisher(clock, waits) for _ in range(5)]
    shutdown.close_outputs(publishers, destroyed.append)
    assert destroyed == publishers
    assert waits[0] == shutdown.ACK_TIMEOUT and sum(waits) <= shutdown.ACK_TIMEOUT + 1e-6, waits


def test_what_the_transition_answered_itself_still_gets_the_grace():
    """A goal answered and sent within the transition: its client may still ask for it."""
    pending = [True]
    sent = shutdown.shutdown_gracefully('active', lambda: pending.clear(),
                                        lambda: bool(pending), lambda: True)
    assert sent is not None and not pending


def test_nothing_pending_ends_at_once():
    assert shutdown.shutdown_gracefully('active', lambda: None, lambda: False,
                                        lambda: True) is None
