"""README.md and docs/*.md are executable: each command block runs in a test or says what it needs.

Each bash or python block is preceded by a marker: `<!-- tested: ... -->` naming the tests (or
.ci/run) that run its commands, or `<!-- needs: ... -->` saying what this machine lacks (a
robot with ROS 2 from apt, a GPU, a server). The cheap blocks run here verbatim.
"""

import ast
import pathlib
import re
import shlex

from doc_blocks import block, blocks, documents

REPO = pathlib.Path(__file__).resolve().parents[3]
TESTS = pathlib.Path(__file__).resolve().parents[1]  # unit/ and system/
BLOCKS = blocks()
LAUNCH_ARGUMENTS = {'namespace', 'params_file', 'model', 'device', 'backend', 'base_url',
                    'autostart', 'use_sim_time', 'image', 'instruction', 'log_level'}
OPERATOR_COMMANDS = {'launch vlm_ros', 'lifecycle get', 'lifecycle set', 'param get',
                     'param set', 'topic pub', 'topic echo', 'action send_goal'}


def _test_functions(path: pathlib.Path) -> set:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith('test_')}


def test_every_command_block_is_tested_or_says_what_it_needs():
    assert len(BLOCKS) >= 10
    unmarked = [(each.path, each.body.splitlines()[0]) for each in BLOCKS if not each.kind]
    assert not unmarked, f'command blocks without a tested/needs marker: {unmarked}'


def test_every_named_test_exists():
    for each in BLOCKS:
        if each.kind != 'tested':
            continue
        for item in each.marker.split():
            if item == '.ci/run':
                assert './scripts/test' in (REPO / '.ci' / 'run').read_text()
                continue
            path, _, function = item.partition('::')  # tier/test_file.py::test_function
            assert (TESTS / path).is_file(), (each.path, item)
            assert not function or function in _test_functions(TESTS / path), (each.path, item)


def test_launch_arguments_in_the_readme_and_docs_exist():
    used = set()
    for document in documents():
        text = document.read_text()
        for line in re.findall(r'ros2 launch vlm_ros vlm\.launch\.py.*(?:\n {2,4}.*)*', text):
            used |= set(re.findall(r'(\w+):=', line))
        assert 'vlm.launch.xml' not in text, document.name
    assert used and used <= LAUNCH_ARGUMENTS, used - LAUNCH_ARGUMENTS


def test_operator_block_shows_each_operator_command():
    """The `ros2` operator block (run by test_operator_cli.py) keeps every command it teaches."""
    body = block('ros2 launch vlm_ros vlm.launch.py model:=').body
    used = {' '.join(shlex.split(line)[1:3]) for line in body.replace('\\\n', ' ').splitlines()
            if line.startswith('ros2 ')}
    assert used >= OPERATOR_COMMANDS, OPERATOR_COMMANDS - used
