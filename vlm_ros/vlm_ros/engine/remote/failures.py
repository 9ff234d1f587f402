"""What went wrong with a request to the server, as the VlmError a user reads, secrets removed.

Every failure of the openai client becomes one kind of BACKEND_KINDS (errors.py) and a cause in
words, and says whether trying again may help. Messages go to Plans, /diagnostics and logs,
which anyone on the DDS domain reads, so the API key and any token a server echoes back are
redacted from every one of them.
"""

import asyncio
import re

import openai

from ..errors import VlmError

# Answers that say "try again later"; 4xx (bad model name, bad key) stay wrong however often
# they are sent, so they fail at once.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
NO_KEY = 'EMPTY'  # what vLLM's docs send to a server without a key; the client wants one
# "Bearer <token>", "api_key": "<key>", "x-api-key: <key>" as a server may echo them back.
SECRET_PATTERN = re.compile(r'(?i)(bearer\s+|api[-_]?key["\']?\s*[:=]\s*["\']?)[^\s"\',;}]+')


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
        body = redact(' '.join(exc.response.text.split()), key)[:300]
        hint = ('; base_url must be the API root, up to and including /v1, and remote_model '
                "(or model, when remote_model is '') a name the server serves: GET /models "
                'lists them') if exc.status_code == 404 else ''
        return ('backend_http_error', f'HTTP {exc.status_code}: {body}{hint}',
                exc.status_code in RETRY_STATUS)
    if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
        return 'backend_bad_response', f'the server reported an error: {exc.body}', False
    return 'backend_bad_response', f'unreadable answer ({type(exc).__name__}: {exc})', False


def failure(kind: str, cause: str, attempts: int, base_url: str, model: str,
            key: str) -> VlmError:
    """Make the VlmError of a request: the server, the cause, how often it was tried, redacted."""
    tries = f' (after {attempts} attempts)' if attempts > 1 else ''
    message = f'openai backend at {base_url}: {cause}{tries}'
    return VlmError(kind, redact(message, key), model)
