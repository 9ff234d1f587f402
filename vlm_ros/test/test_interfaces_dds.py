"""vlm_ros_msgs pass between two real processes over real DDS (Fast DDS)."""

import uuid

from ros_harness import start_process, stop_process, wait_future

from vlm_ros_msgs.msg import Caption, Plan
from vlm_ros_msgs.srv import Query

TIMEOUT = 30.0


def test_plan_caption_and_query_cross_process(test_node):
    payload = uuid.uuid4().hex
    peer = start_process(['interface_peer.py', payload])
    try:
        plans = test_node.collect(Plan, 'plan')
        captions = test_node.collect(Caption, 'caption')

        plan = plans.wait_for(lambda m: m.request_id == payload, TIMEOUT, 'a Plan')
        assert plan.instruction == f'plan {payload}'
        assert plan.status == Plan.STATUS_OK
        assert plan.header.frame_id == 'camera' and plan.header.stamp.sec == 42
        assert [(s.instruction, s.skill, s.target) for s in plan.steps] == [
            ('pick up the red block', 'pick', 'red block')]
        assert plan.output_tokens == 7

        caption = captions.wait_for(lambda m: m.text == f'caption {payload}', TIMEOUT,
                                    'a Caption')
        assert caption.model == 'peer' and abs(caption.total_time - 0.5) < 1e-6

        client = test_node.node.create_client(Query, 'query')
        assert client.wait_for_service(timeout_sec=TIMEOUT), 'query service never appeared'
        question = f'what is on the table {uuid.uuid4().hex}?'
        request = Query.Request(question=question)
        request.image.header.frame_id = payload
        response = wait_future(client.call_async(request), TIMEOUT, 'the Query response')
        assert response.success
        assert response.answer == f'{payload}:{question}'
        assert response.image_header.frame_id == payload
    finally:
        code, _, err = stop_process(peer)
    assert code == 0, err


# Interface contract v1, as released: v2 (closed-loop plans) only adds; these never change.
V1_FIELDS = {
    'Plan': {'header': 'std_msgs/Header', 'request_id': 'string', 'instruction': 'string',
             'status': 'uint8', 'message': 'string', 'steps': 'sequence<vlm_ros_msgs/PlanStep>',
             'form': 'string', 'text': 'string', 'model': 'string',
             'time_to_first_token': 'float', 'total_time': 'float', 'output_tokens': 'uint32'},
    'Caption': {'header': 'std_msgs/Header', 'text': 'string', 'model': 'string',
                'total_time': 'float'},
    'PlanStep': {'instruction': 'string', 'skill': 'string', 'target': 'string'},
    'Query_Request': {'question': 'string', 'image': 'sensor_msgs/Image',
                      'max_new_tokens': 'uint32'},
    'Query_Response': {'success': 'boolean', 'message': 'string', 'answer': 'string',
                       'image_header': 'std_msgs/Header'},
    'GeneratePlan_Goal': {'instruction': 'string', 'image': 'sensor_msgs/Image'},
    'GeneratePlan_Result': {'plan': 'vlm_ros_msgs/Plan'},
    'GeneratePlan_Feedback': {'partial_text': 'string', 'tokens': 'uint32'},
}


def test_v1_fields_keep_their_names_and_types():
    from vlm_ros_msgs.action import GeneratePlan
    from vlm_ros_msgs.msg import PlanStep

    types = (Plan, Caption, PlanStep, Query.Request, Query.Response, GeneratePlan.Goal,
             GeneratePlan.Result, GeneratePlan.Feedback)
    assert {t.__name__: t.get_fields_and_field_types() for t in types} == V1_FIELDS


def test_closed_loop_constants_are_named():
    from vlm_ros_msgs.msg import PlanProgress, StepFeedback

    assert (StepFeedback.STATUS_RUNNING, StepFeedback.STATUS_SUCCEEDED,
            StepFeedback.STATUS_FAILED) == (0, 1, 2)
    assert (PlanProgress.STATE_EXECUTING, PlanProgress.STATE_DONE, PlanProgress.STATE_FAILED,
            PlanProgress.STATE_PREEMPTED) == (0, 1, 2, 3)
