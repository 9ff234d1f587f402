"""Hub ids load as a user's do: through the real huggingface_hub cache, in every entry point.

The cache is laid out offline (HF_HOME/hub/models--ORG--NAME) with trained tiny checkpoints;
HF_HUB_OFFLINE=1 keeps every process off the network. Each entry point runs as its own process,
the way the README starts it.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import uuid

from ament_index_python.packages import get_package_prefix
from engine_fixtures import DEFAULT_MODEL, TARGETS, offline_hub_env
from node_harness import TIMEOUT, camera
from ros_harness import wait_exit

from vlm_ros_msgs.msg import Plan

ROOT = pathlib.Path(__file__).resolve().parents[3]
SAMPLE_BAG = ROOT / 'samples' / 'tabletop' / 'bag'
BIN = pathlib.Path(get_package_prefix('vlm_ros')) / 'lib' / 'vlm_ros'
ENGINE_PLAN = """
import sys
from engine_fixtures import TARGETS, scene
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine
engine = VlmEngine(EngineConfig(model=sys.argv[1], device='cpu', dtype='float32'))
try:
    engine.load()
except VlmError as exc:
    print(exc.kind, exc)
    sys.exit(3)
print(engine.run([Request('plan', scene('red'), TARGETS['plan'][0])])[0].text)
"""


def run_engine(model: str, env: dict) -> subprocess.CompletedProcess:
    """Load model in a fresh process (huggingface_hub reads HF_* at import) and plan once."""
    support = pathlib.Path(__file__).resolve().parents[1] / 'support'
    path = f'{support}{os.pathsep}{env.get("PYTHONPATH", "")}'
    return subprocess.run([sys.executable, '-c', ENGINE_PLAN, model], capture_output=True,
                          text=True, timeout=300, env={**env, 'PYTHONPATH': path})


def test_engine_loads_a_hub_id_from_the_offline_cache(hub_home):
    result = run_engine('vlm-ros-test/tiny-llava', offline_hub_env(hub_home))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == TARGETS['plan'][1]


def test_default_model_id_is_an_idefics3_checkpoint_the_engine_runs(hub_home):
    result = run_engine(DEFAULT_MODEL, offline_hub_env(hub_home))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == TARGETS['plan'][1]


def test_offline_and_not_cached_fails_at_once_saying_how_to_get_it(hub_home):
    started = time.monotonic()
    result = run_engine('vlm-ros-test/never-downloaded', offline_hub_env(hub_home))
    took = time.monotonic() - started
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout.startswith('not_found'), result.stdout
    assert 'HF_HUB_OFFLINE is set' in result.stdout
    assert 'hf download vlm-ros-test/never-downloaded' in result.stdout
    assert took < 30, f'{took:.1f} s (process start and imports included)'


def test_unreachable_hub_and_not_cached_fails_at_once(hub_home):
    with socket.socket() as sock:  # a loopback port nothing listens on: connection refused
        sock.bind(('127.0.0.1', 0))
        endpoint = f'http://127.0.0.1:{sock.getsockname()[1]}'
    env = {**offline_hub_env(hub_home), 'HF_HUB_OFFLINE': '0', 'HF_ENDPOINT': endpoint}
    started = time.monotonic()
    result = run_engine('vlm-ros-test/never-downloaded', env)
    took = time.monotonic() - started
    assert result.returncode == 3, result.stderr[-3000:]
    assert f'{endpoint} cannot be reached' in result.stdout, result.stdout
    assert took < 30, f'{took:.1f} s'


def test_missing_local_path_is_not_taken_for_a_hub_id(hub_home, tmp_path):
    result = run_engine(str(tmp_path / 'models' / 'mine'), offline_hub_env(hub_home))
    assert result.returncode == 3 and 'does not exist' in result.stdout, result.stdout


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


def test_a_relative_path_that_does_not_exist_says_both_readings(hub_home, tmp_path):
    name = f'demo_out_{uuid.uuid4().hex[:8]}/tiny_mdl'  # shaped like ORG/NAME, meant as a path
    result = run_engine(name, offline_hub_env(hub_home))
    assert result.returncode == 3, result.stderr[-3000:]
    assert 'neither an existing directory' in result.stdout, result.stdout
    assert os.path.abspath(name) in result.stdout and 'nor a hub id in the local cache' in \
        result.stdout, result.stdout
