"""Hub ids load in the engine as a user's do: through the real huggingface_hub cache.

The cache is laid out offline (HF_HOME/hub/models--ORG--NAME) with trained tiny checkpoints;
HF_HUB_OFFLINE=1 keeps every process off the network. Each load runs in a process of its own,
since huggingface_hub reads HF_* at import. The entry points (vlm_node, the tools, the demo)
are in test_hub_models.
"""

import os
import pathlib
import socket
import subprocess
import sys
import uuid

import pytest
from engine_fixtures import DEFAULT_MODEL, TARGETS, offline_hub_env

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

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


AT_ONCE = 120  # s: a process start and its imports, not the minutes of a hub's retries


def run_engine(model: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Load model in a fresh process (huggingface_hub reads HF_* at import) and plan once.

    ``timeout`` bounds the process: a failure that retries the hub for minutes never ends in
    time, which is how the tests of failing at once fail.
    """
    support = pathlib.Path(__file__).resolve().parents[1] / 'support'
    path = f'{support}{os.pathsep}{env.get("PYTHONPATH", "")}'
    return subprocess.run([sys.executable, '-c', ENGINE_PLAN, model], capture_output=True,
                          text=True, timeout=timeout, env={**env, 'PYTHONPATH': path})


def test_engine_loads_a_hub_id_from_the_offline_cache(hub_home):
    result = run_engine('vlm-ros-test/tiny-llava', offline_hub_env(hub_home))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == TARGETS['plan'][1]


def test_default_model_id_is_an_idefics3_checkpoint_the_engine_runs(hub_home):
    result = run_engine(DEFAULT_MODEL, offline_hub_env(hub_home))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == TARGETS['plan'][1]


def test_offline_and_not_cached_fails_at_once_saying_how_to_get_it(hub_home):
    result = run_engine('vlm-ros-test/never-downloaded', offline_hub_env(hub_home), AT_ONCE)
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout.startswith('not_found'), result.stdout
    assert 'HF_HUB_OFFLINE is set' in result.stdout
    assert 'hf download vlm-ros-test/never-downloaded' in result.stdout


def test_unreachable_hub_and_not_cached_fails_at_once(hub_home):
    with socket.socket() as sock:  # a loopback port nothing listens on: connection refused
        sock.bind(('127.0.0.1', 0))
        endpoint = f'http://127.0.0.1:{sock.getsockname()[1]}'
    env = {**offline_hub_env(hub_home), 'HF_HUB_OFFLINE': '0', 'HF_ENDPOINT': endpoint}
    result = run_engine('vlm-ros-test/never-downloaded', env, AT_ONCE)
    assert result.returncode == 3, result.stderr[-3000:]
    assert f'{endpoint} cannot be reached' in result.stdout, result.stdout


def test_missing_local_path_is_not_taken_for_a_hub_id(hub_home, tmp_path):
    result = run_engine(str(tmp_path / 'models' / 'mine'), offline_hub_env(hub_home))
    assert result.returncode == 3 and 'does not exist' in result.stdout, result.stdout


def test_a_relative_path_that_does_not_exist_says_both_readings(hub_home, tmp_path):
    name = f'demo_out_{uuid.uuid4().hex[:8]}/tiny_mdl'  # shaped like ORG/NAME, meant as a path
    result = run_engine(name, offline_hub_env(hub_home))
    assert result.returncode == 3, result.stderr[-3000:]
    assert 'neither an existing directory' in result.stdout, result.stdout
    assert os.path.abspath(name) in result.stdout and 'nor a hub id in the local cache' in \
        result.stdout, result.stdout
