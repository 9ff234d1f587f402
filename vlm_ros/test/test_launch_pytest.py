"""vlm.launch.xml under launch_pytest, where launch_pytest is installed.

It runs under colcon test on a machine with ROS 2, and is skipped here, where launch,
launch_ros and launch_pytest cannot be had.
"""

import pathlib

import pytest

launch_pytest = pytest.importorskip(
    'launch_pytest', reason='launch_pytest is not installable here (no ROS 2 distro); '
    'this test runs under colcon test where ROS 2 is installed')

from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import AnyLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = pathlib.Path(get_package_share_directory('vlm_ros')) / 'launch' / 'vlm.launch.xml'


@launch_pytest.fixture
def launch_description(trained_tiny):
    arguments = {'model': str(trained_tiny('llava')), 'device': 'cpu'}
    return LaunchDescription([IncludeLaunchDescription(
        AnyLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments=arguments.items())])


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_brings_the_node_to_active(test_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from node_harness import wait_state

    diagnostics = test_node.collect(DiagnosticArray, '/diagnostics')
    assert wait_state(diagnostics, 'active')['model_loaded'] == 'True'
