"""vlm.launch.py as a user runs it: every declared argument observed to take effect.

Each test starts `ros2 launch vlm_ros vlm.launch.py ...` in another process (see
launch_harness.py) and watches its node over DDS, by the node's own namespace.
"""

import re
import subprocess
import uuid

import pytest
from builtin_interfaces.msg import Time
from engine_fixtures import DEFAULT_MODEL, TARGETS, offline_hub_env
from launch_harness import Launch, launch_command
from node_harness import RELIABLE, TIMEOUT, camera, wait_heard, wait_matched
from ros_harness import stopped_cleanly
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from sse_server import ScriptedServer
from std_msgs.msg import String

from vlm_ros_msgs.msg import Plan

DECLARED = {'namespace', 'params_file', 'model', 'device', 'backend', 'base_url', 'autostart',
            'use_sim_time', 'image', 'instruction', 'log_level'}


@pytest.fixture
def launches(test_node):
    """Start launches; stop each with Ctrl-C at the end, which must end it cleanly."""
    yield from stopped_cleanly(lambda *arguments, env=None: Launch(test_node, *arguments,
                                                                     env=env))


def test_every_declared_argument_is_listed():
    shown = subprocess.run([*launch_command(), '-s', 'vlm_ros', 'vlm.launch.py'],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    names = set(re.findall(r"^    '([^']+)':", shown, re.MULTILINE))
    assert names == DECLARED, shown


def test_launch_remaps_plans_and_exits_cleanly_on_ctrl_c(launches, test_node, trained_tiny):
    camera_topic, task_topic = f'/cam_{uuid.uuid4().hex[:8]}', f'/task_{uuid.uuid4().hex[:8]}'
    launch = launches(f'model:={trained_tiny("llava")}', 'device:=cpu',
                      f'image:={camera_topic}', f'instruction:={task_topic}', 'log_level:=debug')
    values = launch.wait_state('active')
    # device reached the node: its own default is 'auto'
    assert (values['model'], values['device']) == (str(trained_tiny('llava')), 'cpu')
    plans = launch.plans()
    images = test_node.node.create_publisher(Image, camera_topic, 10)
    frame_id = uuid.uuid4().hex
    make = camera(frame_id)
    test_node.node.create_timer(0.05, lambda: images.publish(
        make(test_node.node.get_clock().now().to_msg())))
    tasks = test_node.node.create_publisher(String, task_topic, RELIABLE)
    wait_matched(tasks, 'the remapped instruction subscription')
    wait_heard(plans)  # a plan published sooner is lost
    # A frame sent is not yet one received: the request waits wait_for_image (2 s) at most.
    launch.wait_diag(lambda v: int(v.get('frames_received', '0')) > 0,
                     'a frame of the remapped camera at the node')
    tasks.publish(String(data=TARGETS['plan'][0]))
    plan = plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1], plan.message
    code, out = launch.stop()
    assert code == 0 and 'terminate called' not in out, out[-3000:]
    assert 'process has finished cleanly' in out, out[-3000:]
    assert 'escalating to' not in out, 'it outlived the SIGINT: launch escalated'
    assert '[DEBUG]' in out  # log_level reached the node


def test_autostart_false_stays_unconfigured(launches, trained_tiny):
    launch = launches(f'model:={trained_tiny("llava")}', 'autostart:=false')
    assert launch.wait_state('unconfigured')['model_loaded'] == 'False'


def test_params_file_decides_what_no_argument_overrides(launches, trained_tiny, tmp_path):
    params = tmp_path / 'robot.yaml'
    params.write_text('/**:\n  ros__parameters:\n'
                      f'    model: {trained_tiny("llava")}\n    device: cpu\n'
                      '    max_new_tokens: 7\n')
    launch = launches(f'params_file:={params}')
    values = launch.wait_state('active')
    assert values['model'] == str(trained_tiny('llava')) and values['device'] == 'cpu'


def test_gpu_preset_alone_gives_the_gpu_settings(launches, hub_home):
    launch = launches('params_file:=' + _share('config/vlm_gpu.yaml'),
                      env=offline_hub_env(hub_home))
    values = launch.wait_diag(lambda v: v.get('last_error'), 'the configure failure')
    # No GPU here: the preset's device (cuda) is refused, which shows the preset applied.
    assert values['device'] == 'cuda' and 'CUDA is not available' in values['last_error']
    assert values['model'] == 'HuggingFaceTB/SmolVLM-Instruct'


def test_default_launch_uses_the_default_model(launches, hub_home):
    launch = launches('device:=cpu', env=offline_hub_env(hub_home))
    assert launch.wait_state('active', timeout=120)['model'] == DEFAULT_MODEL


@pytest.fixture
def scripted():
    """Return a real OpenAI-compatible server in this process (sse_server.py).

    Asked for before launches, it closes after the launch has stopped.
    """
    with ScriptedServer() as server:
        yield server


def test_backend_and_base_url_pick_the_server_and_use_sim_time_the_clock(scripted, launches,
                                                                          test_node):
    launch = launches(f'model:={uuid.uuid4().hex}', 'backend:=openai',
                      f'base_url:={scripted.base_url}', 'use_sim_time:=true')
    values = launch.wait_diag(lambda v: v.get('state') == 'active' and
                              v.get('backend_reachable') == 'True', 'the server to be reached')
    assert (values['backend'], values['base_url']) == ('openai', scripted.base_url)
    assert scripted.checked.is_set()  # its reachability check came to this server
    clock = test_node.node.create_publisher(Clock, '/clock', 10)
    test_node.node.create_timer(0.05, lambda: clock.publish(Clock(clock=Time(sec=4242))))
    # The node's own clock says it has the simulated time: an instruction sooner meets none.
    launch.diagnostics.wait_for(lambda m: m.header.stamp.sec == 4242, TIMEOUT,
                                '/diagnostics stamped with the simulated time')
    plans = launch.plans()
    tasks = test_node.node.create_publisher(String, launch.topic('instruction'), RELIABLE)
    wait_matched(tasks, 'the instruction subscription')
    wait_heard(plans)  # a plan published sooner is lost
    text = uuid.uuid4().hex
    tasks.publish(String(data=text))  # no camera: NO_IMAGE, stamped with the node's time
    plan = plans.wait_for(lambda p: p.instruction == text, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_NO_IMAGE
    assert plan.header.stamp.sec == 4242, plan.header.stamp


def _share(relative: str) -> str:
    from ament_index_python.packages import get_package_share_directory

    return f'{get_package_share_directory("vlm_ros")}/{relative}'
