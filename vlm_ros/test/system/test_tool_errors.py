"""Every tool answers bad input with one line on stderr naming the problem, and exit code 2.

A traceback tells a user nothing they can act on; a zero exit after doing nothing tells a
script that all went well. Each tool runs as the installed script, forked from the fork server;
so does Ctrl-C in the middle of a run.
"""

import pathlib
import shutil
import signal
import subprocess

import pytest
import vlm_ros.bag.storage as bags
from engine_fixtures import scene
from eval_bags import image_fields, write_input_bag
from fork_server import run_tool
from node_harness import TIMEOUT, node_executable
from recordings import write_ros1_bag, write_ros1_custom_bag
from ros_harness import stop_process
from waiting import wait_until

CASES = [
    ('vlm_replay', ['{txt}'], 'is not a recording'),
    ('vlm_replay', ['{garbage}'], 'cannot open'),
    ('vlm_replay', ['{bad_metadata}'], 'cannot open'),  # a YAML error's lines, in one
    ('vlm_eval', ['{pi}', '--model', 'm', '--instructions', '{bad_yaml}'], 'not valid YAML'),
    ('vlm_eval', ['{txt}', '--model', 'm'], 'is not a recording'),
    ('vlm_eval', ['{pi}', '--model', 'm'], '--instructions FILE or --instruction TEXT'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--instruction', 'go', '--every', '9'],
     'only 3 frames'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--instructions', '{txt}', '--at', '1'],
     '--every and --at go with --instruction'),
    ('vlm_replay', ['{custom}'], 'my_robot/msg/Status is not installed here'),
    ('vlm_replay', ['{pi}', '--rate', 'nan'], 'must be finite'),
    ('vlm_replay', ['{pi}', '--rate', 'inf'], 'must be finite'),
    ('vlm_replay', ['{pi}', '--rate', '0'], 'must be > 0'),
    ('vlm_replay', ['{pi}', '--start', '99'], 'past the end'),
    ('vlm_replay', ['{pi}', '--instruction', 'go', '--at', '99'], 'after the end'),
    ('vlm_replay', ['{pi}', '--instruction', 'go', '--remap',
                    'raspicam_node/image/compressed:=instruction'],
     'and instruction (std_msgs/msg/String) would both be published on /instruction'),
    ('vlm_benchmark', ['--model', '{missing}'], 'missing'),
    ('vlm_benchmark', ['--random', 'nosuch'], 'choose one of'),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--image', '640'], 'HEIGHTxWIDTH'),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--image', '4x6'], 'at least 8x8'),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--image', '100000x100000'],
     'at most 33554432 pixels'),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--new-tokens', '1', '--constraint-cost'],
     '--new-tokens must be >= 2, got 1'),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--constraint-cost', '--constrain-plans', 'off'],
     'not with --constrain-plans off'),
    ('vlm_client', ['--timeout', 'nan', 'query', 'x'], 'must be finite'),
    ('vlm_client', ['query', 'x', '--camera', 'head', '--image', '{pi}'], 'not with --image'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--window', 'nan'],
     'must be finite'),
    ('vlm_export', ['{pi}', '--model', 'm'], 'the following arguments are required: --actions'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--camera', 'head'], 'write NAME=TOPIC'),
    ('vlm_eval', ['{pi}', '--model', '{missing}', '--camera', 'head=/nope'],
     'camera head: /nope is not in'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--camera', 'head=/a', '--camera', 'wrist=/a'],
     '--camera topics must differ'),
    ('vlm_eval', ['{pi}', '--model', '{missing}', '--out', '{txt}'], 'is a file; name a folder'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--max-skew', '0.2'], 'go with --camera'),
    ('vlm_export', ['{pi}', '--model', '{missing}', '--actions', '/x', '--out',
                    '{missing}/dataset'], 'is not a folder'),
    ('vlm_train_head', ['{txt}'], 'is not a dataset of vlm_export'),
    ('vlm_train_head', ['{missing}', '--hidden', '100000000'], 'must be <= 8192'),
    ('vlm_train_head', ['{missing}', '--chunk', '1000000'], 'must be <= 1024'),
    ('vlm_train_head', ['{missing}', '--out', '{missing}/head.pt'], 'is not a folder'),
    ('vlm_train_head', ['{missing}', '--seconds', 'nan'], 'must be finite'),
    # Bytes that are no message of their topic's type: which message, not rosbags' traceback.
    ('vlm_eval', ['{undecodable}', '--model', '{missing}'],
     "undecodable: message 2 of /camera/image_raw, logged 0.100 s after the start, cannot be "
     "read (Could not deserialize 'sensor_msgs/msg/Image'"),
    ('vlm_export', ['{undecodable}', '--model', '{missing}', '--actions', '/cmd_vel'],
     'message 2 of /camera/image_raw, logged 0.100 s after the start, cannot be read'),
    ('vlm_eval', ['{pi}', '--instruction', 'go', '--recorded', '{undecodable_plans}'],
     'message 1 of /robot/plan, logged 0.000 s after the start, cannot be read'),
    # --device reaches the engine, which refuses a device this machine lacks before loading
    # (vlm_export's: test_export.py).
    ('vlm_eval', ['{pi}', '--model', '{missing}', '--instruction', 'go', '--device',
                  'cuda:99'], "device 'cuda:99' asked for, but "),
    ('vlm_benchmark', ['--random', 'tiny:llava', '--device', 'cuda:99'],  # before any weights
     "device 'cuda:99' asked for, but "),
    ('vlm_benchmark', ['--node', '--random', 'tiny:llava', '--device', 'cuda:99'],
     "device 'cuda:99' asked for, but "),
    # vlm_node's limits: a request it would refuse is refused here too.
    ('vlm_eval', ['{pi}', '--model', 'm', '--max-new-tokens', '0'],
     'argument --max-new-tokens: must be >= 1, got 0'),
    ('vlm_eval', ['{pi}', '--model', 'm', '--max-new-tokens', '4097'],
     "argument --max-new-tokens: must be <= 4096, as vlm_node's max_new_tokens; got 4097"),
    ('vlm_eval', ['{pi}', '--model', 'm', '--max-image-side', '-3'],
     'argument --max-image-side: must be >= 0, got -3'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--max-image-side', '-1'],
     'argument --max-image-side: must be >= 0, got -1'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--max-image-side', '8193'],
     "argument --max-image-side: must be <= 8192, as vlm_node's max_image_side"),
    # Options that would change nothing are refused, not ignored.
    ('vlm_eval', ['{pi}', '--recorded', '{pi}', '--model', 'm', '--device', 'cuda',
                  '--batch-size', '7', '--no-captions', '--max-new-tokens', '3'],
     "--no-captions, --max-new-tokens, --model, --device, --batch-size: no effect with "
     "--recorded, whose answers are the live vlm_node's; a model runs only to score "
     '--references'),
    ('vlm_eval', ['{pi}', '--recorded', '{pi}', '--references', '{txt}', '--model', 'm',
                  '--device', 'cpu', '--batch-size', '2', '--skills', 'pick'],
     "error: --skills: no effect with --recorded, whose answers are the live vlm_node's; "
     'the model only scores --references'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--skills', 'pick', 'place'],
     'unrecognized arguments: --skills pick place'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--constrain-plans', 'off'],
     'unrecognized arguments: --constrain-plans off'),
    ('vlm_export', ['{pi}', '--model', 'm', '--actions', '/x', '--decode-mode', 'static'],
     'unrecognized arguments: --decode-mode static'),
    # The nodes take ROS arguments only: a parameter without --ros-args -p is no remap.
    ('vlm_node', ['model:={missing}'],
     'is not a ROS argument, and vlm_node takes no other: a parameter goes after --ros-args, '
     'vlm_node --ros-args -p model:='),
    ('vlm_node', ['--ros-args', '-p', 'model:={missing}', '--', 'use_sim_time:=true'],
     'vlm_node --ros-args -p use_sim_time:=true'),
    ('vlm_node', ['--model', '{missing}'], "'--model' is not a ROS argument"),
    ('vlm_action_head', ['head:=head.pt'], 'vlm_action_head --ros-args -p head:=head.pt'),
    ('scripted_vla_head', ['fail'],
     "'fail' is not a ROS argument, and scripted_vla_head takes no other (--help says what"),
    # A value rclpy refuses as the node declares it: its reason, not its traceback.
    ('scripted_vla_head', ['--ros-args', '-p', 'step_time:=1'],
     "a parameter is refused: Trying to set parameter 'step_time' to '1' of type 'INTEGER', "
     "expecting type 'DOUBLE': step_time (a double is written with a decimal point: 1.0, not 1)"),
    ('scripted_vla_head', ['--ros-args', '-p', 'step_time:=nan'],
     'a parameter is refused: Invalid parameter value (nan) for parameter. Reason: Parameter '
     'step_time out of range'),
    ('scripted_vla_head', ['--ros-args', '-p', 'script:=succeed,sucess'],
     "a parameter is refused: Invalid parameter value (succeed,sucess) for parameter. Reason: "
     "script entry 'sucess' is not one of succeed, fail, silent"),
    ('vlm_action_head', ['--ros-args', '-p', 'head:=5'],
     "a parameter is refused: Trying to set parameter 'head' to '5' of type 'INTEGER'"),
]


def write_undecodable_bag(path, topic: str, msgtype: str, sound: tuple = ()) -> None:
    """Write a rosbag2 recording whose topic of msgtype holds a String's bytes after sound.

    ``sound``: messages of msgtype that decode, logged first, 0.1 s apart.
    """
    with bags.bag_writer(path) as writer:
        connection = bags.add_topic(writer, topic, msgtype)
        bags.add_topic(writer, '/robot/instruction', bags.STRING_TYPE)
        for number, data in enumerate([*sound, bags.serialize(bags.STRING_TYPE, data='x')]):
            writer.write(connection, 10**18 + number * 10**8, data)


@pytest.fixture(scope='module')
def inputs(tmp_path_factory):
    where = tmp_path_factory.mktemp('inputs')
    (where / 'notes.txt').write_text('not a recording\n')
    (where / 'garbage.bag').write_bytes(b'#ROSBAG V2.0\n' + bytes(range(256)) * 4)
    (where / 'bad.yaml').write_text('- text: [unclosed\n')
    (where / 'bad_metadata').mkdir()
    (where / 'bad_metadata' / 'metadata.yaml').write_text('rosbag2_bagfile_information: [\n')
    write_ros1_bag(where / 'pi.bag', [(10**18 + k * 10**8, scene('red'), f'f{k}')
                                      for k in range(3)])
    write_ros1_custom_bag(where / 'custom.bag')
    write_undecodable_bag(where / 'undecodable', '/camera/image_raw', 'sensor_msgs/msg/Image',
                          [bags.serialize('sensor_msgs/msg/Image',
                                          **image_fields(scene('blue'), 10**18))])
    write_undecodable_bag(where / 'undecodable_plans', '/robot/plan', 'vlm_ros_msgs/msg/Plan')
    return {'txt': where / 'notes.txt', 'garbage': where / 'garbage.bag',
            'custom': where / 'custom.bag', 'undecodable': where / 'undecodable',
            'undecodable_plans': where / 'undecodable_plans',
            'pi': where / 'pi.bag', 'missing': where / 'missing-model',
            'bad_yaml': where / 'bad.yaml', 'bad_metadata': where / 'bad_metadata'}


@pytest.mark.parametrize(('tool', 'args', 'reason'), CASES,
                         ids=[f'{c[0]}-{c[2][:20]}' for c in CASES])
def test_bad_input_is_one_line_and_exit_2(inputs, fork_server, tool, args, reason):
    done = run_tool([node_executable(tool), *(a.format(**inputs) for a in args)], 2 * TIMEOUT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and reason in lines[0], done.stderr
    assert lines[0].startswith(f'{tool}:')


def test_ros_arguments_rcl_cannot_read_say_how_to_quote_and_exit_2(fork_server):
    """A template's braces given bare are YAML to rcl: the node names the rule, not a traceback.

    rcl logs its own "Failed to parse global arguments" line first, so this is two lines.
    """
    done = run_tool([node_executable('vlm_node'), '--ros-args', '-p', 'prompt_ground:={phrase}'],
                    2 * TIMEOUT)
    assert done.returncode == 2 and 'Traceback' not in done.stderr, done.stderr
    assert "vlm_node: the ROS arguments cannot be read (failed to initialize rcl: Couldn't " \
        "parse parameter override rule: '-p prompt_ground:={phrase}'" in done.stderr
    assert 'needs quotes: -p "prompt_plan:=' in done.stderr
    # A remap rcl cannot read is no YAML: no word of quoting.
    done = run_tool([node_executable('vlm_node'), '--ros-args', '-r', 'image:=camera 1'],
                    2 * TIMEOUT)
    assert done.returncode == 2 and "Couldn't parse remap rule" in done.stderr, done.stderr
    assert 'quotes' not in done.stderr and 'Traceback' not in done.stderr, done.stderr


@pytest.mark.parametrize(('tool', 'says'), [('vlm_node', 'docs/PARAMETERS.md'),
                                            ('vlm_action_head', '-p head:=head.pt'),
                                            ('scripted_vla_head', '`step_time`')])
def test_help_of_a_node_says_how_to_set_its_parameters_and_starts_nothing(fork_server, tool,
                                                                         says):
    done = run_tool([node_executable(tool), '--help'], 2 * TIMEOUT)
    assert done.returncode == 0 and done.stderr == '', done.stderr
    assert done.stdout.startswith(f'usage: {tool} [--ros-args -p NAME:=VALUE ...')
    assert says in done.stdout


def test_a_model_that_cannot_be_loaded_exits_1_with_the_reason(tmp_path, untrained_llava,
                                                               fork_server):
    """The model failed, not the user's arguments: 1, as every tool says a failure."""
    broken = tmp_path / 'broken'
    shutil.copytree(untrained_llava, broken)
    weights = broken / 'model.safetensors'
    weights.write_bytes(weights.read_bytes()[:4096])  # a copy cut short
    done = run_tool([node_executable('vlm_eval'), write_input_bag(tmp_path / 'bag'), '--model',
                     broken, '--device', 'cpu', '--out', tmp_path / 'out'], 2 * TIMEOUT)
    assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
    assert done.stderr.startswith('vlm_eval: error: ') and str(broken) in done.stderr
    assert not (tmp_path / 'out').exists()


def _eval_with_torch_loaded(tmp_path, model) -> subprocess.Popen:
    """Start vlm_eval on a model that never stops by itself; return it once torch is loaded."""
    running = subprocess.Popen(
        [node_executable('vlm_eval'), write_input_bag(tmp_path / 'bag'), '--model', model,
         '--device', 'cpu', '--max-new-tokens', '4096', '--out', tmp_path / 'out'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = pathlib.Path(f'/proc/{running.pid}/maps')
    wait_until(lambda: running.poll() is not None or 'libtorch' in maps.read_text(), TIMEOUT,
               'vlm_eval to load torch')
    assert running.poll() is None, 'the untrained model answers 4096 tokens a request'
    return running


def test_ctrl_c_in_the_middle_of_a_run_is_one_line_and_writes_nothing(tmp_path,
                                                                      untrained_llava):
    """A run interrupted once torch is loaded (its model loading or answering): exit 130."""
    running = _eval_with_torch_loaded(tmp_path, untrained_llava)
    code, _, err = stop_process(running, signal.SIGINT, TIMEOUT)
    assert code == 130 and 'Traceback' not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == 'vlm_eval: interrupted'
    assert not (tmp_path / 'out').exists()


def test_a_run_that_is_aborted_says_where_each_thread_was(tmp_path, untrained_llava):
    """SIGABRT (a supervisor's, or a test's on a run that would not stop) prints the stacks.

    Without them a hung tool ends with nothing to go on but its exit code.
    """
    running = _eval_with_torch_loaded(tmp_path, untrained_llava)
    code, _, err = stop_process(running, signal.SIGABRT, TIMEOUT)
    assert code == -signal.SIGABRT, err[-3000:]
    assert 'Fatal Python error: Aborted' in err and 'most recent call first' in err, err[-3000:]
