"""How vlm_node is doing now, from its recent faults: the level of its /diagnostics (no ROS).

A fault is a model error (a MODEL_ERROR answer, or the inference server turning unreachable),
a camera frame that cannot be converted (a BAD_INPUT answer on a camera frame), a camera that
gave no usable frame (a NO_IMAGE, STALE_IMAGE or UNSYNCHRONIZED answer: a driver that stopped
or froze, cameras out of step), or a failed configure. A healthy answer is a request answered
OK; a configure that loads the model also makes the faults before it history (the cause of a
failed configure is gone, and the model that failed is unloaded). The rule, first match wins:

- ERROR: unconfigured after a failed configure; the inference server unreachable now; or
  RECUR faults or more within the last WINDOW s with no healthy answer since the first of them.
- WARN: not active (unconfigured, inactive, ...): the node serves nothing; or a fault within
  the last WINDOW s with no healthy answer since; or the inference server answers, but so
  that its requests will fail (GET /models HTTP 404: base_url is not its API root).
- OK: active, and no fault since the last healthy answer or within the last WINDOW s.

So a glitch an hour ago is history, shown as the last error and its age, not a fault now; one
healthy answer after a fault is OK at once, without waiting out the window. A bad image or
text that a client sends with its own request is that client's error, not the node's fault.
"""

import threading
import time
from collections import deque

WINDOW = 30.0  # s a fault keeps the level at WARN or ERROR unless a healthy answer follows
RECUR = 3  # faults within WINDOW, with no healthy answer between, that make it ERROR
MAX_RECENT = 1000  # fault times kept: a fault a millisecond for a whole window stays bounded
KINDS = ('model', 'image', 'camera', 'configure')
OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


class Health:
    """Faults and healthy answers, with the time of each (clock: a monotonic clock, in s).

    Thread-safe: answers are recorded on worker threads, the level is read by a timer.
    """

    def __init__(self, clock=time.monotonic, window: float = WINDOW, recur: int = RECUR):
        self._clock = clock
        self._window = window
        self._recur = recur
        self._lock = threading.Lock()
        # Times of the faults since the last healthy answer, the last MAX_RECENT of them.
        self._recent = deque(maxlen=MAX_RECENT)
        self._last = None  # (time, kind, message) of the latest fault
        self.counts = dict.fromkeys(KINDS, 0)

    def fault(self, kind: str, message: str) -> None:
        """Record a fault of kind (one of KINDS) now, with the reason a user needs."""
        if kind not in KINDS:
            raise ValueError(f'fault kind {kind!r} is not one of {KINDS}')
        with self._lock:
            now = self._clock()
            while self._recent and self._recent[0] <= now - self._window:
                self._recent.popleft()
            self._recent.append(now)
            self._last = (now, kind, message)
            self.counts[kind] += 1

    def healthy(self) -> None:
        """Record a healthy answer now: the faults before it are history."""
        with self._lock:
            self._recent.clear()

    def values(self) -> dict:
        """Return the last fault (message, kind, age in s; '' before any) and counts per kind."""
        with self._lock:
            last, counts, now = self._last, dict(self.counts), self._clock()
        values = {'last_error': last[2] if last else '',
                  'last_error_kind': last[1] if last else '',
                  'last_error_age_s': f'{now - last[0]:.1f}' if last else ''}
        values.update({f'errors_{kind}': count for kind, count in counts.items()})
        return values

    def current_faults(self) -> int:
        """How many faults are within the last WINDOW s and after the last healthy answer."""
        with self._lock:
            since = self._clock() - self._window
            return sum(1 for at in self._recent if at > since)

    def assess(self, state: str, configure_error: str = '',
               backend_reachable=None, backend_checked: str = '',
               backend_problem: str = '') -> tuple:
        """Return (level, why) for the node in lifecycle state, by the rule of this module.

        backend_reachable: False when the inference server is unreachable now (openai
        backend), with backend_checked saying how that was found; backend_problem: why its
        requests will fail although it answers (a base_url that is not its API root).
        """
        if state == 'unconfigured' and configure_error:
            return ERROR, f'unconfigured: configure failed: {configure_error}'
        if state != 'active':
            return WARN, f'{state}: not serving requests'
        if backend_reachable is False:
            return ERROR, f'active: the inference server is unreachable: {backend_checked}'
        faults = self.current_faults()
        if not faults and backend_problem:
            return WARN, f'active: the inference server answers, but {backend_problem}'
        if not faults:
            return OK, 'active'
        values = self.values()
        last = f"{values['last_error_kind']}: {values['last_error']}"
        if faults >= self._recur:
            return ERROR, (f'active: {faults} faults in the last {self._window:g} s, no answer '
                           f'OK since; the last one {values["last_error_age_s"]} s ago: {last}')
        return WARN, (f'active: a fault {values["last_error_age_s"]} s ago, no answer OK since: '
                      f'{last}')
