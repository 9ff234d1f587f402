"""The 'openai' backend: the same requests and results, answered by an OpenAI-compatible server.

vLLM, SGLang, TGI, Ollama and ``transformers serve`` all speak the chat completions API, so one
client covers them. Each request becomes one streamed chat completion: the image as a JPEG data
URL after the same resize, the prompt from the same templates in the same chat layout, and the
answer parsed by the same parser as an in-process one. Every failure becomes a VlmError naming
the server and the cause. Nothing about the server is cached, so when it comes back after a
crash the next request simply works.

The asyncio client runs on one event-loop thread per engine: a batch goes out concurrently (up
to max_concurrency), and a cancel stops a request at any point, even while the server is silent,
instead of only between two streamed pieces.
"""

import asyncio
import base64
import os
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

import openai

from ..base import EngineBase
from ..chat import user_message
from ..config import EngineConfig
from ..errors import VlmError
from ..preprocess import encode_jpeg, fitted_size
from ..prompts import render_task
from ..results import make_result

# Answers that say "try again later"; 4xx (bad model name, bad key) stay wrong however often
# they are sent, so they fail at once.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
FIRST_BACKOFF = 0.5  # s before the first retry, doubled before each next one
MAX_BACKOFF = 8.0
CANCEL_POLL = 0.05  # s between looks at the cancel event while the server sends nothing
PROBE_TIMEOUT = 5.0  # s a reachability check may take (capped by request_timeout)
NO_KEY = 'EMPTY'  # what vLLM's docs send to a server without a key; the client wants one
# "Bearer <token>", "api_key": "<key>", "x-api-key: <key>" as a server may echo them back.
SECRET_PATTERN = re.compile(r'(?i)(bearer\s+|api[-_]?key["\']?\s*[:=]\s*["\']?)[^\s"\',;}]+')


@dataclass
class _Answer:
    """What one streamed answer delivered; filled on the event loop, read after it is done."""

    pieces: list = field(default_factory=list)
    first_at: Optional[float] = None
    tokens: Optional[int] = None  # from the server's usage report
    responded: bool = False  # headers arrived: a failure from now on cuts an answer off
    finished: bool = False  # a finish_reason arrived: the answer is complete


class RemoteEngine(EngineBase):
    """Answers batches of requests through an OpenAI-compatible server; the VlmEngine interface.

    load() reads the API key and starts the client and a reachability check every
    probe_period seconds; it does not need the server up, so a robot may boot before its
    server. ``reachable`` is None until the first check, then whether the server answered
    HTTP at the last check or request.
    """

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.remote = config.remote
        self.reachable: Optional[bool] = None
        self.checked = 'not checked yet'
        self._client: Optional[openai.AsyncOpenAI] = None
        self._key = NO_KEY
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._probe: Optional[asyncio.Task] = None
        self._slots: Optional[asyncio.Semaphore] = None

    @property
    def concurrency(self) -> int:
        """How many run() calls may usefully overlap: the server batches them."""
        return self.remote.max_concurrency

    @property
    def model_name(self) -> str:
        """The model's name on the server, as requests and answers carry it."""
        return self.remote.model or self.config.model

    @property
    def is_loaded(self) -> bool:
        """Tell whether load() has run and unload() has not."""
        return self._client is not None

    def describe(self) -> str:
        """Say which model on which server, for a log line."""
        return f'{self.model_name} at {self.remote.base_url} (openai backend)'

    def status(self) -> dict:
        """Plain values for diagnostics: the server, and whether it answered lately."""
        reachable = 'unknown' if self.reachable is None else self.reachable
        return {'device': self.remote.base_url, 'base_url': self.remote.base_url,
                'backend_reachable': reachable, 'backend_checked': self.checked}

    def load(self) -> None:
        """Read the key, start the client and the reachability check; the server may be down."""
        url = urllib.parse.urlsplit(self.remote.base_url)
        if url.scheme not in ('http', 'https') or not url.netloc:
            raise VlmError('bad_input', 'base_url must be an http:// or https:// URL such as '
                           f'http://127.0.0.1:8000/v1, got {self.remote.base_url!r}')
        if self.remote.api_key_env:
            self._key = os.environ.get(self.remote.api_key_env, '')
            if not self._key:
                raise VlmError('load_failed', f'api_key_env names {self.remote.api_key_env!r}, '
                               'but that environment variable is not set or empty',
                               self.model_name)
        self._client = openai.AsyncOpenAI(base_url=self.remote.base_url, api_key=self._key,
                                          timeout=self.remote.request_timeout, max_retries=0)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name='vlm-remote',
                                        daemon=True)
        self._thread.start()
        self._call(self._start())

    def unload(self) -> None:
        """Stop the check, close the client's connections and the event loop."""
        if self._client is None:
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._client = None

    def _call(self, coroutine):
        """Run a coroutine on the engine's loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _start(self) -> None:
        self._slots = asyncio.Semaphore(self.remote.max_concurrency)
        self._probe = asyncio.create_task(self._check_forever())

    async def _stop(self) -> None:
        self._probe.cancel()
        await asyncio.gather(self._probe, return_exceptions=True)
        await self._client.close()

    def run(self, requests: list, on_text=None, cancel: Optional[threading.Event] = None) -> list:
        """Answer requests, one chat completion each, concurrently; results in request order.

        ``on_text`` streams text increments (one request only); setting ``cancel`` closes the
        streams, which makes the server stop generating, and marks the results cancelled. A
        single request's own ``Request.on_text`` and ``Request.cancel`` serve the same way.
        Timings start after JPEG encoding, as in-process ones start after preprocessing.
        Raises VlmError: 'bad_input' for a bad image or text, and for the server
        'backend_unreachable', 'backend_timeout', 'backend_http_error' or
        'backend_bad_response', with the cause in the message.
        """
        if not requests:
            return []
        if self._client is None:
            raise VlmError('load_failed', 'the openai backend is not loaded', self.model_name)
        if len(requests) == 1:
            on_text = on_text or requests[0].on_text
            cancel = cancel or requests[0].cancel
        if on_text is not None and len(requests) != 1:
            raise VlmError('bad_input', 'streaming needs a batch of one request')
        payloads = [self.payload(request) for request in requests]
        cancel = cancel or threading.Event()
        answers = [_Answer() for _ in requests]
        start = time.perf_counter()
        self._call(self._run_all(payloads, answers, on_text, cancel))
        total = time.perf_counter() - start
        return [make_result(request.task, ''.join(answer.pieces),
                            len(answer.pieces) if answer.tokens is None else answer.tokens,
                            answer.first_at - start if answer.first_at else total, total,
                            cancel.is_set(), fitted_size(request.image,
                                                         self.config.max_image_side))
                for request, answer in zip(requests, answers, strict=True)]

    def payload(self, request) -> dict:
        """Build the chat completion: same resize, template and chat layout as in-process."""
        jpeg = encode_jpeg(request.image, self.config.max_image_side, self.remote.jpeg_quality)
        image = {'type': 'image_url', 'image_url': {
            'url': 'data:image/jpeg;base64,' + base64.b64encode(jpeg).decode('ascii')}}
        prompt = render_task(self.templates, request.task, request.text, request.context)
        sampling = {'temperature': self.config.temperature, 'top_p': self.config.top_p} \
            if self.config.do_sample else {'temperature': 0.0}  # 0: greedy on every server
        # include_usage: vLLM and SGLang report token counts in a stream only when asked.
        return {'model': self.model_name, 'messages': user_message(prompt, image),
                'max_tokens': request.max_new_tokens or self.config.max_new_tokens,
                'stream': True, 'stream_options': {'include_usage': True}, **sampling}

    async def _run_all(self, payloads, answers, on_text, cancel: threading.Event) -> None:
        """Answer every payload; stop all on cancel, or on the first failure and raise it."""
        tasks = [asyncio.create_task(self._answer(payload, answer, on_text, cancel))
                 for payload, answer in zip(payloads, answers, strict=True)]
        try:
            pending = set(tasks)
            while pending and not cancel.is_set():
                done, pending = await asyncio.wait(pending, timeout=CANCEL_POLL,
                                                   return_when=asyncio.FIRST_EXCEPTION)
                if any(task.exception() for task in done):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()

    async def _answer(self, payload, answer: _Answer, on_text, cancel) -> None:
        """Stream one answer, retrying transient failures with exponential backoff.

        A retry happens only before any text was streamed: text already handed to on_text
        (action feedback) cannot be taken back.
        """
        attempts = self.remote.max_retries + 1
        first = ''
        async with self._slots:
            for attempt in range(1, attempts + 1):
                try:
                    await self._stream(payload, answer, on_text, cancel)
                except VlmError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every client failure is a VlmError
                    kind, cause, transient = self._classify(exc, answer)
                    if kind in ('backend_unreachable', 'backend_timeout'):
                        self._reach(False, cause)
                    first = first or cause
                    if not transient or attempt == attempts or answer.pieces:
                        if first != cause:  # e.g. reset mid-request, then refused
                            cause += f'; the first attempt: {first}'
                        raise self._error(kind, cause, attempt) from exc
                    await asyncio.sleep(min(FIRST_BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF))
                    answer.responded = False
                else:
                    self._reach(True, 'answered a request')
                    return

    async def _stream(self, payload, answer: _Answer, on_text, cancel) -> None:
        """Send one request and read its answer stream into answer, until done or cancelled."""
        stream = await self._client.chat.completions.create(**payload)
        answer.responded = True
        async with stream:  # leaving it closes the connection: the server stops generating
            async for chunk in stream:
                if cancel.is_set():
                    return
                if chunk.usage is not None:
                    answer.tokens = chunk.usage.completion_tokens
                for choice in chunk.choices or ():
                    text = choice.delta.content if choice.delta is not None else None
                    if text:
                        answer.first_at = answer.first_at or time.perf_counter()
                        answer.pieces.append(text)
                        if on_text is not None:
                            on_text(text)
                    answer.finished = answer.finished or choice.finish_reason is not None
        if not answer.finished:
            raise self._error('backend_bad_response', 'the answer stream ended without a '
                              'finish_reason (not a chat completion stream, or cut short)', 1)

    def _classify(self, exc: Exception, answer: _Answer) -> tuple:
        """Return (kind, cause, transient) for a failed request, secrets redacted."""
        kind, cause, transient = self._describe(exc, answer)
        return kind, self._redact(cause), transient

    def _redact(self, text: str) -> str:
        """Remove the API key, and any bearer token or key a server echoed, from text.

        Messages go to Plans, /diagnostics and logs, which anyone on the DDS domain reads.
        """
        if self._key != NO_KEY:
            text = text.replace(self._key, '<api key>')
        return SECRET_PATTERN.sub(lambda m: m.group(1) + '<redacted>', text)

    def _describe(self, exc: Exception, answer: _Answer) -> tuple:
        if isinstance(exc, openai.APITimeoutError):
            return ('backend_timeout', f'no answer within request_timeout '
                    f'{self.remote.request_timeout:g} s', True)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc  # the innermost error says most: ConnectionRefusedError, not 'Connection'
            while (cause.__cause__ or cause.__context__) is not None:
                cause = cause.__cause__ or cause.__context__
            cause = f'{type(cause).__name__}: {cause}'
            if answer.responded:
                return 'backend_bad_response', f'the answer was cut off ({cause})', True
            return 'backend_unreachable', f'cannot reach the server ({cause})', True
        if isinstance(exc, openai.APIStatusError):  # redacted before it is cut short
            body = self._redact(' '.join(exc.response.text.split()))[:300]
            return ('backend_http_error', f'HTTP {exc.status_code}: {body}',
                    exc.status_code in RETRY_STATUS)
        if isinstance(exc, openai.APIError):  # an error event inside a 200 stream
            return 'backend_bad_response', f'the server reported an error: {exc.body}', False
        return 'backend_bad_response', f'unreadable answer ({type(exc).__name__}: {exc})', False

    def _error(self, kind: str, cause: str, attempts: int) -> VlmError:
        tries = f' (after {attempts} attempts)' if attempts > 1 else ''
        message = f'openai backend at {self.remote.base_url}: {cause}{tries}'
        return VlmError(kind, self._redact(message), self.model_name)

    def _reach(self, reachable: bool, note: str) -> None:
        self.reachable, self.checked = reachable, note

    async def _check_forever(self) -> None:
        """Ask GET {base_url}/models every probe_period s: any HTTP answer means reachable."""
        client = self._client.with_options(timeout=min(PROBE_TIMEOUT,
                                                       self.remote.request_timeout))
        while True:
            try:
                await client.models.list()
                self._reach(True, 'GET /models answered')
            except openai.APIConnectionError as exc:
                self._reach(False, self._classify(exc, _Answer())[1])
            except Exception as exc:  # noqa: BLE001 - any other answer: the server is there
                self._reach(True, f'GET /models answered, but {self._classify(exc, _Answer())[1]}')
            await asyncio.sleep(self.remote.probe_period)
