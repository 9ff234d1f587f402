"""vlm_client tells the truth: exit statuses and one-line reasons, and a node recovered by it.

The client runs as a separate process, the way a user types it, against a real vlm_node.
Exit statuses (vlm_client --help): 0 OK, 1 not OK, 2 bad input or no such node, 3 not active,
4 no reply.
"""

import signal
import subprocess
import uuid

import cv2
import pytest
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, node_executable, transition
from rclpy.task import Future
from vlm_ros.tools.client_ops import NO_REPLY, ClientError, Remote
from waiting import wait_exit

CLIENT = node_executable('vlm_client')


def _client(*args, timeout=TIMEOUT):
    return subprocess.run([CLIENT, *args], capture_output=True, text=True, timeout=timeout)


def _reason(run) -> str:
    """Return the one line a failed command printed on stderr (nothing else is there)."""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    return lines[0]


def test_a_node_whose_configure_failed_says_why_and_is_recovered_by_the_client(
        start_vlm_node, trained_tiny, tmp_path):
    missing = f'/tmp/does-not-exist-{uuid.uuid4().hex}'
    node = start_vlm_node(model=missing)  # autostart: configure runs, and fails
    node.wait_configure_failed(missing)
    why = f'/vlm_node is unconfigured: configure failed: model directory {missing!r}'

    plan = _client('plan', TARGETS['plan'][0])
    assert plan.returncode == 3 and _reason(plan).startswith(f'vlm_client: {why}'), plan.stderr
    assert plan.stdout == ''
    query = _client('query', TARGETS['vqa'][0])
    assert query.returncode == 3 and _reason(query).startswith(f'vlm_client: {why}'), \
        query.stderr
    caption = _client('caption')
    assert caption.returncode == 3 and _reason(caption).startswith(f'vlm_client: {why}')
    state = _client('state')
    assert (state.returncode, state.stdout) == (0, 'unconfigured\n'), state.stderr
    assert _reason(state).startswith(f'vlm_client: {why}')  # stdout stays the bare state
    retried = _client('configure')  # the same model: fails again, and says why
    assert retried.returncode == 1, retried.stderr
    assert _reason(retried).startswith(f'vlm_client: could not configure: {why}')
    early = _client('activate')
    assert early.returncode == 1, early.stderr
    assert 'cannot activate' in _reason(early) and 'from unconfigured: configure, shutdown' \
        in early.stderr

    assert _client('param', 'set', 'model', str(trained_tiny('llava'))).returncode == 0
    assert _client('param', 'get', 'model').stdout == f"{trained_tiny('llava')}\n"
    for verb, after in (('configure', 'inactive'), ('activate', 'active')):
        done = _client(verb)
        assert (done.returncode, done.stdout) == (0, f'{after}\n'), done.stderr
    assert _client('state').stdout == 'active\n'
    image = tmp_path / 'blue.png'
    cv2.imwrite(str(image), cv2.cvtColor(scene('blue'), cv2.COLOR_RGB2BGR))
    plan = _client('plan', TARGETS['plan'][0], '--image', str(image))
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.startswith('STATUS_OK')

    # Not active any more, with no configure error left to report.
    assert _client('deactivate').stdout == 'inactive\n'
    plan = _client('plan', TARGETS['plan'][0], '--image', str(image))
    assert (plan.returncode, _reason(plan)) == (3, 'vlm_client: /vlm_node is inactive')
    assert _client('cleanup').stdout == 'unconfigured\n'
    query = _client('query', TARGETS['vqa'][0])
    assert (query.returncode, _reason(query)) == (3, 'vlm_client: /vlm_node is unconfigured')
    assert _client('shutdown').stdout == 'finalized\n'
    code, _, _ = wait_exit(node.proc, TIMEOUT, 'the end after the shutdown transition')
    assert code == 0, node.log_text()[-3000:]  # as after SIGINT: the process ends, exit 0


def test_answers_that_are_not_ok_and_parameters_that_are_refused(start_vlm_node):
    node = start_vlm_node(wait_for_image=1.0)  # and no camera: no image arrives
    node.wait_state('active')

    plan = _client('plan', TARGETS['plan'][0])
    assert plan.returncode == 1, plan.stderr
    assert plan.stdout.startswith('STATUS_NO_IMAGE')  # the plan itself, with its reason
    assert _reason(plan).startswith('vlm_client: STATUS_NO_IMAGE: no image arrived within 1 s')
    query = _client('query', TARGETS['vqa'][0])
    assert query.returncode == 1, query.stderr
    assert _reason(query).startswith('vlm_client: /vlm_node could not answer: no image arrived')

    unknown = _client('param', 'get', 'no_such_parameter')
    assert unknown.returncode == 2
    assert _reason(unknown) == "vlm_client: /vlm_node has no parameter 'no_such_parameter'"
    refused = _client('param', 'set', 'max_new_tokens', '0')
    assert refused.returncode == 1, refused.stderr
    reason = _reason(refused)  # the node's own reason follows
    assert reason.startswith("vlm_client: /vlm_node refused max_new_tokens = '0': ") and \
        'out of range' in reason, reason
    wrong_type = _client('param', 'set', 'caption_rate', 'often')
    assert wrong_type.returncode == 1, wrong_type.stderr
    assert _reason(wrong_type) == ("vlm_client: /vlm_node refused caption_rate = 'often': the "
                                   'value must be a double; it reads as a string')
    assert _client('param', 'get', 'max_new_tokens').stdout == '96\n'  # unchanged

    for huge in ('99999999999999999999', '[1, -99999999999999999999]'):  # no int64 holds it
        too_big = _client('param', 'set', 'max_new_tokens', huge)
        assert (too_big.returncode, _reason(too_big)) == (
            2, f'vlm_client: {huge!r} holds a whole number out of the range of a 64-bit '
            'integer'), too_big.stderr
    # A whole number for a double, as ros2 param set would refuse it: typed like the parameter.
    assert _client('param', 'set', 'caption_rate', '2').returncode == 0
    assert _client('param', 'get', 'caption_rate').stdout == '2.0\n'


def test_no_node_exits_2_within_the_timeout(rclpy_context):
    absent = f'/absent_{uuid.uuid4().hex[:8]}'
    # The subprocess deadline is below the default --timeout (30 s): only --timeout ends these.
    for args in (('plan', 'anything'), ('state',), ('configure',), ('param', 'get', 'model')):
        run = _client(*args, '--node', absent, '--timeout', '2', timeout=25)
        assert run.returncode == 2, run.stderr
        assert _reason(run).startswith(f'vlm_client: no {absent} node: its ')
        assert 'did not appear within 2 s' in run.stderr
    assert '3  the node is not active' in _client('--help').stdout  # the statuses, documented


def _plan_waiting_for_a_frame(start_vlm_node, meanwhile, timeout: float = TIMEOUT) -> tuple:
    """Run `vlm_client plan` while its goal waits for a camera, and meanwhile(node).

    Return the client's (exit status, stdout, stderr).
    """
    node = start_vlm_node(wait_for_image=600.0)
    node.wait_state('active')
    client = subprocess.Popen([CLIENT, 'plan', uuid.uuid4().hex], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        node.wait_diag(lambda v: int(v['requests_in_progress']) == 1, TIMEOUT, 'the goal runs')
        meanwhile(node)
        out, err = client.communicate(timeout=timeout)
    finally:
        client.kill()
        client.wait()
    return client.returncode, out, err


def test_a_plan_whose_node_dies_before_answering_ends_with_4(start_vlm_node):
    """The goal waits for a camera; the node is killed: nobody will answer, and it says so."""
    def kill(node):
        node.proc.send_signal(signal.SIGKILL)
        assert wait_exit(node.proc, TIMEOUT, 'SIGKILL')[0] == -signal.SIGKILL
    # Gone from the graph once its DDS participant's lease (20 s) runs out.
    code, out, err = _plan_waiting_for_a_frame(start_vlm_node, kill, TIMEOUT + 30.0)
    assert (code, out) == (4, ''), err
    assert err == 'vlm_client: /vlm_node went away before it answered the goal\n'


def test_a_plan_whose_node_is_deactivated_before_answering_ends_with_3(start_vlm_node,
                                                                       test_node):
    """Not active: the code a query gets from the same node, not a plan's 'not OK' (1)."""
    def deactivate(_node):
        assert transition(test_node, 'deactivate')
    code, out, err = _plan_waiting_for_a_frame(start_vlm_node, deactivate)
    assert code == 3 and out.startswith('STATUS_CANCELLED '), (out, err)
    assert err == 'vlm_client: /vlm_node is inactive\n', err


def test_an_exception_in_a_reply_is_one_line_and_no_reply(test_node):
    future = Future()
    future.set_exception(RuntimeError('a reason\nover two lines'))
    with pytest.raises(ClientError) as raised:
        Remote(test_node.node, '/vlm_node', 1.0).wait(future, 'the reply')
    assert raised.value.code == NO_REPLY
    assert str(raised.value) == 'the reply failed: RuntimeError: a reason over two lines'
