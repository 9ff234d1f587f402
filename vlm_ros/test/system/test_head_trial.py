"""A learned head closes the loop in the reacting tabletop, and beats a random one.

The user's path of docs/VLA.md, each step its own process: the scripted head's recording of
the tabletop (demo/world_recording.py), the installed vlm_export and vlm_train_head with the
trained tiny LLaVA's features, then the trial (demo/head_trial.py), whose episodes the learned
head only sees as frames and an instruction. Then the same head over DDS: the tabletop as a
node (demo/world_node.py), vlm_node's features_rate and vlm_action_head between them; it
spends the very commands it spent in process, episode by episode.
"""

import json
import subprocess
import sys

import numpy as np
from fork_server import run_tool
from head_datasets import TWIST, clusters, write_dataset
from head_harness import action_head
from node_harness import RELIABLE, node_executable
from sensor_msgs.msg import Image
from std_msgs.msg import String
from vlm_ros.demo import head_trial
from vlm_ros.demo.world import episodes
from vlm_ros.head import training

from vlm_ros_msgs.msg import StepCommand

OVER_DDS = 6  # the trial's first episodes, played again over DDS
SEED = 3  # the trial's and the tabletop node's episodes; their default is 1


def python_module(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_a_head_trained_on_the_scripted_heads_recording_fulfils_more_than_a_random_one(
        tmp_path, trained_tiny, start_vlm_node, test_node, capfd):
    recorded = python_module('vlm_ros.demo.world_recording', tmp_path / 'rec', '--episodes',
                             '18', '--seed', '0')
    assert recorded.returncode == 0 and '18 episodes' in recorded.stdout, recorded.stderr
    exported = run_tool([node_executable('vlm_export'), tmp_path / 'rec', '--model',
                         trained_tiny('llava'), '--actions', '/step', '--pooling', 'mean',
                         '--device', 'cpu', '--dtype', 'float32', '--out', tmp_path / 'set'],
                        600)
    assert exported.returncode == 0, exported.stderr[-3000:]
    # Every frame is paired with the command that followed it, within the recording's decision.
    frames = int(recorded.stdout.split(' decisions, ')[1].split(' frames')[0])
    with np.load(tmp_path / 'set' / 'dataset.npz') as pairs:
        gaps = pairs['action_log_ns'] - pairs['frame_log_ns']
    assert len(gaps) == frames and 0 < gaps.min() and gaps.max() < 0.5e9, (frames, gaps)
    trained = run_tool([node_executable('vlm_train_head'), tmp_path / 'set', '--out',
                        tmp_path / 'head.pt', '--hidden', '128', '--epochs', '400',
                        '--seconds', '600'], 900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    # The trial's and the tabletop node's own episodes (--seed) and command limit: the
    # scripted head needs two commands an episode.
    trial_args = ['--seed', SEED, '--max-decisions', '5']
    model = tmp_path / 'vlm'  # --model: the head file's, by another path
    model.symlink_to(trained_tiny('llava'))
    tried = python_module('vlm_ros.demo.head_trial', tmp_path / 'head.pt', '--episodes', '18',
                          *trial_args, '--model', model, '--device', 'cpu', '--dtype',
                          'float32', '--json', tmp_path / 'trials.json')
    assert tried.returncode == 0, tried.stderr[-3000:]
    print(tried.stdout)
    assert tried.stdout.startswith(f'features of {model} on cpu (float32), layer -1, mean '
                                   'pooling\n'), tried.stdout
    trials = {t['head']: t for t in json.loads((tmp_path / 'trials.json').read_text())}
    assert trials['scripted']['rate'] == 1.0, trials
    assert trials['learned']['successes'] > trials['random']['successes'], trials
    assert '| learned | 18 |' in tried.stdout and '(at most 5) |' in tried.stdout
    assert max(trials['learned']['decisions']) <= 5 and max(trials['random']['decisions']) == 5
    assert trials['learned']['starts'] == starts_of(18, SEED) != starts_of(18, 1), trials

    node = start_vlm_node(features_rate=5.0, features_pooling='mean', max_new_tokens=16)
    node.wait_state('active')
    with action_head(test_node, tmp_path / 'head.pt', StepCommand):
        played = python_module('vlm_ros.demo.world_node', '--episodes', OVER_DDS, *trial_args,
                               '--json', tmp_path / 'dds.json', timeout=OVER_DDS * 60)
    assert played.returncode == 0, played.stderr[-3000:]
    over_dds = json.loads((tmp_path / 'dds.json').read_text())
    assert over_dds['starts'] == trials['learned']['starts'][:OVER_DDS], over_dds
    assert over_dds['decisions'] == trials['learned']['decisions'][:OVER_DDS], over_dds
    assert '| learned, over DDS | 6 |' in played.stdout and '(at most 5) |' in played.stdout

    # The features in bfloat16 weights, on the device asked for, or none on one this machine
    # lacks: the trial in this process.
    capfd.readouterr()  # what was printed before
    assert head_trial.main([str(tmp_path / 'head.pt'), '--episodes', '1', '--dtype',
                            'bfloat16']) == 0
    assert capfd.readouterr().out.startswith(f"features of {trained_tiny('llava')} on cpu "
                                              '(bfloat16), ')
    assert head_trial.main([str(tmp_path / 'head.pt'), '--device', 'cuda:99']) == 2
    assert "device 'cuda:99' asked for, but " in capfd.readouterr().err


def starts_of(count: int, seed: int) -> list:
    """Return the blocks' starting places of the tabletop's episodes(count, seed), as JSON."""
    return [dict(start.places) for _, start in episodes(count, seed)]


def test_an_episode_no_command_ends_fails_after_the_episode_timeout(test_node, tmp_path):
    """A head that sees every frame and instruction but never commands: each episode fails."""
    frames = test_node.collect(Image, 'image')
    told = test_node.collect(String, 'instruction', RELIABLE)
    silent = test_node.node.create_publisher(StepCommand, 'action', 10)
    try:
        played = python_module('vlm_ros.demo.world_node', '--episodes', 2, '--episode-timeout',
                               0.5, '--json', tmp_path / 'silent.json', timeout=60)
    finally:
        test_node.node.destroy_publisher(silent)
    assert played.returncode == 0, played.stderr[-3000:]
    trial = json.loads((tmp_path / 'silent.json').read_text())
    assert (trial['fulfilled'], trial['decisions']) == ([False, False], [0, 0]), trial
    assert [m.data for m in told.items()] == [task.text for task, _ in episodes(2, 1)]
    assert frames.items(), 'the states were shown'


def test_a_head_of_other_commands_is_refused_before_the_model_loads(tmp_path):
    features, which = clusters()
    actions = np.stack([which.astype(np.float32)] * len(TWIST), axis=1)
    head, _ = training.train(write_dataset(tmp_path / 'set', features, actions,
                                           'geometry_msgs/msg/Twist', TWIST), hidden=8,
                             epochs=2)
    training.save(head, tmp_path / 'twist.pt')
    twist = python_module('vlm_ros.demo.head_trial', tmp_path / 'twist.pt', timeout=120)
    assert twist.returncode == 2 and 'commands geometry_msgs/msg/Twist' in twist.stderr
    assert 'Loading weights' not in twist.stderr  # refused before any model was loaded
