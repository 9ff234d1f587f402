"""Boxes in every notation models write, read into the model's view and mapped to the frame."""

import json
import math

import pytest
from vlm_ros.engine.grounding import (
    View,
    ViewBox,
    box_problem,
    grid_resize,
    parse_box,
    parse_boxes,
    step_box,
    without_boxes,
)
from vlm_ros.engine.plan_parser import parse_plan
from vlm_ros.engine.results import make_result

WHOLE = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))  # a frame shown whole
ONE = (('', WHOLE),)  # the request's one image


@pytest.mark.parametrize('text, box', [
    ('red block<loc_250><loc_500><loc_749><loc_999>', (0.2505, 0.5005, 0.7495, 0.9995)),
    ('<loc0256><loc0512><loc0768><loc1023> red block', (0.5, 0.25, 0.9990234375, 0.75)),
    ('<|box_start|>(100,200),(300,400)<|box_end|>', (0.1, 0.2, 0.3, 0.4)),
    ('the cup at [0.1, 0.2, 0.3, 0.4]', (0.1, 0.2, 0.3, 0.4)),
    ('the cup at [100, 200, 300, 400]', (0.1, 0.2, 0.3, 0.4)),  # thousandths
])
def test_each_notation_reads_as_fractions_of_the_view(text, box):
    found = parse_box(text)
    assert found is not None and not found.pixels
    assert (found.x1, found.y1, found.x2, found.y2) == pytest.approx(box)


@pytest.mark.parametrize('text', [
    'no box here', '[1, 2, 3]', '[1, 2, 3, 4000]', '<loc_1><loc_2><loc_3>', '[a, b, c, d]',
    '<|box_start|>(1,2)<|box_end|>', '[' * 10000 + '1, 2, 3, 4'])
def test_anything_else_is_no_box(text):
    assert parse_box(text) is None


def test_an_answer_nested_deeper_than_json_can_read_is_no_box_not_an_error():
    """A ground answer of 2000 brackets (well within max_new_tokens, or any server's answer)."""
    nested = '[' * 1000 + ']' * 1000
    assert parse_boxes(nested) == []
    result = make_result('ground', nested, 2000, 0.1, 0.5, False, views=ONE)
    assert not result.valid and result.boxes == ()


def test_a_steps_box_key_wins_and_bbox_2d_is_in_the_views_pixels():
    assert step_box({'instruction': 'pick', 'bbox_2d': [64, 48, 128, 96]}) == \
        ViewBox(64, 48, 128, 96, pixels=True, notation='bbox_2d')
    assert step_box({'box': [0.5, 0.5, 1, 1], 'target': '[0.1, 0.1, 0.2, 0.2]'}).x1 == 0.5
    assert step_box({'target': 'cup<loc_0><loc_0><loc_499><loc_499>'}).notation == 'florence2'
    # A box key whose value is no box, and no box in the text: malformed, and said so.
    for value in ([0.1, 0.2, True, 0.4], 'nowhere', [1, 2, 3]):
        malformed = step_box({'instruction': 'pick', 'box': value})
        assert box_problem(malformed, WHOLE) == \
            f'malformed: box {json.dumps(value)} is not four numbers'
    assert step_box({'box': 'nowhere', 'target': '[0.1, 0.1, 0.2, 0.2]'}).x1 == 0.1
    assert step_box({'instruction': 'pick', 'target': 'cup'}) is None  # no box: no problem
    assert step_box({'instruction': 'pick', 'box': None, 'bbox_2d': []}) is None  # said so


def test_a_malformed_box_is_none_with_its_reason_in_plans_and_ground_answers():
    plan = make_result('plan', json.dumps({'steps': [{'instruction': 'pick it', 'skill': 'pick',
                                                      'target': 'cup', 'bbox_2d': [1, 2]}]}),
                       5, 0.1, 0.2, False, views=ONE)
    assert plan.valid and plan.boxes == (None,)
    (problem,) = plan.box_problems
    assert problem.startswith('malformed: bbox_2d [1') and problem.endswith('not four numbers')
    ground = make_result('ground', '{"bbox_2d": "on the left"}', 5, 0.1, 0.2, False,
                         views=ONE)
    assert not ground.valid and ground.box_problems[0].startswith('malformed: bbox_2d')


def test_boxes_map_through_a_crop_and_a_resize_to_the_frames_pixels():
    cropped = View((640, 480), (80.0, 0.0, 480.0, 480.0), (336, 336))  # CLIP's centre crop
    assert cropped.to_pixels(ViewBox(0.0, 0.0, 0.5, 1.0)) == (80.0, 0.0, 320.0, 480.0)
    assert cropped.to_pixels(ViewBox(0, 0, 168, 336, pixels=True)) == (80.0, 0.0, 320.0, 480.0)
    assert WHOLE.to_pixels(ViewBox(0.75, 0.5, 0.25, 0.0)) == (160.0, 0.0, 480.0, 240.0)  # sorted
    assert WHOLE.to_pixels(ViewBox(-0.5, 0.5, 2.0, 0.75)) == (0.0, 240.0, 640.0, 360.0)  # clipped


@pytest.mark.parametrize('box, problem', [
    (ViewBox(1.5, 0.1, 2.0, 0.2),
     'the box (960.0, 48.0, 1280.0, 96.0) is outside the 640x480 frame'),
    (ViewBox(0.1, 0.1, 0.1, 0.5), 'the box (64.0, 48.0, 64.0, 240.0) has no size'),
    (ViewBox(math.nan, 0.1, 0.2, 0.2), 'not a number'),
    (ViewBox(0.1, 0.1, 0.2, 0.2), '')])
def test_a_box_that_is_none_says_why(box, problem):
    assert problem in box_problem(box, WHOLE) and (problem or not box_problem(box, WHOLE))


def test_plan_steps_carry_their_boxes_in_the_frames_pixels():
    text = json.dumps({'steps': [
        {'instruction': 'pick up the cup', 'skill': 'pick', 'target': 'cup',
         'box': [0.25, 0.5, 0.5, 1.0]},
        {'instruction': 'place it', 'skill': 'place', 'target': 'tray<loc_2000>'},
        {'instruction': 'push it', 'skill': 'push', 'target': 'box', 'box': [2, 2, 3, 3]}]})
    assert parse_plan(text).steps[0].box == ViewBox(0.25, 0.5, 0.5, 1.0)
    result = make_result('plan', text, 10, 0.1, 0.2, False, (640, 480), views=ONE)
    assert result.boxes == ((160.0, 240.0, 320.0, 480.0), None, None)
    assert result.box_problems == ('', '', 'the box (1.3, 1.0, 1.9, 1.4) has no size')
    assert make_result('plan', text, 10, 0.1, 0.2, False).boxes == (None, None, None)


def test_a_grounding_answer_gives_every_box_it_wrote_in_one_notation():
    qwen = json.dumps([{'bbox_2d': [64, 48, 128, 96], 'label': 'cup'},
                       {'bbox_2d': [0, 0, 32, 32], 'label': 'cup'}, {'label': 'no box'}])
    assert [box.notation for box in parse_boxes(f'```json\n{qwen}\n```')] == ['bbox_2d'] * 2
    florence = 'cup<loc_0><loc_0><loc_499><loc_499>cup<loc_500><loc_500><loc_999><loc_999>'
    assert [round(box.x1, 4) for box in parse_boxes(florence)] == [0.0005, 0.5005]
    assert len(parse_boxes('[100, 200, 300, 400] and [0.5, 0.5, 0.9, 0.9]')) == 2
    assert parse_boxes('[1, 2, 3, 4000] and [1, 2, 3, 4]') == [ViewBox(0.001, 0.002, 0.003,
                                                                       0.004)]
    assert parse_boxes('{"steps": [{"instruction": "pick"}]}') == []
    assert parse_boxes('{not json [') == [] and parse_boxes('blue') == []


def test_a_ground_result_is_valid_when_one_box_it_wrote_is_in_the_frame():
    found = make_result('ground', '[100, 200, 300, 400], [2000, 0, 3000, 1]', 5, 0.1, 0.2,
                        False, views=ONE)
    assert found.valid and found.steps == () and found.boxes == ((64.0, 96.0, 192.0, 192.0),)
    outside = make_result('ground', '[0, 0, 0, 0]', 5, 0.1, 0.2, False, views=ONE)
    assert not outside.valid and outside.boxes == (None,)
    assert outside.box_problems == ('the box (0.0, 0.0, 0.0, 0.0) has no size',)
    none = make_result('ground', 'blue', 1, 0.1, 0.2, False, views=ONE)
    assert not none.valid and none.boxes == () and none.text == 'blue'


def test_a_point_is_a_box_of_no_size_in_every_notation_that_writes_one():
    assert step_box({'point_2d': [320, 240]}) == ViewBox(320, 240, 320, 240, pixels=True,
                                                         notation='point_2d', point=True)
    assert step_box({'point': [0.5, 0.25]}) == ViewBox(0.5, 0.25, 0.5, 0.25, point=True)
    assert step_box({'point': [500, 250]}) == ViewBox(0.5, 0.25, 0.5, 0.25, point=True)
    molmo = parse_boxes('<point x="25.0" y="50.0" alt="cup">cup</point>')
    assert molmo == [ViewBox(0.25, 0.5, 0.25, 0.5, notation='molmo', point=True)]
    assert WHOLE.to_pixels(molmo[0]) == (160.0, 240.0, 160.0, 240.0)
    assert box_problem(ViewBox(0.5, 0.5, 0.5, 0.5, point=True), WHOLE) == ''
    assert box_problem(ViewBox(1.5, 0.5, 1.5, 0.5, point=True), WHOLE) == \
        'the point (960.0, 240.0) is outside the 640x480 frame'
    assert box_problem(step_box({'point_2d': [1, 2, 3]}), WHOLE) == \
        'malformed: point_2d [1, 2, 3] is not two numbers'
    # A box key wins over a point key; a box written as four equal numbers is no point.
    assert not step_box({'point': [0.5, 0.5], 'box': [0.1, 0.1, 0.2, 0.2]}).point
    assert box_problem(step_box({'box': [0.5, 0.5, 0.5, 0.5]}), WHOLE) == \
        'the box (320.0, 240.0, 320.0, 240.0) has no size'


HEAD = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))
WRIST = View((320, 240), (0.0, 0.0, 320.0, 240.0), (160, 120))  # given to the model halved
CAMERAS = (('head', HEAD), ('wrist', WRIST))


def test_a_steps_box_is_in_the_image_of_the_camera_it_names_the_first_by_default():
    text = json.dumps({'steps': [
        {'instruction': 'pick the cup', 'camera': 'wrist', 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'look at the tray', 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'push it', 'camera': 'elbow', 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'wait', 'camera': 'head'}]})
    result = make_result('plan', text, 10, 0.1, 0.2, False, views=CAMERAS)
    assert result.boxes == ((80.0, 60.0, 160.0, 120.0), (40.0, 30.0, 80.0, 60.0), None, None)
    assert result.box_cameras == ('wrist', 'head', '', '')
    assert result.box_problems[2] == "camera 'elbow' is not one of the images (head, wrist)"
    # A camera that is no name names no camera; null names none (the first).
    odd = make_result('plan', json.dumps({'steps': [
        {'instruction': 'pick', 'camera': 5, 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'pick', 'camera': ['wrist'], 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'pick', 'camera': None, 'bbox_2d': [40, 30, 80, 60]},
        {'instruction': 'pick', 'camera': 'wrist', 'bbox_2d': [400, 30, 480, 60]}]}),
        10, 0.1, 0.2, False, views=CAMERAS)
    assert odd.box_problems[:3] == (
        "camera '5.0' is not one of the images (head, wrist)",  # as the parser reads it
        'camera \'["wrist"]\' is not one of the images (head, wrist)', '')
    assert odd.box_cameras == ('', '', 'head', 'wrist')
    assert odd.box_problems[3] == \
        'camera wrist: the box (800.0, 60.0, 960.0, 120.0) is outside the 320x240 frame'
    # One image: the camera's name is not needed, and not checked.
    alone = make_result('plan', text, 10, 0.1, 0.2, False, views=ONE)
    assert alone.boxes[2] == (40.0, 30.0, 80.0, 60.0) and alone.box_cameras[:3] == ('',) * 3


def test_a_ground_answers_boxes_are_in_the_first_images_pixels():
    found = make_result('ground', '{"bbox_2d": [40, 30, 80, 60]}', 5, 0.1, 0.2, False,
                        views=CAMERAS[::-1])
    assert found.boxes == ((80.0, 60.0, 160.0, 120.0),) and found.box_cameras == ('wrist',)


def test_a_targets_words_are_kept_without_the_boxes_written_in_them():
    assert without_boxes('cup<point x="25.0" y="50.0" alt="cup">cup</point>') == 'cup cup'
    assert without_boxes('red block<loc_250><loc_500><loc_749><loc_999>') == 'red block'
    assert without_boxes('<|box_start|>(1,2),(3,4)<|box_end|> tray, left') == 'tray, left'
    assert without_boxes('the cup at [0.1, 0.2, 0.3, 0.4]') == 'the cup at'
    assert without_boxes('  bin ') == 'bin'


def test_the_patch_grid_resize_is_qwen2_vls_own():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    budgets = [(28, 28 * 28 * 4, 28 * 28 * 16), (28, 56 * 56, 28 * 28 * 1280),
               (28, 3136, 1003520), (32, 4096, 10 ** 6)]  # Qwen3-VL's patches are 16 px
    for height in (1, 13, 28, 48, 120, 479, 480, 720, 1080, 2160):
        for width in (30, 64, 160, 640, 1280, 1920, 3840):
            for factor, least, most in budgets:
                if max(height, width) / min(height, width) > 200:
                    continue  # transformers refuses those
                assert grid_resize(height, width, factor, least, most) == smart_resize(
                    height, width, factor=factor, min_pixels=least, max_pixels=most), \
                    (height, width, factor, least, most)
