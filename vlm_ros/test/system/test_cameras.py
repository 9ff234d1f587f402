"""Several cameras (cameras:=[head, wrist]): one frame of each per request, stamps within max_skew.

Two camera publishers in this process stream on head/image and wrist/image with stamps the
test chooses; the node's answers name the frame of every camera on image_sources. Frames
further apart than max_skew, and max_skew's own effect: test_node_parameters.py
(camera_harness.observe_max_skew).
"""

import pytest
from camera_harness import (
    CAMERAS,
    INSTRUCTION,
    Cameras,
    new_plan,
    received_by_camera,
    stream_depth,
)
from engine_fixtures import GROUND, RED_BLOCK, scene
from fork_server import run_tool
from node_harness import RELIABLE, TIMEOUT, call, node_executable, set_ok, transition
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.msg import Features, ImageSources, Plan
from vlm_ros_msgs.srv import Ground, QueryCameras


def test_a_plan_uses_a_frame_of_each_camera_and_names_them_all(start_vlm_node, test_node):
    node = start_vlm_node(cameras=CAMERAS)
    node.wait_state('active')
    sources = test_node.collect(ImageSources, '/image_sources', RELIABLE)
    node.wait_outputs(sources)
    cameras = Cameras(test_node, {'head': 0.0, 'wrist': 0.0})
    try:
        cameras.heard_by(node)
        plan = new_plan(node)
        assert plan.status == Plan.STATUS_OK, plan.message
        assert plan.header.frame_id == cameras.frame_ids['head'], 'the first camera heads it'
        used = sources.wait_for(lambda m: m.request_id == plan.request_id, TIMEOUT,
                                "the plan's image sources")
        assert list(used.cameras) == ['head', 'wrist'] and used.header == plan.header
        assert [image.frame_id for image in used.images] == \
            [cameras.frame_ids['head'], cameras.frame_ids['wrist']]
        assert 0.0 <= used.skew <= 0.1 and used.task == 'plan'
        values = node.wait_diag(lambda v: 'frames_received_by_camera' in v, TIMEOUT,
                                'frames counted per camera')
        assert values['frames_received_by_camera'].startswith('head ')
    finally:
        cameras.stop()


def test_a_silent_camera_is_named_in_the_answer_and_in_diagnostics_until_it_publishes(
        start_vlm_node, test_node):
    # image:= is the one camera's topic: with cameras set, nothing reads it.
    node = start_vlm_node(cameras=CAMERAS, wait_for_image=0.5,
                          ros_args=('-r', 'image:=/camera/color/image_raw'))
    node.wait_state('active')
    cameras = Cameras(test_node, {'head': 0.0})
    wrist = None
    try:
        said = node.wait_diag(lambda v: received_by_camera(v).get('head', 0) > 0 and
                              v['image_input'].startswith('nothing publishes on /wrist/'),
                              TIMEOUT, 'the silent wrist camera in /diagnostics')
        silent, where = said['image_input'].split('; ')  # the head camera adds no clause
        assert silent == 'nothing publishes on /wrist/image or /wrist/image/compressed'
        assert where.startswith('images are published on /head/image (Image)') and \
            where.endswith(': remap wrist/image:=TOPIC for Image, wrist/image/compressed:=TOPIC '
                           'for CompressedImage'), where
        plan = new_plan(node)
        assert plan.status == Plan.STATUS_NO_IMAGE, plan
        assert 'from camera wrist within 0.5 s' in plan.message
        assert 'nothing publishes on /wrist/image' in plan.message, plan.message
        assert 'nothing publishes on /head/image' not in plan.message
        # ~/ground looks in the first camera's image unless it names another: that one alone.
        grounded = call(test_node, Ground, '/vlm_node/ground', Ground.Request(phrase=GROUND[0]))
        assert grounded.success, grounded.message
        assert grounded.image_header.frame_id == cameras.frame_ids['head']
        assert list(grounded.boxes) == pytest.approx(RED_BLOCK, abs=1.0)
        wrist = Cameras(test_node, {'wrist': 0.0})
        node.wait_diag(lambda v: received_by_camera(v).get('wrist', 0) > 0 and
                       v['image_input'] == '', TIMEOUT, 'the hint to clear once the wrist sends')
        answered = new_plan(node)  # and the answers no longer say NO_IMAGE
        assert answered.status == Plan.STATUS_OK, answered.message
        code, err = node.stop()
        assert code == 0 and 'image:=/camera/color/image_raw has no effect: with cameras set, ' \
            'images come from head/image, wrist/image; remap those (NAME/image:=TOPIC)' in err, err
    finally:
        cameras.stop()
        if wrist is not None:
            wrist.stop()


def ask(test_node, *cameras: str) -> QueryCameras.Response:
    request = QueryCameras.Request(question='what colour is the block?', cameras=list(cameras))
    return call(test_node, QueryCameras, '/vlm_node/query_cameras', request)


def test_a_query_asks_the_cameras_it_names_and_only_waits_for_those(start_vlm_node,
                                                                    test_node):
    node = start_vlm_node(cameras='[head, wrist, arm]', wait_for_image=0.5)
    node.wait_state('active')
    sources = test_node.collect(ImageSources, '/image_sources', RELIABLE)
    node.wait_outputs(sources)
    cameras = Cameras(test_node, {'head': 0.0, 'wrist': 0.0})  # the arm camera is silent
    try:
        cameras.heard_by(node)
        answer = ask(test_node, 'wrist', 'head')
        assert answer.success and answer.answer, answer.message
        assert list(answer.sources.cameras) == ['wrist', 'head']
        assert [image.frame_id for image in answer.sources.images] == \
            [cameras.frame_ids['wrist'], cameras.frame_ids['head']]
        assert answer.sources.header.frame_id == cameras.frame_ids['wrist']
        assert 0.0 <= answer.sources.skew <= 0.1
        sources.wait_for(lambda m: m.header == answer.sources.header and m.task == 'vqa',
                         TIMEOUT, "the answer's image sources")
        alone = ask(test_node, 'head')
        assert alone.success and list(alone.sources.cameras) == ['head'], alone.message
        everyone = ask(test_node)
        assert not everyone.success
        assert 'no image arrived from camera arm within 0.5 s' in everyone.message
        for names, reason in ((['hand'], 'unknown camera hand; the cameras are head, wrist, '
                               'arm'), (['head', 'head'], 'a camera named twice'),
                              (['head'] * 9, '9 cameras named; at most 8')):
            refused = ask(test_node, *names)
            assert not refused.success and reason in refused.message, refused.message
        assert ask(test_node, 'head').success, 'the node is alive and still answers'
        client = run_tool([node_executable('vlm_client'), 'query', 'what colour is it?',
                           '--camera', 'head', '--camera', 'wrist'], TIMEOUT)
        assert client.returncode == 0 and client.stdout.strip(), client.stderr
        # In the order given (the service calls above asked wrist, head): the prompt's order.
        sources.wait_for(lambda m: list(m.cameras) == ['head', 'wrist'], TIMEOUT,
                         "the client's two cameras, in its order")
        refused = run_tool([node_executable('vlm_client'), 'query', 'what colour is it?',
                            '--camera', 'hand'], TIMEOUT)
        assert refused.returncode == 1, refused.stderr
        assert 'unknown camera hand; the cameras are head, wrist, arm' in refused.stderr
    finally:
        cameras.stop()


def test_a_silent_camera_is_named_alone_and_rate_features_wait_for_it_no_longer_than_max_skew(
        start_vlm_node, test_node):
    """features_rate's jobs take the worker for max_skew at most, not for wait_for_image."""
    node = start_vlm_node(cameras=CAMERAS, wait_for_image=3.0)
    node.wait_state('active')
    both_silent = ask(test_node, 'wrist')
    assert not both_silent.success
    reason = both_silent.message.split(' s: ', 1)[1]
    assert 'nothing publishes on /wrist/image' in reason, both_silent.message
    assert '/head/image' not in reason, 'the head camera was not asked for'
    assert len(reason.split('; ')) == len(set(reason.split('; '))), 'each clause once'
    features = test_node.collect(Features, '/vlm_node/features', RELIABLE)
    node.wait_outputs(features)
    cameras = Cameras(test_node, {'head': 0.0})
    try:
        new_plan(node, INSTRUCTION)  # the instruction whose features the rate publishes
        set_ok(test_node, features_rate=5.0)
        found = features.wait_for(lambda m: m.request_id == '', TIMEOUT, 'rate features')
        assert not found.data and found.instruction == INSTRUCTION
        assert found.problem.startswith('no image arrived from camera wrist within 0.1 s'), \
            found.problem
    finally:
        cameras.stop()


def test_a_model_that_takes_one_image_a_prompt_fails_configure_naming_the_cameras(
        start_vlm_node, trained_tiny, test_node):
    node = start_vlm_node(model=str(trained_tiny('florence2')), cameras=CAMERAS)
    values = node.wait_state('unconfigured')
    assert 'cameras head, wrist' in values['configure_error'], values
    assert 'takes one image a prompt' in values['configure_error']
    set_ok(test_node, cameras=['head'])  # one camera, named: taken at the next configure
    assert transition(test_node, 'configure') and transition(test_node, 'activate')
    cameras = Cameras(test_node, {'head': 0.0})
    try:
        cameras.heard_by(node)
        plan = new_plan(node)
        assert plan.header.frame_id == cameras.frame_ids['head'], plan
        assert plan.status != Plan.STATUS_NO_IMAGE, plan.message
    finally:
        cameras.stop()


def test_camera_names_that_cannot_be_topics_fail_configure(start_vlm_node):
    node = start_vlm_node(cameras="['head', 'wrist/../x']")
    values = node.wait_state('unconfigured')
    assert 'camera names must be a letter' in values['configure_error'], values


def test_ground_looks_in_the_camera_it_names_with_that_cameras_depth(start_vlm_node, test_node):
    node = start_vlm_node(cameras=CAMERAS, use_depth=True)
    node.wait_state('active')
    cameras = Cameras(test_node, {'head': 0.0, 'wrist': 0.0})
    timer = stream_depth(test_node, 'wrist/', cameras.frame_ids['wrist'])  # the wrist's alone

    def ground(camera: str) -> Ground.Response:
        return call(test_node, Ground, '/vlm_node/ground',
                    Ground.Request(phrase=GROUND[0], camera=camera))
    try:
        answered = {}

        def pointed() -> bool:
            answered['wrist'] = ground('wrist')
            return answered['wrist'].points[0].header.frame_id != ''
        wait_until(pointed, TIMEOUT, "a 3D point from the wrist's depth", poll=0.0)
        wrist = answered['wrist']
        assert wrist.image_header.frame_id == cameras.frame_ids['wrist'], wrist.message
        assert list(wrist.boxes) == pytest.approx(RED_BLOCK, abs=1.0)
        assert wrist.points[0].point.z == pytest.approx(0.5) and wrist.point_problems == ['']
        head = ground('')  # the first camera, which has no depth camera beside it
        assert head.success and head.image_header.frame_id == cameras.frame_ids['head']
        assert head.points[0].header.frame_id == ''
        assert head.point_problems == ['no depth image has arrived on /head/depth/image']
        refused = ground('elbow')
        assert not refused.success, refused
        assert 'unknown camera elbow; the cameras are head, wrist' in refused.message
        # A caller's own image, named as the wrist camera's, takes the wrist's depth.
        own = rgb_to_image(scene('red'))
        own.header.frame_id = cameras.frame_ids['wrist']

        def given(camera: str) -> Ground.Response:
            own.header.stamp = test_node.node.get_clock().now().to_msg()
            answered['own'] = call(test_node, Ground, '/vlm_node/ground',
                                   Ground.Request(phrase=GROUND[0], image=own, camera=camera))
            return answered['own']
        wait_until(lambda: given('wrist').points[0].header.frame_id != '', TIMEOUT,
                   "the wrist's depth for a caller's image", poll=0.0)
        assert answered['own'].image_header == own.header
        assert answered['own'].points[0].point.z == pytest.approx(0.5)
        unknown = given('elbow')
        assert not unknown.success and 'unknown camera elbow' in unknown.message
        # The CLI, as a user types it, until a frame has its depth beside it (a loaded machine
        # may deliver a depth image later than max_skew: the answer then says so, as below).
        shown = {}

        def shown_with_a_point() -> bool:
            shown['cli'] = run_tool([node_executable('vlm_client'), 'ground', GROUND[0],
                                     '--camera', 'wrist'], TIMEOUT)
            return shown['cli'].returncode == 0 and ' point ' in shown['cli'].stdout
        wait_until(shown_with_a_point, TIMEOUT, 'vlm_client ground with a point', poll=0.0)
        assert shown['cli'].stdout.startswith(f'1 found in {cameras.frame_ids["wrist"]} ')
        assert ' 0.500 (' in shown['cli'].stdout, shown['cli'].stdout
    finally:
        test_node.node.destroy_timer(timer)
        cameras.stop()
