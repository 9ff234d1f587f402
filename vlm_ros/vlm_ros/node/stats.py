"""Counters and latency percentiles for /diagnostics, kept without ROS."""

import math
import threading
from collections import Counter, deque


class Stats:
    """Requests served, outcomes by status name, and recent end-to-end latencies."""

    def __init__(self, window: int = 1000):
        self._lock = threading.Lock()
        self._latencies = deque(maxlen=window)
        self.by_status = Counter()
        self.captions_skipped = 0
        self._skipped_seq = None  # the frame counted last
        self.captions_yielded = 0

    def record(self, status_name: str, latency: float) -> None:
        """Count one answered request and its latency (seconds)."""
        with self._lock:
            self.by_status[status_name] += 1
            self._latencies.append(latency)

    def skip_caption(self, frame_seq: int) -> None:
        """Count a frame whose caption was due while the worker was busy, once per frame.

        The timer comes again while the same frame waits: that is no caption more skipped.
        """
        with self._lock:
            if frame_seq != self._skipped_seq:
                self._skipped_seq = frame_seq
                self.captions_skipped += 1

    def yield_caption(self) -> None:
        """Count a caption cancelled for a request that came before it was done."""
        with self._lock:
            self.captions_yielded += 1

    def percentile(self, q: float) -> float:
        """Return the q-th percentile (0-100, nearest rank) of recent latencies (0: none)."""
        with self._lock:
            values = sorted(self._latencies)
        if not values:
            return 0.0
        rank = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
        return values[rank]

    def served(self) -> int:
        """How many requests were answered, whatever their status."""
        with self._lock:
            return sum(self.by_status.values())
