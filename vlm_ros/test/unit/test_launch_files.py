"""Installed launch and params files: what `ros2 launch vlm_ros vlm.launch.py` needs.

test_launch.py runs the launch file itself; this checks the files alone: every key of every
installed params file is a parameter the node declares, with a valid value.
"""

import pathlib

import pytest
import yaml
from ament_index_python.packages import get_package_share_directory
from vlm_ros.node.params import BY_NAME, typed, validate

SHARE = pathlib.Path(get_package_share_directory('vlm_ros'))
PARAMS_FILES = sorted((SHARE / 'config').glob('*.yaml'))


def test_launch_and_config_files_are_installed():
    assert [p.name for p in (SHARE / 'launch').iterdir()] == ['vlm.launch.py']
    assert {p.name for p in PARAMS_FILES} == {'vlm.yaml', 'vlm_gpu.yaml', 'vlm_remote.yaml'}


@pytest.mark.parametrize('params_file', PARAMS_FILES, ids=lambda p: p.name)
def test_params_files_hold_only_declared_valid_parameters(params_file):
    data = yaml.safe_load(params_file.read_text())
    assert list(data) == ['/**']
    values = data['/**']['ros__parameters']
    for name, value in values.items():
        assert name in BY_NAME, f'{params_file.name}: {name} is not a vlm_node parameter'
        value = typed(name, value)  # a string array arrives as a list, as from ROS
        assert validate(name, value) is None, (params_file.name, name, validate(name, value))


def test_default_params_file_matches_the_declared_defaults():
    values = yaml.safe_load((SHARE / 'config' / 'vlm.yaml').read_text())['/**']
    values = {name: typed(name, value) for name, value in values['ros__parameters'].items()}
    assert values == {name: spec.default for name, spec in BY_NAME.items()}
