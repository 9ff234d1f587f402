"""The playback node behind vlm_replay: recorded bytes out on the recorded timing, answers in.

Messages of a rosbag2 recording are published as the recorded serialized bytes, so any type
replays without being decoded (its Python package must be installed); those of a ROS 1 bag are
converted to CDR first. Instructions the command line gives are published live on
``instruction`` at their bag times (the recording's own instruction topic is then left out).
With a recorder, playback ends once every replayed instruction has its Plan (or the linger
time has passed).
"""

import heapq
import sys
import threading
import time
import traceback
from collections import Counter
from types import SimpleNamespace

from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from std_msgs.msg import String

from . import instructions, topics
from .node_settings import record_settings
from .playback import (
    Clock,
    Progress,
    by_topic,
    parse_remaps,
    played,
    published_types,
    select_connections,
    wait_acknowledged,
    wait_for_peers,
    without_answers,
)
from .recorder import Recorder, message_class
from .storage import (
    IMAGE_TYPES,
    PLAN_TYPE,
    STRING_TYPE,
    BagError,
    DamagedBagError,
    cdr_converter,
    open_bag,
)

# Reliable publishers reach best-effort subscribers too (a camera subscription) and lose nothing
# on the way to reliable ones (instructions); depth covers a burst of frames on loopback.
PLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
ASKED_TOPIC = 'instruction'  # vlm_node's input, relative: a namespaced replay follows it
GRACE_S = 0.5  # recording time after the last Plan, for the messages published along with it
ACKED_S = 5.0  # the longest wait for reliable subscribers to acknowledge what was played


class Replay(Node):
    """Plays the bag on its own thread, so the executor stays free for the recorder."""

    def __init__(self, args):
        super().__init__('vlm_replay')
        self.args = args
        self.done = threading.Event()
        self.code = 0
        self._stop = threading.Event()
        self._thread = self._recorder = self._timing = self._reader = None
        self._interrupted = False
        self._played = threading.Event()  # played and lingered: a signal cuts nothing short
        self._reader = open_bag(args.bag)
        if not self._reader.message_count:
            raise BagError(f'{args.bag} holds no messages: nothing to play')
        length = (self._reader.end_time - self._reader.start_time) / 1e9
        if args.start > length:
            raise BagError(f'--start {args.start:g} is past the end of {args.bag} '
                           f'({length:.3f} s long)')
        self._connections = select_connections(self._reader.connections, args.topics)
        self._asked = []  # instructions the command line gives: published on ASKED_TOPIC
        if instructions.given(args):
            self._asked = instructions.for_replay(self._reader, args)
            recorded = topics.instruction_topic(self._reader, None, required=False)
            self._connections = [c for c in self._connections if c.topic != recorded]
        remaps = parse_remaps(args.remap, {c.topic for c in self._reader.connections})
        self._connections = without_answers(self._connections, remaps, args,
                                            self.resolve_topic_name, self.get_logger().warning)
        asked = [SimpleNamespace(topic=ASKED_TOPIC, msgtype=STRING_TYPE)] if self._asked else []
        types = published_types([*self._connections, *asked], remaps, self.resolve_topic_name)
        self._outputs = {topic: self.create_publisher(message_class(msgtype), topic, PLAY_QOS)
                         for topic, msgtype in types.items()}
        self._asked_pub = self._outputs.get(ASKED_TOPIC)  # --instruction's, with --instruction
        self._cameras = [t for t in self._outputs if types[t] in IMAGE_TYPES]
        self._inputs = [t for t in self._outputs if types[t] == STRING_TYPE and
                        topics.is_instruction_name(t)]
        self._targets = {c.id: remaps.get(c.topic, c.topic) for c in self._connections}
        self._to_cdr = {c.id: cdr_converter(self._reader, c) for c in self._connections}
        self.sent = Counter()
        self._recorder = Recorder(self, args.record, args.record_topics, args.storage,
                                  args.echo) if args.record else None
        if args.clock:
            self._clock_pub = self.create_publisher(ClockMsg, '/clock', 10)
            self.create_timer(1.0 / args.clock, self._publish_clock)
        self._thread = threading.Thread(target=self._run, name='replay', daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._wait_for_peers()
            self._record_settings()
            started = time.monotonic()
            while not self._stop.is_set():
                self._play_once()
                if not self.args.loop:
                    break
            seconds = time.monotonic() - started
            for warning in wait_acknowledged(self._outputs, ACKED_S, self._stop):
                self.get_logger().warning(warning)
            self._linger()
            self._played.set()
            self._report(seconds)
            if self._recorder is not None:
                self._recorder.close()  # a write that failed is known here: exit 1
        except DamagedBagError as exc:  # bad input, found as it is played: what was played is said
            print(f'vlm_replay: {exc}; played {played(self.sent)} before it', file=sys.stderr,
                  flush=True)
            self.code = exc.exit_code
        except BagError as exc:
            self.get_logger().error(str(exc))
            self.code = 1
        except Exception:  # noqa: BLE001 - reported; the exit status tells the caller
            self.get_logger().error(traceback.format_exc())
            self.code = 1
        finally:
            self.done.set()

    def _unsubscribed(self) -> list:
        """Return what vlm_node consumes and nobody subscribes to (topics.unheard)."""
        return topics.unheard({t: p.get_subscription_count() for t, p in self._outputs.items()},
                              self._cameras, self._inputs)

    def _wait_for_peers(self) -> None:
        """Wait (bounded) for discovery, so the first messages are not lost to an empty graph."""
        warning = wait_for_peers(
            lambda: not self._unsubscribed() and (
                self._recorder is None or self._recorder.matched()),
            self._unsubscribed, self.args.wait_for_subscribers, self._stop)
        if warning:
            self.get_logger().warning(warning)

    def _record_settings(self) -> None:
        """With --record, store the answering node's parameters beside its answers."""
        plans = [t for t, msgtype in (self._recorder.types if self._recorder else {}).items()
                 if msgtype == PLAN_TYPE]
        if not plans:
            return
        try:
            record_settings(self, plans[0], self.args.record, self._stop)
        except BagError as exc:  # the answers are still worth recording
            if not self._stop.is_set():
                self.get_logger().warning(f'no settings recorded: {exc}')

    def _play_once(self) -> None:
        start_ns = self._reader.start_time + int(self.args.start * 1e9)
        progress = Progress((self._reader.end_time - start_ns) / 1e9,
                            None if self.args.progress else False)
        clock = self._timing = Clock(start_ns, self.args.rate, time.monotonic())
        count = 0
        recorded = ((log_ns, 0, connection, data) for connection, log_ns, data in
                    self._reader.messages(self._connections, start=start_ns))
        asked = ((i.bag_time_ns, 1, None, i.text) for i in self._asked
                 if i.bag_time_ns >= start_ns)
        try:
            # On equal times the recorded message goes first: a frame logged with an
            # instruction was there to be seen, as vlm_eval pairs them.
            for log_ns, _, connection, data in heapq.merge(recorded, asked,
                                                           key=lambda e: e[:2]):
                if not clock.wait(log_ns, self._stop):
                    break
                if connection is None:
                    topic = ASKED_TOPIC
                    self._asked_pub.publish(String(data=data))
                else:
                    topic = self._targets[connection.id]
                    self._outputs[topic].publish(self._to_cdr[connection.id](data, log_ns))
                self.sent[topic] += 1
                count += 1
                progress.update((log_ns - start_ns) / 1e9, count)
        except DamagedBagError:  # the bar ends where the damage is, the error on its own line
            progress.update((log_ns - start_ns) / 1e9 if count else 0.0, count, final=True)
            raise
        progress.update((self._reader.end_time - start_ns) / 1e9, count, final=True)

    def _publish_clock(self) -> None:
        """Publish the bag time now being played (as ros2 bag play --clock does)."""
        clock = self._timing  # not _clock: rclpy.Node keeps its ROS clock there
        if clock is not None and not self.done.is_set():
            sec, nanosec = divmod(clock.bag_time(time.monotonic()), 10**9)
            self._clock_pub.publish(ClockMsg(clock=Time(sec=sec, nanosec=nanosec)))

    def _linger(self) -> None:
        """With --record, wait until every replayed instruction has been answered by a Plan.

        Plans the node executes (execute_plans) are waited for too, until they end.
        """
        if self._recorder is None or self._stop.is_set():
            return
        wanted = sum(n for topic, n in self.sent.items() if topics.is_instruction_name(topic))
        if PLAN_TYPE not in self._recorder.types.values() or not wanted:
            return
        deadline = time.monotonic() + self.args.linger
        if self._recorder.wait_for(PLAN_TYPE, wanted, self.args.linger, self._stop):
            # vlm_node publishes vla_instruction right after the Plan it comes from.
            self._stop.wait(GRACE_S)
            if not self._recorder.wait_settled(deadline - time.monotonic(), self._stop):
                self.get_logger().warning(
                    f'plans still executing after {self.args.linger} s (--linger): '
                    f'{", ".join(sorted(self._recorder.executing))}')
        elif not self._stop.is_set():
            got = self._recorder.count(PLAN_TYPE)
            self.get_logger().error(f'{got} Plans for {wanted} instructions after waiting '
                                    f'{self.args.linger} s (--linger): is vlm_node active '
                                    'and subscribed to the replayed topics?')
            self.code = 1

    def _report(self, seconds: float) -> None:
        cut = ', interrupted' if self._interrupted else ''
        print(f'vlm_replay: played {played(self.sent, seconds)}{cut}', file=sys.stderr, flush=True)
        if self._recorder is not None:
            got = by_topic(self._recorder.counts)
            print(f'vlm_replay: recorded {got or "nothing"} into {self.args.record}',
                  file=sys.stderr, flush=True)

    def shutdown_gracefully(self) -> None:
        """On SIGINT or SIGTERM: stop playing, report, finish the recorded bag.

        A replay cut short exits 130, as an interrupted vlm_eval does, so that a script does
        not take its recording for a whole one; --loop plays until interrupted: 0.
        """
        self._interrupted = not self._played.is_set() and not self.args.loop
        self._stop.set()
        self._thread.join()
        if self._interrupted and not self.code:
            self.code = 130

    def destroy_node(self) -> None:
        """Stop playback, finish the recorded bag and close the recording, then the node."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._recorder is not None:
            try:
                self._recorder.close()  # done already, unless __init__ failed after making it
            except BagError as exc:
                self.get_logger().error(str(exc))
        if self._reader is not None:
            self._reader.close()
        super().destroy_node()
