"""Server faults, done to a real transformers serve process, and the engine's recovery.

Each fault gives a VlmError whose kind the node answers STATUS_MODEL_ERROR with and whose
message names the server and the cause; after each, the same engine answers again as soon as
the server does, without being reloaded.
"""

import pathlib
import threading

import pytest
from engine_fixtures import PLAN_JSON, TARGETS, scene
from serve_harness import remote_config
from vlm_ros.engine import Request, VlmError, make_engine
from waiting import wait_until

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

PLAN = Request('plan', scene('red'), TARGETS['plan'][0])


@pytest.fixture
def connect(fault_server):
    """Return a factory: remote config fields -> a loaded openai engine on fault_server."""
    engines = []

    def make(**remote):
        engine = make_engine(remote_config(fault_server, **{'probe_period': 0.2, **remote}))
        engine.load()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.unload()


def _fails(engine, request=PLAN, **kwargs) -> VlmError:
    with pytest.raises(VlmError) as info:
        engine.run([request], **kwargs)
    assert engine.config.remote.base_url in str(info.value)
    return info.value


def _recovers(engine) -> None:
    assert engine.run([PLAN])[0].text == PLAN_JSON
    wait_until(lambda: engine.reachable is True, 10.0, 'the server to be reachable again')


def test_stopped_server_refuses_then_recovers(connect, fault_server):
    engine = connect(max_retries=1)
    fault_server.stop()
    error = _fails(engine)
    assert error.kind == 'backend_unreachable'
    assert 'ConnectionRefusedError' in str(error) and '(after 2 attempts)' in str(error)
    wait_until(lambda: engine.reachable is False, 10.0, 'the check to see the server gone')
    fault_server.start()
    _recovers(engine)


def test_blocked_server_times_out_after_retries_then_recovers(connect, fault_server):
    engine = connect(max_retries=1, request_timeout=1.0)
    fault_server.block()
    error = _fails(engine)
    assert error.kind == 'backend_timeout'
    assert 'request_timeout 1 s' in str(error) and '(after 2 attempts)' in str(error)
    assert engine.reachable is False
    fault_server.unblock()
    # The server answers the requests it was frozen with first, one at a time: on a loaded
    # machine that takes longer than this engine waits. A patient engine's answer says it has
    # caught up; then this engine must answer again.
    _recovers(connect())
    _recovers(engine)


def test_cancel_ends_a_request_the_server_never_answers(connect, fault_server):
    engine = connect(request_timeout=60.0, probe_period=3600.0)
    fault_server.block()
    cancel = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.extend(engine.run([PLAN], cancel=cancel)))
    worker.start()
    fault_server.wait_for_request()
    cancel.set()
    worker.join(10.0)  # far less than request_timeout
    assert not worker.is_alive(), 'cancel did not end the request'
    assert results[0].cancelled and results[0].text == ''
    fault_server.unblock()
    _recovers(engine)


def test_server_killed_mid_answer_cuts_it_off_then_recovers(connect, fault_server):
    engine = connect(max_retries=2)
    pieces = []

    def kill_on_first_piece(text):
        pieces.append(text)
        if len(pieces) == 1:
            fault_server.kill()

    error = _fails(engine, on_text=kill_on_first_piece)
    assert error.kind == 'backend_bad_response' and 'cut off' in str(error)
    assert 'attempts' not in str(error)  # text was streamed already: never retried
    assert ''.join(pieces) != PLAN_JSON
    fault_server.start()
    _recovers(engine)


def test_http_500_is_retried_then_recovers(connect, fault_server):
    engine = connect(max_retries=1)
    weights = pathlib.Path(fault_server.model) / 'model.safetensors'
    hidden = weights.with_name('model.hidden')
    weights.rename(hidden)
    try:
        fault_server.reset()  # the next request reloads the model, and cannot
        error = _fails(engine)
    finally:
        hidden.rename(weights)
    assert error.kind == 'backend_http_error'
    assert 'HTTP 500' in str(error) and '(after 2 attempts)' in str(error)
    assert engine.reachable is True  # the server answered, with an error
    _recovers(engine)
