"""How vlm_client and vlm_replay --echo print a Plan: the reason or the note, and the steps."""

from vlm_ros.node.messages import format_plan

from vlm_ros_msgs.msg import Plan, PlanStep


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
