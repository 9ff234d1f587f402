"""The tabletop sample: deterministic frames, bags that read back, and the committed sample."""

import itertools
import json
import pathlib

import numpy as np
import pytest
import yaml
from vlm_ros.bag.storage import deserialize, open_bag, stamp_ns
from vlm_ros.demo.sample import (
    CAMERA_TOPICS,
    START_NS,
    TOPICS,
    references,
    write_recording,
    write_references,
)
from vlm_ros.demo.tabletop import INSTRUCTIONS, draw_tabletop
from vlm_ros.demo.tabletop_views import WRIST_FRAME_ID, draw_depth, draw_wrist
from vlm_ros.engine.plan_parser import parse_plan
from vlm_ros.node.image_conversion import compressed_to_rgb, image_to_rgb

SAMPLE = pathlib.Path(__file__).resolve().parents[3] / 'samples' / 'tabletop'
CAMERAS_SAMPLE = SAMPLE.with_name('tabletop_cameras')
TYPES = {TOPICS['image']: 'sensor_msgs/msg/Image',
         TOPICS['compressed']: 'sensor_msgs/msg/CompressedImage',
         TOPICS['instruction']: 'std_msgs/msg/String'}


def read_all(path) -> list:
    """Return (topic, msgtype, log time, raw CDR bytes) of every message in time order."""
    with open_bag(path) as reader:
        return [(conn.topic, conn.msgtype, time, bytes(raw))
                for conn, time, raw in reader.messages()]


def decode(messages, topic) -> list:
    """Return (log time, deserialized message) of one topic."""
    return [(time, deserialize(raw, msgtype))
            for name, msgtype, time, raw in messages if name == topic]


def test_frames_are_deterministic_and_move():
    first = draw_tabletop(0.0)
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    assert np.array_equal(draw_tabletop(0.0), first)
    assert np.array_equal(draw_tabletop(1.0), draw_tabletop(1.0))
    frames = [draw_tabletop(index / 10) for index in range(40)]
    moving = sum(not np.array_equal(a, b) for a, b in itertools.pairwise(frames))
    assert moving >= 30  # the gripper rests only before the first instruction and at home
    assert draw_tabletop(2.0, width=320, height=240).shape == (240, 320, 3)


def test_scene_has_the_scripted_colours():
    """The caption claims red, green, blue blocks and a grey bin: the pixels must agree."""
    frame = draw_tabletop(0.0).reshape(-1, 3).astype(int)
    colours = {'red': (200, 36, 36), 'green': (36, 150, 64), 'blue': (40, 76, 196),
               'bin': (140, 140, 146)}
    for name, rgb in colours.items():
        assert (np.abs(frame - rgb).sum(axis=1) == 0).sum() > 1000, name


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_recording_reads_back(tmp_path, storage):
    counts = write_recording(tmp_path / 'bag', storage, seconds=1.5, rate_hz=10.0)
    assert counts == {TOPICS['image']: 15, TOPICS['compressed']: 15, TOPICS['instruction']: 2}
    with open_bag(tmp_path / 'bag') as reader:
        assert {conn.topic: conn.msgtype for conn in reader.connections} == TYPES
    messages = read_all(tmp_path / 'bag')
    assert [time for *_, time, _ in messages] == sorted(time for *_, time, _ in messages)
    raw = decode(messages, TOPICS['image'])
    jpeg = decode(messages, TOPICS['compressed'])
    assert [time for time, _ in raw] == [START_NS + index * 10**8 for index in range(15)]
    assert [time for time, _ in jpeg] == [time for time, _ in raw]
    for (time, image), (_, compressed) in zip(raw, jpeg, strict=True):
        assert stamp_ns(image) == time and stamp_ns(compressed) == time
        assert image.header.frame_id == compressed.header.frame_id == 'camera_optical_frame'
        assert image.encoding == 'rgb8' and compressed.format.endswith('jpeg compressed bgr8')
        expected = draw_tabletop((time - START_NS) / 10**9)
        assert np.array_equal(image_to_rgb(image), expected)
        error = np.abs(compressed_to_rgb(compressed).astype(int) - expected).mean()
        assert error < 2.0
    said = [(time, msg.data) for time, msg in decode(messages, TOPICS['instruction'])]
    assert said == [(START_NS + round(i.time * 10**9), i.text) for i in INSTRUCTIONS[:2]]


def test_topics_can_be_renamed_or_left_out(tmp_path):
    counts = write_recording(tmp_path / 'bag', seconds=0.5,
                             topics={'image': '/image', 'compressed': None})
    assert counts == {'/image': 5, TOPICS['instruction']: 1}
    assert {topic for topic, *_ in read_all(tmp_path / 'bag')} == {'/image', '/instruction'}
    with pytest.raises(ValueError, match='thermal'):
        write_recording(tmp_path / 'other', topics={'thermal': '/thermal'})


@pytest.mark.parametrize('sample', [SAMPLE, CAMERAS_SAMPLE], ids=['tabletop', 'cameras'])
def test_committed_sample_matches_the_script(tmp_path, sample):
    """Message for message, so the committed bag cannot drift from the scene unnoticed."""
    several = sample == CAMERAS_SAMPLE
    write_recording(tmp_path / 'bag', topics=CAMERA_TOPICS if several else None)
    fresh, committed = read_all(tmp_path / 'bag'), read_all(sample / 'bag')
    assert len(committed) == len(fresh) == (204 if several else 84)
    for old, new in zip(committed, fresh, strict=True):
        assert old[:3] == new[:3]
        assert old[3] == new[3], (f'{old[0]} at {old[2]} differs: rerun samples/'
                                  f'make_sample_bag.py --force{" --cameras" * several} and '
                                  'commit the output')
    if several:
        return
    write_references(tmp_path / 'references.yaml')
    text = (SAMPLE / 'references.yaml').read_text()
    assert text == (tmp_path / 'references.yaml').read_text()
    assert yaml.safe_load(text) == references()


def test_the_wrist_camera_depth_and_camera_info_come_with_each_head_frame(tmp_path):
    counts = write_recording(tmp_path / 'bag', seconds=0.8, topics=CAMERA_TOPICS)
    assert counts == {**dict.fromkeys([*TOPICS.values(), *CAMERA_TOPICS.values()], 8),
                      TOPICS['instruction']: 1}
    messages = read_all(tmp_path / 'bag')
    streams = zip(*(decode(messages, topic) for topic in (
        TOPICS['image'], CAMERA_TOPICS['wrist'], CAMERA_TOPICS['depth'],
        CAMERA_TOPICS['camera_info'])), strict=True)
    for (time, image), (_, wrist), (_, depth), (_, info) in streams:
        assert stamp_ns(wrist) == stamp_ns(depth) == stamp_ns(info) == stamp_ns(image) == time
        assert depth.header.frame_id == info.header.frame_id == image.header.frame_id
        assert wrist.header.frame_id == WRIST_FRAME_ID
        assert (depth.width, depth.height, info.width, info.height) == (640, 480, 640, 480)
        assert depth.encoding == '16UC1' and depth.step == 1280 and not depth.is_bigendian
        millimetres = np.frombuffer(bytes(depth.data), '<u2').reshape(480, 640)
        assert np.array_equal(millimetres, draw_depth((time - START_NS) / 10**9))
        assert np.array_equal(image_to_rgb(wrist), draw_wrist((time - START_NS) / 10**9))
        focal = 320 / np.tan(np.radians(30))
        np.testing.assert_allclose(info.k, [focal, 0, 320, 0, focal, 240, 0, 0, 1])


def test_depth_puts_each_block_at_its_front_edge_and_the_wall_behind_the_table():
    depth = draw_depth(0.0).astype(int)
    red_face, table_beside_its_bottom, table_in_front = depth[330, 130], depth[349, 60], \
        depth[400, 130]
    assert abs(red_face - table_beside_its_bottom) <= 2  # one pixel row: 2 mm of table
    assert table_in_front < red_face < depth[175, 130]
    assert depth[100, 600] == 2500 and depth[100, 600] > depth[175, 600]  # the wall
    hovering = draw_wrist(0.6)  # the gripper is lowered over the red block then
    assert (np.abs(hovering.astype(int) - (200, 36, 36)).sum(axis=-1) == 0).sum() > 5000


def test_references_point_at_frames_and_parse():
    entries = yaml.safe_load((SAMPLE / 'references.yaml').read_text())
    images = {time for topic, _, time, _ in read_all(SAMPLE / 'bag') if topic == TOPICS['image']}
    assert [e['task'] for e in entries] == ['plan', 'caption'] * len(INSTRUCTIONS)
    for entry, instruction in zip(entries[::2], INSTRUCTIONS, strict=True):
        when = START_NS + round(instruction.time * 10**9)
        assert entry['text'] == instruction.text
        assert entry['stamp_ns'] == max(stamp for stamp in images if stamp <= when)
        plan = parse_plan(entry['target'])
        assert plan.valid and plan.form == 'json'
        assert all(step.skill and step.target for step in plan.steps)
        assert json.loads(entry['target']) == json.loads(instruction.plan)
    assert len({e['target'] for e in entries[::2]}) == len(INSTRUCTIONS)
    for entry in entries[1::2]:
        assert entry['stamp_ns'] in images and entry['text'] == '' and entry['target']
