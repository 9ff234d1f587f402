"""The openai backend against a real server (transformers serve): in-process answers, remotely.

The server runs the same trained tiny LLaVA with greedy decoding, so every answer must equal the
in-process one token for token, although the image travels as a JPEG.
"""

import dataclasses
import math
import threading
import uuid

import numpy as np
import pytest
from engine_fixtures import PLAN_JSON, TARGETS, scene
from serve_harness import remote_config
from vlm_ros.engine import EngineConfig, Request, VlmError, make_engine
from vlm_ros.engine.local import VlmEngine
from waiting import wait_until

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


@pytest.fixture(scope='module')
def local(trained_tiny):
    # Plans under the plan schema on both sides (constrain_plans 'auto'): written under its
    # grammar here, asked of the server as response_format and checked against it there.
    engine = VlmEngine(EngineConfig(model=str(trained_tiny('llava')), device='cpu',
                                    dtype='float32', max_new_tokens=96))
    engine.load()
    yield engine
    engine.unload()


@pytest.fixture(scope='module')
def remote(tiny_server):
    engine = make_engine(remote_config(tiny_server, max_concurrency=2, probe_period=0.2))
    engine.load()
    yield engine
    engine.unload()


def _requests():
    return [Request('caption', scene('red')), Request('vqa', scene('blue'), TARGETS['vqa'][0]),
            Request('plan', scene('red'), TARGETS['plan'][0])]


def test_answers_equal_the_in_process_ones(local, remote):
    for request in _requests():
        there, here = remote.run([request])[0], local.run([request])[0]
        assert there.text == here.text == TARGETS[request.task][1]
        assert (there.steps, there.valid, there.form) == (here.steps, here.valid, here.form)
        assert there.output_tokens == here.output_tokens  # the server's usage count
        assert 0 < there.time_to_first_token <= there.total_time and not there.cancelled


def test_a_batch_goes_out_concurrently_and_keeps_its_order(remote):
    results = remote.run(_requests())
    assert [r.text for r in results] == [TARGETS[task][1] for task in ('caption', 'vqa', 'plan')]
    assert results[2].valid and results[2].form == 'constrained'


@pytest.mark.parametrize('mode', ['auto', 'on', 'off'])
def test_a_server_that_ignores_the_plan_schema_is_named_and_on_refuses_its_plan(tiny_server,
                                                                                  mode):
    # The trained plan picks and places: outside skills [push], so it cannot follow the schema.
    config = dataclasses.replace(remote_config(tiny_server), skills=('push',),
                                 constrain_plans=mode)
    engine = make_engine(config)
    engine.load()
    try:
        result = engine.run([Request('plan', scene('red'), TARGETS['plan'][0])])[0]
    finally:
        engine.unload()
    assert result.text == PLAN_JSON and result.form == 'json'
    assert len(result.steps) == (0 if mode == 'on' else 2)  # 'on' passes no step of it on
    if mode == 'off':
        assert (result.valid, result.note) == (True, '')
        return
    assert f'{tiny_server.base_url} did not follow the plan schema' in result.note
    assert result.valid is (mode == 'auto')
    # It was asked: transformers serve logs (once per set of fields) that it ignored both.
    ignored = [line for line in tiny_server.log_path.read_text().splitlines()
               if 'Ignoring unsupported fields' in line]
    assert any('response_format' in line and 'logprobs' in line for line in ignored), ignored
    assert all(math.isnan(value) for value in result.confidence)  # no logprobs came back


def test_streaming_concatenation_equals_result(remote):
    pieces = []
    result = remote.run([_requests()[2]], on_text=pieces.append)[0]
    assert len(pieces) > 1
    assert ''.join(pieces) == result.text == PLAN_JSON


def test_cancel_closes_the_stream(remote):
    cancel = threading.Event()
    pieces = []

    def cancel_after_first(text):
        pieces.append(text)
        cancel.set()

    result = remote.run([_requests()[2]], on_text=cancel_after_first, cancel=cancel)[0]
    assert result.cancelled and result.text == ''.join(pieces)
    assert result.output_tokens <= 2 < remote.run([_requests()[2]])[0].output_tokens


def test_per_request_token_limit(remote):
    request = _requests()[2]
    request.max_new_tokens = 3
    assert remote.run([request])[0].output_tokens == 3


def test_reachability_and_diagnostic_values(remote, tiny_server):
    wait_until(lambda: remote.reachable is True, 10.0, 'a reachability check')
    status = remote.status()
    assert status['base_url'] == status['device'] == tiny_server.base_url
    assert remote.model_name == tiny_server.model and remote.concurrency == 2


def test_bad_input_fails_before_any_request(remote, tiny_server):
    with pytest.raises(VlmError, match='HxWx3') as info:
        remote.run([Request('caption', np.zeros((4, 4), np.uint8))])
    assert info.value.kind == 'bad_input'
    with pytest.raises(VlmError, match='on_text streams a single request'):
        remote.run(_requests()[:2], on_text=print)
    engine = make_engine(remote_config(tiny_server, base_url='127.0.0.1:8000/v1'))
    with pytest.raises(VlmError, match='http:// or https://'):
        engine.load()


def test_http_4xx_fails_at_once_naming_the_cause_and_the_key_stays_secret(tiny_server,
                                                                         monkeypatch):
    key = f'sk-vlm-test-{uuid.uuid4().hex}'
    monkeypatch.setenv('VLM_TEST_API_KEY', key)
    engine = make_engine(remote_config(tiny_server, model='not-the-served-model',
                                       api_key_env='VLM_TEST_API_KEY', max_retries=3))
    engine.load()
    try:
        with pytest.raises(VlmError) as info:
            engine.run([_requests()[2]])
    finally:
        engine.unload()
    error = info.value
    assert error.kind == 'backend_http_error'
    assert 'HTTP 400' in str(error) and 'not-the-served-model' in str(error)
    assert tiny_server.base_url in str(error) and 'attempts' not in str(error)  # not retried
    assert error.__cause__.request.headers['authorization'] == f'Bearer {key}'  # it was sent
    assert key not in str(error) and key not in str(engine.status())


def test_an_unset_key_variable_fails_the_load_naming_it(tiny_server):
    name = f'VLM_ABSENT_{uuid.uuid4().hex[:8].upper()}'
    engine = make_engine(remote_config(tiny_server, api_key_env=name))
    with pytest.raises(VlmError, match=name) as info:
        engine.load()
    assert info.value.kind == 'load_failed' and not engine.is_loaded
