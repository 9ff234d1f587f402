"""vlm_client, the CLI for machines without ros2cli, against a live vlm_node."""

import select
import signal
import subprocess
import uuid

import cv2
import pytest
from engine_fixtures import GROUND, RED_BLOCK, TARGETS, scene
from node_harness import TIMEOUT, camera, node_executable, set_params, transition
from serve_harness import both_backends
from waiting import wait_exit, wait_until

from vlm_ros_msgs.msg import Caption

CLIENT = node_executable('vlm_client')


def _client(*args, timeout=TIMEOUT):
    return subprocess.run([CLIENT, *args], capture_output=True, text=True,
                          timeout=timeout)


@both_backends
def test_plan_query_and_caption(start_vlm_node, tmp_path):
    node = start_vlm_node(caption_rate=2.0)
    node.wait_state('active')
    image = tmp_path / 'blue.png'
    cv2.imwrite(str(image), cv2.cvtColor(scene('blue'), cv2.COLOR_RGB2BGR))

    answer = _client('query', TARGETS['vqa'][0], '--image', str(image))
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == TARGETS['vqa'][1]

    plan = _client('plan', TARGETS['plan'][0], '--image', str(image))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert plan.stdout.startswith('STATUS_OK')
    assert '1. pick up the red block  [pick red block]' in plan.stdout
    assert 'tokens' in plan.stderr  # streamed progress

    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    caption = _client('caption')
    assert caption.returncode == 0, caption.stderr
    assert TARGETS['caption'][1] in caption.stdout


def test_ground_prints_each_box_in_the_images_pixels_or_why_none(start_vlm_node, tmp_path):
    node = start_vlm_node()
    node.wait_state('active')
    image = tmp_path / 'red.png'
    cv2.imwrite(str(image), cv2.cvtColor(scene('red'), cv2.COLOR_RGB2BGR))
    found = _client('ground', GROUND[0], '--image', str(image))
    assert found.returncode == 0, found.stderr
    first, box = found.stdout.splitlines()
    assert first.startswith(f'1 found in {image} ')
    assert [float(v) for v in box.split()[1:5]] == pytest.approx(RED_BLOCK, abs=1.0), box
    one_camera = _client('ground', GROUND[0], '--image', str(image), '--camera', 'wrist')
    assert one_camera.returncode == 1, one_camera.stderr
    assert 'this node has one camera' in one_camera.stderr


def test_missing_node_and_bad_image_fail_with_reason(tmp_path, rclpy_context):
    missing = _client('--node', f'/absent_{uuid.uuid4().hex[:6]}', '--timeout', '1', 'query',
                      'anything')
    assert missing.returncode == 2 and 'no /absent_' in missing.stderr
    for path, why in ((tmp_path / 'nope.png', 'No such file or directory'),
                      (tmp_path, 'Is a directory'),
                      (tmp_path / 'noise.png', 'not an image file OpenCV decodes')):
        if path.suffix and why.startswith('not'):
            path.write_bytes(uuid.uuid4().bytes * 10)
        bad = _client('--timeout', '1', 'query', 'x', '--image', str(path))
        assert bad.returncode == 2, bad.stderr
        assert bad.stderr.startswith(f'vlm_client: cannot read image {str(path)!r}: {why}')
        assert len(bad.stderr.splitlines()) == 1, bad.stderr  # no OpenCV warning beside it


def test_caption_says_when_the_node_does_not_caption_and_honours_timeout(start_vlm_node,
                                                                         test_node):
    node = start_vlm_node()  # caption_rate 0, the default
    node.wait_state('active')
    off = _client('--timeout', '10', 'caption')
    assert off.returncode == 2 and 'caption_rate is 0' in off.stderr, off.stderr
    assert set_params(test_node, caption_rate=1.0)[0].successful
    waited = _client('--timeout', '8', 'caption')  # captioning, but no camera: no caption
    assert waited.returncode == 1 and 'no caption on /caption within 8 s' in waited.stderr, \
        waited.stderr
    # --topic: captions remapped elsewhere (here the test's own, published every 0.2 s).
    topic, text = f'/robot_{uuid.uuid4().hex[:8]}/caption', f'caption {uuid.uuid4().hex}'
    publisher = test_node.node.create_publisher(Caption, topic, 10)
    timer = test_node.node.create_timer(0.2, lambda: publisher.publish(Caption(text=text)))
    try:
        elsewhere = _client('--timeout', '8', 'caption', '--topic', topic)
    finally:
        test_node.node.destroy_timer(timer)
        test_node.node.destroy_publisher(publisher)
    assert elsewhere.returncode == 0 and text in elsewhere.stdout, elsewhere.stderr
    # A topic of another type (the node's own /diagnostics), and a name that is none.
    other = _client('--timeout', '8', 'caption', '--topic', '/diagnostics')
    assert other.returncode == 2 and other.stderr == (
        'vlm_client: /diagnostics carries diagnostic_msgs/msg/DiagnosticArray, not '
        'vlm_ros_msgs/msg/Caption: --topic names a caption topic\n'), other.stderr
    bad = _client('--timeout', '8', 'caption', '--topic', 'two words')
    assert bad.returncode == 2 and bad.stderr.startswith('vlm_client: bad --topic: '), \
        bad.stderr


@pytest.mark.parametrize('follow', [[], ['--follow']])
def test_caption_prints_no_caption_of_a_node_it_did_not_find(test_node, follow):
    """Captions on the topic, but no such node: it says so and prints none of them.

    It took captions while it still asked for the node's state, so a node killed meanwhile
    (or one not there) left its captions printed above 'no /vlm_node node'.
    """
    topic, text = f'/robot_{uuid.uuid4().hex[:8]}/caption', f'caption {uuid.uuid4().hex}'
    publisher = test_node.node.create_publisher(Caption, topic, 10)
    timer = test_node.node.create_timer(0.1, lambda: publisher.publish(Caption(text=text)))
    try:
        absent = _client('--timeout', '3', 'caption', '--topic', topic, *follow)
    finally:
        test_node.node.destroy_timer(timer)
        test_node.node.destroy_publisher(publisher)
    assert absent.returncode == 2, (absent.stdout, absent.stderr)
    assert absent.stderr == 'vlm_client: no /vlm_node node: its get_state service did not ' \
        'appear within 3 s\n' and text not in absent.stdout, (absent.stdout, absent.stderr)


def test_caption_follow_prints_captions_until_the_node_stops_captioning(start_vlm_node,
                                                                         test_node, tmp_path):
    """Exit 3 when the node leaves the active state, 4 when it goes away; not silence."""
    node = start_vlm_node(caption_rate=4.0)
    node.wait_state('active')
    node.stream(camera('follow')).wait_for(lambda m: True, TIMEOUT, 'a camera frame')

    def following(name: str) -> tuple:
        """Start vlm_client caption --follow; return it and its output, once it printed two."""
        out = tmp_path / name
        with out.open('w') as stdout:
            proc = subprocess.Popen([CLIENT, 'caption', '--follow'], stdout=stdout,
                                    stderr=subprocess.PIPE, text=True)
        wait_until(lambda: out.read_text().count(TARGETS['caption'][1]) >= 2, TIMEOUT,
                   'two captions followed')
        return proc, out

    # `vlm_client caption --follow | head -1`: once the reader has ended, so does the client.
    proc = subprocess.Popen([CLIENT, 'caption', '--follow'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([proc.stdout], [], [], TIMEOUT)[0], 'no caption followed'
        assert TARGETS['caption'][1] in proc.stdout.readline()
        proc.stdout.close()
        code = proc.wait(TIMEOUT)  # at the next caption it cannot print
    finally:
        proc.kill()
    said = proc.stderr.read()
    assert code == 0 and 'Traceback' not in said, said
    proc, _ = following('until_sigint.txt')  # Ctrl-C: how a follow is meant to end
    proc.send_signal(signal.SIGINT)
    code, _, err = wait_exit(proc, TIMEOUT, 'the SIGINT')
    assert code == 0 and 'vlm_client' not in err, err
    proc, _ = following('until_inactive.txt')
    assert transition(test_node, 'deactivate')
    code, _, err = wait_exit(proc, TIMEOUT, 'the deactivate')
    assert (code, err) == (3, 'vlm_client: /vlm_node is inactive\n')
    again = node.state_from_now()  # wait_state would take the 'active' of the start
    assert transition(test_node, 'activate')
    again('active')
    proc, _ = following('until_gone.txt')
    node.stop(signal.SIGKILL)  # no shutdown transition: the node is just gone
    code, _, err = wait_exit(proc, TIMEOUT, 'the kill')
    # gone from the graph, or gone while its state was being asked
    assert code == 4 and err.startswith('vlm_client: /vlm_node went away'), (code, err)


def _client_running(test_node, *args) -> subprocess.Popen:
    """Start vlm_client; return it once its node is in the graph (its signal handlers are set)."""
    proc = subprocess.Popen([CLIENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_until(lambda: 'vlm_client' in test_node.node.get_node_names(), TIMEOUT,
               'vlm_client in the graph')
    return proc


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_signal_before_the_answer_exits_130_and_cancels_the_plan(start_vlm_node, test_node,
                                                                   sig):
    """A script must not take an interrupted verb for a done one, nor leave its plan running."""
    waiting = _client_running(test_node, '--node', f'/absent_{uuid.uuid4().hex[:8]}', 'state')
    waiting.send_signal(sig)
    code, out, err = wait_exit(waiting, TIMEOUT, 'the signal')
    assert (code, out) == (130, ''), err
    assert err.strip().splitlines()[-1] == 'vlm_client: interrupted before the answer', err

    node = start_vlm_node(wait_for_image=60.0)  # and no camera: the plan waits for a frame
    node.wait_state('active')
    text = f'pick up the red block {uuid.uuid4().hex[:8]}'
    planning = _client_running(test_node, 'plan', text)
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1', TIMEOUT, 'the plan waiting')
    planning.send_signal(sig)
    code, out, err = wait_exit(planning, TIMEOUT, 'the signal')
    assert (code, out) == (130, ''), err
    assert err.strip().splitlines()[-1] == \
        'vlm_client: interrupted before the answer; the goal was cancelled', err
    # Answered CANCELLED, not left waiting for a frame (NO_IMAGE after wait_for_image).
    node.wait_diag(lambda v: v.get('status_cancelled') == '1' and
                   v.get('requests_in_progress') == '0', TIMEOUT, 'the goal cancelled')
