"""The README is executable: every command block runs in a test, or says what it needs.

Each bash or python block is preceded by a marker: `<!-- tested: ... -->` naming the tests (or
.ci/run) that run its commands, or `<!-- needs: ... -->` saying what this machine lacks (a
robot with ROS 2 from apt, a GPU, a server). The cheap blocks run here verbatim.
"""

import ast
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest
from engine_fixtures import offline_hub_env

REPO = pathlib.Path(__file__).resolve().parents[2]
TESTS = pathlib.Path(__file__).resolve().parent
README = (REPO / 'README.md').read_text()
BLOCK = re.compile(r'(?:<!-- (tested|needs): ([^>]*) -->\n)?```(bash|python)\n(.*?)```', re.S)
BLOCKS = [(kind, marker, language, body) for kind, marker, language, body in
          BLOCK.findall(README)]
LAUNCH_ARGUMENTS = {'namespace', 'params_file', 'model', 'device', 'backend', 'base_url',
                    'autostart', 'use_sim_time', 'image', 'instruction', 'log_level'}
OPERATOR_COMMANDS = {'launch vlm_ros', 'lifecycle get', 'lifecycle set', 'param get',
                     'param set', 'topic pub', 'topic echo', 'action send_goal'}
TOOLS = ('vlm_node', 'vlm_client', 'vlm_replay', 'vlm_eval', 'vlm_benchmark')


def _block(first_line: str) -> str:
    found = [body for _, _, _, body in BLOCKS if body.startswith(first_line)]
    assert len(found) == 1, f'README block starting {first_line!r}: {len(found)} found'
    return found[0]


def _test_functions(path: pathlib.Path) -> set:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith('test_')}


def test_every_command_block_is_tested_or_says_what_it_needs():
    assert len(BLOCKS) >= 10
    unmarked = [body.splitlines()[0] for kind, _, _, body in BLOCKS if not kind]
    assert not unmarked, f'README blocks without a tested/needs marker: {unmarked}'


def test_every_named_test_exists():
    for kind, marker, _, _ in BLOCKS:
        if kind != 'tested':
            continue
        for item in marker.split():
            if item == '.ci/run':
                assert './scripts/test' in (REPO / '.ci' / 'run').read_text()
                continue
            file, _, function = item.partition('::')
            assert (TESTS / file).is_file(), item
            assert not function or function in _test_functions(TESTS / file), item


def test_launch_arguments_in_the_readme_exist():
    used = set()
    for line in re.findall(r'ros2 launch vlm_ros vlm\.launch\.py.*(?:\n {4}.*)*', README):
        used |= set(re.findall(r'(\w+):=', line))
    assert used and used <= LAUNCH_ARGUMENTS, used - LAUNCH_ARGUMENTS
    assert 'vlm.launch.xml' not in README


def test_operator_block_shows_each_operator_command():
    """The `ros2` operator block (run by test_operator_cli.py) keeps every command it teaches."""
    block = _block('ros2 launch vlm_ros vlm.launch.py model:=')
    used = {' '.join(shlex.split(line)[1:3]) for line in block.replace('\\\n', ' ').splitlines()
            if line.startswith('ros2 ')}
    assert used >= OPERATOR_COMMANDS, OPERATOR_COMMANDS - used


def test_tools_are_reachable_by_name_inside_with_env():
    script = ' && '.join(f'command -v {tool}' for tool in TOOLS)
    result = subprocess.run([str(REPO / 'scripts' / 'with-env'), 'bash', '-c', script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(TOOLS)


def test_environment_block_runs_verbatim():
    for line in _block('scripts/with-env colcon list').splitlines():
        result = subprocess.run(shlex.split(line), cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, (line, result.stderr)


def test_engine_block_runs_verbatim(hub_home):
    """The engine example, with its default hub id answered from the offline cache."""
    code = _block('from vlm_ros.demo.tabletop import draw_tabletop')
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
