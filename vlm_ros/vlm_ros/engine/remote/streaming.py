"""The asyncio core of the openai backend: a batch of streamed answers, each cancellable.

A batch goes out concurrently, and a cancel stops a request at any point, even while the server
is silent: the cancel signals are looked at every CANCEL_POLL seconds, not only between two
streamed pieces. Closing a stream closes its connection, which makes the server stop
generating.
"""

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Optional

CANCEL_POLL = 0.05  # s between looks at the cancel event while the server sends nothing


@dataclass
class Answer:
    """What one streamed answer delivered; filled on the event loop, read after it is done."""

    pieces: list = field(default_factory=list)
    first_at: Optional[float] = None
    tokens: Optional[int] = None  # from the server's usage report
    responded: bool = False  # headers arrived: a failure from now on cuts an answer off
    finished: bool = False  # a finish_reason arrived: the answer is complete
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


async def read_answer(client, payload: dict, answer: Answer, on_text, cancel) -> bool:
    """Send one request and read its answer stream into answer, until done or cancelled.

    Return whether the answer is whole or cancelled: False when the stream ended without a
    finish_reason (not a chat completion stream, or cut short).
    """
    stream = await client.chat.completions.create(**payload)
    answer.responded = True
    async with stream:  # leaving it closes the connection: the server stops generating
        async for chunk in stream:
            if cancel.is_set():
                return True
            if chunk.usage is not None:
                answer.tokens = chunk.usage.completion_tokens
            for choice in chunk.choices or ():
                text = choice.delta.content if choice.delta is not None else None
                if text:
                    answer.first_at = answer.first_at or time.perf_counter()
                    answer.pieces.append(text)
                    _keep_logprobs(answer, getattr(choice, 'logprobs', None))
                    if on_text is not None:
                        on_text(text)
                answer.finished = answer.finished or choice.finish_reason is not None
    return answer.finished


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
