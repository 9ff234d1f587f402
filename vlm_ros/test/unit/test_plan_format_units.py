"""How vlm_client and vlm_replay --echo print a Plan (reason or note, steps) and its companions."""

from builtin_interfaces.msg import Time
from std_msgs.msg import Header
from vlm_ros.engine.grounding import View
from vlm_ros.engine.results import CLOSED_BOX, make_result, mark_closed
from vlm_ros.node.messages import format_plan, format_sources, format_targets

from vlm_ros_msgs.msg import ImageSources, Plan, PlanStep, PlanTargets, StepTarget


def _plan(status: int, message: str) -> Plan:
    return Plan(request_id='r1', status=status, message=message, form=Plan.FORM_JSON,
                steps=[PlanStep(instruction='push the box', skill='push', target='box')])


def test_an_error_says_its_reason():
    text = format_plan(_plan(Plan.STATUS_INVALID_OUTPUT, 'the server did not follow it'))
    assert text.splitlines()[:2] == ['STATUS_INVALID_OUTPUT r1 (image - 0.000000000)',
                                     '  reason: the server did not follow it']


def test_an_ok_plan_with_a_message_shows_it_as_a_note():
    text = format_plan(_plan(Plan.STATUS_OK, 'steps read from free text'))
    assert text.splitlines()[1:3] == ['  note: steps read from free text',
                                      '  1. push the box  [push box]']


def test_an_ok_plan_without_a_message_shows_no_line_for_it():
    assert format_plan(_plan(Plan.STATUS_OK, '')).splitlines()[1] == \
        '  1. push the box  [push box]'


def test_a_plan_the_grammar_closed_says_so_and_is_not_taken_for_the_models():
    text = '{"steps": [{"instruction": "push the box", "skill": "push", "target": "box"}]}'
    closed = make_result('plan', text, 40, 0.1, 0.5, False, constrained=True)
    mark_closed(closed, 6, '"}]}')
    assert (closed.form, closed.note) == ('constrained_closed', (
        'max_new_tokens ran out: the plan grammar wrote the last 6 of its 40 tokens to close '
        'it, so its last step may hold a skill or target the model did not write; raise '
        'max_new_tokens'))
    whole = make_result('plan', text, 40, 0.1, 0.5, False, constrained=True)
    mark_closed(whole, 0, '')  # nothing forced
    assert (whole.form, whole.note) == ('constrained', '')
    free = make_result('plan', text[:30], 40, 0.1, 0.5, False)
    mark_closed(free, 6, '"}]}')  # not written under the grammar: its own form says what it is
    assert (free.form, free.note) == ('json_truncated', '')

    plan = _plan(Plan.STATUS_OK, closed.note)
    plan.form = Plan.FORM_CONSTRAINED_CLOSED
    assert format_plan(plan).splitlines()[1:3] == [
        f'  note: {closed.note}', '  form: constrained_closed (not the complete plan the model '
        'meant)']


def _boxed(text: str, written: str):
    view = View((640, 480), (0.0, 0.0, 640.0, 480.0), (640, 480))
    result = make_result('plan', text, 60, 0.1, 0.5, False, constrained=True,
                         views=(('', view),))
    assert result.boxes[-1] is not None
    mark_closed(result, 4, written)
    return result.boxes[-1], result.box_problems[-1]


def test_a_box_the_grammar_wrote_numbers_of_is_dropped_with_the_reason():
    step = '{"steps": [{"instruction": "push", "skill": "push", "target": "box", "bbox_2d": '
    assert _boxed(step + '[10, 20, 0, 0]}]}', ', 0, 0]}]}') == (None, CLOSED_BOX)
    # A number the model was writing, ended by the grammar: 40 may have been 405.
    assert _boxed(step + '[10, 20, 30, 40]}]}', ']}]}') == (None, CLOSED_BOX)
    # The model's whole box, then the grammar's closing brackets: the box is the model's.
    box, problem = _boxed(step + '[10, 20, 30, 40]}]}', '}]}')
    assert box is not None and problem == ''


def test_plan_targets_print_each_steps_box_in_one_line():
    targets = PlanTargets(request_id='r7', steps=[
        StepTarget(box=[10.0, 20.5, 30.0, 40.25], camera='wrist'),
        StepTarget(problem='outside the image'), StepTarget()])
    assert format_targets(targets) == ('r7: 1. 10.0 20.5 30.0 40.2 in wrist; '
                                       '2. no box (outside the image); 3. no box')


def test_image_sources_print_each_cameras_image_and_the_skew():
    sources = ImageSources(request_id='r8', task='plan', cameras=['head', 'wrist'], skew=0.0125,
                           images=[Header(frame_id='head_optical', stamp=Time(sec=5, nanosec=1)),
                                   Header(frame_id='', stamp=Time(sec=6))])
    assert format_sources(sources) == ('plan r8: head head_optical 5.000000001, '
                                       'wrist - 6.000000000; skew 0.013 s')

