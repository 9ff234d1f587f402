"""A server refusing a text too long for its model: the user's error, not the server's fault.

Each test's server is a real HTTP server in this process (sse_server.py) answering in the words
of vLLM, SGLang, TGI, Ollama, llama.cpp or OpenAI; the engine's openai client reads it as it
reads any server. A refusal of the context length is 'bad_input' about the text, as in process
(engine/local/positions.py), so a node answers BAD_INPUT and counts no fault; it is never
retried, since the same text is refused again. Every other refusal stays what it was.
"""

import uuid

import numpy as np
import pytest
from sse_server import MODEL, ScriptedServer
from vlm_ros.engine import EngineConfig, RemoteConfig, Request, VlmError, make_engine
from vlm_ros.engine.remote.failures import SAID_CHARS, SCAN_CHARS

FRAME = np.zeros((24, 32, 3), np.uint8)
REMEDY = 'shorten the text, or lower max_new_tokens'

VLLM = ("This model's maximum context length is 1024 tokens. However, you requested 96 output "
        'tokens and your prompt contains at least 3931 input tokens, for a total of at least 4027'
        ' tokens. Please reduce the length of the input prompt or the number of requested output'
        ' tokens. (parameter=input_tokens, value=3931)')
SGLANG = ("Requested token count exceeds the model's maximum context length of 1024 tokens. You "
          'requested a total of 4027 tokens: 3931 tokens from the input messages and 96 tokens '
          'for the completion. Please reduce the number of tokens in the input messages or the '
          'completion to fit within the limit.')
# What each server answers a prompt of 3931 tokens and max_tokens 96 on a model of 1024.
REFUSALS = {
    'vLLM': (400, {'error': {'message': VLLM, 'type': 'BadRequestError',
                             'param': 'input_tokens', 'code': 400}}),
    'vLLM, older': (400, {
        'object': 'error', 'type': 'BadRequestError', 'param': None, 'code': 400,
        'message': "This model's maximum context length is 1024 tokens. However, you requested "
                   '4027 tokens (3931 in the messages, 96 in the completion). Please reduce the '
                   'length of the messages or completion.'}),
    'vLLM, engine': (400, {'error': {
        'message': 'The decoder prompt (length 3931) is longer than the maximum model length of '
                   '1024. Make sure that `max_model_len` is no smaller than the number of text '
                   'tokens plus multimodal tokens.', 'type': 'BadRequestError', 'code': 400}}),
    'vLLM, renderer': (400, {'error': {
        'message': 'You passed 3931 input tokens and requested 96 output tokens. However, the '
                   "model's context length is only 1024 tokens, resulting in a maximum input "
                   'length of 928 tokens. Please reduce the length of the input prompt.',
        'type': 'BadRequestError', 'param': 'input_tokens', 'code': 400}}),
    'SGLang': (400, {'object': 'error', 'message': SGLANG, 'type': 'BadRequestError',
                     'param': None, 'code': 400}),
    'SGLang, input alone': (400, {'object': 'error', 'type': 'BadRequestError', 'code': 400,
                                  'message': 'The input (3931 tokens) is longer than the '
                                             "model's context length (1024 tokens)."}),
    'TGI': (422, {'error': 'Input validation error: `inputs` tokens + `max_new_tokens` must be '
                           '<= 1024. Given: 3931 `inputs` tokens and 96 `max_new_tokens`',
                  'error_type': 'validation'}),
    'TGI, input alone': (422, {'error': 'Input validation error: `inputs` must have less than '
                                        '1024 tokens. Given: 3931', 'error_type': 'validation'}),
    'OpenAI': (400, {'error': {
        'message': "This model's maximum context length is 1024 tokens. However, your messages "
                   'resulted in 3931 tokens. Please reduce the length of the messages.',
        'type': 'invalid_request_error', 'param': 'messages', 'code': 'context_length_exceeded'}}),
    'Ollama': (400, {'error': {'message': 'the input length exceeds the context length',
                               'type': 'api_error', 'param': None, 'code': None}}),
    'llama.cpp': (400, {'error': {
        'code': 400, 'message': 'the request exceeds the available context size, try increasing '
                                'it', 'type': 'exceed_context_size_error',
        'n_prompt_tokens': 3931, 'n_ctx': 1024}}),
}


@pytest.fixture
def server():
    with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
def engine(server):
    """Yield a loaded openai engine on server that would retry a transient failure once."""
    loaded = make_engine(EngineConfig(model=MODEL, backend='openai', remote=RemoteConfig(
        base_url=server.base_url, max_retries=1, probe_period=3600.0)))
    loaded.load()
    yield loaded
    loaded.unload()


def _refused(engine, server, script) -> VlmError:
    """Return the error of one vqa request that server answers with script."""
    server.play(script)
    with pytest.raises(VlmError) as info:
        engine.run([Request('vqa', FRAME, uuid.uuid4().hex)])
    assert server.base_url in str(info.value)
    return info.value


def _said(body) -> str:
    """Return the message a refusal's JSON carries, as the error quotes it (cut short)."""
    error = body.get('error', body)
    said = error if isinstance(error, str) else error['message']
    return said if len(said) <= SAID_CHARS else said[:SAID_CHARS] + '...'


@pytest.mark.parametrize('status, body', REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_context_length_is_the_texts_fault_with_the_servers_numbers(
        engine, server, status, body):
    error = _refused(engine, server, lambda reply: reply.refuse(status, body))
    assert (error.kind, error.about) == ('bad_input', 'text'), error
    assert f'(HTTP {status}: {_said(body)}); {REMEDY}' in str(error)
    assert len(server.requests) == 1  # never retried: the same text is refused again


def test_a_refusal_streamed_after_http_200_is_recognised_too(engine, server):
    """SGLang checks the length inside the stream, and sends its refusal as an error event."""
    error = _refused(engine, server, lambda reply: reply.error({
        'object': 'error', 'message': SGLANG, 'type': 'BadRequestError', 'param': None,
        'code': 400}))
    assert (error.kind, error.about) == ('bad_input', 'text'), error
    assert f'(the server reported: {_said({"message": SGLANG})}); {REMEDY}' in str(error)


@pytest.mark.parametrize('said', [
    'Your input exceeds the context window of this model. Please adjust your input.',
    'no words a person would know'])
def test_openais_code_is_enough_without_numbers(engine, server, said):
    error = _refused(engine, server, lambda reply: reply.refuse(400, {'error': {
        'message': said, 'type': 'invalid_request_error', 'code': 'context_length_exceeded'}}))
    assert error.kind == 'bad_input' and f'(HTTP 400: {said}); {REMEDY}' in str(error)


@pytest.mark.parametrize('status, body, kind, attempts', [
    (404, {'object': 'error', 'message': 'The model `x` does not exist.',
           'type': 'NotFoundError', 'param': None, 'code': 404}, 'backend_http_error', 1),
    (400, {'error': {'message': 'max_tokens must be at least 1, got 0.', 'code': 400}},
     'backend_http_error', 1),
    # The server's own fault, whatever it says: tried again, as every HTTP 500 is.
    (500, {'error': {'message': VLLM, 'code': 500}}, 'backend_http_error', 2),
    # A code that is not a string says nothing; neither does a message that is not one.
    (400, {'error': {'code': ['context_length_exceeded'], 'message': {'text': VLLM}}},
     'backend_http_error', 1),
], ids=['unknown model', 'another 400', 'HTTP 500', 'JSON of other types'])
def test_every_other_refusal_stays_an_http_error(engine, server, status, body, kind, attempts):
    error = _refused(engine, server, lambda reply: reply.refuse(status, body))
    assert (error.kind, error.about) == (kind, ''), error
    assert f'HTTP {status}: ' in str(error) and REMEDY not in str(error)
    assert len(server.requests) == attempts


def test_a_hostile_refusal_is_read_within_bounds_and_shown_without_secrets(engine, server):
    token = 'sk-' + uuid.uuid4().hex
    flood = 'x' * 1_000_000
    said = f'\x1b[2J Bearer {token}\n\t{VLLM} {flood}'
    error = _refused(engine, server, lambda reply: reply.refuse(400, {'error': {
        'message': said}}))
    assert error.kind == 'bad_input' and REMEDY in str(error)
    assert token not in str(error) and 'Bearer <redacted>' in str(error)
    assert '\x1b' not in str(error) and '\n' not in str(error)
    assert len(str(error)) < 2 * SAID_CHARS + 400, len(str(error))


def test_a_sentence_past_the_first_scan_chars_of_a_message_is_not_searched(engine, server):
    error = _refused(engine, server, lambda reply: reply.refuse(400, {'error': {
        'message': 'y' * SCAN_CHARS + VLLM}}))
    assert error.kind == 'backend_http_error' and REMEDY not in str(error)
