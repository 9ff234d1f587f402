"""vlm.launch.py under launch_pytest: the launch brings its own node to active, and it plans.

launch_pytest comes with a ROS 2 distro; without one, scripts/bootstrap builds it from
../shared/ros2-launch into the workspace. Where neither exists the test skips with that reason.
"""

import importlib.util
import pathlib
import uuid

import pytest

if importlib.util.find_spec('launch_pytest') is None:
    pytest.skip('launch_pytest is not installed: source a ROS 2 distro, or put ../shared '
                'beside this checkout and run scripts/bootstrap', allow_module_level=True)

import launch_pytest  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import AnyLaunchDescriptionSource  # noqa: E402

LAUNCH_FILE = pathlib.Path(get_package_share_directory('vlm_ros')) / 'launch' / 'vlm.launch.py'
NAMESPACE = 'launch_pytest_' + uuid.uuid4().hex[:12]


@launch_pytest.fixture
def launch_description(trained_tiny):
    arguments = {'model': str(trained_tiny('llava')), 'device': 'cpu', 'namespace': NAMESPACE}
    return LaunchDescription([
        IncludeLaunchDescription(AnyLaunchDescriptionSource(str(LAUNCH_FILE)),
                                 launch_arguments=arguments.items()),
        launch_pytest.actions.ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_launch_file_brings_its_node_to_active_and_it_plans(test_node):
    from diagnostic_msgs.msg import DiagnosticArray
    from engine_fixtures import TARGETS
    from node_harness import (
        RELIABLE,
        TIMEOUT,
        camera,
        diag_values,
        wait_heard,
        wait_matched,
        wait_state,
    )
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vlm_ros_msgs.msg import Plan

    diagnostics = test_node.collect(DiagnosticArray, '/diagnostics')
    node_name = f'/{NAMESPACE}/vlm_node'
    assert wait_state(diagnostics, 'active', node=node_name)['model_loaded'] == 'True'
    plans = test_node.collect(Plan, f'/{NAMESPACE}/plan', RELIABLE)
    images = test_node.node.create_publisher(Image, f'/{NAMESPACE}/image', 10)
    frame_id = uuid.uuid4().hex
    make = camera(frame_id)
    test_node.node.create_timer(0.05, lambda: images.publish(
        make(test_node.node.get_clock().now().to_msg())))
    tasks = test_node.node.create_publisher(String, f'/{NAMESPACE}/instruction', RELIABLE)
    wait_matched(tasks, 'the instruction subscription')
    wait_heard(plans)  # a plan published sooner is lost
    # A frame sent is not yet one received: the request waits wait_for_image (2 s) at most.
    diagnostics.wait_for(
        lambda m: int(diag_values(m, node_name).get('frames_received', '0')) > 0, TIMEOUT,
        'a camera frame at the node')
    tasks.publish(String(data=TARGETS['plan'][0]))
    plan = plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1], plan.message
