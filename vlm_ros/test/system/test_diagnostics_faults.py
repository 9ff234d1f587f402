"""The level of vlm_node's /diagnostics follows its faults and ends with them (node/health.py).

Each fault is made for real (corrupt camera frames, an inference server that is down, a model
that does not exist) and each is fixed while the node runs: the level must rise, say why,
and come back to OK with the first healthy answer, while the last error stays shown as history.
"""

import uuid

from diagnostic_msgs.msg import DiagnosticStatus
from engine_fixtures import TARGETS, scene
from node_harness import TIMEOUT, call, camera, set_ok, transition
from vlm_ros.node.health import RECUR, WINDOW
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.msg import Plan
from vlm_ros_msgs.srv import Query

INSTRUCTION = TARGETS['plan'][0]
LEVELS = {DiagnosticStatus.OK: 'OK', DiagnosticStatus.WARN: 'WARN',
          DiagnosticStatus.ERROR: 'ERROR'}


def _status(msg, node: str = '/vlm_node'):
    """Return (level name, message, values) of node's status in a DiagnosticArray."""
    for status in msg.status:
        if status.name == f'{node}: vlm':
            return (LEVELS.get(status.level, status.level), status.message,
                    {kv.key: kv.value for kv in status.values})
    return None, '', {}


def _wait_level(node, level: str, predicate, what: str) -> tuple:
    """Wait for a status at level whose values satisfy predicate; return (message, values)."""
    msg = node.diagnostics.wait_for(
        lambda m: _status(m)[0] == level and predicate(_status(m)[2]), TIMEOUT,
        f'{level} with {what}')
    return _status(msg)[1:]


def _plan(node, frame_id: str = '') -> Plan:
    """Send the trained instruction and return its plan (the next one: one at a time)."""
    before = {plan.request_id for plan in node.plans.items()}
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.request_id not in before, TIMEOUT, 'the plan')
    assert not frame_id or plan.header.frame_id == frame_id, plan.header.frame_id
    return plan


def _corrupt(frame_id: str):
    """Make camera Images whose data is shorter than height * step, as a broken driver sends."""
    def make(stamp):
        msg = rgb_to_image(scene('red'))
        msg.data = bytes(msg.data)[:len(msg.data) // 2]
        msg.header.stamp, msg.header.frame_id = stamp, frame_id
        return msg
    return make


def test_corrupt_frames_warn_then_error_and_healthy_frames_end_it(start_vlm_node):
    node = start_vlm_node()
    node.wait_state('active')
    _wait_level(node, 'OK', lambda v: v['state'] == 'active', 'the active node')
    bad = uuid.uuid4().hex
    node.stream(_corrupt(bad)).wait_for(lambda m: True, TIMEOUT, 'a corrupt frame')

    plan = _plan(node, bad)
    assert plan.status == Plan.STATUS_BAD_INPUT, plan.message
    why, values = _wait_level(node, 'WARN', lambda v: v['errors_image'] == '1', 'one fault')
    assert why.startswith('active: a fault') and 'image: ' in why, why
    assert values['last_error'] == plan.message and values['last_error_kind'] == 'image'
    for _ in range(RECUR - 1):
        assert _plan(node, bad).status == Plan.STATUS_BAD_INPUT
    why, values = _wait_level(node, 'ERROR', lambda v: int(v['errors_image']) == RECUR,
                              'the recurring faults')
    assert f'{RECUR} faults in the last' in why and 'no answer OK since' in why, why
    assert int(values['frames_invalid']) >= 1

    node.stop_stream()
    good = uuid.uuid4().hex
    node.stream(camera(good)).wait_for(lambda m: True, TIMEOUT, 'a good frame')
    # A corrupt frame still on its way is the latest until the first good one arrives.
    answered = [_plan(node)]
    while answered[-1].header.frame_id == bad and len(answered) < 20:
        answered.append(_plan(node))
    assert answered[-1].header.frame_id == good and answered[-1].status == Plan.STATUS_OK
    why, values = _wait_level(node, 'OK', lambda v: v['status_ok'] == '1', 'the OK answer')
    assert why.startswith('active;'), why
    assert values['last_error'] == plan.message and values['last_error_kind'] == 'image'
    assert int(values['errors_image']) == RECUR + len(answered) - 1
    # The fault is history: shown on, older each second, with the level OK.
    age = float(values['last_error_age_s'])
    _wait_level(node, 'OK', lambda v: v['last_error_kind'] == 'image' and
                float(v['last_error_age_s']) > age, 'an older fault')
    # A client's blank question is its own error, not a fault of the camera: the level stays.
    blank = call(node.test_node, Query, '/vlm_node/query', Query.Request(question='  '))
    assert not blank.success and blank.message.endswith('vqa needs a non-empty question')
    _, after = _wait_level(node, 'OK', lambda v: v['status_bad_input'] ==
                           str(int(values['status_bad_input']) + 1), 'the refused question')
    assert after['errors_image'] == values['errors_image']
    # So is an instruction too long for the model's positions, though a camera frame came
    # with it; the instruction sent beside it (batched with it or not) is answered.
    long_text = ''.join(uuid.uuid4().hex for _ in range(60))  # ~ a token a character: > 1024
    before = {p.request_id for p in node.plans.items()}
    node.instruct(long_text)
    node.instruct(INSTRUCTION)
    too_long = node.plans.wait_for(lambda p: p.instruction == long_text, TIMEOUT, 'its plan')
    assert too_long.status == Plan.STATUS_BAD_INPUT, too_long.message
    assert 'the 1024 positions the model reads; shorten the text' in too_long.message
    assert too_long.header.frame_id == good  # answered from the camera's frame
    beside = node.plans.wait_for(lambda p: p.instruction == INSTRUCTION and
                                 p.request_id not in before, TIMEOUT, 'the one beside it')
    assert beside.status == Plan.STATUS_OK, beside.message
    _, later = _wait_level(node, 'OK', lambda v: v['status_bad_input'] ==
                           str(int(after['status_bad_input']) + 1), 'the refused instruction')
    assert later['errors_image'] == values['errors_image'], later
    assert later['last_error'] == plan.message, later  # still the camera's, as history


def test_a_camera_that_gives_no_frame_is_a_fault_until_one_comes(start_vlm_node):
    """Every plan failed for want of a frame (a driver that stopped), and /diagnostics said OK."""
    node = start_vlm_node(wait_for_image=0.5)
    node.wait_state('active')
    _wait_level(node, 'OK', lambda v: v['state'] == 'active', 'the active node')
    missed = _plan(node)
    assert missed.status == Plan.STATUS_NO_IMAGE, missed
    why, values = _wait_level(node, 'WARN', lambda v: v['errors_camera'] == '1', 'one fault')
    assert why.startswith('active: a fault') and 'no answer OK since: camera: ' in why, why
    assert (values['last_error'], values['last_error_kind']) == (missed.message, 'camera')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    node.wait_diag(lambda v: int(v['frames_received']) > 0, TIMEOUT, 'the frame received')
    assert _plan(node, frame_id).status == Plan.STATUS_OK
    why, values = _wait_level(node, 'OK', lambda v: v['status_ok'] == '1', 'the OK answer')
    assert why == 'active; 2 requests served' and values['errors_camera'] == '1', why


def test_server_outage_is_an_error_until_it_is_back_and_answers(start_vlm_node, fault_server):
    fault_server.stop()  # its port is closed: the node starts during an outage
    node = start_vlm_node(backend='openai', base_url=fault_server.base_url,
                          model=fault_server.model)
    node.wait_state('active')
    why, values = _wait_level(node, 'ERROR', lambda v: v.get('backend_reachable') == 'False',
                              'the server unreachable')
    assert why.startswith('active: the inference server is unreachable: '), why
    assert values['last_error_kind'] == 'model' and fault_server.base_url in values['last_error']
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    failed = _plan(node, frame_id)
    assert failed.status == Plan.STATUS_MODEL_ERROR, failed.message
    node.wait_diag(lambda v: v['last_error'] == failed.message and
                   v['status_model_error'] == '1', TIMEOUT, 'the model error, counted')

    fault_server.start()
    # Reachable again, the outage is over, but its two faults (the server unreachable, the
    # model error) are not: WARN until an answer is OK, neither ERROR nor OK. Unless the
    # restart took longer than WINDOW (it takes about 10 s; a loaded machine may take more):
    # then they are history, and the rule says OK.
    level, why, values = _status(node.diagnostics.wait_for(
        lambda m: _status(m)[2].get('backend_reachable') == 'True', TIMEOUT, 'reachable again'))
    age = float(values['last_error_age_s'])  # read a moment apart from the level
    if age < WINDOW - 0.5:
        assert level == 'WARN' and why.startswith('active: a fault ') and \
            'no answer OK since: model: ' in why, (level, why)
    elif age > WINDOW + 0.5:  # 'active; 1 requests served': the failed plan is counted
        assert (level, why.split(';')[0]) == ('OK', 'active'), (level, why, age)
    assert _plan(node, frame_id).status == Plan.STATUS_OK
    why, values = _wait_level(node, 'OK', lambda v: v['status_ok'] == '1', 'the OK answer')
    assert why.startswith('active;') and values['backend_reachable'] == 'True', why
    assert values['last_error'] == failed.message and int(values['errors_model']) >= 2


def test_failed_configure_is_an_error_until_a_configure_loads_the_model(start_vlm_node,
                                                                        test_node, tmp_path,
                                                                        trained_tiny):
    missing = str(tmp_path / f'no_model_{uuid.uuid4().hex[:8]}')
    node = start_vlm_node(model=missing)  # autostart: configure fails at start-up
    why, values = _wait_level(node, 'ERROR', lambda v: v['state'] == 'unconfigured' and
                              v['configure_error'], 'the failed configure')
    assert why.startswith('unconfigured: configure failed: ') and missing in why, why
    assert missing in values['configure_error'] and values['errors_configure'] == '1'

    set_ok(test_node, model=str(trained_tiny('llava')))
    assert transition(test_node, 'configure')
    why, values = _wait_level(node, 'WARN', lambda v: v['state'] == 'inactive', 'configured')
    assert why.startswith('inactive: not serving requests'), why
    assert values['configure_error'] == '' and missing in values['last_error']
    assert transition(test_node, 'activate')
    # OK from the first message that says active: the configure that loaded the model ended
    # the configure fault, with no window to wait out and no answer needed.
    first = node.diagnostics.wait_for(lambda m: _status(m)[2].get('state') == 'active',
                                      TIMEOUT, 'active')
    level, why, values = _status(first)
    assert (level, why) == ('OK', 'active; 0 requests served'), (level, why)
    assert values['last_error_kind'] == 'configure' and values['configure_error'] == ''
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    assert _plan(node, frame_id).status == Plan.STATUS_OK
    _wait_level(node, 'OK', lambda v: v['status_ok'] == '1', 'the OK answer counted')
