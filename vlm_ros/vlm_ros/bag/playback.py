"""The timing, selection and waiting rules of vlm_replay, apart from ROS to be tested alone.

A recording is played on its own clock: message k is published when the wall clock has advanced
(t_k - t_first) / rate since playback began, where t are the bag's log times. Sleeping until
an absolute deadline, rather than for each gap in turn, keeps publishing and reading time from
accumulating into drift over a long bag.
"""

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from rclpy.duration import Duration
from rclpy.exceptions import InvalidTopicNameException
from rclpy.expand_topic_name import expand_topic_name
from rclpy.validate_full_topic_name import validate_full_topic_name
from rclpy.validate_topic_name import validate_topic_name

from .storage import BagError


def parse_remaps(items: list, known: set) -> dict:
    """Turn ['FROM:=TO', ...] (ros2 bag play's --remap syntax) into {FROM: TO}.

    FROM must be a topic of the recording (``known``): a misspelt one would leave the topic
    played under its recorded name, and the node waiting for it. TO must be a topic name ROS
    accepts (relative, ~ and {node} included), checked before anything is published.
    """
    remaps = {}
    for item in items:
        source, sep, target = item.partition(':=')
        if not sep or not source or not target:
            raise BagError(f'bad remap {item!r}; write FROM:=TO, e.g. /camera/image_raw:=/image')
        if source not in known:
            raise BagError(f'--remap {item}: {source} is not a topic of the recording; it has '
                           f'{sorted(known)}')
        try:
            validate_topic_name(target)
            validate_full_topic_name(expand_topic_name(target, 'vlm_replay', '/'))
        except (InvalidTopicNameException, ValueError) as exc:
            # rclpy's text: 'Invalid topic name: REASON:' and a caret under the name, or
            # "topic name 'TO' is invalid: REASON, at FILE:LINE"
            reason = str(exc).splitlines()[0].split(', at ')[0].rstrip(':').split(': ', 1)[-1]
            raise BagError(f'--remap {item}: {target!r} is not a valid topic name: {reason}') \
                from exc
        remaps[source] = target
    return remaps


def published_types(connections, remaps: dict, resolve: Callable[[str], str] = str) -> dict:
    """Return {name to publish on: message type} of the played connections under remaps.

    BagError when two recorded topics of different types would be published on one topic
    (names compared as ``resolve`` expands them: 'image' and '/image' are one topic in the root
    namespace): a topic has one type, and one publisher would carry the other's messages.
    """
    types, first = {}, {}
    for connection in connections:
        name = remaps.get(connection.topic, connection.topic)
        other = first.setdefault(resolve(name), connection)
        if other.msgtype != connection.msgtype:
            given = [f'{t}:={remaps[t]}' for t in (other.topic, connection.topic) if t in remaps]
            remap = f'--remap {" ".join(given)}: ' if given else ''
            raise BagError(f'{remap}{other.topic} ({other.msgtype}) and '
                           f'{connection.topic} ({connection.msgtype}) would both be published '
                           f'on {resolve(name)}, and a topic has one type; remap one of them '
                           'elsewhere, or leave one out with --topics')
        types.setdefault(name, connection.msgtype)
    return types


def select_connections(connections, topics: list) -> list:
    """Return the bag connections on the chosen topics (all when none chosen)."""
    if not topics:
        return list(connections)
    known = {connection.topic for connection in connections}
    missing = sorted(set(topics) - known)
    if missing:
        raise BagError(f'topics {missing} are not in the recording; it has {sorted(known)}')
    return [connection for connection in connections if connection.topic in topics]


def without_answers(connections: list, remaps: dict, args, resolve: Callable[[str], str],
                    warn: Callable[[str], None]) -> list:
    """With --record, leave out the recorded topics it records answers from (--topics plays them).

    A robot's recording holds its own vlm_node's /plan: played, those old plans were recorded
    as the answers, and 'every instruction answered' held with no node running.
    """
    if not args.record:
        return connections
    answers = {resolve(topic) for topic in args.record_topics}
    kept, left = [], set()
    for connection in connections:
        if resolve(remaps.get(connection.topic, connection.topic)) in answers and \
                connection.topic not in args.topics:
            left.add(connection.topic)
        else:
            kept.append(connection)
    if left:
        warn(f'not playing {", ".join(sorted(left))}: --record records the answers there (to '
             'play it anyway, name it in --topics, with every other topic to play)')
    return kept


def wait_for_peers(ready: Callable[[], bool], lonely: Callable[[], list], wait_s: float,
                   stop: threading.Event) -> str:
    """Wait up to wait_s seconds until ready(); return the warning to log before playing, or ''.

    ``lonely`` lists the played topics nobody subscribes to yet. wait_s 0
    (--wait-for-subscribers 0) waits for nothing: playback starts at once, and the warning says
    so, not after how long, as nothing was waited for. No warning once stop is set.
    """
    started = time.monotonic()
    while not stop.is_set() and not ready() and time.monotonic() - started < wait_s:
        stop.wait(0.05)
    unheard = lonely()
    if not unheard or stop.is_set():
        return ''
    if wait_s:
        return (f'playing although nothing subscribes to {unheard} after '
                f'{time.monotonic() - started:.1f} s')
    return ('playing at once (--wait-for-subscribers 0) although nothing subscribes to '
            f'{unheard} yet: what is played before a subscriber appears is lost')


def wait_acknowledged(publishers: dict, wait_s: float, stop: threading.Event) -> list:
    """Wait up to wait_s seconds until reliable subscribers acknowledge all that was played.

    ``publishers`` maps topic to publisher; returns a warning per topic not acknowledged in
    time. A reliable message is sent again until its subscriber acknowledges it, but only while
    its publisher lives: a subscriber whose side of the match was still under way when the
    last message went out (a node activated as the replay started) got nothing once the process
    had ended, an instruction without a Plan (ros2 bag play has --wait-for-all-acked for it).
    Best-effort subscribers (cameras) acknowledge nothing and are not waited for.
    """
    deadline, warnings = time.monotonic() + wait_s, []
    for topic, publisher in publishers.items():
        if stop.is_set():
            break
        left = max(deadline - time.monotonic(), 0.0)
        if not publisher.wait_for_all_acked(Duration(seconds=left)):
            warnings.append(f'{topic}: not every message played was acknowledged by its '
                            f'subscribers within {wait_s:g} s')
    return warnings


@dataclass
class Clock:
    """Maps bag log times (ns) to wall-clock deadlines (time.monotonic seconds)."""

    first_ns: int
    rate: float
    started: float

    def deadline(self, log_ns: int) -> float:
        """Return when the message logged at log_ns is due."""
        return self.started + (log_ns - self.first_ns) / 1e9 / self.rate

    def bag_time(self, now: float) -> int:
        """Return the bag log time (ns) being played at monotonic time now."""
        return self.first_ns + int((now - self.started) * self.rate * 1e9)

    def wait(self, log_ns: int, stop: threading.Event) -> bool:
        """Wait until log_ns is due; False when stop was set first."""
        left = self.deadline(log_ns) - time.monotonic()
        return not stop.wait(left) if left > 0 else not stop.is_set()


class Progress:
    """A one-line progress bar on stderr, redrawn at most 10 times a second, only on a terminal."""

    WIDTH = 30

    def __init__(self, total_s: float, enabled=None, stream=sys.stderr):
        self.total_s = max(total_s, 1e-9)
        self.stream = stream
        self.enabled = stream.isatty() if enabled is None else enabled
        self._last = 0.0

    def line(self, bag_s: float, count: int) -> str:
        """Return the bar for bag_s seconds played and count messages sent."""
        done = min(max(bag_s / self.total_s, 0.0), 1.0)
        filled = round(done * self.WIDTH)
        return (f'[{"#" * filled}{"." * (self.WIDTH - filled)}] {bag_s:7.2f} / '
                f'{self.total_s:.2f} s  {count} msgs')

    def update(self, bag_s: float, count: int, final: bool = False) -> None:
        """Redraw the bar (throttled) and end the line when final."""
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < 0.1):
            return
        self._last = now
        self.stream.write('\r' + self.line(bag_s, count) + ('\n' if final else ''))
        self.stream.flush()


def by_topic(counts: dict) -> str:
    """Return 'topic n, ...' of counts by topic, in topic order ('' for none)."""
    return ', '.join(f'{topic} {n}' for topic, n in sorted(counts.items()))


def played(sent: dict, seconds=None) -> str:
    """Return 'N messages [in S s] (topic n, ...)': what a replay has played, by topic."""
    took = '' if seconds is None else f' in {seconds:.2f} s'
    return f'{sum(sent.values())} messages{took} ({by_topic(sent) or "nothing"})'
