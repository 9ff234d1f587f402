"""The several-camera sample (samples/tabletop_cameras): a user's first run of cameras and depth.

vlm_replay plays the sample into a node started as docs/RECORDINGS.md shows: cameras:=[head,
wrist] and use_depth, the sample's topics remapped onto the cameras'. Every plan names a frame
of both cameras from the sample, and a ~/ground box in the head camera's frame gets its 3D
point from the sample's own depth and camera_info, which its detection (vision_msgs) carries
too. vlm_eval --camera evaluates the same recording offline with both cameras.
"""

import math
import pathlib
import subprocess

import cv2
import pytest
from engine_fixtures import GROUND, scene
from node_harness import RELIABLE, TIMEOUT, call, node_executable
from test_evaluate import read_jsonl, vlm_eval
from vlm_ros.bag.storage import open_bag, time_ns
from vlm_ros.demo.sample import CAMERA_TOPICS, START_NS, TOPICS
from vlm_ros.demo.tabletop import INSTRUCTIONS
from vlm_ros.demo.tabletop_views import FIELD_OF_VIEW, WRIST_FRAME_ID, draw_depth
from vlm_ros.node.depth import box_depth
from vlm_ros.node.detections import vision_msgs
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.srv import Ground

SAMPLE = pathlib.Path(__file__).resolve().parents[3] / 'samples' / 'tabletop_cameras' / 'bag'
REMAPS = {'head/image': TOPICS['image'], 'wrist/image': CAMERA_TOPICS['wrist'],
          'head/depth/image': CAMERA_TOPICS['depth'],
          'head/camera_info': CAMERA_TOPICS['camera_info']}
CAMERAS = ('--camera', f'head={TOPICS["image"]}', '--camera', f'wrist={CAMERA_TOPICS["wrist"]}')
FRAME_STAMPS = {START_NS + index * 10**8 for index in range(40)}  # 10 Hz for 4 s


def _recorded(answers: pathlib.Path, msgtype: str) -> list:
    with open_bag(answers) as reader:
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages()
                if c.msgtype == msgtype]


def test_the_sample_replayed_into_a_node_with_both_cameras_and_depth(start_vlm_node, test_node,
                                                                      tmp_path):
    remaps = [word for name, topic in REMAPS.items() for word in ('-r', f'{name}:={topic}')]
    node = start_vlm_node(cameras='[head, wrist]', use_depth=True, ros_args=remaps)
    node.wait_state('active')
    answers = tmp_path / 'answers'
    replay = subprocess.run(
        [node_executable('vlm_replay'), SAMPLE, '--record', answers, '--wait-for-subscribers',
         str(TIMEOUT), '--linger', str(TIMEOUT)], capture_output=True, text=True,
        timeout=3 * TIMEOUT)
    assert replay.returncode == 0, replay.stderr[-3000:]
    plans = _recorded(answers, 'vlm_ros_msgs/msg/Plan')
    sources = {s.request_id: s for s in _recorded(answers, 'vlm_ros_msgs/msg/ImageSources')}
    assert sorted(p.instruction for p in plans) == sorted(i.text for i in INSTRUCTIONS)
    for plan in plans:
        used = sources[plan.request_id]
        assert list(used.cameras) == ['head', 'wrist'], used
        assert [image.frame_id for image in used.images] == ['camera_optical_frame',
                                                              WRIST_FRAME_ID]
        assert {time_ns(image.stamp) for image in used.images} <= FRAME_STAMPS, used.images
        assert used.skew <= 0.1
    report = tmp_path / 'report'
    done = vlm_eval(SAMPLE, '--recorded', answers, *CAMERAS, '--out', report)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = [r for r in read_jsonl(report / 'results.jsonl') if r['task'] == 'plan']
    assert len(planned) == len(plans), planned  # one record of each recorded Plan
    for record in planned:
        assert [image['camera'] for image in record['images']] == ['head', 'wrist']
        assert None not in [image['frame'] for image in record['images']], record

    # The tiny model draws its box on the scene it was trained on, not on the sample's: that
    # scene goes in at the size and stamp of the sample's last head frame, whose depth and
    # camera_info the node holds.
    image = rgb_to_image(cv2.resize(scene('red'), (640, 480), interpolation=cv2.INTER_NEAREST))
    image.header.stamp.sec, image.header.stamp.nanosec = divmod(max(FRAME_STAMPS), 10**9)
    image.header.frame_id = 'camera_optical_frame'
    types = vision_msgs()
    detections = types and test_node.collect(types.Detection2DArray, '/detections', RELIABLE)
    grounded = call(test_node, Ground, '/vlm_node/ground',
                    Ground.Request(phrase=GROUND[0], image=image))
    assert grounded.success, grounded.message
    box, point = tuple(grounded.boxes[:4]), grounded.points[0]
    assert grounded.point_problems == [''] and point.header.frame_id == 'camera_optical_frame'
    seconds = (time_ns(grounded.image_header.stamp) - START_NS) / 10**9
    metres, _ = box_depth(draw_depth(seconds) / 1000.0, box)
    focal = 320 / math.tan(math.radians(FIELD_OF_VIEW) / 2)
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    assert (point.point.x, point.point.y, point.point.z) == pytest.approx(
        ((centre[0] - 320) * metres / focal, (centre[1] - 240) * metres / focal, metres),
        abs=1e-3)
    if types is not None:  # scripts/bootstrap builds it where ../shared/vision_msgs is
        found = detections.wait_for(lambda d: d.header == grounded.image_header, TIMEOUT,
                                    "the ground answer's detections")
        assert found.detections[0].results[0].pose.pose.position == point.point


def test_vlm_eval_answers_each_instruction_of_the_sample_from_both_cameras(tmp_path,
                                                                           trained_tiny):
    out = tmp_path / 'out'
    done = vlm_eval(SAMPLE, '--model', trained_tiny('llava'), '--device', 'cpu', *CAMERAS,
                    '--out', out)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_jsonl(out / 'results.jsonl')
    assert sorted(r['request'] for r in records if r['task'] == 'plan') == \
        sorted(i.text for i in INSTRUCTIONS)
    for record in records:
        assert record['status'] not in ('NO_IMAGE', 'UNSYNCHRONIZED', 'BAD_INPUT'), record
        assert [image['camera'] for image in record['images']] == ['head', 'wrist']
        head, wrist = record['images']
        assert head['stamp_ns'] == wrist['stamp_ns'] and head['stamp_ns'] in FRAME_STAMPS
