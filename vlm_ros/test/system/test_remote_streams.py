"""What a server sends inside an answer, and what the openai backend makes of it.

A server may ignore max_tokens, send one huge piece, keep a stream alive with SSE comments and
no data, or keep it open after the whole answer. Each is a real HTTP server (sse_server.py)
sending that; the engine must answer every request within its bounds and keep no more of an
answer than the request asked for.
"""

import base64
import io
import json
import threading
import uuid

import numpy as np
import pytest
from PIL import Image
from sse_server import MODEL, ScriptedServer
from vlm_ros.engine import EngineConfig, RemoteConfig, Request, VlmError, make_engine
from vlm_ros.engine.remote.streaming import CHARS_PER_TOKEN

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

FRAME = np.zeros((24, 32, 3), np.uint8)
# The keep-alive test's deadline, short so that it ends soon; every other test has the
# parameter's default, so that a slow connection is no timeout.
SHORT_TIMEOUT = 3.0
LIVENESS = 30 * SHORT_TIMEOUT  # a liveness bound, not a timing: far beyond any deadline


@pytest.fixture
def server():
    with ScriptedServer() as scripted:
        yield scripted


def _loaded(server, request_timeout: float):
    """Yield a loaded openai engine on server; it never retries: one answer a request."""
    loaded = make_engine(EngineConfig(model=MODEL, backend='openai', remote=RemoteConfig(
        base_url=server.base_url, request_timeout=request_timeout, max_retries=0,
        probe_period=3600.0)))
    loaded.load()
    yield loaded
    loaded.unload()


@pytest.fixture
def engine(server):
    yield from _loaded(server, RemoteConfig().request_timeout)


@pytest.fixture
def impatient_engine(server):
    yield from _loaded(server, SHORT_TIMEOUT)


def _word() -> str:
    return uuid.uuid4().hex[:6] + ' '


def _stream(engine, request) -> tuple:
    """Return (result, the pieces streamed as feedback) of one request."""
    fed = []
    return engine.stream(request, fed.append), fed


def test_a_server_past_max_tokens_is_cut_there_and_closed(engine, server):
    word = _word()
    server.play(lambda reply: reply.flood(word))
    result, fed = _stream(engine, Request('vqa', FRAME, 'what is it?', max_new_tokens=5))
    assert server.requests[0]['max_tokens'] == 5
    assert (result.text, fed, result.output_tokens) == (word * 5, [word] * 5, 5)
    assert result.note == f'{server.base_url} ignored max_tokens 5: it sent more, and the ' \
        'answer was cut there'
    assert server.gone.wait(LIVENESS), 'the stream was not closed'


def test_data_without_text_past_max_tokens_is_cut_too(engine, server):
    server.play(lambda reply: reply.flood(''))
    result = engine.run([Request('vqa', FRAME, 'what is it?', max_new_tokens=5)])[0]
    assert (result.text, result.output_tokens) == ('', 5)
    assert 'ignored max_tokens 5' in result.note
    assert server.gone.wait(LIVENESS), 'the stream was not closed'


def test_one_huge_piece_is_cut_to_the_characters_of_max_tokens(engine, server):
    huge = uuid.uuid4().hex * 100_000  # 3.2 MB in one piece
    server.play(lambda reply: reply.piece(huge) and reply.finish())
    result, fed = _stream(engine, Request('vqa', FRAME, 'what is it?', max_new_tokens=5))
    assert result.text == huge[:5 * CHARS_PER_TOKEN] and fed == [result.text]
    assert 'ignored max_tokens 5' in result.note and result.output_tokens == 5


def test_a_server_that_keeps_to_max_tokens_is_not_said_to_ignore_it(engine, server):
    word = _word()
    server.play(lambda reply: all(reply.piece(word) for _ in range(5)) and reply.finish(
        'length', usage=5))
    result = engine.run([Request('vqa', FRAME, 'what is it?', max_new_tokens=5)])[0]
    assert (result.text, result.output_tokens, result.note) == (word * 5, 5, '')


def test_a_plan_cut_at_max_tokens_keeps_the_steps_before_the_cut(engine, server):
    step = {'instruction': f'pick up the {_word().strip()}', 'skill': 'pick', 'target': 'cup'}
    pieces = ['{"steps": [', json.dumps(step), ', {"instruction": "put it', ' down"}]}']
    server.play(lambda reply: all(map(reply.piece, pieces)) and reply.finish())
    result = engine.run([Request('plan', FRAME, 'tidy up', max_new_tokens=2)])[0]
    assert result.text == ''.join(pieces[:2])
    assert (result.form, result.valid, len(result.steps)) == ('json_truncated', True, 1)
    assert result.steps[0].instruction == step['instruction']
    assert result.note.startswith(f'{server.base_url} ignored max_tokens 2')


@pytest.mark.parametrize('before', [0, 1], ids=['before any data', 'after a piece'])
def test_a_stream_of_keep_alive_comments_times_out(impatient_engine, server, before):
    word = _word()
    server.play(lambda reply: all(reply.piece(word) for _ in range(before)) and
                reply.keep_alive())
    error, fed = _keep_alive_timeout(impatient_engine, server)
    # The piece comes at once, yet a loaded machine can hand it over later than the deadline
    # of the first data: the request then had no answer, and it is asked again.
    for _ in range(int(LIVENESS / SHORT_TIMEOUT)):
        if len(fed) == before:
            break
        assert f'no answer within request_timeout {SHORT_TIMEOUT:g} s' in str(error), error
        error, fed = _keep_alive_timeout(impatient_engine, server)
    assert fed == [word] * before, 'the piece never came before the deadline'
    said = ('the answer stopped after 1 piece of text: no more within' if before else
            'no answer within')
    assert f'{said} request_timeout {SHORT_TIMEOUT:g} s' in str(error), error
    # The server answered (its headers, comments): slow, not unreachable (/diagnostics ERROR).
    assert impatient_engine.status()['backend_reachable'] is True


def _keep_alive_timeout(engine, server) -> tuple:
    """Ask once; return (the VlmError, the pieces streamed) once the comments timed out."""
    errors, fed = [], []

    def ask():
        try:
            engine.stream(Request('vqa', FRAME, 'what is it?'), fed.append)
        except VlmError as exc:
            errors.append(exc)

    worker = threading.Thread(target=ask)
    worker.start()
    worker.join(LIVENESS)
    held = worker.is_alive()
    if held:
        server.closing.set()  # let an engine that did not time out see the stream end
    assert not held, 'comments held the request'
    assert errors and errors[0].kind == 'backend_timeout', errors
    return errors[0], fed


@pytest.mark.parametrize('usage', [None, 7], ids=['no usage', 'with usage'])
def test_a_whole_answer_is_kept_when_the_server_keeps_the_stream_open(engine, server, usage):
    pieces = ['{"steps": [{"instruction": ', f'"wipe the {_word().strip()}", "skill": "wipe"',
              ', "target": "table"}]}']
    server.play(lambda reply: all(map(reply.piece, pieces)) and
                reply.piece('', 'stop', usage) and reply.hold())
    result = engine.run([Request('plan', FRAME, 'clean')])[0]
    assert result.text == ''.join(pieces) and result.valid
    assert result.output_tokens == (usage or len(pieces))
    assert server.gone.wait(LIVENESS), 'the stream was not closed'


def _asked(server, model=MODEL, remote_model='', image=FRAME, jpeg_quality=90) -> dict:
    """Return the chat request the server got for one vqa request, as vlm_node configures it.

    (vlm_node's model, remote_model and jpeg_quality: node/settings.py's engine_config.)
    """
    config = EngineConfig(model=model, backend='openai', remote=RemoteConfig(
        base_url=server.base_url, model=remote_model, jpeg_quality=jpeg_quality,
        max_retries=0, probe_period=3600.0))
    server.play(lambda reply: reply.finish())
    engine = make_engine(config)
    engine.load()
    try:
        engine.run([Request('vqa', image, 'what is it?')])
    finally:
        engine.unload()
    return server.requests[-1]


def test_the_server_is_asked_for_remote_model_else_for_model(server):
    model, served = f'org/{uuid.uuid4().hex[:8]}', f'served-{uuid.uuid4().hex[:8]}'
    assert _asked(server, model, remote_model=served)['model'] == served
    assert _asked(server, model)['model'] == model


def test_jpeg_quality_is_the_quality_of_the_image_sent(server):
    noise = np.random.default_rng(7).integers(0, 256, (48, 64, 3), np.uint8)  # no flat areas

    def sent(quality: int) -> bytes:
        body = _asked(server, image=noise, jpeg_quality=quality)
        url = next(part['image_url']['url'] for part in body['messages'][0]['content']
                   if part['type'] == 'image_url')
        return base64.b64decode(url.removeprefix('data:image/jpeg;base64,'))

    low, high = sent(10), sent(95)
    assert len(low) < len(high) // 2, (len(low), len(high))
    pixels = [np.asarray(Image.open(io.BytesIO(jpeg)), dtype=int) for jpeg in (low, high)]
    assert [image.shape for image in pixels] == [noise.shape] * 2
    errors = [np.abs(image - noise).mean() for image in pixels]
    assert errors[1] < errors[0], errors  # the higher quality is the closer one
