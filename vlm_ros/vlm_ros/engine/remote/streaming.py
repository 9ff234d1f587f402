"""The asyncio core of the openai backend: a batch of streamed answers, each cancellable.

A batch goes out concurrently, and a cancel stops a request at any point, even while the server
is silent: the cancel signals are looked at every CANCEL_POLL seconds, not only between two
streamed pieces. Closing a stream closes its connection, which makes the server stop
generating.

A server is never trusted to end an answer. The client's own timeout bounds each read, and an
SSE comment (': keepalive') is a read, so a server that sends only comments would hold a
request for ever: each data event must come within request_timeout of the request or of the one
before. Pieces beyond max_tokens, characters beyond CHARS_PER_TOKEN a token and data events
beyond FRAMING_EVENTS more are not read: the stream is closed there. After the finish_reason,
the usage report and the stream's end get USAGE_WAIT: a server that keeps the stream open after
its answer loses no answer.
"""

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Optional

CANCEL_POLL = 0.05  # s between looks at the cancel event while the server sends nothing
# English text averages about 4 characters a token, and the longest tokens of common
# vocabularies (runs of spaces, '=' or '-') are some tens: an answer the server kept within
# max_tokens is far below this many characters a token. It bounds what a server that ignores
# max_tokens (or sends one huge piece) makes the node keep: 256 kB at max_new_tokens 4096.
CHARS_PER_TOKEN = 64
# s to wait after the finish_reason for the usage report and the stream's end, which follow at
# once (vLLM, SGLang; reading to the end lets the client keep the connection for the next
# request). A server that keeps the stream open holds a whole answer only this long; without
# a usage report its tokens are counted as its pieces.
USAGE_WAIT = 1.0
# Data events an answer may have beyond max_tokens: each event of a server carries a token (some
# hold back a token's text while it is incomplete UTF-8) but for a few that frame the answer
# (role, finish_reason, usage report). Events without text past this bound are not read
# either, so no stream of them holds a request.
FRAMING_EVENTS = 8


@dataclass
class Answer:
    """What one streamed answer delivered; filled on the event loop, read after it is done."""

    pieces: list = field(default_factory=list)
    chars: int = 0  # in pieces, all together (add() counts them)
    first_at: Optional[float] = None
    tokens: Optional[int] = None  # from the server's usage report
    responded: bool = False  # headers arrived: a failure from now on cuts an answer off
    finished: bool = False  # a finish_reason arrived: the answer is complete
    # The max_tokens the server sent more than: the answer was cut there (0: it kept to it).
    ignored_limit: int = 0
    # Per token, where the server sends logprobs: its text and natural-log probability. None
    # once a piece came without them or with malformed ones: the confidence is then unknown.
    token_logprobs: Optional[list] = field(default_factory=list)

    def text_logprobs(self) -> tuple:
        """Return (logprobs, ends) of the answer's tokens, or ((), ()) where unknown.

        The tokens' texts must make up the answer's text exactly, as they do on vLLM and
        SGLang; ends[i] is where token i ends in it (results.make_result).
        """
        pairs = self.token_logprobs
        if not pairs or ''.join(token for token, _ in pairs) != ''.join(self.pieces):
            return (), ()
        ends, end = [], 0
        for token, _ in pairs:
            end += len(token)
            ends.append(end)
        return tuple(value for _, value in pairs), tuple(ends)

    def add(self, text: str, limit: int) -> str:
        """Keep a streamed piece, within limit pieces and CHARS_PER_TOKEN x limit characters.

        Return what of it was kept ('' for none). Past either bound the server ignored
        max_tokens = limit: the answer is cut there (ignored_limit), as a local one is at
        max_new_tokens. At limit pieces the answer is not cut yet: an honest server's last
        piece, then its finish_reason 'length', may come next.
        """
        room = CHARS_PER_TOKEN * limit - self.chars
        if len(self.pieces) == limit or len(text) > room:
            self.ignored_limit = limit
            text = '' if len(self.pieces) == limit else text[:room]
        if text:
            self.first_at = self.first_at or time.perf_counter()
            self.pieces.append(text)
            self.chars += len(text)
        return text


async def run_all(coroutines: list, cancels: list) -> None:
    """Await each request; stop each on its cancel, all on the first failure (raised)."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        pending = set(tasks)
        while pending:
            for task, cancel in zip(tasks, cancels, strict=True):
                if cancel.is_set():  # also while the server sends nothing
                    task.cancel()
            done, pending = await asyncio.wait(pending, timeout=CANCEL_POLL,
                                               return_when=asyncio.FIRST_EXCEPTION)
            if any(not task.cancelled() and task.exception() for task in done):
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


async def read_answer(client, payload: dict, answer: Answer, on_text, cancel,
                      timeout: float) -> bool:
    """Send one request and read its answer stream into answer, until done or cancelled.

    Return whether the answer is whole, cut at max_tokens, or cancelled: False when the stream
    ended without a finish_reason (not a chat completion stream, or cut short). Raise
    asyncio.TimeoutError when no data came within timeout s of the request or of the data
    before (failures.py: backend_timeout).
    """
    limit = payload['max_tokens']
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    stream = await _until(client.chat.completions.create(**payload), deadline, loop)
    answer.responded = True
    async with stream:  # leaving it closes the connection: the server stops generating
        chunks = aiter(stream)
        for events in itertools.count(1):
            try:
                chunk = await _until(anext(chunks), deadline, loop)
            except StopAsyncIteration:
                return answer.finished
            except asyncio.TimeoutError:
                if answer.finished:  # the server said all, and kept the stream open
                    return True
                raise
            finished = answer.finished
            if cancel.is_set() or _take(chunk, events, answer, limit, on_text):
                return True
            if not answer.finished:
                deadline = loop.time() + timeout
            elif not finished:  # the usage report and the stream's end follow at once, if at all
                deadline = loop.time() + min(USAGE_WAIT, timeout)


async def _until(awaitable, deadline: float, loop):
    """Await awaitable until the loop's clock reads deadline (asyncio.TimeoutError after)."""
    return await asyncio.wait_for(awaitable, max(0.0, deadline - loop.time()))


def _take(chunk, events: int, answer: Answer, limit: int, on_text) -> bool:
    """Add the events-th data event to answer; return whether it is cut at limit there."""
    if events > limit + FRAMING_EVENTS:
        answer.ignored_limit = limit
        return True
    if chunk.usage is not None:
        answer.tokens = chunk.usage.completion_tokens
    for choice in chunk.choices or ():
        _read_choice(choice, answer, limit, on_text)
    return bool(answer.ignored_limit)


def _read_choice(choice, answer: Answer, limit: int, on_text) -> None:
    """Add one streamed choice's text (within limit), logprobs and finish_reason to answer."""
    text = choice.delta.content if choice.delta is not None else None
    kept = answer.add(text, limit) if text else ''
    if kept:
        _keep_logprobs(answer, getattr(choice, 'logprobs', None))
        if on_text is not None:
            on_text(kept)
    answer.finished = answer.finished or choice.finish_reason is not None


def _keep_logprobs(answer: Answer, logprobs) -> None:
    """Add a streamed piece's token log-probabilities to answer; any fault makes them unknown.

    A server that ignores ``logprobs`` (transformers serve) sends none; a hostile or broken one
    may send anything: only finite numbers at most 0 and string tokens are kept.
    """
    if answer.token_logprobs is None:
        return
    try:
        pairs = [(item.token, float(item.logprob)) for item in logprobs.content]
    except (AttributeError, TypeError, ValueError):
        answer.token_logprobs = None
        return
    if not pairs or not all(isinstance(token, str) and -math.inf < value <= 0.0
                            for token, value in pairs):
        answer.token_logprobs = None
        return
    answer.token_logprobs.extend(pairs)
