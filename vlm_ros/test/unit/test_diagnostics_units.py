"""What /diagnostics publishes each second (node/diagnostics.py), without DDS.

The reporter reads the node through plain callables (Sources); the rclpy node only lends it a
publisher, a timer, a logger and a clock. Node below lends the same, and keeps what it is
given, so each tick() is one second of the timer and its message is read back as a monitor
would.
"""

from types import SimpleNamespace

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.clock import Clock, ClockType
from vlm_ros.engine.remote.probe import ANSWERED, Reach
from vlm_ros.node.diagnostics import DiagnosticsReporter, Sources
from vlm_ros.node.settings import Settings

URL = 'http://127.0.0.1:8000/v1'
REFUSED = 'cannot reach the server (connection refused)'
LEVELS = {DiagnosticStatus.OK: 'OK', DiagnosticStatus.WARN: 'WARN',
          DiagnosticStatus.ERROR: 'ERROR'}


class Node:
    """What DiagnosticsReporter takes from the rclpy node; keeps its messages and error logs."""

    def __init__(self):
        self.published, self.errors, self._timers = [], [], []

    def get_fully_qualified_name(self) -> str:
        return '/vlm_node'

    def get_logger(self):
        return SimpleNamespace(error=lambda message, **_: self.errors.append(message))

    def get_clock(self) -> Clock:
        return Clock(clock_type=ClockType.STEADY_TIME)

    def create_publisher(self, *_args):
        return SimpleNamespace(publish=self.published.append)

    def create_timer(self, _period, callback, **_options):
        self._timers.append(callback)

    def tick(self) -> None:
        """Let one second pass: the timers run once."""
        for callback in self._timers:
            callback()

    def last(self) -> tuple:
        """Return (level name, message, values) of the last status published."""
        status = self.published[-1].status[0]
        return (LEVELS[status.level], status.message,
                {kv.key: kv.value for kv in status.values})


class Server:
    """The openai backend's engine as /diagnostics reads it: its status comes from a Reach."""

    is_loaded = True

    def __init__(self):
        self.reach = Reach()  # what the reachability check and the requests found

    def status(self) -> dict:
        return {'device': URL, 'base_url': URL, **self.reach.status()}


def reporter(node: Node, parts: SimpleNamespace) -> DiagnosticsReporter:
    """Return a reporter of a node whose state, engine and frames are parts' current ones."""
    settings = Settings.from_values({'backend': 'openai', 'base_url': URL})
    return DiagnosticsReporter(node, Sources(
        settings=lambda: settings, state=lambda: parts.state, configure_error=lambda: '',
        model_name=lambda: 'tiny', engine=lambda: parts.engine, worker=lambda: None,
        frames=lambda: parts.frames(), image_hint=lambda: '', execution=lambda: None,
        frozen_objects=lambda: 0, subscribers=lambda: {}))


def test_the_server_is_unknown_until_checked_and_unknown_is_no_fault():
    """Before the first reachability check: 'unknown', the level OK; checked, it says so."""
    node, server = Node(), Server()
    reporter(node, SimpleNamespace(state='active', engine=server, frames=lambda: None))
    node.tick()
    level, why, values = node.last()
    assert (values['backend_reachable'], values['backend_checked']) == \
        ('unknown', 'not checked yet')
    assert (level, why) == ('OK', 'active; 0 requests served')
    assert values['errors_model'] == '0' and values['last_error'] == ''
    server.reach(True, 'GET /models answered', '')
    node.tick()
    level, why, values = node.last()
    assert (values['backend_reachable'], values['backend_checked']) == \
        ('True', 'GET /models answered')
    assert level == 'OK' and values['errors_model'] == '0'


def test_found_down_at_the_first_check_is_one_fault_and_again_after_a_reload():
    """unknown, then unreachable: ERROR and one fault, however many seconds it stays down.

    A reload starts from unknown again (a new engine's Reach), and its server down is a
    new fault: the old engine's finding does not hide it.
    """
    node, server = Node(), Server()
    parts = SimpleNamespace(state='active', engine=server, frames=lambda: None)
    reporter(node, parts)
    node.tick()
    server.reach(False, REFUSED)
    for _ in range(3):
        node.tick()
        level, why, values = node.last()
        assert values['backend_reachable'] == 'False' and level == 'ERROR', values
        assert why == f'active: the inference server is unreachable: {REFUSED}; 0 requests ' \
            'served', why
        assert values['errors_model'] == '1' and URL in values['last_error']
    server.reach(True, ANSWERED, '')
    node.tick()
    level, why, values = node.last()
    assert values['backend_reachable'] == 'True' and level == 'WARN', (level, why)
    assert why.startswith('active: a fault ') and URL in why, why  # until an answer is OK

    parts.state, parts.engine = 'unconfigured', None  # cleanup: no engine, nothing to reach
    node.tick()
    assert 'backend_reachable' not in node.last()[2]
    parts.state, parts.engine = 'active', Server()  # configured again, activated
    node.tick()
    assert node.last()[2]['backend_reachable'] == 'unknown'
    parts.engine.reach(False, REFUSED)
    node.tick()
    level, _, values = node.last()
    assert level == 'ERROR' and values['errors_model'] == '2', values


def test_a_value_that_cannot_be_read_skips_that_second_and_logs_why():
    """No message that second, an error saying why; the next second publishes again.

    The timer's callback must not raise: the executor would end, and the node with it. (A
    value read while a transition destroys what it comes from, e.g. cleanup's publishers.)
    """
    node = Node()
    gone = RuntimeError('the frame stores are being replaced')

    def frames():
        raise gone
    parts = SimpleNamespace(state='active', engine=Server(), frames=frames)
    reporter(node, parts)
    node.tick()
    assert node.published == [] and node.errors == [f'diagnostics skipped: {gone!r}']
    parts.frames = lambda: None
    node.tick()
    assert len(node.published) == 1 and node.last()[2]['state'] == 'active'
    assert len(node.errors) == 1
