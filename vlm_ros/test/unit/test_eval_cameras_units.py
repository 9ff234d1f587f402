"""vlm_eval with several cameras: one frame per camera per request, taken as vlm_node takes them.

The recording (support/eval_bags.py write_camera_bag) has the head camera of the one-camera
tests and a wrist camera whose frames lie 30 ms, then 0.4 s, then 0.1 s from the head's: the
second instruction finds a close pair only by waiting for later frames, as the live node does.
"""

import re

import cv2
import numpy as np
import pytest
import vlm_ros.bag.storage as bags
from engine_fixtures import scene
from eval_bags import (
    IMAGE_TOPIC,
    INSTRUCTIONS,
    STAMPS,
    TARGET_BOX,
    WRIST_BOX,
    WRIST_STAMPS,
    WRIST_TOPIC,
    wrist_scene,
    write_camera_bag,
    write_recorded_bag,
)
from vlm_ros.engine import Result
from vlm_ros.eval.inputs import read_inputs, synchronized
from vlm_ros.eval.offline import Sync, frame_key, plan_requests, run_engine
from vlm_ros.eval.recorded import recorded_records
from vlm_ros.eval.report import BOX_COLOUR, boxes_by_frame, render, thumbnail_jpeg
from vlm_ros.tools import evaluate

CAMERAS = (('head', IMAGE_TOPIC), ('wrist', WRIST_TOPIC))


@pytest.fixture(scope='module', params=[False, True], ids=['rosbag2', 'ros1'])
def inputs(request, tmp_path_factory):
    path = tmp_path_factory.mktemp('cams') / ('cameras.bag' if request.param else 'cameras')
    with bags.open_bag(write_camera_bag(path, ros1=request.param)) as reader:
        return read_inputs(reader, cameras=CAMERAS)


def _indices(views):
    return [frame and frame.index for frame in views.frames]


def test_each_request_takes_every_cameras_latest_frame_or_waits_for_closer_ones(inputs):
    assert [c.name for c in inputs.cameras] == ['head', 'wrist']
    assert [f.stamp_ns for f in inputs.cameras[1].frames] == WRIST_STAMPS
    assert inputs.frames == inputs.cameras[0].frames and inputs.image_topic == IMAGE_TOPIC
    times = [when for when, _ in INSTRUCTIONS]
    views = [synchronized(inputs.cameras, t, 0.1, 2.0) for t in times]
    assert [_indices(v) for v in views] == [[None, None], [0, 0], [2, 2], [2, 2]]
    assert views[1].skew == pytest.approx((WRIST_STAMPS[0] - STAMPS[0]) / 1e9)
    # At the third instruction the latest pair is 0.4 s apart: the head's next frame is close.
    assert _indices(synchronized(inputs.cameras, times[2], 0.1, 0.05)) == [1, 1]
    assert _indices(synchronized(inputs.cameras, times[2], 0.0, 2.0)) == [1, 1]  # no limit
    # No pair within 0.05 s at all: the last frames looked at, with their skew.
    strict = synchronized(inputs.cameras, times[2], 0.05, 2.0)
    assert _indices(strict) == [2, 2] and strict.skew == pytest.approx(0.1)


class Answers:
    """Stands in for the model: the unit under test is which frames go into which request."""

    def __init__(self):
        self.requests = []

    def run(self, requests):
        self.requests += requests
        return [Result(r.task, 'ok', (), True, 'text', 1, 0.1, 0.2) for r in requests]


def _images(inputs, broken=None):
    images = {f.index: scene('red') for f in inputs.frames}
    images.update({frame_key(1, 'wrist', f.index): wrist_scene(f.index)
                   for f in inputs.cameras[1].frames})
    if broken is not None:
        images[frame_key(1, 'wrist', broken)] = ValueError('truncated wrist frame')
    return images


def test_every_camera_goes_into_the_request_and_refusals_name_the_camera(inputs):
    sync = Sync(0.05, 2.0)
    pending = plan_requests(inputs, True, sync)
    assert [(p.task, _indices(p.views)) for p in pending] == [
        ('plan', [None, None]), ('caption', [0, 0]), ('plan', [0, 0]), ('plan', [2, 2]),
        ('plan', [2, 2])]  # a caption at its frames' log time; none of frames never close
    engine = Answers()
    records, _ = run_engine(engine, inputs, pending, _images(inputs), 4, sync)
    assert [r['status'] for r in records] == ['NO_IMAGE', 'OK', 'OK', 'UNSYNCHRONIZED',
                                              'UNSYNCHRONIZED']
    assert records[0]['message'] == ('no image from camera head, wrist was logged at or '
                                     'before this request')
    assert re.fullmatch(r"the cameras' frames are 0\.100 s apart \(head \d+\.\d{9}, wrist "
                        r'\d+\.\d{9}\); max_skew is 0\.05 s and no closer ones were logged '
                        r'within 2 s', records[3]['message'])
    assert [names for names in ([n for n, _ in r.cameras] for r in engine.requests)] == [
        ['head', 'wrist']] * 2
    assert np.array_equal(engine.requests[0].cameras[1][1], wrist_scene(0))
    plan = records[2]
    assert [(i['camera'], i['topic'], i['frame'], i['stamp_ns']) for i in plan['images']] == [
        ('head', IMAGE_TOPIC, 0, STAMPS[0]), ('wrist', WRIST_TOPIC, 0, WRIST_STAMPS[0])]
    assert plan['image']['frame'] == 0 and plan['skew'] == pytest.approx(0.03)
    assert [i['frame'] for i in records[0]['images']] == [None, None]

    broken, _ = run_engine(Answers(), inputs, pending, _images(inputs, broken=0), 4, sync)
    assert [r['status'] for r in broken][1:3] == ['BAD_INPUT', 'BAD_INPUT']
    assert broken[1]['message'] == 'camera wrist: truncated wrist frame'


@pytest.mark.parametrize('args, complaint', [
    (['--camera', 'wrist'], "write NAME=TOPIC, e.g. wrist=/wrist/image_raw, not 'wrist'"),
    (['--camera', 'a=/x', '--camera', 'a=/y'], '--camera names must differ: a, a'),
    (['--camera', 'a=/x', '--image-topic', '/y'], '--camera takes the place of --image-topic'),
    (['--camera', 'a=/x', '--max-skew', '-1'], 'argument --max-skew: must be >= 0, got -1'),
])
def test_camera_arguments_are_checked(args, complaint, capsys):
    with pytest.raises(SystemExit) as stopped:
        evaluate.parse_args(['bag', '--model', 'm', *args])
    assert stopped.value.code == 2 and complaint in capsys.readouterr().err


def test_a_camera_topic_that_is_not_a_camera_names_the_topics(tmp_path):
    with bags.open_bag(write_camera_bag(tmp_path / 'bag')) as reader:
        with pytest.raises(bags.BagError, match=r'camera wrist: /instruction is not in .*; need '
                           r'a sensor_msgs/msg/Image or .* Topics: .*/wrist/image_raw'):
            read_inputs(reader, cameras=(('head', IMAGE_TOPIC), ('wrist', '/instruction')))


def test_grounded_boxes_are_drawn_on_the_thumbnail():
    frame = scene('red', 480, 640)
    drawn = cv2.imdecode(np.frombuffer(thumbnail_jpeg(frame, boxes=[[100, 200, 300, 400]]),
                                       np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1].astype(int)
    magenta = np.abs(drawn - BOX_COLOUR).sum(axis=2) < 90
    scale = 224 / 640
    rows, cols = np.nonzero(magenta)
    assert rows.min() == pytest.approx(200 * scale, abs=2)
    assert rows.max() == pytest.approx(400 * scale, abs=2)
    assert cols.min() == pytest.approx(100 * scale, abs=2)
    assert cols.max() == pytest.approx(300 * scale, abs=2)
    plain = cv2.imdecode(np.frombuffer(thumbnail_jpeg(frame), np.uint8), cv2.IMREAD_COLOR)
    assert not (np.abs(plain[:, :, ::-1].astype(int) - BOX_COLOUR).sum(axis=2) < 90).any()


def test_the_report_shows_every_cameras_frame_of_a_request(inputs):
    sync = Sync(0.1, 2.0)
    pending = plan_requests(inputs, False, sync)
    records, _ = run_engine(Answers(), inputs, pending, _images(inputs), 4, sync)
    thumbnails = {key: thumbnail_jpeg(image) for key, image in _images(inputs).items()}
    page = render({'bag': 'cameras'}, records, thumbnails, b'png')
    shown = re.findall(r'<img class="thumb" alt="(\w+) frame (\d+)"', page)
    assert shown == [('head', '0'), ('wrist', '0'), ('head', '2'), ('wrist', '2')]
    assert 'head: no frame on /camera/image_raw<br>wrist: no frame on /wrist/image_raw' in page
    assert f'wrist: frame 2 on {WRIST_TOPIC}, header stamp' in page


def test_recorded_answers_carry_their_cameras_frames_and_boxes(inputs, tmp_path):
    records, _ = recorded_records(inputs, write_recorded_bag(tmp_path / 'answers',
                                                             companions=True))
    plans = {r['request']: r for r in records if r['task'] == 'plan'}
    first = plans[INSTRUCTIONS[1][1]]
    assert [(i['camera'], i['frame'], i['stamp_ns']) for i in first['images']] == [
        ('head', 0, STAMPS[0]), ('wrist', 0, WRIST_STAMPS[0])]
    assert first['skew'] == pytest.approx(0.03)
    assert [(step['box'], step['camera']) for step in first['steps']] == [
        (list(TARGET_BOX), 'head'), (list(WRIST_BOX), 'wrist')]
    # Each box is drawn on its own camera's frame.
    assert boxes_by_frame(records) == {0: [list(TARGET_BOX)], ('wrist', 0): [list(WRIST_BOX)]}
    hostile = next(r for r in records if r['text'] == '<i>junk</i>')
    assert [i['frame'] for i in hostile['images']] == [1, None]  # no such wrist frame
    caption = next(r for r in records if r['task'] == 'caption')
    assert [i['frame'] for i in caption['images']] == [0, 0]
    last = next(r for r in records if r['request'] == INSTRUCTIONS[3][1])
    assert 'images' not in last and last['steps'][0]['box'] is None  # nothing beside it
