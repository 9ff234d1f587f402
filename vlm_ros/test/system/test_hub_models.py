"""Hub ids load as a user's do: through the real huggingface_hub cache, in every entry point.

The cache is laid out offline (HF_HOME/hub/models--ORG--NAME) with trained tiny checkpoints;
HF_HUB_OFFLINE=1 keeps every process off the network. Each entry point runs as its own process,
the way the README starts it.
"""

import json
import pathlib
import subprocess
import uuid

from ament_index_python.packages import get_package_prefix
from engine_fixtures import DEFAULT_MODEL, TARGETS, offline_hub_env
from node_harness import TIMEOUT, camera
from waiting import wait_exit

from vlm_ros_msgs.msg import Plan

ROOT = pathlib.Path(__file__).resolve().parents[3]
SAMPLE_BAG = ROOT / 'samples' / 'tabletop' / 'bag'
BIN = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros'


def test_vlm_node_with_the_default_model_answers_from_the_cache(start_vlm_node, hub_home):
    node = start_vlm_node(env=offline_hub_env(hub_home), model=None)  # config's default
    values = node.wait_state('active', timeout=120)
    assert values['model'] == DEFAULT_MODEL
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(TARGETS['plan'][0])
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1], plan.message
    assert plan.model == DEFAULT_MODEL


def test_vlm_eval_with_a_hub_id(hub_home, tmp_path):
    out = tmp_path / 'eval'
    proc = subprocess.Popen([str(BIN / 'vlm_eval'), str(SAMPLE_BAG), '--model',
                             'vlm-ros-test/tiny-llava', '--device', 'cpu', '--no-captions',
                             '--out', str(out)], env=offline_hub_env(hub_home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    code, _, err = wait_exit(proc, 300)
    assert code == 0, err[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['model'] == 'vlm-ros-test/tiny-llava' and summary['requests'] == 4


def test_vlm_benchmark_with_a_hub_id(hub_home):
    proc = subprocess.Popen([str(BIN / 'vlm_benchmark'), '--model', 'vlm-ros-test/tiny-llava',
                             '--device', 'cpu', '--batch-sizes', '1', '--new-tokens', '4',
                             '--repeats', '1', '--image', '48x64'],
                            env=offline_hub_env(hub_home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 300)
    assert code == 0, err[-3000:]
    assert stdout.startswith('### vlm-ros-test/tiny-llava:') and '| 1 | 4 |' in stdout, stdout


def test_demo_default_command_with_the_default_model_from_the_cache(hub_home, tmp_path):
    """./scripts/demo exactly as the README writes it; the default model comes from HF_HOME."""
    out = tmp_path / 'demo'
    env = {**offline_hub_env(hub_home), 'OUT': str(out), 'DEVICE': 'cpu'}
    env.pop('MODEL', None)
    proc = subprocess.Popen([str(ROOT / 'scripts' / 'demo')], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    code, stdout, err = wait_exit(proc, 600)
    assert code == 0, err[-3000:]
    assert f'model {DEFAULT_MODEL}' in stdout
    summary = json.loads((out / 'report' / 'summary.json').read_text())
    assert summary['requests'] >= 4 and summary['model'] == DEFAULT_MODEL, summary
