"""Stage 2 of 3: model-ready tensors in, new token ids and timings out.

A streamer watches every decoding step: it times the first new token (time to first token is
what a robot feels), feeds text increments to a callback when one is given, and a stopping
criterion lets another thread cancel a long generation between two steps. The first forward
(vision encoder, then prefill of the whole prompt) can take seconds on a large input: until
the first token, a check before every layer interrupts it too.
"""

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer


@dataclass
class Generated:
    """New tokens per request (cut after EOS) and the timings of the whole batch."""

    tokens: list  # list[list[int]], one per request
    time_to_first_token: float
    total_time: float
    cancelled: bool


class _Streamer(BaseStreamer):
    """Time the first new token; optionally stream decoded text increments of row 0.

    generate() first puts the prompt (decoder-only) or the decoder start token
    (encoder-decoder), then one token per row per step. Increments are the difference between
    successive decodes of all tokens so far, held back while the text ends inside a multi-byte
    character, so their concatenation equals the final decode.
    """

    def __init__(self, tokenizer, on_text: Optional[Callable[[str], None]]):
        self._tokenizer = tokenizer
        self._on_text = on_text
        self._seen_prompt = False
        self._tokens = []
        self._emitted = ''
        self.first_token_at = None

    def put(self, value) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self._on_text is not None:
            self._tokens.extend(value.reshape(-1).tolist()[:1] if value.dim() else [int(value)])
            self._emit(final=False)

    def end(self) -> None:
        if self._on_text is not None:
            self._emit(final=True)

    def _emit(self, final: bool) -> None:
        text = self._tokenizer.decode(self._tokens, skip_special_tokens=True)
        if not final and text.endswith('\ufffd'):
            return
        if text.startswith(self._emitted) and len(text) > len(self._emitted):
            delta = text[len(self._emitted):]
            self._emitted = text
            self._on_text(delta)


class _Cancelled(StoppingCriteria):
    """Stop every row as soon as the cancel event is set."""

    def __init__(self, event: threading.Event):
        self._event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class _InterruptedError(Exception):
    """Raised inside the first forward when the request is cancelled."""


@contextlib.contextmanager
def _interruptible_first_forward(model, cancel: threading.Event, streamer: _Streamer):
    """Check cancel before each layer (every ModuleList element) until the first token.

    Vision encoders, text encoders and decoders all keep their layers in ModuleLists, so this
    covers preprocessing -> vision encoding -> prefill in every family without knowing its
    module names. After the first token the stopping criterion takes over, which keeps the
    tokens decoded so far.
    """
    def check(module, args):
        if streamer.first_token_at is None and cancel.is_set():
            raise _InterruptedError()

    handles = [layer.register_forward_pre_hook(check) for module in model.modules()
               if isinstance(module, torch.nn.ModuleList) for layer in module]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def cut_at_eos(row: list, eos_ids: set) -> list:
    """Keep tokens up to and including the first EOS; padding after it is not output."""
    for index, token in enumerate(row):
        if token in eos_ids:
            return row[:index + 1]
    return row


def eos_token_ids(model, tokenizer) -> set:
    """Every id generation stops at: the generation config's and the tokenizer's EOS."""
    ids = getattr(model.generation_config, 'eos_token_id', None)
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate(loaded, inputs, max_new_tokens: int, sampling: dict,
             on_text: Optional[Callable[[str], None]] = None,
             cancel: Optional[threading.Event] = None) -> Generated:
    """Run one batched generate; streaming (on_text) is for a batch of one request."""
    batch = int(inputs['input_ids'].shape[0])
    if on_text is not None and batch != 1:
        raise ValueError('streaming needs a batch of one request')
    tokenizer = loaded.processor.tokenizer
    streamer = _Streamer(tokenizer, on_text)
    cancel = cancel or threading.Event()
    start = time.perf_counter()
    try:
        with torch.inference_mode(), \
                _interruptible_first_forward(loaded.model, cancel, streamer):
            output = loaded.model.generate(
                **inputs, max_new_tokens=max_new_tokens, streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]),
                pad_token_id=tokenizer.pad_token_id, **sampling)
    except _InterruptedError:
        total = time.perf_counter() - start
        return Generated([[] for _ in range(batch)], total, total, True)
    if loaded.device.type == 'cuda':
        torch.cuda.synchronize(loaded.device)
    total = time.perf_counter() - start
    new = output if loaded.is_encoder_decoder else output[:, inputs['input_ids'].shape[1]:]
    if loaded.is_encoder_decoder:
        new = new[:, 1:]  # the decoder start token is not output
    eos = eos_token_ids(loaded.model, tokenizer)
    tokens = [cut_at_eos(row, eos) for row in new.tolist()]
    first = (streamer.first_token_at - start) if streamer.first_token_at else total
    return Generated(tokens, first, total, cancel.is_set())
