"""vlm_node's lifecycle, run-time parameter validation, signals, and a configure that fails."""

import os
import signal

from engine_fixtures import TARGETS
from node_harness import TIMEOUT, camera, lifecycle_state, set_params, transition

from vlm_ros_msgs.msg import Plan

INSTRUCTION = TARGETS['plan'][0]


def test_manual_lifecycle_with_a_bad_then_good_model(start_vlm_node, test_node, tmp_path,
                                                     trained_tiny):
    good = str(trained_tiny('llava'))
    node = start_vlm_node(autostart=False, model=str(tmp_path / 'missing_model'))
    values = node.wait_state('unconfigured')
    assert values['model_loaded'] == 'False' and values['gc_frozen_objects'] == '0'
    assert lifecycle_state(test_node) == 'unconfigured'

    assert not transition(test_node, 'configure')
    values = node.wait_diag(lambda v: 'missing_model' in v.get('last_error', ''), TIMEOUT,
                            'the configure error in diagnostics')
    assert 'does not exist' in values['last_error']
    assert lifecycle_state(test_node) == 'unconfigured'

    assert all(r.successful for r in set_params(test_node, model=good))
    assert transition(test_node, 'configure')
    values = node.wait_state('inactive')
    # The loaded model and libraries are out of the garbage collector's walks from now on.
    assert values['model_loaded'] == 'True' and int(values['gc_frozen_objects']) > 100000
    refused = set_params(test_node, model='other')[0]
    assert not refused.successful and 'reload' in refused.reason

    assert transition(test_node, 'activate')
    node.wait_state('active')
    frame_id = 'lifecycle'
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a frame')
    node.instruct(INSTRUCTION)
    plan = node.plans.wait_for(lambda p: p.header.frame_id == frame_id, TIMEOUT, 'the plan')
    assert plan.status == Plan.STATUS_OK and plan.text == TARGETS['plan'][1]

    # Not the states said on the way up: the 'unconfigured' of the start, before any model
    # was loaded, would pass the checks of the cleanup at once.
    later = node.state_from_now()
    assert transition(test_node, 'deactivate')
    later('inactive')
    assert transition(test_node, 'cleanup')
    values = later('unconfigured')
    assert values['model_loaded'] == 'False' and values['gc_frozen_objects'] == '0'


def test_cpu_threads_apply_at_configure_and_0_gives_back_the_starting_count(start_vlm_node,
                                                                            test_node):
    starting = int(os.environ['OMP_NUM_THREADS'])  # conftest sets it for every process
    node = start_vlm_node(cpu_threads=starting + 1)
    assert node.wait_state('active')['cpu_threads'] == str(starting + 1)
    refused = set_params(test_node, cpu_threads=0)[0]
    assert not refused.successful and 'reload' in refused.reason
    # Each state as said after its transition: an 'inactive' between autostart's configure
    # and activate, or between deactivate and cleanup, has the first count.
    later = node.state_from_now()
    assert transition(test_node, 'deactivate') and transition(test_node, 'cleanup')
    later('unconfigured')
    assert all(r.successful for r in set_params(test_node, cpu_threads=0))
    later = node.state_from_now()
    assert transition(test_node, 'configure')
    assert later('inactive')['cpu_threads'] == str(starting)


def test_autostart_false_stays_unconfigured(start_vlm_node, test_node):
    node = start_vlm_node(autostart=False)
    assert node.wait_state('unconfigured')['model_loaded'] == 'False'
    assert lifecycle_state(test_node) == 'unconfigured'


def test_runtime_parameters_are_validated(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    bad = set_params(test_node, queue_size=0)[0]
    assert not bad.successful
    template = set_params(test_node, prompt_plan='no placeholder here')[0]
    assert not template.successful and '{instruction}' in template.reason
    transport = set_params(test_node, image_transport='webm')[0]
    assert not transport.successful and 'raw' in transport.reason
    assert all(r.successful for r in set_params(test_node, queue_size=2, max_image_age=1.5))


def test_sigterm_exits_cleanly(start_vlm_node):
    node = start_vlm_node()
    node.wait_state('active')
    code, err = node.stop(signal.SIGTERM)
    assert 'terminate called' not in err
    assert code == 0, err[-3000:]


def test_node_reports_the_mode_and_a_failed_warm_up_says_what_to_set(start_vlm_node, tmp_path):
    # No C++ compiler and an empty compile cache: torch.compile cannot build the decoding step.
    env = {**os.environ, 'CXX': str(tmp_path / 'no-compiler'),
           'TORCHINDUCTOR_CACHE_DIR': str(tmp_path / 'inductor')}
    failed = start_vlm_node(env=env, decode_mode='compiled')
    values = failed.wait_configure_failed('warm up', 'last_error', 120.0)
    assert values['model_loaded'] == 'False'
    assert "set decode_mode to 'eager'" in values['last_error']
    static = start_vlm_node(decode_mode='static')
    values = static.wait_state('active')
    assert values['decode_mode'] == 'static' and values['compiled_graphs'] == '0'
    static.stop()  # one node of this name on the domain: its /diagnostics are the next one's
    graphs = start_vlm_node(decode_mode='graphs')  # on a CPU: the same steps, not captured
    values = graphs.wait_state('active')
    assert values['decode_mode'] == 'graphs' and values['cuda_graphs'] == '0'
