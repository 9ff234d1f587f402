"""The node's /diagnostics: model, backend, device, state, counters and latency, once a second.

The engine adds its own values (``status()``): GPU memory in process; the server's URL and
whether it is reachable for the openai backend. The level says how the node is doing now, from
its recent faults and healthy answers (health.py has the rule); the message says why.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

from ..compat import distro, steady_timer
from .frames import FrameSet
from .health import Health
from .jobs import Outcome, Status
from .messages import diagnostics_msg
from .plan_execution import PlanExecution
from .scheduler import Worker
from .settings import Settings
from .stats import Stats

ROS_DISTRO = distro()
# Answers that say the node's cameras gave it no usable frame: a fault of the robot's cameras.
CAMERA_FAULTS = (Status.NO_IMAGE, Status.STALE_IMAGE, Status.UNSYNCHRONIZED)


@dataclass(frozen=True)
class Sources:
    """What /diagnostics reports of the node: each is called once a second.

    ``engine()``, ``worker()``, ``frames()`` and ``execution()`` return the node's current
    ones, None while it has none (they come and go with the lifecycle).
    """

    settings: Callable[[], Settings]
    state: Callable[[], str]  # the lifecycle state: 'unconfigured', 'active', ...
    configure_error: Callable[[], str]  # why the last configure failed; '' once one succeeds
    model_name: Callable[[], str]
    engine: Callable[[], object]
    worker: Callable[[], Optional[Worker]]
    frames: Callable[[], Optional[FrameSet]]
    image_hint: Callable[[], str]  # why no frame comes ('' when fine or not subscribed)
    execution: Callable[[], Optional[PlanExecution]]
    # Counted once at gc.freeze(): counting walks every frozen object (45 ms for 340 000).
    frozen_objects: Callable[[], int]
    subscribers: Callable[[], dict]  # matched subscriptions of the outputs, while open


def _total(frames: Optional[FrameSet], count: Callable) -> int:
    """Return count(store) summed over the cameras' frame stores (0 while there are none)."""
    return sum(count(store) for store in frames.stores) if frames else 0


class DiagnosticsReporter:
    """Counts outcomes and publishes a DiagnosticArray on /diagnostics every second.

    The publisher and timer exist in every lifecycle state, so a monitor sees an unconfigured
    or failed node too, with the last error. ``node`` only creates them and names the status.
    """

    def __init__(self, node, sources: Sources):
        self._sources = sources
        self.stats = Stats()
        self.health = Health()
        self._reachable = None  # the inference server's reachability at the last look
        self.last_image_size = ''  # what the model was last given, after max_image_side
        # Named by the node's full name: robots sharing a domain stay apart.
        self._name = f'{node.get_fully_qualified_name()}: vlm'
        self._logger = node.get_logger()
        self._clock = node.get_clock()
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # Wall time: with use_sim_time and no /clock yet (a bag not playing), a monitor must
        # still hear from the node. Its own callback group: in the node's default one, with the
        # lifecycle services, nothing was published while a transition ran (minutes of
        # silence while configure loads or downloads a model, never a 'configuring').
        steady_timer(node, 1.0, self.publish, MutuallyExclusiveCallbackGroup())

    def fault(self, kind: str, message: str) -> None:
        """Record a fault now: one of health.KINDS, and why."""
        self.health.fault(kind, message)

    def record(self, outcome: Outcome) -> None:
        """Count one answered request: OK is a healthy answer, some failures are faults.

        A model error is a fault, and so is a camera frame the node could not use (BAD_INPUT
        on the latest frame, unless its text was refused) or did not have (NO_IMAGE,
        STALE_IMAGE, UNSYNCHRONIZED, for a request that waited for frames: features_rate and
        replan_period look without waiting); a bad image or text a client sent is that
        client's error.
        """
        # Health first: a message that counts this answer has its effect on the level too.
        if outcome.status == Status.OK:
            self.health.healthy()
        elif outcome.status == Status.MODEL_ERROR:
            self.fault('model', outcome.message)
        elif outcome.status == Status.BAD_INPUT and outcome.job.image_msg is None and \
                outcome.header is not None and not outcome.text_refused:
            self.fault('image', outcome.message)
        elif outcome.status in CAMERA_FAULTS and outcome.job.image_msg is None and \
                outcome.job.waits:  # a timer's job that may not wait asks, and is told why
            self.fault('camera', outcome.message)
        self.stats.record(outcome.status.name, outcome.total_time)
        if outcome.result is not None and outcome.result.image_size != (0, 0):
            self.last_image_size = '{}x{}'.format(*outcome.result.image_size)

    def values(self) -> dict:
        """Everything reported, as plain values (tests read the same keys).

        An inference server seen unreachable here, after it was not, is a model fault.
        """
        sources = self._sources
        engine, worker, frames = sources.engine(), sources.worker(), sources.frames()
        settings = sources.settings()
        loaded = engine is not None and engine.is_loaded
        stats = self.stats
        values = {
            'model': sources.model_name(),
            'backend': settings.backend,
            'ros_distro': ROS_DISTRO,
            'device': settings.device,
            'state': sources.state(),
            'model_loaded': loaded,
            'requests_served': stats.served(),
            'requests_in_progress': worker.serving() if worker else 0,
            'latency_p50_s': f'{stats.percentile(50):.3f}',
            'latency_p95_s': f'{stats.percentile(95):.3f}',
            'queue_length': worker.queue_length() if worker else 0,
            # Engine runs and the requests they answered: more requests than runs is batching.
            'engine_runs': worker.batches if worker else 0,
            'engine_requests': worker.batched if worker else 0,
            # How long the last batch was held for company (batch_wait); 0 when it started at once.
            'last_batch_wait_s': f'{worker.last_batch_wait:.3f}' if worker else '0.000',
            # Summed over the cameras (each camera's own: frames_received_by_camera).
            'frames_received': _total(frames, lambda store: store.received),
            'frames_dropped': _total(frames, lambda store: store.dropped),
            'frames_invalid': _total(frames, lambda store: store.invalid),
            'frames_lost_estimate': _total(frames, lambda store: store.gaps.lost),
            'captions_skipped': stats.captions_skipped,
            # Periodic captions cancelled for a request that came before they were done.
            'captions_yielded': stats.captions_yielded,
            # Objects the garbage collector no longer walks: the model and libraries (node.py).
            'gc_frozen_objects': sources.frozen_objects(),
            'last_image_size': self.last_image_size,
            # Why no frame comes, when nothing publishes where the node listens ('' if fine).
            'image_input': sources.image_hint(),
        }
        values.update({f'status_{status.name.lower()}': stats.by_status[status.name]
                       for status in Status})
        if frames is not None and len(frames.names) > 1:
            values['frames_received_by_camera'] = ', '.join(
                f'{name} {store.received}'
                for name, store in zip(frames.names, frames.stores, strict=True))
        values.update(sources.subscribers())
        execution = sources.execution()
        if execution is not None:
            values.update(execution.values())
        if loaded:
            values.update(engine.status())
        self._look_at_backend(values)
        values['configure_error'] = sources.configure_error()
        values.update(self.health.values())
        return values

    def _look_at_backend(self, values: dict) -> None:
        reachable = values.get('backend_reachable')
        if reachable is False and self._reachable is not False:
            self.fault('model', f"the inference server at {values.get('base_url')} is "
                                f"unreachable: {values.get('backend_checked')}")
        self._reachable = reachable

    def publish(self) -> None:
        """Publish the current values with the level and why (the timer's callback).

        A value that cannot be read skips this second's message, with the reason logged: an
        exception here would end the executor, and the node with it.
        """
        try:
            values = self.values()
        except Exception as exc:  # noqa: BLE001 - the next second tries again
            self._logger.error(f'diagnostics skipped: {exc!r}', throttle_duration_sec=10.0)
            return
        level, why = self.health.assess(values['state'], values['configure_error'],
                                        values.get('backend_reachable'),
                                        values.get('backend_checked', ''),
                                        values.get('backend_problem', ''))
        summary = f"{why}; {values['requests_served']} requests served"
        self._pub.publish(diagnostics_msg(self._name, level, summary, values,
                                          self._clock.now().to_msg()))
