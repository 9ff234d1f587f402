"""The level of /diagnostics from recent faults (node/health.py), on a clock the test turns."""

import pytest
from vlm_ros.engine.remote.probe import ANSWERED, Reach
from vlm_ros.node.health import ERROR, MAX_RECENT, OK, RECUR, WARN, WINDOW, Health


class Clock:
    """A monotonic clock that moves only when the test says."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def health(clock):
    return Health(clock)


def test_a_new_node_with_no_fault_is_ok_when_active(health):
    assert health.assess('active') == (OK, 'active')
    assert health.values() == {'last_error': '', 'last_error_kind': '', 'last_error_age_s': '',
                               'errors_model': 0, 'errors_image': 0, 'errors_camera': 0,
                               'errors_configure': 0}


# The primary states but active, and the transitions between them (/diagnostics reports
# them while one runs: test_node_readiness.py sees configuring).
@pytest.mark.parametrize('state', ['unconfigured', 'inactive', 'finalized', 'configuring',
                                   'activating', 'deactivating', 'cleaningup', 'shuttingdown',
                                   'errorprocessing'])
def test_a_node_that_is_not_active_warns_and_says_it_serves_nothing(health, state):
    assert health.assess(state) == (WARN, f'{state}: not serving requests')


def test_one_fault_warns_and_a_healthy_answer_ends_it_at_once(health, clock):
    health.fault('model', 'cannot reach the server (refused)')
    clock.now += 2.0
    level, why = health.assess('active')
    assert level == WARN and '2.0 s ago' in why and 'model: cannot reach the server' in why
    health.healthy()
    assert health.assess('active') == (OK, 'active')


def test_the_last_error_stays_shown_with_its_growing_age(health, clock):
    health.fault('image', 'data has 10 bytes, 921600 expected')
    health.healthy()
    clock.now += 1.5
    first = health.values()
    clock.now += WINDOW * 100
    later = health.values()
    assert first['last_error'] == later['last_error'] == 'data has 10 bytes, 921600 expected'
    assert first['last_error_kind'] == later['last_error_kind'] == 'image'
    assert first['last_error_age_s'] == '1.5' and later['last_error_age_s'] == '3001.5'
    assert later['errors_image'] == 1 and health.assess('active')[0] == OK


def test_faults_that_recur_with_no_healthy_answer_between_are_an_error(health, clock):
    for _ in range(RECUR - 1):
        health.fault('image', 'corrupt frame')
        clock.now += 1.0
    assert health.assess('active')[0] == WARN
    health.fault('model', 'inference failed')
    level, why = health.assess('active')
    assert level == ERROR and f'{RECUR} faults in the last {WINDOW:g} s' in why
    assert 'model: inference failed' in why
    assert health.values()['errors_image'] == RECUR - 1
    health.healthy()
    assert health.assess('active')[0] == OK


def test_a_healthy_answer_between_faults_keeps_them_from_adding_up(health):
    for _ in range(RECUR * 2):
        health.fault('image', 'corrupt frame')
        health.healthy()
    health.fault('image', 'corrupt frame')
    assert health.assess('active')[0] == WARN
    assert health.values()['errors_image'] == RECUR * 2 + 1


def test_a_fault_older_than_the_window_is_history_without_any_answer(health, clock):
    for _ in range(RECUR):
        health.fault('model', 'inference failed')
    clock.now += WINDOW - 0.1
    assert health.assess('active')[0] == ERROR
    clock.now += 0.2
    assert health.assess('active') == (OK, 'active')
    assert health.values()['errors_model'] == RECUR


def test_faults_spread_wider_than_the_window_never_add_up_to_an_error(health, clock):
    for _ in range(RECUR * 3):
        health.fault('model', 'inference failed')
        clock.now += WINDOW / (RECUR - 1)
        assert health.assess('active')[0] == WARN
    clock.now += WINDOW
    assert health.assess('active')[0] == OK


def test_a_failed_configure_is_an_error_while_unconfigured(health):
    health.fault('configure', 'model /x does not exist')
    level, why = health.assess('unconfigured', configure_error='model /x does not exist')
    assert (level, why) == (ERROR, 'unconfigured: configure failed: model /x does not exist')
    assert health.assess('inactive', configure_error='')[0] == WARN
    # Configured and active: the failure is one fault until the first healthy answer.
    assert health.assess('active')[0] == WARN
    health.healthy()
    assert health.assess('active')[0] == OK
    assert health.values()['last_error'] == 'model /x does not exist'


def test_an_unreachable_server_is_an_error_whatever_came_before(health):
    health.healthy()
    level, why = health.assess('active', backend_reachable=False,
                               backend_checked='cannot reach the server (refused)')
    assert level == ERROR and why.endswith('unreachable: cannot reach the server (refused)')
    assert health.assess('active', backend_reachable=True)[0] == OK
    assert health.assess('active', backend_reachable='unknown')[0] == OK


def test_a_flood_of_faults_keeps_memory_bounded(health):
    for _ in range(MAX_RECENT * 3):
        health.fault('image', 'corrupt frame')
    assert health.current_faults() == MAX_RECENT
    assert health.values()['errors_image'] == MAX_RECENT * 3


def test_an_unknown_fault_kind_is_refused_and_nothing_is_counted(health):
    with pytest.raises(ValueError, match="'disk'"):
        health.fault('disk', 'full')
    assert health.values()['last_error'] == '' and health.assess('active')[0] == OK


def test_a_check_answered_404_warns_until_a_request_is_answered(health):
    """A base_url that is not the API root warns from the first check, until an answer.

    Once a request has been answered, the check's 404 is no longer a problem (REMOTE.md).
    """
    reach = Reach()
    problem = 'GET http://h:8000/models answered HTTP 404: base_url must be the API root'
    assert reach.status() == {'backend_reachable': 'unknown',
                              'backend_checked': 'not checked yet', 'backend_problem': ''}
    reach(True, 'GET /models answered HTTP 404', problem)
    level, why = health.assess('active', **reach.status())
    assert (level, why) == (WARN, f'active: the inference server answers, but {problem}')
    reach(False, 'cannot reach the server (refused)')  # a failed request says nothing of it
    assert reach.status()['backend_problem'] == problem
    reach(True, ANSWERED, '')  # as the engine tells it of an answered request
    assert health.assess('active', **reach.status()) == (OK, 'active')
    reach(True, 'GET /models answered HTTP 404', problem)  # a server without /models
    assert reach.status()['backend_problem'] == ''
