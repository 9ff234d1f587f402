"""The engine contract (engine/interface.py), run against both backends with the same inputs.

Both engines answer from the same trained tiny LLaVA: the in-process one loads it, the openai
one asks a real ``transformers serve`` that serves it. Every operation must give the same kinds
of results and statuses on both, and raise only the VlmError kinds CONTRACT declares for it:
before load, while loaded, after unload and after a reload.
"""

import dataclasses
import threading

import numpy as np
import pytest
from engine_fixtures import PLAN_JSON, TARGETS, scene
from serve_harness import free_port, remote_config
from vlm_ros.engine import EngineConfig, Request, VlmError, make_engine
from vlm_ros.engine.errors import NOT_LOADED
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.interface import CONTRACT
from vlm_ros.engine.results import Score, status_of

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

BACKENDS = ('transformers', 'openai')
# Whether the backend can see its model's probabilities; the other raises 'unsupported'.
CAN_SCORE = {'transformers': True, 'openai': False}
WRONG = {'caption': 'a blue block on a grey table', 'vqa': 'red', 'plan': 'go'}
TIMEOUT = 60.0


@pytest.fixture(scope='module', params=BACKENDS)
def config(request, trained_tiny) -> EngineConfig:
    """Return the config of one backend on the trained tiny LLaVA (greedy, 96 new tokens)."""
    if request.param == 'openai':
        return remote_config(request.getfixturevalue('tiny_server'), max_concurrency=2)
    return EngineConfig(model=str(trained_tiny('llava')), device='cpu', dtype='float32',
                        max_new_tokens=96)


@pytest.fixture(scope='module')
def engine(config):
    """Return a loaded engine of the backend, shared by the module's tests that do not reload."""
    engine = make_engine(config)
    engine.load()
    yield engine
    engine.unload()


def requests() -> list:
    """Return a caption, a vqa and a plan request, on the frames their targets were taught on."""
    return [Request('caption', scene('red')), Request('vqa', scene('blue'), TARGETS['vqa'][0]),
            Request('plan', scene('red'), TARGETS['plan'][0])]


def targets() -> list:
    return [TARGETS[task][1] for task in ('caption', 'vqa', 'plan')]


def raises(operation: str, call) -> str:
    """Call, expect a VlmError of a kind CONTRACT declares for operation; return the kind."""
    with pytest.raises(VlmError) as info:
        call()
    assert info.value.kind in CONTRACT[operation].raises, (operation, info.value.kind)
    return info.value.kind


def check_unloaded(engine) -> None:
    """Every operation behaves as CONTRACT's 'unloaded' column says."""
    assert not engine.is_loaded and engine.run([]) == []
    assert raises('run', lambda: engine.run([requests()[2]])) == NOT_LOADED
    assert raises('stream', lambda: engine.stream(requests()[2], print)) == NOT_LOADED
    kind = raises('score', lambda: engine.score(requests()[:1], targets()[:1]))
    assert kind == (NOT_LOADED if CAN_SCORE[engine.config.backend] else 'unsupported')
    assert engine.prepare([scene('red')]) is None and engine.cancel() is None
    assert engine.unload() is None and isinstance(engine.status(), dict)
    try:
        assert engine.model_name in engine.describe()
    except VlmError as exc:
        assert exc.kind in CONTRACT['describe'].raises


def test_each_task_answers_its_trained_target(engine):
    for request, target in zip(requests(), targets(), strict=True):
        result = engine.run([request])[0]
        assert (result.task, result.text, status_of(result)) == (request.task, target, 'ok')
        assert status_of(result) in CONTRACT['run'].statuses


def test_a_batch_answers_in_order_each_request_with_its_own_stream(engine):
    batch = requests()
    pieces = [[] for _ in batch]
    for request, own in zip(batch, pieces, strict=True):
        request.on_text = own.append
    results = engine.run(batch)
    assert [r.text for r in results] == targets()
    assert [''.join(own) for own in pieces] == targets()
    assert [status_of(r) for r in results] == ['ok'] * 3


def test_stream_hands_over_the_answer_piece_by_piece(engine):
    pieces = []
    result = engine.stream(requests()[2], pieces.append)
    assert len(pieces) > 1 and ''.join(pieces) == result.text == PLAN_JSON
    assert status_of(result) == 'ok' and result.valid
    # constrain_plans 'auto': written under the plan schema's grammar in process; asked of the
    # server as response_format, which transformers serve ignores, and checked: it follows.
    assert result.form == 'constrained'


def test_a_cut_short_plan_is_invalid_output_not_an_error(engine):
    request = requests()[2]
    request.max_new_tokens = 3
    result = engine.run([request])[0]
    assert result.output_tokens == 3 and PLAN_JSON.startswith(result.text)
    assert status_of(result) == 'invalid' and status_of(result) in CONTRACT['run'].statuses


def test_cancelling_one_request_of_a_batch_leaves_the_others(engine):
    batch = requests()
    batch[2].cancel = threading.Event()
    batch[2].on_text = lambda text: batch[2].cancel.set()
    results = engine.run(batch)
    assert [status_of(r) for r in results] == ['ok', 'ok', 'cancelled']
    assert [r.text for r in results[:2]] == targets()[:2]
    assert PLAN_JSON.startswith(results[2].text) and len(results[2].text) < len(PLAN_JSON)


def test_engine_cancel_stops_what_runs_and_not_what_comes_after(engine):
    """cancel() from another thread, while a stream waits in its first piece's callback."""
    first, proceed, pieces, results = threading.Event(), threading.Event(), [], []

    def on_text(text):
        pieces.append(text)
        first.set()
        assert proceed.wait(TIMEOUT)

    thread = threading.Thread(target=lambda: results.append(
        engine.stream(requests()[2], on_text)))
    thread.start()
    try:
        assert first.wait(TIMEOUT), 'no text streamed'
        assert engine.cancel() is None
    finally:
        proceed.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive() and status_of(results[0]) == 'cancelled'
    assert results[0].text.startswith(''.join(pieces)) and results[0].text != PLAN_JSON
    after = engine.run([requests()[2]])[0]
    assert (after.text, status_of(after)) == (PLAN_JSON, 'ok')


@pytest.mark.parametrize('operation, call', [
    ('run', lambda e: e.run([Request('caption', np.zeros((4, 4), np.uint8))])),
    ('run', lambda e: e.run([Request('dance', scene('red'))])),
    ('run', lambda e: e.run([Request('plan', scene('red'), '   ')])),
    ('run', lambda e: e.run(requests()[:2], on_text=print)),
    ('stream', lambda e: e.stream(Request('vqa', np.zeros((4, 4, 3), np.float32), 'x'), print)),
    ('prepare', lambda e: e.prepare([np.zeros((0, 4, 3), np.uint8)])),
    ('update', lambda e: e.update(model='another')),
    ('update', lambda e: e.update(prompts={'plan': 'no placeholder'})),
], ids=['image', 'task', 'text', 'batch-stream', 'stream-image', 'prepare', 'field', 'template'])
def test_bad_input_is_refused_as_bad_input_and_changes_nothing(engine, operation, call):
    assert raises(operation, lambda: call(engine)) == 'bad_input'
    assert engine.config.max_new_tokens == 96 and engine.is_loaded  # later tests answer on it


def test_score_ranks_the_trained_answer_first_where_the_backend_can(engine):
    trained, wrong = targets(), [WRONG[r.task] for r in requests()]
    if not CAN_SCORE[engine.config.backend]:
        for call in (lambda: engine.score(requests(), trained),
                     lambda: engine.score(requests(), ['', '', ''])):
            assert raises('score', call) == 'unsupported'
        with pytest.raises(VlmError, match='transformers backend'):
            engine.score(requests(), trained)
        return
    good, bad = engine.score(requests(), trained), engine.score(requests(), wrong)
    assert all(isinstance(s, Score) and s.tokens > 1 for s in good + bad)
    assert all(g.ce < b.ce for g, b in zip(good, bad, strict=True))
    assert engine.score([], []) == []
    assert raises('score', lambda: engine.score(requests(), trained[:2])) == 'bad_input'
    assert raises('score', lambda: engine.score(requests()[:1], [' '])) == 'bad_input'


def test_features_come_with_the_answer_where_the_backend_can_see_them(engine):
    asked = Request('plan', scene('red'), TARGETS['plan'][0], features=FeatureSpec())
    if not CAN_SCORE[engine.config.backend]:  # hidden states, like probabilities, stay there
        with pytest.raises(VlmError, match='cannot give features.*transformers backend'):
            engine.run([asked])
        assert raises('run', lambda: engine.run([asked])) == 'unsupported'
        return
    (result,) = engine.run([asked])
    assert result.text == TARGETS['plan'][1] and result.features.data.ndim == 1


def test_prepared_frames_answer_as_unprepared_ones(engine):
    assert engine.prepare([request.image for request in requests()]) is None
    assert [r.text for r in engine.run(requests())] == targets()


def test_before_load_after_unload_and_after_a_reload(config):
    engine = make_engine(config)
    check_unloaded(engine)
    engine.update(max_new_tokens=3)  # applies unloaded, and to what is loaded later
    engine.load()
    try:
        assert engine.is_loaded and isinstance(engine.describe(), str)
        assert engine.run([requests()[2]])[0].output_tokens == 3
        engine.update(max_new_tokens=96)
    finally:
        engine.unload()
    check_unloaded(engine)
    engine.load()  # a second load of the same engine
    try:
        assert engine.stream(requests()[2], lambda text: None).text == PLAN_JSON
    finally:
        engine.unload()
    check_unloaded(engine)


def test_a_bad_setting_fails_the_load_as_bad_input_and_leaves_it_unloaded(config):
    if config.backend == 'openai':
        bad = dataclasses.replace(config, remote=dataclasses.replace(
            config.remote, base_url='127.0.0.1:8000/v1'))
    else:
        bad = dataclasses.replace(config, device='tpu')
    engine = make_engine(bad)
    assert raises('load', engine.load) == 'bad_input'
    check_unloaded(engine)


def test_a_server_that_is_not_there_fails_run_with_a_declared_kind(tiny_server):
    engine = make_engine(remote_config(tiny_server, base_url=f'http://127.0.0.1:{free_port()}/v1',
                                       max_retries=0))
    engine.load()
    try:
        assert raises('run', lambda: engine.run([requests()[0]])) == 'backend_unreachable'
    finally:
        engine.unload()
