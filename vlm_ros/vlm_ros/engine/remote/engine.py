"""The 'openai' backend: the same requests and results, answered by an OpenAI-compatible server.

vLLM, SGLang, TGI, Ollama and ``transformers serve`` all speak the chat completions API, so one
client covers them. Each request becomes one streamed chat completion: the image as a JPEG data
URL after the same resize, the prompt from the same templates in the same chat layout, and the
answer parsed by the same parser as an in-process one. Every failure becomes a VlmError naming
the server and the cause. Nothing about the server is cached, so when it comes back after a
crash the next request simply works.

The asyncio client runs on one event-loop thread per engine: a batch goes out concurrently (up
to max_concurrency), and a cancel stops a request at any point, even while the server is silent,
instead of only between two streamed pieces (streaming.py). This module composes the parts:
payload.py builds a request, failures.py turns a failure into a VlmError with secrets removed,
probe.py checks whether the server is there.
"""

import asyncio
import os
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Optional

import openai

from ..base import CancelSignal, EngineBase, check_batch
from ..config import EngineConfig
from ..errors import NOT_LOADED, VlmError
from ..preprocess import check_image
from .answers import answer_result
from .failures import NO_KEY, classify, failure
from .payload import chat_payload
from .probe import ANSWERED, Reach, check_forever
from .streaming import Answer, read_answer, run_all

FIRST_BACKOFF = 0.5  # s before the first retry, doubled before each next one
MAX_BACKOFF = 8.0


class RemoteEngine(EngineBase):
    """Answers batches of requests through an OpenAI-compatible server (interface.Engine).

    load() reads the API key and starts the client and a reachability check every
    probe_period seconds; it does not need the server up, so a robot may boot before its
    server. ``reachable`` is None until the first check, then whether the server answered
    HTTP at the last check or request.
    """

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self.remote = config.remote
        self._seen = Reach()
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
    def reachable(self) -> Optional[bool]:
        """Tell whether the server answered HTTP at the last check or request (None: unknown)."""
        return self._seen.reachable

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

    def check_cameras(self, names: tuple) -> None:
        """Accept any cameras: the server's model takes them or refuses each request itself."""

    def status(self) -> dict:
        """Plain values for diagnostics: the server, and whether it answered lately."""
        return {'device': self.remote.base_url, 'base_url': self.remote.base_url,
                **self._seen.status()}

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
        self._seen = Reach()
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
        self._probe = asyncio.create_task(check_forever(self._client, self.remote, self._key,
                                                        self._seen, self.model_name))

    async def _stop(self) -> None:
        self._probe.cancel()
        await asyncio.gather(self._probe, return_exceptions=True)
        await self._client.close()

    def run(self, requests: list, on_text: Optional[Callable[[str], None]] = None,
            cancel: Optional[threading.Event] = None) -> list:
        """Answer requests, one chat completion each, concurrently; results in request order.

        ``on_text`` streams text increments (one request only); setting ``cancel`` closes the
        streams, which makes the server stop generating, and marks the results cancelled.
        Each request's own ``Request.on_text`` and ``Request.cancel`` (or cancel()) serve the
        same way for that request alone, also inside a batch.
        Timings start after JPEG encoding, as in-process ones start after preprocessing.
        Raises VlmError: 'bad_input' for a bad image or text (also a text the server's model
        cannot read with max_new_tokens more, about 'text', never retried), and for the server
        'backend_unreachable', 'backend_timeout', 'backend_http_error' or
        'backend_bad_response', with the cause in the message.
        """
        check_batch(requests, on_text, cancel)
        if not requests:
            return []
        if self._client is None:
            raise VlmError(NOT_LOADED, 'the openai backend is not loaded', self.model_name)
        if any(request.features is not None for request in requests):
            raise VlmError('unsupported', 'the openai backend cannot give features: a chat '
                           "completion returns text, not the model's hidden states; use the "
                           'transformers backend', self.model_name)
        payloads = [self.payload(request) for request in requests]
        on_texts = [request.on_text or on_text for request in requests]
        answers = [Answer() for _ in requests]
        with self.running() as stop:  # cancel() sets stop
            cancels = [CancelSignal(request.cancel, cancel, stop) for request in requests]
            start = time.perf_counter()
            self._call(run_all([self._answer(*job) for job in zip(
                payloads, answers, on_texts, cancels, strict=True)], cancels))
            total = time.perf_counter() - start
        return [answer_result(request, answer, stopped.is_set(), start, total, self.config)
                for request, answer, stopped in zip(requests, answers, cancels, strict=True)]

    def prepare(self, images: list) -> None:
        """Only check the images: the server preprocesses what it receives itself.

        As in process, a loaded engine refuses a bad image here (VlmError 'bad_input').
        """
        if self._client is not None:
            for image in images:
                check_image(image)

    def score(self, requests: list, targets: list) -> list:
        """Refuse: a chat completions server gives no likelihood of a given answer."""
        raise VlmError('unsupported', 'the openai backend cannot score target answers: chat '
                       'completions return no log-probabilities of a given answer on an image; '
                       'score with the transformers backend (vlm_eval --model CHECKPOINT)',
                       self.model_name)

    def payload(self, request) -> dict:
        """Build the chat completion: same resize, template and chat layout as in-process."""
        return chat_payload(request, self.config, self.templates, self.model_name)

    async def _answer(self, payload, answer: Answer, on_text, cancel) -> None:
        """Stream one answer, retrying transient failures with exponential backoff.

        A retry happens only before any text was streamed: text already handed to on_text
        (action feedback) cannot be taken back.
        """
        attempts = self.remote.max_retries + 1
        first = ''
        async with self._slots:
            for attempt in range(1, attempts + 1):
                try:
                    if not await read_answer(self._client, payload, answer, on_text, cancel,
                                             self.remote.request_timeout):
                        raise self._error('backend_bad_response', 'the answer stream ended '
                                          'without a finish_reason (not a chat completion '
                                          'stream, or cut short)', 1)
                except VlmError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every client failure is a VlmError
                    kind, cause, transient = classify(exc, answer.responded, self._key,
                                                      self.remote.request_timeout,
                                                      len(answer.pieces))
                    # Any other failure came from the server: it is there (an earlier check
                    # may have found it away, while it restarted), and so is one that timed
                    # out once it had begun to answer: slow, not unreachable.
                    began = answer.responded or bool(answer.pieces)
                    self._seen(kind != 'backend_unreachable' and
                               (kind != 'backend_timeout' or began), cause)
                    first = first or cause
                    if not transient or attempt == attempts or answer.pieces:
                        if first != cause:  # e.g. reset mid-request, then refused
                            cause += f'; the first attempt: {first}'
                        raise self._error(kind, cause, attempt) from exc
                    await asyncio.sleep(min(FIRST_BACKOFF * 2 ** (attempt - 1), MAX_BACKOFF))
                    answer.responded = False
                else:
                    self._seen(True, ANSWERED, '')
                    return

    def _error(self, kind: str, cause: str, attempts: int) -> VlmError:
        """Make the VlmError of a failed request (failures.py), naming this server and model."""
        return failure(kind, cause, attempts, self.remote.base_url, self.model_name, self._key)
