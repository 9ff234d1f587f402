"""Record topics of the live graph into a new rosbag2 (MCAP), as ``ros2 bag record`` would.

Messages are taken as serialized bytes (raw subscriptions) and written unchanged, with the
receive time as log time, so the bag holds exactly what went over the wire. Each connection
carries its full message definition from storage.typestore(), which is what lets ``ros2 bag info``
and ``ros2 bag play`` open the result on a machine with ROS 2 installed.
"""

import importlib
import threading
import time
from collections import Counter
from functools import partial

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from vlm_ros_msgs.msg import Caption, ImageSources, Plan, PlanProgress, PlanTargets

from ..compat import publisher_count
from ..node.messages import (
    format_caption,
    format_plan,
    format_progress,
    format_sources,
    format_targets,
)
from .arguments import print_line
from .storage import (
    CAPTION_TYPE,
    PLAN_TYPE,
    PROGRESS_TYPE,
    SOURCES_TYPE,
    STRING_TYPE,
    TARGETS_TYPE,
    BagError,
)
from .writer_thread import WriterThread

# vlm_node's outputs: their types are known before the node is up.
KNOWN_TYPES = {'plan': PLAN_TYPE, 'caption': CAPTION_TYPE, 'vla_instruction': STRING_TYPE,
               'plan_progress': PROGRESS_TYPE, 'plan_targets': TARGETS_TYPE,
               'image_sources': SOURCES_TYPE}
RECORD_TOPICS = tuple(KNOWN_TYPES)  # vlm_replay --record's default: every answer and companion
RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
# Plans waited for at the end (wait_settled): a vlm_node executes one at a time, and anything
# on the DDS domain can publish PlanProgress, so neither their number nor their ids grow.
MAX_EXECUTING = 64
MAX_PLAN_ID = 200  # characters kept of each


def message_class(msgtype: str):
    """Return the rclpy class of 'pkg/msg/Name', or BagError naming the package to install."""
    package, _, name = msgtype.rpartition('/')
    try:
        return getattr(importlib.import_module(package.replace('/', '.')), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f'message type {msgtype} is not installed here; install or build the '
                       f'{msgtype.split("/")[0]} package', exc) from exc


def topic_type(node: Node, topic: str) -> str:
    """Tell the type of an output topic: from the graph if it is there, else by its name."""
    resolved = node.resolve_topic_name(topic)
    for name, types in node.get_topic_names_and_types():
        if name == resolved and types:
            return types[0]
    known = KNOWN_TYPES.get(resolved.rsplit('/', 1)[-1])
    if known is None:
        raise BagError(f'cannot tell the message type of {resolved}: nothing publishes it yet '
                       f"and it is not one of vlm_node's outputs {sorted(KNOWN_TYPES)}")
    return known


FORMATS = {Plan: format_plan, Caption: format_caption, PlanProgress: format_progress,
           PlanTargets: format_targets, ImageSources: format_sources}


def _format(msg) -> str:
    """Render a recorded message for --echo: vlm_node's outputs as vlm_client prints them."""
    render = FORMATS.get(type(msg))
    if render is not None:
        return render(msg)
    return str(getattr(msg, 'data', msg))  # std_msgs/String (vla_instruction): just the text


class Recorder:
    """Raw subscriptions to topics, written into one bag; close() finishes the file."""

    def __init__(self, node: Node, out, topics: list, storage: str = 'mcap',
                 echo: bool = False):
        self._node = node
        self._cond = threading.Condition()
        self.counts = Counter()
        self._echo = echo
        self._closed = False
        self.executing = set()  # plan_ids whose recorded PlanProgress has not ended yet
        # Every type is known before the bag is made: a topic refused leaves no file behind.
        self.types = {node.resolve_topic_name(topic): topic_type(node, topic)
                      for topic in topics}
        classes = {topic: message_class(msgtype) for topic, msgtype in self.types.items()}
        self._file = WriterThread(out, storage, self.types)
        self._subscriptions = [node.create_subscription(
            cls, topic, partial(self._on_message, self._file.connections[topic], cls),
            RECORD_QOS, raw=True) for topic, cls in classes.items()]

    def _on_message(self, connection, cls, data: bytes) -> None:
        with self._cond:
            if self._closed:
                return
            self._file.write(connection, time.time_ns(), data)
            self.counts[connection.topic] += 1
            if cls is PlanProgress:
                progress = deserialize_message(data, cls)
                plan_id = progress.plan_id[:MAX_PLAN_ID]
                if progress.state != PlanProgress.STATE_EXECUTING:
                    self.executing.discard(plan_id)
                elif len(self.executing) < MAX_EXECUTING:
                    self.executing.add(plan_id)
            self._cond.notify_all()
        if self._echo and not print_line(f'[{connection.topic}] '
                                         f'{_format(deserialize_message(data, cls))}'):
            # `--echo | head`: the recording goes on, which is what the run is for.
            self._echo = False
            self._node.get_logger().warning('--echo stopped: standard output is closed; the '
                                            'recording goes on')

    def matched(self) -> bool:
        """Tell whether every recorded topic has a publisher."""
        return all(publisher_count(self._node, sub) for sub in self._subscriptions)

    def count(self, msgtype: str) -> int:
        """Return how many messages of msgtype were recorded so far."""
        with self._cond:
            return sum(n for topic, n in self.counts.items() if self.types[topic] == msgtype)

    def wait_for(self, msgtype: str, count: int, timeout: float,
                 stop: threading.Event) -> bool:
        """Wait until count messages of msgtype are recorded; False on timeout or stop."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.count(msgtype) < count:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self._cond.wait(min(left, 0.1))  # 0.1: notice stop without its own wake-up
        return True

    def wait_settled(self, timeout: float, stop: threading.Event) -> bool:
        """Wait until no recorded plan execution is still running; False on timeout or stop."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.executing:
                left = deadline - time.monotonic()
                if left <= 0 or stop.is_set():
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self) -> None:
        """Finish the bag (metadata.yaml and the MCAP summary); later messages are ignored.

        Only the first call finishes it (BagError if a write failed); later ones do nothing.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._file.close()
