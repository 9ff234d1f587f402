"""vlm_replay as a real process: order, bytes, selection, remapping, recording a live vlm_node.

How closely it keeps the recorded gaps is timing, which a test never asserts: the benchmark
measures it (python -m vlm_ros.benchmarks.replay_timing; docs/BENCHMARKS.md).
"""

import json
import pathlib
import subprocess
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pytest
import yaml
from ament_index_python.packages import get_package_prefix
from engine_fixtures import scene
from node_harness import RELIABLE, TIMEOUT
from rclpy.serialization import deserialize_message
from ros_harness import stop_process
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from std_msgs.msg import String
from vlm_ros.bag.recorder import RECORD_TOPICS
from vlm_ros.bag.storage import (
    add_topic,
    bag_writer,
    header,
    open_bag,
    serialize,
    stamp_ns,
)
from waiting import run_on_a_terminal, wait_exit

T0 = 1_767_225_600 * 10**9  # 2026-01-01: recordings are replayed long after they were made
IMAGE, INSTRUCTION = '/camera/image_raw', '/instruction'


def replay_executable() -> str:
    """Return the installed vlm_replay (what ``ros2 run vlm_ros vlm_replay`` runs)."""
    return str(pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_replay')


def start_replay(*args) -> subprocess.Popen:
    """Start vlm_replay as its own process."""
    return subprocess.Popen([replay_executable(), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def image_fields(stamp: int, rgb: np.ndarray, frame_id: str = 'camera') -> dict:
    """Return sensor_msgs/Image fields of an rgb8 frame."""
    height, width, _ = rgb.shape
    return {'header': header(stamp, frame_id), 'height': height, 'width': width,
            'encoding': 'rgb8', 'is_bigendian': 0, 'step': width * 3,
            'data': np.ascontiguousarray(rgb).reshape(-1)}


def write_bag(path, events, storage: str = 'mcap') -> list:
    """Write (log_ns, topic, payload) events: payload an RGB array (Image) or str (String).

    Images are stamped with their log time, as a camera driver recorded live would be; a topic
    other than IMAGE and INSTRUCTION is a second camera. Returns (log_ns, topic, serialized
    bytes) in log-time order.
    """
    written = []
    with bag_writer(path, storage) as writer:
        connections = {IMAGE: add_topic(writer, IMAGE, 'sensor_msgs/msg/Image'),
                       INSTRUCTION: add_topic(writer, INSTRUCTION, 'std_msgs/msg/String')}
        for log_ns, topic, payload in sorted(events, key=lambda e: e[0]):
            if topic not in connections:
                connections[topic] = add_topic(writer, topic, 'sensor_msgs/msg/Image')
            data = serialize('std_msgs/msg/String', data=payload) if isinstance(payload, str) \
                else serialize('sensor_msgs/msg/Image', **image_fields(log_ns, payload))
            writer.write(connections[topic], log_ns, data)
            written.append((log_ns, topic, data))
    return written


def irregular_events(count: int = 30) -> list:
    """Frames and instructions with gaps from 20 to 150 ms, unique payloads."""
    rng = np.random.default_rng(7)
    events, t = [], T0
    for k in range(count):
        t += int(rng.integers(20, 150)) * 1_000_000
        if k % 4 == 3:
            events.append((t, INSTRUCTION, f'instruction {k} {uuid.uuid4().hex}'))
        else:
            events.append((t, IMAGE, np.full((24, 32, 3), k, np.uint8)))
    return events


class RawListener:
    """Raw subscriptions that keep (source timestamp, topic, bytes) of every message.

    What they return is in the order the replay published it, by the timestamp its writer
    stamped: the order this process's executor takes two topics' messages in is not that order
    once the executor has fallen behind (it takes one message per ready subscription in turn).
    """

    def __init__(self, node, topics: dict):
        self.received = []
        self._cond = threading.Condition()
        for topic, cls in topics.items():
            node.create_subscription(cls, topic,
                                     lambda data, info, t=topic: self._on(t, data, info),
                                     RELIABLE, raw=True)

    def _on(self, topic: str, data: bytes, info: dict) -> None:
        with self._cond:
            self.received.append((info['source_timestamp'], topic, data))
            self._cond.notify_all()

    def wait_count(self, count: int, timeout: float = TIMEOUT) -> list:
        """Return what was received once ``count`` messages are in, of any topics."""
        return self._wait(lambda: len(self.received) >= count,
                          lambda: f'{len(self.received)} of {count} messages', timeout)

    def wait_per_topic(self, counts: dict, timeout: float = TIMEOUT) -> list:
        """Return what was received once each topic has its count of messages.

        A total is not enough where each topic's share matters: after a stall the topic with
        the shorter backlog gets ahead of the other.
        """
        def heard() -> dict:
            return {t: sum(1 for _, topic, _ in self.received if topic == t) for t in counts}
        return self._wait(lambda: all(heard()[t] >= n for t, n in counts.items()),
                          lambda: f'{heard()} of {counts} messages', timeout)

    def _wait(self, done, progress, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done():
                left = deadline - time.monotonic()
                assert left > 0, f'{progress()} after {timeout} s'
                self._cond.wait(left)
            return sorted(self.received, key=lambda item: item[0])


def decoded(items: list) -> list:
    """(topic, rclpy message) of (.., topic, CDR bytes) items.

    Messages, not bytes, are compared: DDS pads a serialized payload to a multiple of 4 bytes.
    """
    types = {IMAGE: Image, INSTRUCTION: String}
    return [(topic, deserialize_message(data, types.get(topic, Image)))
            for _, topic, data in items]


def played(items: list) -> list:
    """Each frame's number (its first pixel value) and each instruction's text, in order."""
    return [msg.data if topic == INSTRUCTION else int(msg.data[0])
            for topic, msg in decoded(items)]


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_replay_plays_every_message_in_order_with_its_bytes(test_node, tmp_path, storage):
    written = write_bag(tmp_path / 'bag', irregular_events(), storage)
    listener = RawListener(test_node.node, {IMAGE: Image, INSTRUCTION: String})
    proc = start_replay(tmp_path / 'bag', '--wait-for-subscribers', TIMEOUT)
    received = listener.wait_count(len(written))
    code, _, err = wait_exit(proc, TIMEOUT)  # played to the end, it ends by itself
    assert code == 0, err
    assert decoded(received) == decoded(written)  # across topics too: log-time order
    assert f'played {len(written)} messages' in err


def test_start_topics_and_remap_choose_what_is_played_and_where(test_node, tmp_path):
    written = write_bag(tmp_path / 'bag', irregular_events())
    skip_s = 1.0
    kept = [w for w in written if w[0] >= written[0][0] + skip_s * 1e9]
    topic = f'/robot_{uuid.uuid4().hex[:8]}/image'
    listener = RawListener(test_node.node, {topic: Image})
    proc = start_replay(tmp_path / 'bag', '--rate', 2, '--start', skip_s, '--topics', IMAGE,
                        '--remap', f'{IMAGE}:={topic}', '--wait-for-subscribers', TIMEOUT)
    images = [w for w in kept if w[1] == IMAGE]
    received = listener.wait_count(len(images))
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 0, err
    assert [m for _, m in decoded(received)] == [m for _, m in decoded(images)]
    assert f'vlm_replay: played {len(images)} messages in ' in err, err  # no instruction


def test_loop_plays_again_until_interrupted(test_node, tmp_path):
    written = write_bag(tmp_path / 'bag', irregular_events(8))
    listener = RawListener(test_node.node, {IMAGE: Image, INSTRUCTION: String})
    proc = start_replay(tmp_path / 'bag', '--loop', '--rate', 4, '--wait-for-subscribers',
                        TIMEOUT)
    # Two passes, and the first message of a third: the replay did not stop after the second.
    counts = Counter(topic for _, topic, _ in written * 2 + written[:1])
    received = listener.wait_per_topic(counts)
    code, _, err = stop_process(proc, timeout=TIMEOUT)
    assert code == 0 and 'terminate called' not in err, err
    # The last of one pass and the first of the next are published back to back.
    assert decoded(received)[:2 * len(written)] == decoded(written) * 2


@pytest.mark.parametrize('how', ['file', 'at'])
def test_instructions_given_to_the_replay_go_out_when_they_say(test_node, tmp_path, how):
    """--instructions FILE and --instruction TEXT --at S put instructions between the frames.

    The frames are 0.2 s apart and played at half speed: 0.2 s on either side of each
    instruction, so a publication a frame early or late is a different order.
    """
    write_bag(tmp_path / 'bag', [(T0 + k * 200_000_000, IMAGE, np.full((24, 32, 3), k, np.uint8))
                                 for k in range(6)])
    texts = [f'{how} {uuid.uuid4().hex}' for _ in range(2 if how == 'file' else 1)]
    if how == 'file':
        (tmp_path / 'asked.jsonl').write_text(''.join(
            json.dumps({'time': at, 'text': text}) + '\n'
            for at, text in zip((0.3, 0.7), texts, strict=True)))
        given = ['--instructions', tmp_path / 'asked.jsonl']
        expected = [0, 1, texts[0], 2, 3, texts[1], 4, 5]
    else:
        given, expected = ['--instruction', texts[0], '--at', 0.5], [0, 1, 2, texts[0], 3, 4, 5]
    listener = RawListener(test_node.node, {IMAGE: Image, INSTRUCTION: String})
    proc = start_replay(tmp_path / 'bag', *given, '--rate', 0.5, '--wait-for-subscribers',
                        TIMEOUT)
    received = listener.wait_count(len(expected))
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 0, err
    assert played(received) == expected


@pytest.mark.parametrize('chosen', [IMAGE, '/left/image_raw'])
def test_an_instruction_every_nth_frame_is_asked_at_the_chosen_cameras_frames(test_node,
                                                                               tmp_path, chosen):
    """--instruction --every 2 --image-topic: after every second frame of that camera alone.

    The two cameras' frames alternate, 0.1 s apart, played at half speed: asked at the other
    camera's frames, each instruction would come one frame later or earlier.
    """
    left = '/left/image_raw'
    write_bag(tmp_path / 'bag', [(T0 + k * 100_000_000, left if k % 2 else IMAGE,
                                  np.full((24, 32, 3), k, np.uint8)) for k in range(8)])
    text = f'every second frame {uuid.uuid4().hex}'
    given = ['--instruction', text, '--every', 2]
    code, _, err = wait_exit(start_replay(tmp_path / 'bag', *given), TIMEOUT)
    assert code == 2 and 'pick one with --image-topic' in err, err  # two cameras: which?
    listener = RawListener(test_node.node, {IMAGE: Image, left: Image, INSTRUCTION: String})
    proc = start_replay(tmp_path / 'bag', *given, '--image-topic', chosen, '--rate', 0.5,
                        '--wait-for-subscribers', TIMEOUT)
    expected = [0, 1, 2, 3, text, 4, 5, 6, 7, text] if chosen == left else \
        [0, 1, 2, text, 3, 4, 5, 6, text, 7]
    received = listener.wait_count(len(expected))
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 0, err
    assert played(received) == expected


def test_the_progress_bar_is_drawn_on_a_terminal_unless_no_progress(tmp_path):
    write_bag(tmp_path / 'bag', irregular_events(8))

    def stderr_on_a_terminal(*options) -> str:
        code, said = run_on_a_terminal([replay_executable(), tmp_path / 'bag',
                                        '--wait-for-subscribers', 0, *options], TIMEOUT)
        assert code == 0, said
        return said
    bar = '\r[' + '#' * 30 + ']'  # redrawn in place, and whole at the end
    drawn = stderr_on_a_terminal()
    assert bar in drawn and 'played 8 messages' in drawn, drawn
    plain = stderr_on_a_terminal('--no-progress')
    assert '\r[' not in plain and 'played 8 messages' in plain, plain


def test_ctrl_c_in_the_middle_of_one_pass_exits_130_and_says_so(test_node, tmp_path):
    """Without --loop the bag was not played to its end: a script must not read success."""
    write_bag(tmp_path / 'bag', irregular_events(8))  # about 0.6 s of messages
    listener = RawListener(test_node.node, {IMAGE: Image, INSTRUCTION: String})
    proc = start_replay(tmp_path / 'bag', '--rate', 0.01, '--wait-for-subscribers', TIMEOUT)
    listener.wait_count(1)  # the rest comes over a minute
    code, _, err = stop_process(proc, timeout=TIMEOUT)
    assert code == 130 and 'interrupted' in err and 'Traceback' not in err, err


def test_clock_publishes_the_bag_time_being_played(test_node, tmp_path):
    written = write_bag(tmp_path / 'bag', irregular_events())
    ticks = []
    heard = threading.Event()

    def on_clock(msg):
        ticks.append(msg.clock.sec * 10**9 + msg.clock.nanosec)
        if len(ticks) >= 5:
            heard.set()
    test_node.node.create_subscription(Clock, '/clock', on_clock, 10)
    proc = start_replay(tmp_path / 'bag', '--clock', 50, '--rate', 0.5, '--topics', INSTRUCTION,
                        '--wait-for-subscribers', 0)
    assert heard.wait(TIMEOUT), f'{len(ticks)} /clock messages'
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 0, err
    first, last = written[0][0], written[-1][0]
    assert all(first <= t <= last + 10**9 for t in ticks), (ticks, first, last)
    assert ticks == sorted(ticks)


@pytest.mark.parametrize('options, reason', [
    (['--topics', '/nope'], "topics ['/nope'] are not in the recording"),
    (['--remap', '/camera/typo:=/image'], '/camera/typo is not a topic of the recording'),
    (['--echo'], '--echo go with --record OUT'),
    (['--linger', 3, '--storage', 'sqlite3'], '--storage, --linger go with --record OUT'),
    (['--image-topic', IMAGE], '--image-topic goes with --instruction TEXT'),
    (['--rate', '1e-300'], '--rate must be >= 0.001, got 1e-300'),
    (['--instruction', 'pick it', '--at', 0.5, '--start', 1],
     'every instruction is asked before --start 1 s: none would be played'),
    (['--remap', f'{INSTRUCTION}:=a b'], "--remap /instruction:=a b: 'a b' is not a valid topic"),
    (['--remap', f'{IMAGE}:=instruction'], f'{IMAGE} (sensor_msgs/msg/Image) and {INSTRUCTION} '
     '(std_msgs/msg/String) would both be published on /instruction'),
], ids=['topic', 'remap', 'echo', 'recording', 'image_topic', 'rate', 'start', 'remap_name',
        'remap_types'])
def test_options_that_cannot_work_are_refused_with_the_reason(tmp_path, options, reason):
    write_bag(tmp_path / 'bag', irregular_events(20))
    code, _, err = wait_exit(start_replay(tmp_path / 'bag', *options), TIMEOUT)
    assert code == 2 and reason in err, err
    assert 'Traceback' not in err


def test_missing_and_empty_recordings_are_refused(tmp_path):
    code, _, err = wait_exit(start_replay(tmp_path / 'missing'), TIMEOUT)
    assert code == 2 and 'no recording at' in err, err
    write_bag(tmp_path / 'empty', [])
    code, _, err = wait_exit(start_replay(tmp_path / 'empty'), TIMEOUT)
    assert code == 2 and f'{tmp_path / "empty"} holds no messages: nothing to play' in err, err


def test_instructions_without_a_plan_end_the_replay_with_1(tmp_path):
    """No node answers: the recording is kept, and the exit status says it is not whole.

    --wait-for-subscribers 0 plays at once, saying that nothing subscribes (the default would
    wait 5 s for a subscriber to the instructions, here on a topic of this test's own).
    """
    write_bag(tmp_path / 'bag', irregular_events(8))
    out = tmp_path / 'answers'
    asked = f'/unheard_{uuid.uuid4().hex[:8]}/instruction'
    proc = start_replay(tmp_path / 'bag', '--rate', 4, '--record', out, '--remap',
                        f'{INSTRUCTION}:={asked}', '--wait-for-subscribers', 0, '--linger', 0.5)
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 1, err
    unheard = f"although nothing subscribes to ['{asked}'"
    assert f'playing at once (--wait-for-subscribers 0) {unheard}' in err, err
    assert '0 Plans for 2 instructions after waiting 0.5 s (--linger)' in err, err
    assert (out / 'metadata.yaml').is_file()


@pytest.mark.parametrize(('storage', 'topics'), [
    ('mcap', ()), ('sqlite3', ('plan', 'caption'))])
def test_replay_into_live_node_records_one_plan_per_instruction(start_vlm_node, tmp_path,
                                                                 storage, topics):
    """The node runs before the replay starts, as on a robot; the settings are stored too.

    --record-topics chooses what is recorded: by default, each of vlm_node's outputs.
    """
    node = start_vlm_node()
    node.wait_state('active')
    colours = ['red', 'blue', 'green', 'red', 'blue', 'green']
    frames = [T0 + k * 500_000_000 for k in range(len(colours))]
    events = [(stamp, IMAGE, scene(c)) for stamp, c in zip(frames, colours, strict=True)]
    texts = [f'put the red block in the bin #{uuid.uuid4().hex[:8]}' for _ in range(3)]
    # Half-way between two frames: the node takes a frame and an instruction that arrive
    # together (after a stall) in either order.
    asked = {text: frames[2 * k] + 250_000_000 for k, text in enumerate(texts)}
    events += [(when, INSTRUCTION, text) for text, when in asked.items()]
    write_bag(tmp_path / 'bag', events)
    out = tmp_path / 'answers'
    proc = start_replay(tmp_path / 'bag', '--remap', f'{IMAGE}:=/image',
                        f'{INSTRUCTION}:=/instruction', '--record', out, '--storage', storage,
                        '--wait-for-subscribers', TIMEOUT, '--linger', TIMEOUT,
                        *(('--record-topics', *topics) if topics else ()))
    code, _, err = wait_exit(proc, 2 * TIMEOUT)  # it ends once every instruction has a Plan
    assert code == 0, err
    assert 'no settings recorded' not in err, err
    settings = json.loads((out / 'settings.json').read_text())
    assert settings['node'] == '/vlm_node' and settings['parameters']['max_new_tokens'] == 96
    with open_bag(out) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        plans = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                 if c.msgtype == 'vlm_ros_msgs/msg/Plan']
    assert sorted(types) == sorted(f'/{topic}' for topic in topics or RECORD_TOPICS)
    assert types['/plan'] == 'vlm_ros_msgs/msg/Plan'
    assert sorted(p.instruction for p in plans) == sorted(texts)
    # The worker answers from the latest frame the node has when it starts: the one replayed
    # just before the instruction, a later one when the worker starts later, or an earlier one
    # when the instruction overtook that frame (two topics keep no order between them; timing:
    # not asserted). Frames come in order, so a later instruction's plan never has an older one.
    used = [next(stamp_ns(p) for p in plans if p.instruction == text) for text in texts]
    assert all(stamp in frames for stamp in used) and used == sorted(used), (used, frames)
    info = yaml.safe_load((out / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['storage_identifier'] == storage and info['version'] == 8
    definitions = {t['topic_metadata']['name']: t['topic_metadata']
                   for t in info['topics_with_message_count']}
    assert definitions['/plan']['type'] == 'vlm_ros_msgs/msg/Plan'
    # Humble's rosbag2 reads the QoS profiles as one YAML string (version 9 makes it a list).
    assert isinstance(definitions['/plan']['offered_qos_profiles'], str)
