"""vlm_node on the openai backend when its server fails, and with an API key.

The server is a real transformers serve process (fault_server); the node is never restarted.
What a server sends inside an answer (past max_tokens, keep-alive comments only, a plan not in
the schema) comes from a real HTTP server that a test scripts (sse_server.py).
"""

import os
import signal
import time
import uuid

from diagnostic_msgs.msg import DiagnosticStatus
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, call, camera, diag_values, set_ok, transition
from ros_harness import start_process, stop_process, wait_future
from serve_harness import remote_config
from sse_server import ScriptedServer
from vlm_ros.compat import ActionClient
from vlm_ros.engine import Request, make_engine
from vlm_ros.node.image_conversion import rgb_to_image
from waiting import wait_until

from vlm_ros_msgs.action import GeneratePlan
from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Query

INSTRUCTION = TARGETS['plan'][0]


def _remote_node(start_vlm_node, server, **params):
    node = start_vlm_node(backend='openai', base_url=server.base_url, model=server.model,
                          **params)
    node.wait_state('active')
    return node


def _caught_up(server) -> None:
    """Wait until server has answered what came before: it answers a patient request.

    transformers serve generates one answer at a time, in the order the requests came.
    """
    engine = make_engine(remote_config(server, probe_period=3600.0))  # request_timeout 30 s
    engine.load()
    try:
        asked = Request('vqa', scene('blue'), TARGETS['vqa'][0])
        assert engine.run([asked])[0].text == TARGETS['vqa'][1]
    finally:
        engine.unload()


def test_openai_backend_runs_where_torch_and_transformers_cannot_be_imported(
        start_vlm_node, tiny_server, tmp_path):
    """A robot that sends all inference to a server needs neither torch nor transformers."""
    for name in ('torch', 'transformers'):
        (tmp_path / name).mkdir()
        (tmp_path / name / '__init__.py').write_text(
            f'raise ImportError("{name} is not installed on this robot (test)")\n')
    env = {**os.environ, 'PYTHONPATH': f'{tmp_path}{os.pathsep}{os.environ["PYTHONPATH"]}'}
    node = start_vlm_node(env=env, backend='openai', base_url=tiny_server.base_url,
                          model=tiny_server.model)
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1], plan.message

    code, err = node.stop()
    assert code == 0, err[-3000:]

    # The same environment really has no torch: the in-process backend cannot load there.
    blocked = start_vlm_node(env=env, backend='transformers')
    blocked.wait_configure_failed('needs torch and transformers', 'last_error')


def test_a_server_that_echoes_the_key_never_gets_it_into_any_output(start_vlm_node):
    secret = 'sk-' + uuid.uuid4().hex
    echo = start_process(['echo_server.py'])
    try:
        base_url = f'http://127.0.0.1:{echo.stdout.readline().strip()}/v1'
        node = start_vlm_node(env={**os.environ, 'VLM_TEST_KEY': secret}, backend='openai',
                              base_url=base_url, api_key_env='VLM_TEST_KEY', max_retries=0)
        node.wait_state('active')
        frame_id = uuid.uuid4().hex
        node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
        node.instruct(INSTRUCTION)
        plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
        assert plan.status == Plan.STATUS_MODEL_ERROR and 'HTTP 401' in plan.message
        assert 'Bearer <' in plan.message  # the echo arrived, redacted
        values = node.wait_diag(lambda v: 'HTTP 401' in v.get('backend_checked', '') and
                                'HTTP 401' in v.get('last_error', ''), TIMEOUT, 'the 401s')
        code, err = node.stop()
        assert code == 0, err[-3000:]
        outputs = [plan.message, plan.text, *values.values(), err]
        assert not [text for text in outputs if secret in text or secret[3:15] in text]
    finally:
        stop_process(echo, signal.SIGTERM)


def test_server_killed_mid_request_then_the_next_instruction_succeeds(start_vlm_node,
                                                                      fault_server):
    node = _remote_node(start_vlm_node, fault_server, max_retries=1)
    node.wait_diag(lambda v: v.get('backend_reachable') == 'True', TIMEOUT, 'reachable')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')

    fault_server.block()
    node.instruct(INSTRUCTION)
    fault_server.wait_for_request()  # the request sits in the frozen server's socket
    fault_server.kill()
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_MODEL_ERROR, plan.message
    assert fault_server.base_url in plan.message and 'ConnectionResetError' in plan.message
    values = node.wait_diag(lambda v: v.get('backend_reachable') == 'False', TIMEOUT,
                            'the server seen as unreachable')
    assert fault_server.base_url in values['last_error'] and values['state'] == 'active'

    later = node.diag_from_now()  # not the message that said 'reachable' at the start
    fault_server.start()
    later(lambda v: v.get('backend_reachable') == 'True', TIMEOUT, 'reachable again')
    node.instruct(INSTRUCTION)  # the trained instruction: the plan must be the trained one
    again = node.plans.wait_for(lambda p: p.request_id != plan.request_id, TIMEOUT, 'a plan')
    assert again.status == Plan.STATUS_OK and again.text == TARGETS['plan'][1], again.message
    assert node.proc.poll() is None


def test_blocked_server_answers_model_error_then_recovers(start_vlm_node, fault_server,
                                                          test_node):
    node = _remote_node(start_vlm_node, fault_server, max_retries=0, request_timeout=5.0)
    fault_server.block()
    try:
        response = call(test_node, Query, '/vlm_node/query', Query.Request(
            question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    finally:
        fault_server.unblock()
    assert not response.success and 'request_timeout 5 s' in response.message
    # The server answers the next query only after the one it was frozen in: on a loaded
    # machine that takes longer than the node waits. A patient client's answer says it has.
    _caught_up(fault_server)
    response = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert response.success and response.answer == TARGETS['vqa'][1], response.message
    assert node.proc.poll() is None


def test_action_goal_cancelled_while_the_server_is_silent(start_vlm_node, fault_server,
                                                          test_node):
    _remote_node(start_vlm_node, fault_server, request_timeout=60.0)
    client = ActionClient(test_node.node, GeneratePlan, '/vlm_node/generate_plan')
    assert client.wait_for_server(timeout_sec=TIMEOUT)
    fault_server.block()
    try:
        goal = GeneratePlan.Goal(instruction=INSTRUCTION, image=rgb_to_image(scene('blue')))
        handle = wait_future(client.send_goal_async(goal), TIMEOUT, 'goal acceptance')
        fault_server.wait_for_request()
        wait_future(handle.cancel_goal_async(), TIMEOUT, 'the cancel response')
        plan = wait_future(handle.get_result_async(), 10.0, 'the result').result.plan
    finally:
        fault_server.unblock()
        client.destroy()
    assert plan.status == Plan.STATUS_CANCELLED, plan.message


def test_max_concurrency_requests_are_at_the_server_together(start_vlm_node, fault_server,
                                                             test_node):
    node = _remote_node(start_vlm_node, fault_server, max_concurrency=2)
    client = test_node.node.create_client(Query, '/vlm_node/query')
    assert client.wait_for_service(timeout_sec=TIMEOUT)
    fault_server.block()
    try:
        futures = [client.call_async(Query.Request(question=TARGETS['vqa'][0],
                                                   image=rgb_to_image(scene('blue'))))
                   for _ in range(2)]
        fault_server.wait_for_request(count=2)
        node.wait_diag(lambda v: v.get('requests_in_progress') == '2', TIMEOUT, 'two served')
    finally:
        fault_server.unblock()
    for future in futures:
        response = wait_future(future, TIMEOUT, 'a query response')
        assert response.success and response.answer == TARGETS['vqa'][1], response.message
    test_node.node.destroy_client(client)


def test_api_key_comes_from_the_environment_and_is_never_shown(start_vlm_node, tiny_server,
                                                               test_node, monkeypatch):
    key = f'sk-vlm-node-{uuid.uuid4().hex}'
    monkeypatch.setenv('VLM_NODE_TEST_KEY', key)  # the node process inherits it
    # device is the in-process backend's: set here, it is named as having no effect.
    node = _remote_node(start_vlm_node, tiny_server, api_key_env='VLM_NODE_TEST_KEY',
                        device='cuda')
    response = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert response.success and response.answer == TARGETS['vqa'][1], response.message
    values = node.wait_diag(lambda v: int(v.get('status_ok', 0)) >= 1, TIMEOUT, 'ok counted')
    assert key not in str(values)
    code, err = node.stop()
    assert code == 0 and 'loaded' in err and key not in err  # the node's log output
    assert 'no effect: device:=cuda (the openai backend does not use it)' in err, err


def test_a_base_url_without_v1_warns_before_any_request_and_requests_say_why(
        start_vlm_node, tiny_server, test_node):
    root = tiny_server.base_url.removesuffix('/v1')  # the usual slip: the server, not its API
    node = start_vlm_node(backend='openai', base_url=root, model=tiny_server.model,
                          max_retries=0)
    msg = node.diagnostics.wait_for(
        lambda m: diag_values(m).get('state') == 'active' and
        'API root' in diag_values(m).get('backend_problem', ''), TIMEOUT,
        'the problem found by the reachability check, once active')
    status = next(s for s in msg.status if s.name == '/vlm_node: vlm')
    assert status.level == DiagnosticStatus.WARN, status.message
    assert status.message.startswith(
        f'active: the inference server answers, but GET {root}/models answered HTTP 404: '
        'base_url must be the API root, up to and including /v1'), status.message
    response = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert not response.success and 'HTTP 404' in response.message
    assert 'base_url must be the API root, up to and including /v1' in response.message


def test_a_remote_model_the_server_does_not_list_warns_before_any_request_until_fixed(
        start_vlm_node, tiny_server, test_node):
    wrong = f'llava-{uuid.uuid4().hex[:8]}'  # not the name the server serves its model under
    node = start_vlm_node(backend='openai', base_url=tiny_server.base_url,
                          model=tiny_server.model, remote_model=wrong, max_retries=0)
    problem = f"(GET /models), not remote_model '{wrong}'"
    msg = node.diagnostics.wait_for(
        lambda m: diag_values(m).get('state') == 'active' and
        diag_values(m).get('backend_problem', '').endswith(problem), TIMEOUT,
        'the unlisted model found by the reachability check')
    status = next(s for s in msg.status if s.name == '/vlm_node: vlm')
    assert status.level == DiagnosticStatus.WARN, status.message
    assert status.message.startswith(  # what the server lists: its one model, by its path
        'active: the inference server answers, but '
        f"{tiny_server.base_url} serves '{tiny_server.model[:60]}"), status.message
    assert problem in status.message, status.message
    response = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert not response.success and 'HTTP 400' in response.message, response.message
    assert f"requested '{wrong}'" in response.message  # transformers serve's words for it
    node.wait_diag(lambda v: wrong in v.get('last_error', '') and
                   v.get('backend_problem', '').endswith(problem), TIMEOUT,
                   'the problem kept after a failed request')

    assert transition(test_node, 'deactivate') and transition(test_node, 'cleanup')
    set_ok(test_node, remote_model='')  # requests name the model parameter, which it lists
    assert transition(test_node, 'configure') and transition(test_node, 'activate')
    node.wait_diag(lambda v: v.get('state') == 'active' and
                   v.get('backend_checked') == 'GET /models answered' and
                   v.get('backend_problem') == '', TIMEOUT, 'the problem gone')
    response = call(test_node, Query, '/vlm_node/query', Query.Request(
        question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue'))))
    assert response.success and response.answer == TARGETS['vqa'][1], response.message


def test_unset_key_variable_fails_configure_naming_it(start_vlm_node, tiny_server):
    name = f'VLM_ABSENT_{uuid.uuid4().hex[:8].upper()}'
    node = start_vlm_node(backend='openai', base_url=tiny_server.base_url, api_key_env=name)
    values = node.wait_configure_failed(name, 'last_error')
    assert values['model_loaded'] == 'False'


def test_a_plan_the_server_did_not_write_in_the_skills_says_so_until_the_skills_fit(
        start_vlm_node, tiny_server, test_node):
    """A server that ignores response_format (transformers serve): the Plan names the fallback."""
    node = _remote_node(start_vlm_node, tiny_server, skills=['push'])  # it picks and places
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert (plan.status, plan.form, len(plan.steps)) == (Plan.STATUS_OK, Plan.FORM_JSON, 2)
    assert plan.message == f'{tiny_server.base_url} did not follow the plan schema ' \
        '(response_format): steps read from free text'
    set_ok(test_node, skills=['pick', 'place'])  # now the trained plan follows the schema
    node.instruct(INSTRUCTION)
    again = node.plans.wait_for(lambda p: p.request_id != plan.request_id, TIMEOUT, 'a plan')
    assert (again.status, again.form, again.message) == (Plan.STATUS_OK, Plan.FORM_CONSTRAINED,
                                                         ''), again


def test_a_query_is_answered_within_its_max_new_tokens_when_the_server_ignores_them(
        start_vlm_node, test_node):
    word = uuid.uuid4().hex[:8] + ' '
    with ScriptedServer() as server:
        server.play(lambda reply: reply.flood(word))
        _remote_node(start_vlm_node, server)
        response = call(test_node, Query, '/vlm_node/query', Query.Request(
            question=TARGETS['vqa'][0], image=rgb_to_image(scene('blue')), max_new_tokens=5))
    assert response.success and response.answer == word * 5, response.message[:300]
    assert response.message == f'{server.base_url} ignored max_tokens 5: it sent more, and ' \
        'the answer was cut there'


def test_a_plan_outside_the_schema_says_no_steps_were_read_and_the_next_plans_again(
        start_vlm_node):
    text = f'I see no {uuid.uuid4().hex[:8]} to pick up.'
    again = f'{INSTRUCTION} #{uuid.uuid4().hex[:8]}'
    with ScriptedServer() as server:
        server.play(lambda reply: reply.piece(text) and reply.finish(),
                    lambda reply: reply.piece(TARGETS['plan'][1]) and reply.finish())
        node = _remote_node(start_vlm_node, server)
        frame_id = uuid.uuid4().hex
        node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
        node.instruct(INSTRUCTION)
        plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
        node.instruct(again)  # the next answer that follows the schema is a plan again
        valid = node.answers([again])[0]
    assert (plan.status, plan.text, len(plan.steps)) == (Plan.STATUS_INVALID_OUTPUT, text, 0)
    assert plan.message == f'model output invalid: {server.base_url} did not follow the plan ' \
        'schema (response_format); no plan steps could be parsed'
    assert (valid.status, valid.text, len(valid.steps)) == (Plan.STATUS_OK, TARGETS['plan'][1], 2)


def test_a_server_sending_only_keep_alive_comments_times_out_and_frees_its_slot(
        start_vlm_node):
    with ScriptedServer() as server:
        server.play(lambda reply: reply.keep_alive(), lambda reply: reply.piece(
            TARGETS['plan'][1]) and reply.finish())
        node = _remote_node(start_vlm_node, server, max_concurrency=1, max_retries=0,
                            request_timeout=3.0)
        frame_id = uuid.uuid4().hex
        node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
        node.wait_first_frame()  # else a late first frame answers NO_IMAGE
        node.instruct(INSTRUCTION)
        plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
        assert plan.status == Plan.STATUS_MODEL_ERROR, plan.message
        assert 'request_timeout 3 s' in plan.message and server.base_url in plan.message
        again = _next_answered(node, server)
    assert (again.status, again.text) == (Plan.STATUS_OK, TARGETS['plan'][1]), again.message


def _next_answered(node, server) -> Plan:
    """Send the instruction until the server's answer makes a plan; return that plan.

    The one slot is free again: each instruction reaches the server, which answers at once.
    An answer later than request_timeout is a loaded machine's (the server had the request):
    the instruction is sent again, within a liveness bound.
    """
    deadline = time.monotonic() + TIMEOUT
    while True:
        known, asked = {p.request_id for p in node.plans.items()}, len(server.requests)
        node.instruct(INSTRUCTION)
        again = node.plans.wait_for(lambda p, known=known: p.request_id not in known, TIMEOUT,
                                    'the next plan')
        if again.status != Plan.STATUS_MODEL_ERROR or time.monotonic() > deadline:
            return again
        assert 'no answer within request_timeout 3 s' in again.message, again.message
        wait_until(lambda asked=asked: len(server.requests) > asked, TIMEOUT,
                   'the request at the server')
