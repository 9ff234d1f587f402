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
