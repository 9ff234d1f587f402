"""Launch and params files, checked structurally (ros2 launch is not installable here).

What `ros2 launch vlm_ros vlm.launch.xml` needs from this package is checked against the
install space: the node's package and executable, every file the launch file refers to, and
every key of every installed params file being a parameter the node declares.
"""

import pathlib
import re
import xml.etree.ElementTree as ElementTree

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from vlm_ros.node.params import BY_NAME, validate

SHARE = pathlib.Path(get_package_share_directory('vlm_ros'))
LAUNCH_FILES = sorted((SHARE / 'launch').glob('*.launch.xml'))
PARAMS_FILES = sorted((SHARE / 'config').glob('*.yaml'))


def _resolve(text: str, args: dict) -> str:
    """Resolve the substitutions our launch files use: $(var ...) and $(find-pkg-share ...)."""
    text = re.sub(r'\$\(var (\w+)\)', lambda m: args[m.group(1)], text)
    return re.sub(r'\$\(find-pkg-share (\w+)\)',
                  lambda m: get_package_share_directory(m.group(1)), text)


def test_launch_and_config_files_are_installed():
    assert [p.name for p in LAUNCH_FILES] == ['vlm.launch.xml']
    assert {p.name for p in PARAMS_FILES} == {'vlm.yaml', 'vlm_gpu.yaml', 'vlm_remote.yaml'}


@pytest.mark.parametrize('launch_file', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_refers_to_installed_things(launch_file):
    root = ElementTree.parse(launch_file).getroot()
    assert root.tag == 'launch'
    args = {arg.get('name'): arg.get('default', '') for arg in root.iter('arg')}
    assert {'model', 'device', 'backend', 'base_url', 'image', 'instruction', 'namespace',
            'params_file'} <= args.keys()
    nodes = list(root.iter('node'))
    assert nodes, 'the launch file starts no node'
    for node in nodes:
        executable = (pathlib.Path(get_package_prefix(node.get('pkg'))) / 'lib' /
                      node.get('pkg') / node.get('exec'))
        assert executable.is_file(), executable
        for param in node.iter('param'):
            if param.get('from'):
                assert pathlib.Path(_resolve(param.get('from'), args)).is_file()
            else:
                assert param.get('name') in BY_NAME, param.get('name')
        for remap in node.iter('remap'):
            assert remap.get('from') in {'image', 'image/compressed', 'instruction'}


@pytest.mark.parametrize('params_file', PARAMS_FILES, ids=lambda p: p.name)
def test_params_files_hold_only_declared_valid_parameters(params_file):
    data = yaml.safe_load(params_file.read_text())
    assert list(data) == ['/**']
    values = data['/**']['ros__parameters']
    for name, value in values.items():
        assert name in BY_NAME, f'{params_file.name}: {name} is not a vlm_node parameter'
        assert validate(name, value) is None, (params_file.name, name, validate(name, value))


def test_default_params_file_matches_the_declared_defaults():
    values = yaml.safe_load((SHARE / 'config' / 'vlm.yaml').read_text())['/**']
    assert values['ros__parameters'] == {name: spec.default for name, spec in BY_NAME.items()}
