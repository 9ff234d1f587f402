"""vlm_node on the openai backend when the server refuses a text too long for its model.

A client's long question is that client's error, as in process: answered BAD_INPUT with the
server's reason, and never a fault in /diagnostics, so one client cannot turn the node's level
red. The server is a real HTTP server that a test scripts (sse_server.py), answering as vLLM
does; what other servers answer is in test_remote_failures_units.py.
"""

import json
import uuid

from engine_fixtures import scene
from node_harness import TIMEOUT, call, camera
from sse_server import ScriptedServer
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Query

# vLLM's answer to a prompt of 3931 tokens and max_tokens 96, for a model of 1024 positions.
VLLM_REFUSAL = {'error': {
    'message': "This model's maximum context length is 1024 tokens. However, you requested 96 "
               'output tokens and your prompt contains at least 3931 input tokens, for a total '
               'of at least 4027 tokens. Please reduce the length of the input prompt or the '
               'number of requested output tokens. (parameter=input_tokens, value=3931)',
    'type': 'BadRequestError', 'param': 'input_tokens', 'code': 400}}
REASON = "This model's maximum context length is 1024 tokens"
REMEDY = 'shorten the text, or lower max_new_tokens'


def test_a_text_the_servers_model_cannot_read_is_the_clients_error_not_a_fault(
        start_vlm_node, test_node):
    question = ''.join(uuid.uuid4().hex for _ in range(120))  # ~ a token a character: > 1024
    instruction = ''.join(uuid.uuid4().hex for _ in range(120))
    with ScriptedServer() as server:
        server.play(lambda reply: reply.refuse(400, VLLM_REFUSAL))
        node = start_vlm_node(backend='openai', base_url=server.base_url, model=server.model)
        node.wait_state('active')
        response = call(test_node, Query, '/vlm_node/query', Query.Request(
            question=question, image=rgb_to_image(scene('blue'))))
        assert not response.success and response.answer == '', response
        assert server.base_url in response.message, response.message
        assert REASON in response.message and REMEDY in response.message, response.message
        # With the camera's frame, too: the frame was fine, so it is no fault of the camera.
        frame_id = uuid.uuid4().hex
        node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
        node.instruct(instruction)
        plan = node.plans.wait_for(lambda p: p.instruction == instruction, TIMEOUT, 'its plan')
        assert plan.status == Plan.STATUS_BAD_INPUT and REMEDY in plan.message, plan.message
        assert plan.header.frame_id == frame_id
        values = node.wait_diag(lambda v: v.get('status_bad_input') == '2', TIMEOUT,
                                'both refusals counted')
        asked = [json.dumps(request) for request in server.requests]
    assert (values['errors_model'], values['errors_image'], values['last_error_kind']) == (
        '0', '0', ''), values
    assert values['backend_reachable'] == 'True', values  # the server answered: it is there
    # Each was sent once: the same text would be refused again.
    assert len(asked) == 2 and question in asked[0] and instruction in asked[1]
