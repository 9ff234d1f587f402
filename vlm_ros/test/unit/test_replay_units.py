"""vlm_replay as a real process: timing, selection, remapping, and recording a live vlm_node."""


import io
import threading

import pytest
from vlm_ros.bag.playback import (
    Clock,
    Progress,
    parse_remaps,
    published_types,
    select_connections,
    wait_acknowledged,
    wait_for_peers,
)
from vlm_ros.bag.storage import (
    BagError,
)

T0 = 1_767_225_600 * 10**9  # 2026-01-01: recordings are replayed long after they were made


def test_playback_rules():
    clock = Clock(first_ns=T0, rate=2.0, started=100.0)
    assert clock.deadline(T0 + 1_000_000_000) == pytest.approx(100.5)
    assert clock.bag_time(101.0) == T0 + 2_000_000_000
    recorded = {'/a', 'c'}
    assert parse_remaps(['/a:=/b', 'c:=d'], recorded) == {'/a': '/b', 'c': 'd'}
    for bad in ('/a', ':=/b', '/a:='):
        with pytest.raises(BagError, match='FROM:=TO'):
            parse_remaps([bad], recorded)
    with pytest.raises(BagError, match='/typo is not a topic of the recording'):
        parse_remaps(['/typo:=/image'], recorded)

    class Conn:
        def __init__(self, topic):
            self.topic = topic

    connections = [Conn('/a'), Conn('/b')]
    assert select_connections(connections, []) == connections
    assert [c.topic for c in select_connections(connections, ['/b'])] == ['/b']
    with pytest.raises(BagError, match=r"\['/c'\]"):
        select_connections(connections, ['/c'])
    assert Progress(10.0, enabled=False).line(5.0, 3).startswith('[' + '#' * 15 + '.' * 15)


@pytest.mark.parametrize(('target', 'reason'), [
    ('a b', "'a b' is not a valid topic name: topic name must not contain characters other "
            "than alphanumerics, '_', '~', '{', or '}'"),
    ('/x//y', "'/x//y' is not a valid topic name: topic name must not contain repeated '/'"),
    ('{robot}/image', "'{robot}/image' is not a valid topic name: unknown substitution: "
                      '{robot}'),
], ids=['space', 'slashes', 'substitution'])
def test_a_remap_onto_a_name_ros_refuses_is_refused_before_anything_is_published(target,
                                                                                 reason):
    with pytest.raises(BagError) as raised:
        parse_remaps([f'/instruction:={target}'], {'/instruction'})
    assert str(raised.value) == f'--remap /instruction:={target}: {reason}'
    # Relative names, ~ and {node} are names a node accepts.
    assert parse_remaps(['/instruction:=~/asked', '/image:={node}/image'],
                        {'/instruction', '/image'}) == {'/instruction': '~/asked',
                                                        '/image': '{node}/image'}


class Recorded:
    """A recording's connection: its topic and type."""

    def __init__(self, topic: str, msgtype: str):
        self.topic, self.msgtype = topic, msgtype


def test_two_recorded_topics_of_different_types_on_one_name_are_refused():
    """One publisher would carry the other topic's messages: Strings through an Image one."""
    image = Recorded('/camera/image_raw', 'sensor_msgs/msg/Image')
    told = Recorded('/instruction', 'std_msgs/msg/String')
    with pytest.raises(BagError) as raised:
        published_types([image, told], {'/camera/image_raw': '/instruction'})
    assert str(raised.value) == (
        '--remap /camera/image_raw:=/instruction: /camera/image_raw (sensor_msgs/msg/Image) '
        'and /instruction (std_msgs/msg/String) would both be published on /instruction, and '
        'a topic has one type; remap one of them elsewhere, or leave one out with --topics')
    # Names are compared as the node expands them: 'instruction' is /instruction at the root.
    with pytest.raises(BagError, match='would both be published on /instruction'):
        published_types([image, told], {'/camera/image_raw': 'instruction'},
                        lambda name: name if name.startswith('/') else f'/{name}')
    # Not played together, or of one type (two cameras merged): nothing to refuse.
    assert published_types([told], {'/camera/image_raw': '/instruction'}) == {
        '/instruction': 'std_msgs/msg/String'}
    left = Recorded('/left/image_raw', 'sensor_msgs/msg/Image')
    assert published_types([image, left, told], {'/camera/image_raw': '/image',
                                                 '/left/image_raw': '/image'}) == {
        '/image': 'sensor_msgs/msg/Image', '/instruction': 'std_msgs/msg/String'}


class Terminal(io.StringIO):
    """stderr as a terminal shows it: the progress bar is drawn only there."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(('stream', 'enabled', 'drawn'), [
    (Terminal, None, True), (Terminal, False, False), (io.StringIO, None, False)],
    ids=['terminal', 'no-progress', 'not-a-terminal'])
def test_the_progress_bar_is_drawn_on_a_terminal_unless_turned_off(stream, enabled, drawn):
    """vlm_replay gives enabled False for --no-progress, else None (whether stderr is a tty)."""
    where = stream()
    progress = Progress(4.0, enabled, where)
    progress.update(1.0, 2)
    progress.update(4.0, 9, final=True)
    assert where.getvalue() == ('\r' + progress.line(1.0, 2) + '\r' + progress.line(4.0, 9) +
                                '\n' if drawn else '')


def test_the_wait_for_subscribers_asks_until_they_are_there_and_0_asks_once():
    """vlm_replay's --wait-for-subscribers: the seconds it keeps asking; 0 plays at once."""
    asked = []

    def there_on_third_ask() -> bool:
        asked.append(True)
        return len(asked) == 3

    assert wait_for_peers(there_on_third_ask, lambda: [], 60.0, threading.Event()) == ''
    assert len(asked) == 3
    asked.clear()
    warning = wait_for_peers(lambda: asked.append(True), lambda: ['/instruction'], 0.0,
                             threading.Event())
    assert len(asked) == 1 and warning == (
        "playing at once (--wait-for-subscribers 0) although nothing subscribes to "
        "['/instruction'] yet: what is played before a subscriber appears is lost")
    stopped = threading.Event()  # Ctrl-C while waiting: no warning about what was not played
    stopped.set()
    assert wait_for_peers(lambda: False, lambda: ['/instruction'], 60.0, stopped) == ''


class Acking:
    """A publisher whose subscribers acknowledge (or not) within the time it is given."""

    def __init__(self, acked: bool):
        self.acked, self.given = acked, []

    def wait_for_all_acked(self, timeout) -> bool:
        self.given.append(timeout.nanoseconds / 1e9)
        return self.acked


def test_playback_ends_once_acknowledged_and_names_each_topic_that_was_not():
    acked, late = Acking(True), Acking(False)
    warnings = wait_acknowledged({'instruction': acked, '/usb_cam/info': late}, 5.0,
                                 threading.Event())
    assert warnings == ['/usb_cam/info: not every message played was acknowledged by its '
                        'subscribers within 5 s']
    assert 0 < late.given[0] <= acked.given[0] <= 5.0  # one deadline for all of them


def test_a_stopped_playback_waits_for_no_acknowledgement():
    stop = threading.Event()
    stop.set()
    publisher = Acking(False)
    assert wait_acknowledged({'instruction': publisher}, 5.0, stop) == []
    assert publisher.given == []
