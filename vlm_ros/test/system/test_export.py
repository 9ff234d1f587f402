"""vlm_export: a recording into (features, action) pairs for an action head (issue 28 item 3).

The recording is the vlm_eval tests' (three frames, instructions before, between and at them)
with a velocity command after two of the frames; the third command comes too late for its
frame. The installed tool, the trained tiny LLaVA: each pair's features equal the engine's for
that frame and instruction, each action is the first logged within the window after its frame.
"""

import json
import math
import pathlib
import uuid

import numpy as np
import pytest
import vlm_ros.bag.storage as bags
from ament_index_python.packages import get_package_prefix
from engine_fixtures import scene
from eval_bags import (
    COLOURS,
    FRAME_TIMES,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    INSTRUCTIONS,
    STAMPS,
    image_fields,
)
from fork_server import run_tool
from node_harness import node_executable
from reference_features import engine_features
from test_evaluate import LEFT_FRAMES, LEFT_TOPIC, OPERATOR_TOPIC
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.local.loader import STARTING_THREADS

# (delay after its frame, linear.x) per frame: the middle one is 0.7 s late for a 0.5 s window.
COMMANDS = [(100_000_000, 0.25), (700_000_000, 0.5), (200_000_000, -0.75)]


def vlm_export(*args):
    exe = pathlib.Path(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_export')
    return run_tool([exe, *args], 600)


def write_bag(path, decoys: bool = False, commands=COMMANDS, extra=()):
    """Write the frames, instructions and commands; decoys: a second camera and instructions.

    The second camera (LEFT_TOPIC) has noise frames stamped 1 us after the first's, the second
    instruction topic one instruction: only --image-topic and --instruction-topic then choose.
    extra: more commands, (log time, linear.x) each.
    """
    with bags.bag_writer(path) as writer:
        images = bags.add_topic(writer, IMAGE_TOPIC, 'sensor_msgs/msg/Image')
        text = bags.add_topic(writer, INSTRUCTION_TOPIC, bags.STRING_TYPE)
        cmd = bags.add_topic(writer, '/cmd_vel', 'geometry_msgs/msg/Twist')
        messages = [(when, images, bags.serialize('sensor_msgs/msg/Image',
                                                  **image_fields(scene(colour), stamp)))
                    for when, stamp, colour in zip(FRAME_TIMES, STAMPS, COLOURS, strict=True)]
        if decoys:
            left = bags.add_topic(writer, LEFT_TOPIC, 'sensor_msgs/msg/Image')
            messages += [(when, left, bags.serialize('sensor_msgs/msg/Image', **image_fields(
                frame, stamp + 1000))) for when, stamp, frame in zip(FRAME_TIMES, STAMPS,
                                                                     LEFT_FRAMES, strict=True)]
            other = bags.add_topic(writer, OPERATOR_TOPIC, bags.STRING_TYPE)
            messages.append((FRAME_TIMES[0], other, bags.serialize(bags.STRING_TYPE,
                                                                   data='not this one')))
        messages += [(when, text, bags.serialize(bags.STRING_TYPE, data=instruction))
                     for when, instruction in INSTRUCTIONS]
        sent = [(when + delay, speed) for when, (delay, speed) in
                zip(FRAME_TIMES, commands, strict=True)] + list(extra)
        messages += [(when, cmd, bags.serialize(
            'geometry_msgs/msg/Twist', linear={'x': speed, 'y': 0.0, 'z': 0.0},
            angular={'x': 0.0, 'y': 0.0, 'z': 0.125})) for when, speed in sent]
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)
    return path


def test_frames_become_pairs_of_features_and_the_action_that_followed(tmp_path,
                                                                      trained_tiny):
    model = str(trained_tiny('llava'))
    out = tmp_path / 'dataset'
    theirs = tmp_path / 'dataset.partial'  # a user's folder of that name is none of its own
    theirs.mkdir()
    (theirs / 'notes.txt').write_text('keep me')
    done = vlm_export(write_bag(tmp_path / 'bag', decoys=True), '--model', model, '--actions',
                      '/cmd_vel', '--pooling', 'mean', '--layer', '2', '--device', 'cpu',
                      '--dtype', 'float32', '--image-topic', IMAGE_TOPIC, '--instruction-topic',
                      INSTRUCTION_TOPIC, '--batch-size', 1, '--cpu-threads',
                      STARTING_THREADS + 1, '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (theirs / 'notes.txt').read_text() == 'keep me'
    assert out.stat().st_mode == theirs.stat().st_mode  # made as mkdir makes a folder
    assert sorted(path.name for path in tmp_path.iterdir()) == ['bag', 'dataset',
                                                                 'dataset.partial']
    assert 'wrote' in done.stdout and '2 pairs' in done.stdout
    # Two pairs in batches of one, on more threads than torch starts with: as asked.
    assert done.stdout.endswith(f'the model (float32 on cpu) ran in 2 batches on '
                                f'{STARTING_THREADS + 1} CPU threads\n'), done.stdout
    data = np.load(out / 'dataset.npz')
    manifest = json.loads((out / 'manifest.json').read_text())
    assert manifest['pairs'] == 2 and manifest['frames_without'] == {'instruction': 0,
                                                                     'action': 1}
    assert (manifest['image_topic'], manifest['instruction_topic']) == (IMAGE_TOPIC,
                                                                       INSTRUCTION_TOPIC)
    assert manifest['actions']['columns'] == ['linear.x', 'linear.y', 'linear.z', 'angular.x',
                                              'angular.y', 'angular.z']
    assert list(data['frame_stamp_ns']) == [STAMPS[0], STAMPS[2]]
    assert data['actions'][:, 0].tolist() == [0.25, -0.75] and \
        data['actions'][:, 5].tolist() == [0.125, 0.125]
    assert (data['action_log_ns'] - data['frame_log_ns']).tolist() == [100_000_000, 200_000_000]
    told = [manifest['instructions'][i] for i in data['instruction']]
    assert told == [INSTRUCTIONS[0][1], INSTRUCTIONS[3][1]]  # the one at 3.0 s counts at 3.0
    asked = [(scene(colour), text) for colour, text in zip((COLOURS[0], COLOURS[2]), told,
                                                            strict=True)]
    np.testing.assert_allclose(data['features'], engine_features(model, asked, FeatureSpec(
        2, 'mean')), atol=1e-4)


def test_an_instruction_from_the_command_line_is_paired_with_the_chosen_cameras_frames(
        tmp_path, trained_tiny):
    """--instruction at --every 2nd frame of --image-topic, seen at --max-image-side 8."""
    model = str(trained_tiny('llava'))
    told = f'sweep the noise #{uuid.uuid4().hex[:8]}'
    out = tmp_path / 'dataset'
    done = vlm_export(write_bag(tmp_path / 'bag', decoys=True), '--model', model, '--actions',
                      '/cmd_vel', '--image-topic', LEFT_TOPIC, '--instruction', told, '--every',
                      2, '--max-image-side', 8, '--device', 'cpu', '--dtype', 'float32',
                      '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    data = np.load(out / 'dataset.npz')
    manifest = json.loads((out / 'manifest.json').read_text())
    assert (manifest['image_topic'], manifest['instructions']) == (LEFT_TOPIC, [told])
    assert (manifest['max_image_side'], manifest['processor_kwargs']) == (8, {})
    assert f'(float32 on cpu) ran in 1 batch on {STARTING_THREADS} CPU thread' in \
        done.stdout  # the defaults: --device and --dtype auto on a CPU, --cpu-threads 0
    # --every 2 asks at the second frame: the first had no instruction in force, and the
    # second's action came too late.
    assert manifest['frames_without'] == {'instruction': 1, 'action': 1}
    assert list(data['frame_stamp_ns']) == [STAMPS[2] + 1000]
    assert data['instruction'].tolist() == [0]
    asked, last = [(LEFT_FRAMES[2], told)], FeatureSpec(-1, 'last')
    np.testing.assert_allclose(data['features'], engine_features(model, asked, last,
                                                                 max_image_side=8), atol=1e-4)
    # The frames as they are: other features.
    assert not np.allclose(data['features'], engine_features(model, asked, last), atol=1e-3)


@pytest.mark.parametrize('args, complaint', [
    (['--actions', '/nope'], '--actions /nope is not in'),
    (['--actions', INSTRUCTION_TOPIC], f'--actions {INSTRUCTION_TOPIC} is a std_msgs/msg/String'),
    (['--actions', '/cmd_vel', '--window', '0.01'], 'no frame of /camera/image_raw has both'),
    (['--actions', '/cmd_vel', '--device', 'cuda:99'], "device 'cuda:99' asked for, but "),
], ids=['missing', 'not-actions', 'empty', 'no-such-device'])
def test_no_pairs_or_no_such_device_names_what_is_missing_and_writes_nothing(args, complaint,
                                                                             tmp_path):
    out = tmp_path / 'dataset'
    done = vlm_export(write_bag(tmp_path / 'bag'), '--model', tmp_path / 'never-loaded',
                      '--out', out, *args)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ['bag']


def test_commands_not_finite_are_left_out_and_counted(tmp_path, trained_tiny):
    """A NaN command before frame 0's and an inf one before frame 2's: as if not recorded.

    Each frame is paired with the good command after them; the set is one vlm_train_head
    takes, and the line and the manifest say how many commands were left out.
    """
    model = str(trained_tiny('llava'))
    bag = write_bag(tmp_path / 'bag', extra=[(FRAME_TIMES[0] + 50_000_000, math.nan),
                                             (FRAME_TIMES[2] + 100_000_000, -math.inf)])
    done = vlm_export(bag, '--model', model, '--actions', '/cmd_vel', '--out',
                      tmp_path / 'dataset')
    assert done.returncode == 0, done.stderr[-3000:]
    assert '(2 pairs, features 2x' in done.stdout and '; 2 messages of /cmd_vel left out: a ' \
        'value not finite (NaN or inf)) and manifest.json; the model' in done.stdout
    manifest = json.loads((tmp_path / 'dataset' / 'manifest.json').read_text())
    assert manifest['actions']['not_finite'] == 2
    assert manifest['frames_without'] == {'instruction': 0, 'action': 1}
    data = np.load(tmp_path / 'dataset' / 'dataset.npz')
    assert data['actions'][:, 0].tolist() == [0.25, -0.75]
    trained = run_tool([node_executable('vlm_train_head'), tmp_path / 'dataset', '--out',
                        tmp_path / 'head.pt', '--epochs', '1'], 600)
    assert trained.returncode == 0, trained.stderr


def test_no_pairs_for_commands_not_finite_says_so(tmp_path):
    bag = write_bag(tmp_path / 'bag', commands=[(delay, math.nan) for delay, _ in COMMANDS])
    done = vlm_export(bag, '--model', tmp_path / 'never-loaded', '--actions', '/cmd_vel',
                      '--out', tmp_path / 'dataset')
    assert done.returncode == 2 and done.stderr.endswith(
        '(0 without an instruction, 3 without an action, 3 messages of /cmd_vel left out: a '
        'value not finite (NaN or inf)); nothing written\n'), done.stderr


@pytest.mark.parametrize('where, complaint', [
    ('a_file', 'is a file; name a folder'),
    ('missing/dataset', 'is not a folder'),
])
def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(where, complaint,
                                                                             tmp_path):
    (tmp_path / 'a_file').write_text('mine')
    done = vlm_export(write_bag(tmp_path / 'bag'), '--model', tmp_path / 'never-loaded',
                      '--actions', '/cmd_vel', '--out', tmp_path / where)
    assert done.returncode == 2 and complaint in done.stderr, done.stderr
    assert 'Traceback' not in done.stderr and (tmp_path / 'a_file').read_text() == 'mine'


def test_an_output_folder_of_other_files_is_never_replaced(tmp_path):
    out = tmp_path / 'mine'
    out.mkdir()
    (out / 'notes.txt').write_text('keep me')
    done = vlm_export(write_bag(tmp_path / 'bag'), '--model', tmp_path / 'never-loaded',
                      '--actions', '/cmd_vel', '--out', out)
    assert done.returncode == 2 and 'is not a dataset of vlm_export' in done.stderr
    assert (out / 'notes.txt').read_text() == 'keep me'


def test_instructions_from_a_file_or_at_a_time_seen_with_the_processors_options(
        tmp_path, trained_tiny):
    """--instructions (time after the start, or bag stamp), --at, --processor-kwargs, --dtype.

    The recording's own instructions are left aside for the ones given; each frame is paired
    under the instruction in force when it was logged, and its features are the engine's
    under the same processor options and weights' precision, not under the defaults; the
    manifest says which precision and device the model ran in.
    """
    model = str(trained_tiny('llava'))
    bag = write_bag(tmp_path / 'bag')
    first, second = (f'{verb} the noise #{uuid.uuid4().hex[:8]}' for verb in ('sort', 'sweep'))
    start_ns = INSTRUCTIONS[0][0]  # the recording's first message
    asked = tmp_path / 'asked.jsonl'
    asked.write_text(json.dumps({'time': 0.25, 'text': first}) + '\n' +  # before frame 0
                     json.dumps({'stamp': (start_ns + 2 * 10**9) / 1e9, 'text': second}))
    kwargs = {'do_normalize': False}
    done = vlm_export(bag, '--model', model, '--actions', '/cmd_vel', '--instructions', asked,
                      '--processor-kwargs', json.dumps(kwargs), '--out', tmp_path / 'file')
    assert done.returncode == 0, done.stderr[-3000:]
    data = np.load(tmp_path / 'file' / 'dataset.npz')
    manifest = json.loads((tmp_path / 'file' / 'manifest.json').read_text())
    assert (manifest['instructions'], manifest['processor_kwargs']) == ([first, second], kwargs)
    assert manifest['frames_without'] == {'instruction': 0, 'action': 1}  # frame 1's is late
    assert list(data['frame_stamp_ns']) == [STAMPS[0], STAMPS[2]]
    assert data['instruction'].tolist() == [0, 1]
    assert (manifest['device'], manifest['dtype']) == ('cpu', 'float32')  # auto, on a CPU
    last = FeatureSpec(-1, 'last')
    asked = [(scene(COLOURS[0]), first), (scene(COLOURS[2]), second)]
    np.testing.assert_allclose(data['features'], engine_features(
        model, asked, last, processor_kwargs=kwargs), atol=1e-4)
    assert not np.allclose(data['features'], engine_features(model, asked, last), atol=1e-3)
    # --at 1.6 s: in force from between frames 1 and 2, so frame 2 alone is paired; in bfloat16
    # weights, whose features are the engine's in bfloat16.
    done = vlm_export(bag, '--model', model, '--actions', '/cmd_vel', '--instruction', first,
                      '--at', 1.6, '--dtype', 'bfloat16', '--out', tmp_path / 'at')
    assert done.returncode == 0, done.stderr[-3000:]
    at = json.loads((tmp_path / 'at' / 'manifest.json').read_text())
    assert at['frames_without'] == {'instruction': 2, 'action': 0}
    assert (at['device'], at['dtype']) == ('cpu', 'bfloat16') and '(bfloat16 on cpu)' in \
        done.stdout
    data = np.load(tmp_path / 'at' / 'dataset.npz')
    assert list(data['frame_stamp_ns']) == [STAMPS[2]]
    asked = [(scene(COLOURS[2]), first)]
    np.testing.assert_allclose(data['features'], engine_features(model, asked, last,
                                                                 dtype='bfloat16'), atol=1e-4)
    assert not np.allclose(data['features'], engine_features(model, asked, last), atol=1e-3)
