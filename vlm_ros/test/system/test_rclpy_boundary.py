"""A request rclpy's own handlers cannot read is refused, and the process serves on.

Every node has rclpy's parameter services, whose handlers read a request before any of this
project's code sees it. One that names a ParameterValue type that is no ParameterType (any
peer on the DDS domain can send one) raised inside rclpy, and the process ended, exit 1.
"""

import uuid

import rclpy.parameter
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from node_harness import call, set_ok
from rcl_interfaces.msg import Parameter, ParameterValue
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically

NOT_A_TYPE = 42  # rcl_interfaces/ParameterType ends at 9


def _malformed(name: str) -> Parameter:
    return Parameter(name=name, value=ParameterValue(type=NOT_A_TYPE))


def test_a_parameter_of_no_known_type_is_refused_and_the_node_serves_on(start_vlm_node,
                                                                         test_node):
    node = start_vlm_node()
    node.wait_state('active')
    bad = _malformed('max_new_tokens')
    good = rclpy.parameter.Parameter('max_new_tokens', value=41).to_parameter_msg()
    said = call(test_node, SetParameters, '/vlm_node/set_parameters',
                SetParameters.Request(parameters=[good, bad])).results
    assert [result.successful for result in said] == [False, False]  # refused whole
    assert said[0].reason == ("malformed request: parameter 'max_new_tokens' has a value of "
                              'type 42, which is no ParameterType (0 to 9)'), said[0].reason
    atomic = call(test_node, SetParametersAtomically, '/vlm_node/set_parameters_atomically',
                  SetParametersAtomically.Request(parameters=[bad])).result
    assert not atomic.successful and 'malformed request' in atomic.reason, atomic.reason
    # A transition id no lifecycle has is rclpy's to refuse too.
    unknown = ChangeState.Request(transition=Transition(id=201, label=uuid.uuid4().hex))
    assert not call(test_node, ChangeState, '/vlm_node/change_state', unknown).success

    # Alive and unchanged: the state, a value set now and read back, the log's reason.
    assert call(test_node, GetState, '/vlm_node/get_state',
                GetState.Request()).current_state.label == 'active'
    # An unset value (type NOT_SET) is refused: rclpy would undeclare the parameter.
    unset = call(test_node, SetParameters, '/vlm_node/set_parameters', SetParameters.Request(
        parameters=[Parameter(name='skills')])).results
    assert not unset[0].successful and 'no value given' in unset[0].reason, unset[0].reason
    # The good value sent beside the malformed one was not set: rclpy sets them one by one.
    kept = call(test_node, GetParameters, '/vlm_node/get_parameters',
                GetParameters.Request(names=['max_new_tokens'])).values
    assert kept[0].integer_value != 41
    set_ok(test_node, max_new_tokens=37, skills=['grasp_it'])
    got = call(test_node, GetParameters, '/vlm_node/get_parameters',
               GetParameters.Request(names=['max_new_tokens', 'skills'])).values
    assert (got[0].integer_value, list(got[1].string_array_value)) == (37, ['grasp_it'])
    assert node.proc.poll() is None
    log = node.log_text()
    assert 'refused a malformed request: parameter' in log and 'Traceback' not in log, log
