"""Real robot recordings in, answers out: ROS 1 bags, compressed cameras, no instruction topic.

The recordings are written as robots make them (recordings.py): a ROS 1 bag of a Raspberry Pi
camera publishing CompressedImage 'jpg' frames on a relative topic, and nothing else. Both
tools get the instructions from the command line, by the same rules. A recording damaged
inside (a failing disk) is the user's file too: one line saying where, and exit 2.
"""

import json
import pathlib
import re
import shutil
import subprocess
import uuid

import pytest
from engine_fixtures import TARGETS, scene
from fork_server import run_tool
from node_harness import RELIABLE, TIMEOUT, node_executable
from rclpy.serialization import serialize_message
from recordings import ROS1_CAMERA, ROS1_INSTRUCTION, damage, write_ros1_bag
from ros_harness import Collector
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String
from test_evaluate import read_jsonl
from test_replay import image_fields, irregular_events, start_replay, write_bag
from vlm_ros.bag.storage import PLAN_TYPE, add_topic, bag_writer, open_bag, serialize, stamp_ns
from waiting import wait_exit, wait_until

from vlm_ros_msgs.msg import Plan

T0 = 1_767_225_600 * 10**9
INSTRUCTION = TARGETS['plan'][0]
SAMPLE = pathlib.Path(__file__).resolve().parents[3] / 'samples' / 'tabletop' / 'bag'


def _frames(count: int, period_ns: int = 200_000_000) -> list:
    return [(T0 + k * period_ns, scene('red'), f'pi-{k}') for k in range(count)]


def test_a_ros1_compressed_camera_replays_into_the_node_with_an_instruction(start_vlm_node,
                                                                             tmp_path):
    """No image_transport parameter, no instruction topic: the defaults and --instruction."""
    node = start_vlm_node()  # image_transport auto
    node.wait_state('active')
    written = write_ros1_bag(tmp_path / 'pi.bag', _frames(5))
    out = tmp_path / 'answers'
    proc = start_replay(tmp_path / 'pi.bag', '--remap', f'{ROS1_CAMERA}:=/image/compressed',
                        '--instruction', INSTRUCTION, '--every', 2, '--record', out,
                        '--wait-for-subscribers', TIMEOUT, '--linger', TIMEOUT)
    code, _, err = wait_exit(proc, 2 * TIMEOUT)
    assert code == 0, err
    assert 'instruction 2' in err  # frames 2 and 4 of 5
    with open_bag(out) as reader:
        plans = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                 if c.msgtype == 'vlm_ros_msgs/msg/Plan']
    assert len(plans) == 2
    for plan in plans:
        assert plan.status == Plan.STATUS_OK, plan.message
        assert plan.instruction == INSTRUCTION and plan.text == TARGETS['plan'][1]
        assert plan.form == Plan.FORM_CONSTRAINED
        assert (stamp_ns(plan), plan.header.frame_id) in written


def _vlm_eval(*args) -> subprocess.CompletedProcess:
    return run_tool([node_executable('vlm_eval'), *args], 10 * TIMEOUT)


@pytest.mark.parametrize('how, frames', [('every', [2, 5]), ('at', [2]), ('jsonl', [2, 4]),
                                         ('lines', [1, 3])])
def test_vlm_eval_asks_a_ros1_recording_what_the_command_line_gives(trained_tiny, tmp_path,
                                                                     how, frames):
    """Each instruction is asked about the last frame at or before its time (0.2 s apart)."""
    write_ros1_bag(tmp_path / 'pi.bag', _frames(6))
    if how == 'every':
        given = ['--instruction', INSTRUCTION, '--every', 3]
    elif how == 'at':
        given = ['--instruction', INSTRUCTION, '--at', 0.5]
    elif how == 'jsonl':
        (tmp_path / 'asked.jsonl').write_text(
            json.dumps({'time': 0.5, 'text': INSTRUCTION}) + '\n' +
            json.dumps({'stamp': (T0 + 900_000_000) / 1e9, 'text': INSTRUCTION}) + '\n')
        given = ['--instructions', tmp_path / 'asked.jsonl']
    else:  # spread over the recording's 1 s: at 1/3 and 2/3 of it
        (tmp_path / 'asked.txt').write_text(f'{INSTRUCTION}\n\n{INSTRUCTION}\n')
        given = ['--instructions', tmp_path / 'asked.txt']
    done = _vlm_eval(tmp_path / 'pi.bag', '--model', trained_tiny('llava'), '--out',
                     tmp_path / 'out', '--no-captions', *given)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(tmp_path / 'out' / 'results.jsonl')
    assert [r['image']['frame'] for r in records] == frames
    summary = json.loads((tmp_path / 'out' / 'summary.json').read_text())
    assert summary['plans'] == len(frames) and summary['by_status'] == {'OK': len(frames)}
    assert summary['image_topic'] == ROS1_CAMERA
    assert summary['plan_validity_rate'] == 1.0 and summary['plans_by_form'] == {
        'constrained': len(frames)}


@pytest.mark.parametrize(('storage', 'suffix'), [('mcap', '.mcap'), ('sqlite3', '.db3')])
def test_a_single_storage_file_without_its_directory_replays(rclpy_context, tmp_path, storage,
                                                             suffix):
    """Recordings get passed around as one .mcap or .db3 file, without metadata.yaml."""
    written = write_bag(tmp_path / 'bag', irregular_events(8), storage)
    files = list((tmp_path / 'bag').glob(f'*{suffix}'))
    assert len(files) == 1
    alone = tmp_path / f'alone{suffix}'
    files[0].rename(alone)
    with open_bag(alone) as reader:
        assert [bytes(raw) for _, _, raw in reader.messages()] == [w[2] for w in written]
    proc = start_replay(alone, '--wait-for-subscribers', 0, '--rate', 100)
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 0 and f'played {len(written)} messages' in err, err


def test_the_recorded_answers_of_the_robots_own_node_are_not_replayed_into_record(tmp_path):
    """The node's outputs in a recording stay out of what --record takes for its answers.

    A robot's recording holds its vlm_node's /plan: played, the old plans were recorded as
    the answers, and vlm_replay said every instruction was answered with no node running.
    """
    old = Plan(request_id=f'old-{uuid.uuid4().hex[:8]}', instruction=INSTRUCTION,
               status=Plan.STATUS_OK)
    robot = tmp_path / 'robot'
    with bag_writer(robot) as writer:
        image = add_topic(writer, '/image', 'sensor_msgs/msg/Image')
        said = add_topic(writer, '/instruction', 'std_msgs/msg/String')
        plans = add_topic(writer, '/plan', PLAN_TYPE)
        writer.write(said, T0, serialize('std_msgs/msg/String', data=INSTRUCTION))
        for k in range(3):
            writer.write(image, T0 + k * 10**8,
                         serialize('sensor_msgs/msg/Image', **image_fields(T0, scene('red'))))
            writer.write(plans, T0 + k * 10**8 + 1, serialize_message(old))
    out = tmp_path / 'answers'
    code, _, err = wait_exit(start_replay(robot, '--record', out, '--wait-for-subscribers', 0,
                                          '--linger', 2), TIMEOUT)
    assert code == 1 and '0 Plans for 1 instructions' in err, err
    assert 'not playing /plan: --record records the answers there' in err, err
    with open_bag(out) as reader:
        assert not [c for c, _, _ in reader.messages() if c.msgtype == PLAN_TYPE]
    # Named in --topics, it plays: the user asked for it.
    code, _, err = wait_exit(start_replay(robot, '--topics', '/plan', '/instruction', '--record',
                                          tmp_path / 'again', '--wait-for-subscribers', 0,
                                          '--linger', TIMEOUT), TIMEOUT + 30)
    assert code == 0 and 'not playing' not in err, err


def test_playback_waits_for_a_camera_and_instruction_subscriber_not_for_camera_info(
        test_node, tmp_path):
    """What vlm_node consumes is waited for; camera_info, which nobody subscribes to, is not.

    The instruction subscription is made only once the camera's has matched the replay: the
    instruction still arrives, so playback waited for it; and playback ends well within the
    600 s it would have waited for a camera_info subscriber.
    """
    told = f'pick up the block {uuid.uuid4().hex}'
    write_ros1_bag(tmp_path / 'pi.bag', _frames(3), [(T0 + 100_000_000, told)],
                   camera_info='raspicam_node/camera_info')
    proc = start_replay(tmp_path / 'pi.bag', '--wait-for-subscribers', 600)
    frames, texts = Collector(), Collector()
    camera = test_node.node.create_subscription(CompressedImage, ROS1_CAMERA, frames, RELIABLE)
    wait_until(lambda: camera.get_publisher_count() > 0, TIMEOUT, 'the camera publisher')
    test_node.node.create_subscription(String, ROS1_INSTRUCTION, texts, RELIABLE)
    code, _, err = wait_exit(proc, 2 * TIMEOUT)
    assert code == 0 and 'nothing subscribes' not in err, err
    # Acknowledged before the replay ended: in this process, maybe not yet collected.
    texts.wait_for(lambda m: m.data == told, TIMEOUT, 'the instruction')
    frames.wait_for(lambda m: m.header.frame_id == 'pi-2', TIMEOUT, 'the last frame')
    assert [m.data for m in texts.items()] == [told]
    assert [m.header.frame_id for m in frames.items()] == ['pi-0', 'pi-1', 'pi-2']


@pytest.fixture
def damaged_sample(tmp_path):
    """Return a copy of the tabletop sample, 2000 bytes of a zstd chunk of it overwritten."""
    copy = tmp_path / 'damaged'
    shutil.copytree(SAMPLE, copy)
    damage(copy)
    return copy


@pytest.mark.parametrize(('tool', 'options'), [
    ('vlm_eval', ['--model', 'm']), ('vlm_export', ['--model', 'm', '--actions', '/instruction'])])
def test_a_recording_damaged_inside_is_one_line_saying_where_and_exit_2(damaged_sample, tmp_path,
                                                                        tool, options):
    done = run_tool([node_executable(tool), damaged_sample, *options, '--out', tmp_path / 'out'],
                    2 * TIMEOUT)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f'{tool}: error: {damaged_sample}: the recording is damaged '
                                  'at '), done.stderr
    assert re.search(r' s of its 3\.900 s: Unable to decompress Zstandard data', done.stderr)
    assert not (tmp_path / 'out').exists()


def test_a_replay_of_a_damaged_recording_plays_up_to_the_damage_then_exits_2(damaged_sample):
    proc = start_replay(damaged_sample, '--wait-for-subscribers', 0, '--rate', 10)
    code, _, err = wait_exit(proc, TIMEOUT)
    assert code == 2 and 'Traceback' not in err, err
    said = err.strip().splitlines()[-1]
    assert said.startswith(f'vlm_replay: {damaged_sample}: the recording is damaged at '), err
    assert re.search(r': Unable to decompress Zstandard data: .*; played [1-9]\d* messages '
                     r'\(/camera/image_raw \d+, .*\) before it$', said), said

