"""What went wrong with a request to the server, as the VlmError a user reads, secrets removed.

Every failure of the openai client becomes one kind of BACKEND_KINDS (errors.py) and a cause in
words, and says whether trying again may help. One is the user's, not the server's: a prompt
that, with max_new_tokens, needs more tokens than the server's model reads ('bad_input' about
the text, as in process, so a node does not count it as a fault). Messages go to Plans,
/diagnostics and logs, which anyone on the DDS domain reads, so the API key and any token a
server echoes back are redacted from every one of them.
"""

import asyncio
import re
from collections.abc import Mapping

import openai

from ..errors import VlmError

# Answers that say "try again later"; 4xx (bad model name, bad key) stay wrong however often
# they are sent, so they fail at once.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NO_KEY = 'EMPTY'  # what vLLM's docs send to a server without a key; the client wants one
# "Bearer <token>", "api_key": "<key>", "x-api-key: <key>" as a server may echo them back.
SECRET_PATTERN = re.compile(r'(?i)(bearer\s+|api[-_]?key["\']?\s*[:=]\s*["\']?)[^\s"\',;}]+')
# How servers refuse a request whose prompt and max_tokens do not fit the model's context: by
# status (TGI answers 422), then by the error's code (OpenAI) or type (llama.cpp) where it is
# one of these, else by the sentences of their messages. vLLM and SGLang give code 400, which
# says nothing more than the status; SGLang streams its refusal as an error event after HTTP 200.
OVERFLOW_STATUS = frozenset({400, 413, 422})
OVERFLOW_CODES = frozenset({'context_length_exceeded', 'exceed_context_size_error'})
OVERFLOW_PHRASES = (
    # OpenAI and vLLM: "This model's maximum context length is N tokens. However, you requested
    # ..."; SGLang: "Requested token count exceeds the model's maximum context length of N ..."
    'maximum context length',
    "the model's context length is only",  # vLLM's renderer: "You passed N input tokens ..."
    'longer than the maximum model length',  # vLLM: "The decoder prompt (length N) is longer ..."
    "longer than the model's context length",  # SGLang: "The input (N tokens) is longer ..."
    'exceeds the context window',  # OpenAI: "Your input exceeds the context window of ..."
    'exceeds the context length',  # Ollama: "the input length exceeds the context length"
    'exceeds the available context size',  # llama.cpp's server
    '`max_new_tokens` must be <=',  # TGI: "`inputs` tokens + `max_new_tokens` must be <= N"
    '`inputs` must have less than',  # TGI: "`inputs` must have less than N tokens. Given: M"
)
SCAN_CHARS = 2000  # of a server's message searched: a hostile server may send megabytes
SAID_CHARS = 300  # of it quoted in the error: the sentence with the numbers, not a flood


def redact(text: str, key: str) -> str:
    """Remove the API key, and any bearer token or key a server echoed, from text."""
    if key != NO_KEY:
        text = text.replace(key, '<api key>')
    return SECRET_PATTERN.sub(lambda m: m.group(1) + '<redacted>', text)


def classify(exc: Exception, responded: bool, key: str, request_timeout: float,
             pieces: int = 0) -> tuple:
    """Return (kind, cause, transient) for a failed request, secrets redacted.

    ``responded`` says whether the answer's headers had arrived: a connection lost after that
    cut an answer off, before it the server was not reached. ``pieces``: of text streamed.
    """
    kind, cause, transient = _describe(exc, responded, key, request_timeout, pieces)
    return kind, redact(cause, key), transient


def _describe(exc: Exception, responded: bool, key: str, request_timeout: float,
              pieces: int) -> tuple:
    # The client's timeout of one read, or read_answer's of the data (streaming.py).
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError)):
        if pieces:  # the answer had begun: it stopped, it did not fail to come
            return 'backend_timeout', (f'the answer stopped after {pieces} piece'
                                       f'{"s" if pieces > 1 else ""} of text: no more within '
                                       f'request_timeout {request_timeout:g} s'), True
        return 'backend_timeout', f'no answer within request_timeout {request_timeout:g} s', True
    if isinstance(exc, openai.APIConnectionError):
        cause = exc  # the innermost error says most: ConnectionRefusedError, not 'Connection'
        while (cause.__cause__ or cause.__context__) is not None:
            cause = cause.__cause__ or cause.__context__
        cause = f'{type(cause).__name__}: {cause}'
        if responded:
            return 'backend_bad_response', f'the answer was cut off ({cause})', True
        return 'backend_unreachable', f'cannot reach the server ({cause})', True
    if isinstance(exc, openai.APIStatusError):  # redacted before it is cut short
        said = exc.status_code in OVERFLOW_STATUS and context_overflow(exc.body)
        if said:
            return 'bad_input', _too_long(f'HTTP {exc.status_code}', said, key), False
        body = redact(' '.join(exc.response.text.split()), key)[:300]
        hint = ('; base_url must be the API root, up to and including /v1, and remote_model '
                "(or model, when remote_model is '') a name the server serves: GET /models "
                'lists them') if exc.status_code == 404 else ''
        return ('backend_http_error', f'HTTP {exc.status_code}: {body}{hint}',
                exc.status_code in RETRY_STATUS)
    if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
        said = context_overflow(exc.body)
        if said:
            return 'bad_input', _too_long('the server reported', said, key), False
        return 'backend_bad_response', f'the server reported an error: {exc.body}', False
    return 'backend_bad_response', f'unreadable answer ({type(exc).__name__}: {exc})', False


def context_overflow(body) -> str:
    """Return what a server said when a request did not fit its model's context, else ''.

    ``body`` is the error as the openai client parsed it: the JSON's "error" object (or the
    whole object), or the text of a body that was not JSON. Any JSON may come, so only strings
    are read, and only the first SCAN_CHARS of the message.
    """
    fields = body if isinstance(body, Mapping) else {}
    said = body if isinstance(body, str) else next(
        (fields[name] for name in ('message', 'detail') if isinstance(fields.get(name), str)), '')
    said = said[:SCAN_CHARS]
    codes = [fields.get(name) for name in ('code', 'type')]
    coded = [code for code in codes if isinstance(code, str) and code in OVERFLOW_CODES]
    if not coded and not any(phrase in said.lower() for phrase in OVERFLOW_PHRASES):
        return ''
    said = ''.join(char for char in ' '.join(said.split()) if char.isprintable())
    return said or f'error code {coded[0]}'


def cut(text: str, limit: int) -> str:
    """Return text, or its first limit characters and '...': what a server sent, kept short."""
    return text if len(text) <= limit else text[:limit] + '...'


def _too_long(source: str, said: str, key: str) -> str:
    """Say that the request's text is the user's to change, with the server's own numbers.

    What the server said is redacted before it is cut short, so no part of a key is left.
    """
    said = cut(redact(said, key), SAID_CHARS)
    return (f"the prompt (image and text) and max_new_tokens are more tokens than the server's "
            f'model reads ({source}: {said}); shorten the text, or lower max_new_tokens')


def failure(kind: str, cause: str, attempts: int, base_url: str, model: str,
            key: str) -> VlmError:
    """Make the VlmError of a request: the server, the cause, how often it was tried, redacted.

    The one 'bad_input' a server gives is a text too long for its model (classify): about the
    text, so a node answers it as the client's error, not a fault of its camera or model.
    """
    tries = f' (after {attempts} attempts)' if attempts > 1 else ''
    message = f'openai backend at {base_url}: {cause}{tries}'
    return VlmError(kind, redact(message, key), model,
                    about='text' if kind == 'bad_input' else '')
