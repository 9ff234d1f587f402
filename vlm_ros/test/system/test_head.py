"""The reference action head learns what the features carry: offline, and from a recording.

The datasets of head_datasets.py carry the command in their features; the recording's frames
are red or blue scenes, each followed by the command of its colour, and its features are the
trained tiny LLaVA's, through the installed vlm_export. Over DDS, vlm_action_head then turns the
features vlm_node publishes for a streamed scene into that scene's command.
"""

import pathlib
import uuid

import numpy as np
import pytest
import torch
import vlm_ros.bag.storage as bags
from engine_fixtures import TARGETS, scene
from eval_bags import image_fields
from fork_server import run_tool
from geometry_msgs.msg import Twist
from head_datasets import TWIST, clusters, write_dataset
from head_harness import action_head
from node_harness import TIMEOUT, node_executable, set_ok
from vlm_ros.head import training
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

INSTRUCTION = TARGETS['plan'][0]
T0 = 1_767_225_600 * 10**9
FRAMES = 12
COLOURS = ('red', 'blue')
SPEEDS = {'red': 0.5, 'blue': -0.5}  # what the robot was commanded after seeing each scene


def test_a_twist_head_learns_the_command_each_cluster_of_features_had(tmp_path):
    features, which = clusters()
    speeds = np.where(which == 0, 0.5, -0.5)
    actions = np.stack([speeds, 0 * speeds, 0 * speeds, 0 * speeds, 0 * speeds,
                        0.1 + 0 * speeds], axis=1)
    folder = write_dataset(tmp_path / 'set', features, actions, 'geometry_msgs/msg/Twist', TWIST)
    head, report = training.train(folder, hidden=32, chunk=2, seconds=30, epochs=200)
    assert report['validation_pairs'] == 8 and report['epochs'] == 200
    # The held-out pairs include the instruction's last one, whose chunk repeats its action
    # where the features say the next one differs: 1/48 of the targets, 0.042 of loss.
    assert report['validation_loss'] < 0.3 * report['baseline_loss'], report
    loaded = training.load(training.save(head, tmp_path / 'head.pt'))
    for row in (0, 1):
        chunk = loaded.act(features[row])
        assert len(chunk) == 2 and chunk == head.act(features[row])
        assert chunk[0][0] == pytest.approx(speeds[row], abs=0.1)
        assert chunk[1][0] == pytest.approx(-speeds[row], abs=0.1)  # the next pair's
        assert chunk[0][5] == pytest.approx(0.1, abs=1e-3)  # a constant column stays
    assert loaded.columns == list(TWIST) and loaded.source['pooling'] == 'mean'


def test_a_step_head_chooses_the_skill_each_cluster_of_features_had(tmp_path):
    features, which = clusters()
    folder = write_dataset(tmp_path / 'set', features, which[:, None],
                           'vlm_ros_msgs/msg/StepCommand', ['skill'], ['pick', 'place'])
    head, report = training.train(folder, hidden=32, seconds=30, epochs=300)
    assert report['kind'] == 'skills' and report['validation_loss'] < report['baseline_loss']
    assert [head.act(features[row])[0] for row in range(4)] == ['pick', 'place', 'pick', 'place']


def test_the_command_line_sets_width_chunk_epochs_time_and_seed(tmp_path, fork_server):
    """vlm_train_head's options, each observed in the head it writes or the report it prints."""
    features, which = clusters()
    folder = write_dataset(tmp_path / 'set', features, np.where(which == 0, 0.5, -0.5)[:, None],
                           'geometry_msgs/msg/Twist', ['linear.x'])

    def trained(name: str, *options) -> tuple:
        done = run_tool([node_executable('vlm_train_head'), folder, '--out', tmp_path / name,
                         *options], 600)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        report = dict(zip(lines[0].strip('| ').split(' | '), lines[2].strip('| ').split(' | '),
                          strict=True))
        return training.load(tmp_path / name), report
    head, report = trained('a.pt', '--hidden', '12', '--chunk', '3', '--epochs', '7',
                           '--seed', '1')
    assert (head.net.hidden, head.net.chunk, report['epochs']) == (12, 3, '7')
    assert len(head.act(features[0])) == 3
    weights = {name: value.clone() for name, value in head.net.state_dict().items()}
    again, _ = trained('b.pt', '--hidden', '12', '--chunk', '3', '--epochs', '7', '--seed', '1')
    other, _ = trained('c.pt', '--hidden', '12', '--chunk', '3', '--epochs', '7', '--seed', '2')
    assert all(torch.equal(weights[name], value)
               for name, value in again.net.state_dict().items())
    assert not all(torch.equal(weights[name], value)
                   for name, value in other.net.state_dict().items())
    # --seconds ends the training long before a million passes could run.
    _, bounded = trained('d.pt', '--hidden', '12', '--seconds', '0.2', '--epochs', '1000000')
    assert 0 < int(bounded['epochs']) < 1_000_000


@pytest.mark.parametrize('dataset, options, complaint', [
    ('set', ['--out', '{tmp}/set'], '--out {tmp}/set names a folder; name the head file (as '
     '{tmp}/set/head.pt)'),
    ('set', ['--out', '{tmp}/missing/head.pt'], '--out {tmp}/missing/head.pt: {tmp}/missing is '
     'not a folder'),
    ('set', ['--hidden', '100000000'], 'argument --hidden: must be <= 8192, got 100000000'),
    ('set', ['--chunk', '1025'], 'argument --chunk: must be <= 1024, got 1025'),
    ('empty', [], '{tmp}/empty is not a dataset of vlm_export: its dataset.npz cannot be read '
     '(EOFError: No data left in file)'),
    ('cut', [], '{tmp}/cut is not a dataset of vlm_export: its dataset.npz cannot be read '
     '(BadZipFile: '),
], ids=['out-a-folder', 'out-in-no-folder', 'too-wide', 'too-long-a-chunk', 'empty-npz',
        'truncated-npz'])
def test_what_can_give_no_head_is_refused_in_a_line_before_training(tmp_path, fork_server,
                                                                    dataset, options, complaint):
    """A run told to train for an hour ends at once: exit 2, the reason, nothing written.

    'empty' and 'cut' are the dataset with its dataset.npz cut to 0 and 300 bytes, as a copy
    cut short leaves it.
    """
    features, which = clusters()
    write_dataset(tmp_path / 'set', features, which[:, None].astype(np.float32),
                  'geometry_msgs/msg/Twist', ['linear.x'])
    for name, size in (('empty', 0), ('cut', 300)):
        (tmp_path / name).mkdir()
        for file in ('manifest.json', 'dataset.npz'):
            data = (tmp_path / 'set' / file).read_bytes()
            (tmp_path / name / file).write_bytes(data[:size] if file == 'dataset.npz' else data)
    before = sorted(tmp_path.rglob('*'))
    done = run_tool([node_executable('vlm_train_head'), tmp_path / dataset, '--out',
                     tmp_path / 'head.pt', '--seconds', '3600', '--epochs', '1000000',
                     *(option.format(tmp=tmp_path) for option in options)], TIMEOUT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f'vlm_train_head: error: {complaint.format(tmp=tmp_path)}')
    assert done.stderr.count('\n') == 1 and done.stdout == ''
    assert sorted(tmp_path.rglob('*')) == before  # no head, no .partial beside it


def write_colour_bag(path) -> pathlib.Path:
    """Red and blue scenes in turn, 0.5 s apart, each followed 0.1 s later by its command."""
    with bags.bag_writer(path) as writer:
        images = bags.add_topic(writer, '/camera/image_raw', 'sensor_msgs/msg/Image')
        text = bags.add_topic(writer, '/instruction', bags.STRING_TYPE)
        cmd = bags.add_topic(writer, '/cmd_vel', 'geometry_msgs/msg/Twist')
        writer.write(text, T0, bags.serialize(bags.STRING_TYPE, data=INSTRUCTION))
        for index in range(FRAMES):
            when, colour = T0 + (index + 1) * 500_000_000, COLOURS[index % 2]
            writer.write(images, when, bags.serialize('sensor_msgs/msg/Image',
                                                      **image_fields(scene(colour), when)))
            writer.write(cmd, when + 100_000_000, bags.serialize(
                'geometry_msgs/msg/Twist', linear={'x': SPEEDS[colour], 'y': 0.0, 'z': 0.0},
                angular={'x': 0.0, 'y': 0.0, 'z': 0.0}))
    return path


def scene_stream(colour: str):
    """Make camera messages of one colour's scene, stamped now."""
    def make(stamp):
        msg = rgb_to_image(scene(colour))
        msg.header.stamp, msg.header.frame_id = stamp, f'{colour}-{uuid.uuid4().hex}'
        return msg
    return make


def test_a_head_trained_on_a_recording_drives_from_the_nodes_features(start_vlm_node, test_node,
                                                                       tmp_path, trained_tiny):
    """The user's path: vlm_export, vlm_train_head, then vlm_action_head beside vlm_node.

    The set is exported from the node's model by another name (a link to its folder): the
    head acts on the node's features and says, once, that they name another model.
    """
    alias = tmp_path / 'exported_model'
    alias.symlink_to(trained_tiny('llava'))
    exported = run_tool([node_executable('vlm_export'), write_colour_bag(tmp_path / 'bag'),
                         '--model', alias, '--actions', '/cmd_vel',
                         '--pooling', 'mean', '--device', 'cpu', '--dtype', 'float32',
                         '--out', tmp_path / 'dataset'], 600)
    assert exported.returncode == 0 and f'{FRAMES} pairs' in exported.stdout, exported.stderr
    trained = run_tool([node_executable('vlm_train_head'), tmp_path / 'dataset', '--out',
                        tmp_path / 'head.pt', '--hidden', '64', '--epochs', '300'], 600)
    assert trained.returncode == 0, trained.stderr
    header, values = trained.stdout.splitlines()[0], trained.stdout.splitlines()[2]
    report = dict(zip(header.strip('| ').split(' | '), values.strip('| ').split(' | '),
                      strict=True))
    assert float(report['validation_loss']) < 0.5 * float(report['baseline_loss']), report

    node = start_vlm_node(features_rate=5.0, features_pooling='mean')
    node.wait_state('active')
    with action_head(test_node, tmp_path / 'head.pt', Twist) as actions:
        node.stream(scene_stream('red')).wait_for(lambda m: True, TIMEOUT, 'a frame')
        node.instruct(INSTRUCTION)  # features_rate takes the last instruction's features
        for colour in ('red', 'blue', 'red'):
            node.stream(scene_stream(colour)).wait_for(lambda m: True, TIMEOUT, 'a frame')
            actions.from_now()(lambda m, c=colour: abs(m.linear.x - SPEEDS[c]) < 0.2, TIMEOUT,
                               f'the {colour} command')
        told = f"acting on features of model {trained_tiny('llava')}; the head was trained on " \
            f'features of {alias}: if these are not the same weights'
        assert actions.log().count(told) == 1, actions.log()
        # Images processed otherwise give other features: no action, and the head says why,
        # until the node processes them as the training set's were again.
        set_ok(test_node, max_image_side=32)
        wait_until(lambda: 'no action: features of images at max_image_side 32, processor_kwargs '
                   '{}; the head was trained on max_image_side 640, processor_kwargs {}' in
                   actions.log(), TIMEOUT, "the head's reason")
        set_ok(test_node, max_image_side=640)
        node.stream(scene_stream('blue'))
        actions.from_now()(lambda m: abs(m.linear.x - SPEEDS['blue']) < 0.2, TIMEOUT,
                           'the blue command again')
    refused = run_tool([node_executable('vlm_action_head'), '--ros-args', '-p',
                        f'head:={tmp_path / "dataset" / "manifest.json"}'], TIMEOUT)
    assert refused.returncode == 2 and 'is not a head of vlm_train_head' in refused.stderr
