"""The latest camera frame, kept once and converted only when a request uses it.

A camera publishes faster than a VLM answers, so only the newest frame matters: each new one
replaces the last (counted as dropped when nobody used it). Conversion to RGB happens on use,
once per frame, so frames that are never used cost nothing beyond the subscription.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Frame:
    """One received image message with its header and source stamp (seconds)."""

    seq: int
    header: object
    stamp: float
    msg: object


class FrameStore:
    """Thread-safe holder of the latest frame, with counters for diagnostics."""

    def __init__(self, convert: Optional[Callable[[object], object]]):
        # convert is public: the node swaps it when image_transport changes at run time.
        self.convert = convert
        self._cond = threading.Condition()
        self._latest: Optional[Frame] = None
        self._latest_used = False
        self.converted = None  # (seq, image or exception)
        self.received = 0
        self.dropped = 0
        self.invalid = 0

    def put(self, header, stamp: float, msg) -> None:
        """Store a new frame; called from the subscription callback, so it only swaps."""
        with self._cond:
            if self._latest is not None and not self._latest_used:
                self.dropped += 1
            self.received += 1
            self._latest = Frame(self.received, header, stamp, msg)
            self._latest_used = False
            self._cond.notify_all()

    def latest(self) -> Optional[Frame]:
        """Return the newest frame, or None before the first one."""
        with self._cond:
            return self._latest

    def wait_for(self, good: Callable[[Frame], bool], timeout: float,
                 stop: Callable[[], bool] = lambda: False) -> Optional[Frame]:
        """Wait up to timeout s for a frame that satisfies good; return the latest either way.

        stop() is checked whenever the store is woken (a new frame, or wake()), so a cancelled
        request stops waiting at once instead of after timeout.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while not stop() and (self._latest is None or not good(self._latest)):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._latest

    def wake(self) -> None:
        """Wake every wait_for, so that each checks its stop condition."""
        with self._cond:
            self._cond.notify_all()

    def image(self, frame: Frame):
        """Convert frame to an RGB array (once per frame); raise the conversion error."""
        with self._cond:
            if frame is self._latest:
                self._latest_used = True
            cached = self.converted
        if cached is None or cached[0] != frame.seq:
            try:
                cached = (frame.seq, self.convert(frame.msg))
            except Exception as exc:  # noqa: BLE001 - stored, re-raised to every user
                cached = (frame.seq, exc)
                with self._cond:
                    self.invalid += 1
            with self._cond:
                self.converted = cached
        if isinstance(cached[1], Exception):
            raise cached[1]
        return cached[1]
