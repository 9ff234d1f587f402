"""vlm_node tells the truth about its readiness and serves any number of waiting queries.

It recovers through the lifecycle services alone and refuses parameters it does not have.
Each system test runs the installed vlm_node in its own process and talks to it over DDS, as
an operator's tools would (the lifecycle, parameter, query and action services).
"""

import http.server
import os
import pathlib
import signal
import subprocess
import threading
import uuid
from types import SimpleNamespace

import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from engine_fixtures import TARGETS, scene
from launch_harness import launch_command
from node_harness import (
    TIMEOUT,
    call,
    camera,
    diag_values,
    lifecycle_state,
    set_ok,
    shared_memory_of,
    transition,
)
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from ros_harness import wait_future
from std_msgs.msg import String
from vlm_ros.compat import ActionClient
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_exit, wait_until

from vlm_ros_msgs.action import ExecutePlan, GeneratePlan
from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Query

QUESTION, ANSWER = TARGETS['vqa']
HELD = 2 * TIMEOUT  # s held_hub holds a download unless the test releases it
KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def query(test_node, image: bool = True) -> Query.Response:
    """Ask the node's ~/query one question, on the blue scene (or the latest frame)."""
    request = Query.Request(question=QUESTION)
    if image:
        request.image = rgb_to_image(scene('blue'))
    return call(test_node, Query, '/vlm_node/query', request)


def goal_accepted(test_node, action: str, action_type, goal) -> bool:
    """Send one goal to an action of the node; return whether it was accepted."""
    client = ActionClient(test_node.node, action_type, action)
    try:
        assert client.wait_for_server(timeout_sec=TIMEOUT), f'{action} never appeared'
        return wait_future(client.send_goal_async(goal), TIMEOUT, 'the goal response').accepted
    finally:
        client.destroy()


@pytest.fixture
def held_hub():
    """Yield a Hugging Face hub endpoint that holds each download until released, then 404s.

    What configure meets on a robot downloading gigabytes: the load waits on the network.
    """
    asked, release, answered = threading.Event(), threading.Event(), threading.Event()

    class Hub(http.server.BaseHTTPRequestHandler):
        def answer(self):
            if self.path != '/':  # '/': loader.py's look whether the hub answers at all
                asked.set()
                release.wait(HELD)
                answered.set()
            self.send_response(200 if self.path == '/' else 404)
            self.send_header('Content-Length', '0')
            self.end_headers()

        do_GET = do_HEAD = answer  # noqa: N815 - http.server's handler names

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield SimpleNamespace(url=f'http://127.0.0.1:{server.server_port}', asked=asked,
                              release=release, answered=answered)
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def _downloading_node(start_vlm_node, held_hub, tmp_path):
    """Start vlm_node with its defaults on a hub model; return it once configure downloads."""
    model = f'vlm-ros-test/held-{uuid.uuid4().hex[:8]}'
    held = str(int(HELD))  # huggingface_hub's own timeouts: the hub answers before them
    node = start_vlm_node(env={**os.environ, 'HF_ENDPOINT': held_hub.url, 'HF_HUB_OFFLINE': '0',
                               'HF_HOME': str(tmp_path / 'hf_home'), 'HF_HUB_ETAG_TIMEOUT': held,
                               'HF_HUB_DOWNLOAD_TIMEOUT': held}, model=model)
    assert held_hub.asked.wait(TIMEOUT), 'configure never asked the hub for the model'
    node.model = model
    return node


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_during_the_start_up_download_ends_the_node_at_once(start_vlm_node, held_hub,
                                                                      tmp_path, sig):
    """The hub holds the download past the test's wait: the process ends without it.

    It waited for the download's end (minutes on a robot), and a launch system killed it
    first, leaving its shared memory behind. It leaves none now, and never activates.
    """
    node = _downloading_node(start_vlm_node, held_hub, tmp_path)
    node.diagnostics.wait_for(lambda m: diag_values(m).get('state') == 'configuring', TIMEOUT,
                              'configuring, while the signal comes')
    segments = shared_memory_of(node.proc.pid) - shared_memory_of(os.getpid())
    assert segments, 'the node maps no Fast DDS segment: nothing to check'
    node.proc.send_signal(sig)
    code, _, _ = wait_exit(node.proc, TIMEOUT, f'{sig!r} while the hub holds the download')
    assert not held_hub.answered.is_set()  # the download had not ended
    err = node.log_text()
    assert code == 0 and f'{sig.name}: stopping' in err, err[-3000:]
    assert 'configure stopped: the node stopped while the model was loading' in err, err[-3000:]
    assert 'configure failed' not in err, err[-3000:]
    assert 'active' not in [diag_values(m).get('state') for m in node.diagnostics.items()]
    assert [path for path in segments if pathlib.Path(path).exists()] == []


def test_a_misspelt_parameter_on_the_command_line_fails_configure(start_vlm_node, test_node,
                                                                  trained_tiny):
    node = start_vlm_node(model=None, modle=str(trained_tiny('llava')))
    node.wait_configure_failed('modle')
    assert lifecycle_state(test_node) == 'unconfigured'
    refused = query(test_node)
    assert not refused.success
    assert refused.message.startswith('/vlm_node is unconfigured: configure failed: ')
    assert "'modle' (did you mean 'model'?)" in refused.message, refused.message


def test_a_misspelt_parameter_in_a_params_file_fails_configure(start_vlm_node, test_node,
                                                               trained_tiny, tmp_path):
    params = tmp_path / 'robot.yaml'
    params.write_text('/**:\n  ros__parameters:\n'
                      f'    model: {trained_tiny("llava")}\n    max_new_tokns: 7\n')
    start_vlm_node(ros_args=['--params-file', str(params)])
    wait_until(lambda: 'max_new_tokns' in query(test_node).message, TIMEOUT,
               'a refusal naming the misspelt parameter')
    assert "did you mean 'max_new_tokens'?" in query(test_node).message
    assert lifecycle_state(test_node) == 'unconfigured'


def test_launch_values_ros_refuses_fail_configure_until_changed(start_vlm_node, test_node,
                                                                tmp_path):
    """Out of range, or of another type: ROS refuses them as the node declares them.

    The process stays up (it had ended with a traceback), unconfigured, saying why; setting
    the parameters right lets the lifecycle go on.
    """
    params = tmp_path / 'robot.yaml'
    params.write_text('/**:\n  ros__parameters:\n    queue_size: 99999\n')
    node = start_vlm_node(ros_args=['--params-file', str(params)], max_new_tokens=0,
                          min_confidence=1)
    values = node.wait_configure_failed()
    assert lifecycle_state(test_node) == 'unconfigured' and node.proc.poll() is None
    assert values['configure_error'] == (
        'max_new_tokens must be within [1, 4096]; got 0; min_confidence must be a double, '
        'written with a decimal point (e.g. 1.0); got 1; queue_size must be within [1, 1000]; '
        'got 99999'), values['configure_error']
    assert query(test_node).message.endswith(f"configure failed: {values['configure_error']}")
    set_ok(test_node, max_new_tokens=8, min_confidence=0.5, queue_size=4)
    assert transition(test_node, 'configure')
    assert node.wait_state('inactive')['model_loaded'] == 'True'


@pytest.mark.parametrize('argument, reason', [
    ('modle:={model}', "vlm.launch.py has no argument 'modle' (did you mean 'model'?)"),
    ('params_file:=/nonexistent/vlm_remote.yaml',
     "params_file '/nonexistent/vlm_remote.yaml' is not a file"),
    ('log_level:=verbose', "log_level must be one of debug, info, warn, error, fatal, got "
     "'verbose'"),
    ('image:=camera 1/image', "image 'camera 1/image': Invalid topic name: topic name must not "
     'contain characters other than'),
    ('namespace:=robot-1', "namespace 'robot-1': Invalid namespace"),
], ids=['misspelt', 'params_file', 'log_level', 'topic', 'namespace'])
def test_a_launch_argument_that_cannot_work_fails_the_launch(trained_tiny, argument, reason):
    result = subprocess.run([*launch_command(), 'vlm_ros', 'vlm.launch.py', 'device:=cpu',
                             argument.format(model=trained_tiny('llava'))],
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert reason in out, out[-3000:]
    assert 'process started' not in out, out[-3000:]  # no node was started with defaults


def test_requests_before_the_node_is_ready_say_why_and_the_lifecycle_recovers(
        start_vlm_node, test_node, held_hub, tmp_path, trained_tiny):
    """Refusals and /diagnostics say the state, configuring included, and the reason it failed.

    configure waits on a model download here, started by autostart as a user starts the node:
    the lifecycle services and the /diagnostics timer once shared a callback group, and
    autostart configured before the executor spun: a monitor heard nothing until it ended.
    """
    node = _downloading_node(start_vlm_node, held_hub, tmp_path)
    model = node.model
    sample = node.diagnostics.wait_for(
        lambda m: diag_values(m).get('state') == 'configuring', TIMEOUT,
        '/diagnostics while configure downloads')
    status = next(s for s in sample.status if s.name == '/vlm_node: vlm')
    assert status.level == DiagnosticStatus.WARN, status
    assert status.message.startswith('configuring: not serving requests'), status.message
    refused = query(test_node)
    assert not refused.success and refused.message == '/vlm_node is configuring', refused
    after = node.diagnostics.from_now()
    held_hub.release.set()
    values = diag_values(after(lambda m: diag_values(m).get('state') != 'configuring', TIMEOUT,
                               'a state after configure'))
    assert values['state'] == 'unconfigured' and model in values['configure_error'], values
    assert f'the hub answered HTTP 404 for {held_hub.url}/{model}/' in values['configure_error']

    refused = query(test_node)
    assert not refused.success
    assert refused.message == '/vlm_node is unconfigured: configure failed: ' + \
        values['configure_error'], refused.message
    plan_goal = GeneratePlan.Goal(instruction=TARGETS['plan'][0])
    assert not goal_accepted(test_node, '/vlm_node/generate_plan', GeneratePlan, plan_goal)
    execute_goal = ExecutePlan.Goal(instruction=TARGETS['plan'][0])
    assert not goal_accepted(test_node, '/vlm_node/execute_plan', ExecutePlan, execute_goal)

    # Fixed with the standard services alone: set the parameter, configure, activate.
    set_ok(test_node, model=str(trained_tiny('llava')))
    assert transition(test_node, 'configure') and transition(test_node, 'activate')
    answered = query(test_node)
    assert answered.success and answered.answer == ANSWER, answered.message

    assert transition(test_node, 'deactivate')
    refused = query(test_node)
    assert not refused.success and refused.message == '/vlm_node is inactive', refused.message
    assert transition(test_node, 'cleanup')
    refused = query(test_node)
    assert refused.message == '/vlm_node is unconfigured', refused.message  # no failure left

    assert transition(test_node, 'configure') and transition(test_node, 'activate')
    assert query(test_node).answer == ANSWER
    plan = node.plan_on_a_new_frame(TARGETS['plan'][0])
    assert plan.status == Plan.STATUS_OK, plan.message


def test_forty_waiting_queries_park_no_executor_thread(start_vlm_node, test_node):
    """40 queries at once (again, until a sample sees 10 wait), instructions at 2 Hz: all answered.

    The node spins 4 executor threads: a query that held one until its answer would stop the
    instructions, the timers and /diagnostics until the queries ahead of it were answered. The
    caption timer goes on: captions due while the queries wait are skipped, and counted
    (captions_skipped); once the worker is idle, it captions again.
    """
    node = start_vlm_node(queue_size=100, max_new_tokens=24, caption_rate=2.0)
    node.wait_state('active')
    node.stream(camera(uuid.uuid4().hex), rate_hz=10.0).wait_for(lambda m: True, TIMEOUT,
                                                                   'a frame')
    client = test_node.node.create_client(Query, '/vlm_node/query', qos_profile=KEEP_ALL)
    assert client.wait_for_service(timeout_sec=TIMEOUT)
    futures = []

    def ask_forty() -> None:
        futures.extend(client.call_async(Query.Request(
            question=QUESTION, image=rgb_to_image(scene('blue')))) for _ in range(40))

    def busy():
        """Return the /diagnostics values of a sample taken while 10 queries waited, or None."""
        return next((diag_values(m) for m in node.diagnostics.items()
                     if int(diag_values(m).get('queue_length', 0)) >= 10), None)

    def skipped() -> int:
        """Return the most captions_skipped any /diagnostics sample counted (0 before any)."""
        return max((int(diag_values(m).get('captions_skipped', 0))
                    for m in node.diagnostics.items()), default=0)

    def seen_busy() -> bool:
        # /diagnostics samples at 1 Hz, captions are due at 2 Hz; an idle machine can answer
        # 40 queries in less, and then no sample finds them waiting, nor a caption skipped:
        # ask 40 more until one does.
        if (busy() is None or not skipped()) and all(future.done() for future in futures):
            ask_forty()
        return busy() is not None and skipped() > 0

    # A tick may be running as the timer is destroyed: what it sends after that must count.
    texts, sending, stopped = [], threading.Lock(), threading.Event()

    def instruct():
        with sending:
            if not stopped.is_set():
                texts.append(f'{TARGETS["plan"][0]} #{uuid.uuid4().hex[:8]}')
                node.instruction_pub.publish(String(data=texts[-1]))
    ask_forty()
    wait_until(seen_busy, TIMEOUT, '/diagnostics while at least 10 queries wait, and a '
               'caption skipped')
    assert busy()['state'] == 'active'
    node.instruct(f'{TARGETS["plan"][0]} #first')
    texts.append(f'{TARGETS["plan"][0]} #first')
    timer = test_node.node.create_timer(0.5, instruct)
    try:
        for future in futures:
            response = wait_future(future, 120.0, 'a query response')
            assert response.success and response.answer == ANSWER, response.message
    finally:
        with sending:
            stopped.set()
        test_node.node.destroy_timer(timer)
    sent = list(texts)
    # The plans queued behind the queries: each within TIMEOUT of the one before, as many as
    # a loaded machine left waiting (a slow node still answers; a stuck one does not).
    pending = set(sent) - {plan.instruction for plan in node.plans.items()}
    while pending:
        answered = node.plans.wait_for(lambda p: p.instruction in pending, TIMEOUT,
                                       f'a plan of the {len(pending)} instructions left')
        pending.discard(answered.instruction)
    # Nothing waits any more. Not 'no request in progress': captions are due at 2 Hz, and on a
    # loaded machine one takes about as long, so a 1 Hz sample may find one running every time.
    node.diag_from_now()(lambda v: v.get('queue_length') == '0', TIMEOUT, 'an empty queue')
    plans = [plan.instruction for plan in node.plans.items()]
    assert sorted(plans) == sorted(sent), 'every instruction answered exactly once'
    node.captions.from_now()(lambda c: True, TIMEOUT, 'a caption once the worker is idle')
