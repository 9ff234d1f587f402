"""vlm_client, the CLI for machines without ros2cli, against a live vlm_node."""

import pathlib
import subprocess
import uuid

import cv2
from ament_index_python.packages import get_package_prefix
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, camera
from serve_harness import both_backends

CLIENT = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros' / 'vlm_client'


def _client(*args, timeout=TIMEOUT):
    return subprocess.run([str(CLIENT), *args], capture_output=True, text=True,
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


def test_missing_node_and_bad_image_fail_with_reason(tmp_path, rclpy_context):
    missing = _client('--node', f'/absent_{uuid.uuid4().hex[:6]}', '--timeout', '1', 'query',
                      'anything')
    assert missing.returncode == 2 and 'no /absent_' in missing.stderr
    bad = _client('query', 'x', '--image', str(tmp_path / 'nope.png'))
    assert bad.returncode != 0 and 'cannot read image' in bad.stderr
