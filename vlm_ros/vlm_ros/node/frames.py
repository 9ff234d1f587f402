"""The latest camera frame, kept once and converted only when a request uses it.

A camera publishes faster than a VLM answers, so only the newest frame matters: each new one
replaces the last (counted as dropped when nobody used it), and gaps in the stamps count the
frames that never arrived. Conversion to RGB happens on use, once per frame, so frames that
are never used cost nothing beyond the subscription.
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Frame:
    """One received image message with its header, source stamp (s) and transport."""

    seq: int
    header: object
    stamp: float
    msg: object
    transport: str  # 'raw' or 'compressed': which converter turns it into RGB


class StampGaps:
    """Estimate frames lost before they reached the node, from gaps in the source stamps.

    A camera stamps frames at a steady rate, so a frame lost in transport (or overwritten in a
    full reader queue) leaves a gap of whole periods between two stamps that did arrive. The
    period is the median of the last WINDOW intervals: right while fewer than half of them hold
    a gap, and unmoved by stamping jitter. A gap longer than PAUSE s is a camera that stopped
    publishing, not loss; stamps that repeat or go back (an unstamped camera, a bag played
    again) restart the estimate.
    """

    WINDOW = 32
    MIN_INTERVALS = 8
    PAUSE = 1.0

    def __init__(self):
        self._last = None
        self._intervals = deque(maxlen=self.WINDOW)
        self.lost = 0

    def period(self) -> float:
        """Return the observed camera period in s (0.0 while too few intervals are known)."""
        if len(self._intervals) < self.MIN_INTERVALS:
            return 0.0
        return sorted(self._intervals)[len(self._intervals) // 2]

    def add(self, stamp: float) -> None:
        """Account for one received frame's stamp (seconds)."""
        last, self._last = self._last, stamp
        if last is None:
            return
        interval = stamp - last
        if interval <= 0:
            self._intervals.clear()
            return
        period = self.period()
        if period and 1.5 * period < interval <= self.PAUSE:
            self.lost += round(interval / period) - 1
        self._intervals.append(interval)


class FrameStore:
    """Thread-safe holder of the latest frame, with counters for diagnostics.

    ``cond``: the lock and wake-up shared by every camera's store (FrameSet), so a request
    can wait for all of them at once.
    """

    def __init__(self, cond: Optional[threading.Condition] = None):
        self._converters = {}
        self._cond = cond or threading.Condition()
        self._latest: Optional[Frame] = None
        self._latest_used = False
        self.converted = None  # (seq, image or exception)
        self.received = 0
        self.dropped = 0
        self.invalid = 0
        self.gaps = StampGaps()

    def set_converters(self, converters: dict) -> None:
        """Set the transport -> RGB converters; a frame converted before is converted again.

        Limits such as max_image_pixels live in the converters, so a change applies to the
        next use of any frame, also one received before it.
        """
        with self._cond:
            self._converters = dict(converters)
            self.converted = None

    def put(self, header, stamp: float, msg, transport: str) -> None:
        """Store a new frame (only swaps: it runs in the subscription callback)."""
        with self._cond:
            if self._latest is not None and not self._latest_used:
                self.dropped += 1
            self.received += 1
            self.gaps.add(stamp)
            self._latest = Frame(self.received, header, stamp, msg, transport)
            self._latest_used = False
            self._cond.notify_all()

    def latest(self) -> Optional[Frame]:
        """Return the newest frame, or None before the first one."""
        with self._cond:
            return self._latest

    def image(self, frame: Frame):
        """Convert frame to an RGB array (once per frame); raise the conversion error."""
        with self._cond:
            if frame is self._latest:
                self._latest_used = True
            cached = self.converted
            convert = self._converters[frame.transport]
        if cached is None or cached[0] != frame.seq:
            try:
                cached = (frame.seq, convert(frame.msg))
            except Exception as exc:  # noqa: BLE001 - stored, re-raised to every user
                cached = (frame.seq, exc)
                with self._cond:
                    self.invalid += 1
            with self._cond:
                self.converted = cached
        if isinstance(cached[1], Exception):
            raise cached[1]
        return cached[1]


def skew(frames: list) -> float:
    """Return the seconds between the earliest and the latest stamp of frames (none None)."""
    stamps = [frame.stamp for frame in frames]
    return max(stamps) - min(stamps)


class FrameSet:
    """The latest frame of each camera (one FrameStore each, one shared lock), in order.

    A request takes one frame per camera: the newest ones, waiting (up to its bound) while a
    camera has none, one is not fresh, or their stamps lie more than max_skew apart. Cameras
    publish on their own clocks, so the newest frames' skew changes with every frame: waiting
    for the next one usually finds a closer pair.
    """

    def __init__(self, names: tuple = ()):
        self._cond = threading.Condition()
        self.names = tuple(names) or ('',)  # '': the one camera on image
        self.stores = tuple(FrameStore(self._cond) for _ in self.names)

    @property
    def primary(self) -> FrameStore:
        """The first camera's store: the one camera of a node without a cameras parameter."""
        return self.stores[0]

    def select(self, names: tuple) -> tuple:
        """Return the indices of the cameras called names, in that order (all: names empty).

        Raises ValueError naming the cameras there are, for a name that is not one of them,
        a repeated name, or any name where the node has one camera without a name.
        """
        if not names:
            return tuple(range(len(self.stores)))
        if self.names == ('',):
            raise ValueError('this node has one camera (on image) and no camera names; name '
                             'none, or set the cameras parameter')
        unknown = [name for name in names if name not in self.names]
        if unknown or len(set(names)) < len(names):
            what = f'unknown camera {", ".join(unknown)[:200]}' if unknown else \
                f'a camera named twice in {", ".join(names)[:200]}'
            raise ValueError(f'{what}; the cameras are {", ".join(self.names)}')
        return tuple(self.names.index(name) for name in names)

    def wait_for(self, good: Callable[[Frame], bool], max_skew: float, timeout: float,
                 stop: Callable[[], bool] = lambda: False, chosen: tuple = ()) -> list:
        """Wait up to timeout s for good frames within max_skew s (0: any); return the latest.

        The list holds each camera's newest frame (None before its first) whether or not they
        are good: every camera's, or those at the indices chosen (select). stop() is checked
        whenever a store is woken (a new frame, or wake()), so a cancelled request stops
        waiting at once instead of after timeout.
        """
        deadline = time.monotonic() + timeout
        stores = [self.stores[index] for index in chosen] if chosen else self.stores
        with self._cond:
            while not stop():
                frames = [store.latest() for store in stores]
                if None not in frames and all(map(good, frames)) and \
                        (max_skew <= 0 or skew(frames) <= max_skew):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [store.latest() for store in stores]

    def wake(self) -> None:
        """Wake every wait_for, so that each checks its stop condition."""
        with self._cond:
            self._cond.notify_all()
