"""README.md and docs/*.md are executable: each command block runs in a test or says what it needs.

Each bash or python block is preceded by a marker: `<!-- tested: ... -->` naming the tests (or
.ci/run) that run its commands, or `<!-- needs: ... -->` saying what this machine lacks (a
robot with ROS 2 from apt, a GPU, a server). The cheap blocks run here verbatim.
"""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from doc_blocks import block
from engine_fixtures import offline_hub_env

REPO = pathlib.Path(__file__).resolve().parents[3]
TOOLS = tuple(re.findall(r"'(\w+) = vlm_ros\.", (REPO / 'vlm_ros' / 'setup.py').read_text()))


def test_tools_are_reachable_by_name_inside_with_env():
    """Every console script of setup.py, as the docs call them."""
    assert {'vlm_node', 'vlm_eval', 'vlm_train_head', 'vlm_action_head'} <= set(TOOLS)
    script = ' && '.join(f'command -v {tool}' for tool in TOOLS)
    result = subprocess.run([str(REPO / 'scripts' / 'with-env'), 'bash', '-c', script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(TOOLS)


def test_environment_block_runs_verbatim():
    for line in block('scripts/with-env colcon list').body.splitlines():
        result = subprocess.run(shlex.split(line), cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, (line, result.stderr)


def test_engine_block_runs_verbatim(hub_home):
    """The engine example, with its default hub id answered from the offline cache."""
    code = block('from vlm_ros.demo.tabletop import draw_tabletop').body
    env = {**offline_hub_env(hub_home), 'CUDA_VISIBLE_DEVICES': ''}
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, env=env, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'(True|False) \[.*\] \d', result.stdout), result.stdout


@pytest.mark.parametrize('section', ['node', 'local', 'tools'])
def test_requirements_sections_print_pins(section):
    result = subprocess.run([str(REPO / 'scripts' / 'requirements'), section],
                            capture_output=True, text=True, check=True, env=os.environ.copy())
    pins = result.stdout.split()
    assert pins and all('==' in pin for pin in pins)
    has_torch = any(pin.startswith(('torch==', 'transformers==')) for pin in pins)
    assert has_torch == (section == 'local'), pins


@pytest.mark.parametrize('args, code, out', [
    (['--help'], 0, 'usage: '), (['-x'], 2, 'requirements: no section [-x] (sections: ros node'),
    ([], 2, 'usage: ')])
def test_requirements_says_its_usage_and_its_sections(args, code, out):
    result = subprocess.run([str(REPO / 'scripts' / 'requirements'), *args],
                            capture_output=True, text=True)
    assert result.returncode == code and (result.stdout + result.stderr).startswith(out), result


def test_gen_parameters_doc_writes_the_committed_document(tmp_path):
    """scripts/gen-parameters-doc renders the source tree's specs: what docs/ must hold."""
    out = tmp_path / 'PARAMETERS.md'
    result = subprocess.run([str(REPO / 'scripts' / 'gen-parameters-doc'), str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f'wrote {out}'
    assert out.read_text() == (REPO / 'docs' / 'PARAMETERS.md').read_text()
