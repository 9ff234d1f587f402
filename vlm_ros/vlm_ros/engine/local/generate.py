"""Stage 2 of 3: model-ready tensors in, new token ids and timings out.

A streamer watches every decoding step: it times the first new token (time to first token is
what a robot feels) and feeds each row's text increments to that row's callback, and a
stopping criterion lets another thread cancel one row of a batch between two steps. The first
forward (vision encoder, then prefill of the whole prompt) can take seconds on a large input:
until the first token, a check before every layer interrupts it too, once every row is
cancelled (a compiled prefill's decoder, once before it: compiled_prefill.py).
"""

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from .answer_text import answer_text
from .graph_decode import cache_keyword
from .hidden_features import prefill_states, wanted
from .token_logprobs import TokenLogProbs


@dataclass
class Generated:
    """New tokens per request (cut after EOS) and the timings of the whole batch."""

    tokens: list  # list[list[int]], one per request
    time_to_first_token: float
    total_time: float
    cancelled: list  # list[bool], one per request
    logprobs: list  # list[list[float]]: each token's log-probability (token_logprobs.py)
    features: Optional[list] = None  # per row: its prompt's Features, or None (not asked)


class _RowText:
    """Text increments of one row: the difference between successive decodes of its tokens.

    Held back while the text ends inside a multi-byte character, so the increments'
    concatenation equals the final decode; nothing after the row's EOS.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None], eos: set):
        self._tokenizer, self._on_text, self._eos = tokenizer, on_text, eos
        self._tokens, self._emitted, self.done = [], '', False

    def add(self, token: int) -> None:
        if self.done:
            return
        self._tokens.append(token)
        self.done = token in self._eos
        self.emit(final=self.done)

    def emit(self, final: bool) -> None:
        text = answer_text(self._tokenizer, self._tokens)
        if not final and text.endswith('\ufffd'):
            return
        if text.startswith(self._emitted) and len(text) > len(self._emitted):
            delta = text[len(self._emitted):]
            self._emitted = text
            self._on_text(delta)


class _Streamer(BaseStreamer):
    """Time the first new token; stream each row's text to its callback, when it has one.

    generate() first puts the prompt (decoder-only) or the decoder start token
    (encoder-decoder), then one token per row per step.
    """

    def __init__(self, tokenizer, on_texts: list, eos: set, held: bool = False):
        self._rows = [_RowText(tokenizer, on_text, eos) if on_text else None
                      for on_text in on_texts]
        self._held = held  # end() waits for release(): graph steps follow generate's
        self._streaming = any(self._rows)
        self._seen_prompt = False
        self.first_token_at = None
        self.on_first_token: Callable[[], None] = lambda: None

    def put(self, value) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.on_first_token()
        if self._streaming:
            for row, token in zip(self._rows, value.reshape(-1).tolist(), strict=True):
                if row is not None:
                    row.add(token)

    def add(self, row: int, token: int) -> None:
        """Stream one token of one row decoded outside generate (graph_decode.py)."""
        if self._rows[row] is not None:
            self._rows[row].add(token)

    def release(self) -> None:
        """End a held stream: the last text of every row."""
        self._held = False
        self.end()

    def end(self) -> None:
        if self._held:
            return
        for row in self._rows:
            if row is not None:
                row.emit(final=True)


class _Cancelled(StoppingCriteria):
    """Stop each row as soon as its cancel event is set; the other rows go on."""

    def __init__(self, events: list):
        self._events = events

    def __call__(self, input_ids, scores, **kwargs):
        return torch.tensor([event.is_set() for event in self._events], dtype=torch.bool,
                            device=input_ids.device)


class _InterruptedError(Exception):
    """Raised inside the first forward when the request is cancelled."""


@contextlib.contextmanager
def _interruptible_first_forward(model, cancels: list, streamer: _Streamer, prefill=None):
    """Until the first token, stop before any layer once every row is cancelled.

    Vision encoders, text encoders and decoders all keep their layers in ModuleLists, so this
    covers preprocessing -> vision encoding -> prefill in every family without knowing its
    module names. The hooks are removed at the first token, so decoding steps do not pay for
    them; the stopping criterion takes over, which keeps the tokens decoded so far. With a
    compiled ``prefill`` (compiled_prefill.py) in place, its decoder is checked once, before
    it runs: hooks on its layers would be traced into the compiled graph.
    """
    def check(module, args):
        if all(event.is_set() for event in cancels):
            raise _InterruptedError()

    layers = [layer for module in model.modules() if isinstance(module, torch.nn.ModuleList)
              for layer in module]
    if prefill is not None:
        layers = prefill.outside(layers) + [prefill.compiled]
    handles = [layer.register_forward_pre_hook(check) for layer in layers]

    def remove():
        for handle in handles:
            handle.remove()
    streamer.on_first_token = remove
    try:
        with prefill.in_place() if prefill is not None else contextlib.nullcontext():
            yield
    finally:
        remove()


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
             on_texts: Optional[list] = None, cancels: Optional[list] = None,
             constraint=None, graphs=None, features: Optional[list] = None) -> Generated:
    """Run one batched generate.

    ``on_texts`` holds one text callback (or None) per row, ``cancels`` one Event per row:
    setting a row's event stops that row at its next step (and the first forward once every
    row's is set), and its result is marked cancelled. ``constraint`` (constrain.py) masks
    the logits of the rows it constrains before each step. With ``graphs`` (a GraphDecoder,
    graph_decode.py) a request it takes decodes after its first token from CUDA graphs.
    ``features`` holds a FeatureSpec (or None) per row: the prefill's hidden states it asks
    for are pooled into Generated.features (hidden_features.py).
    """
    batch = int(inputs['input_ids'].shape[0])
    on_texts = on_texts or [None] * batch
    cancels = cancels or [threading.Event() for _ in range(batch)]
    if len(on_texts) != batch or len(cancels) != batch:
        raise ValueError(f'{len(on_texts)} callbacks and {len(cancels)} cancel events for a '
                         f'batch of {batch}')
    tokenizer = loaded.processor.tokenizer
    eos = eos_token_ids(loaded.model, tokenizer)
    graphed = graphs is not None and max_new_tokens > 1 and graphs.takes(sampling)
    streamer = _Streamer(tokenizer, on_texts, eos, held=graphed)
    recorder = TokenLogProbs(batch, then=constraint)  # the grammar masks after it records
    start = time.perf_counter()
    try:
        with torch.inference_mode(), prefill_states(loaded.model, features,
                                                    inputs['attention_mask'],
                                                    loaded.is_encoder_decoder) as captured:
            if graphed:
                prefill = None if wanted(features) else graphs.prefill
                new, logprobs = _graphed(loaded, inputs, max_new_tokens, sampling, graphs,
                                         streamer, recorder, cancels, eos, constraint, prefill)
            else:
                output = _generate(loaded, inputs, max_new_tokens, sampling, streamer,
                                   recorder, cancels)
                ids = _new_tokens(loaded, inputs, output)
                logprobs = (recorder.finish(ids[:, -1]) if ids.shape[1]
                            else [[] for _ in range(batch)])
                new = ids.tolist()
    except _InterruptedError:
        total = time.perf_counter() - start
        return Generated([[] for _ in range(batch)], total, total, [True] * batch,
                         [[] for _ in range(batch)])
    if loaded.device.type == 'cuda':
        torch.cuda.synchronize(loaded.device)
    total = time.perf_counter() - start
    cancelled = [event.is_set() for event in cancels]
    # A row stopped by its cancel is padded to the batch's length: the padding is not output.
    tokens = [_without_padding(cut_at_eos(row, eos), tokenizer.pad_token_id) if stopped
              else cut_at_eos(row, eos)
              for row, stopped in zip(new, cancelled, strict=True)]
    first = (streamer.first_token_at - start) if streamer.first_token_at else total
    return Generated(tokens, first, total, cancelled,
                     [row[:len(kept)] for row, kept in zip(logprobs, tokens, strict=True)],
                     captured.get('features'))


def _generate(loaded, inputs, max_new_tokens: int, sampling: dict, streamer: '_Streamer',
              recorder: TokenLogProbs, cancels: list, prefill=None):
    """Run transformers' generate, cancellable per row and in its first forward.

    ``prefill`` (compiled_prefill.py) runs the first forward's decoder compiled.
    """
    with _interruptible_first_forward(loaded.model, cancels, streamer, prefill):
        return loaded.model.generate(
            **inputs, max_new_tokens=max_new_tokens, streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_Cancelled(cancels)]),
            logits_processor=LogitsProcessorList([recorder]),
            pad_token_id=loaded.processor.tokenizer.pad_token_id, **sampling)


def _new_tokens(loaded, inputs, output):
    """Return the generated part of generate's output (not an encoder-decoder's start token)."""
    if loaded.is_encoder_decoder:
        return output[:, 1:]
    return output[:, inputs['input_ids'].shape[1]:]


def _graphed(loaded, inputs, max_new_tokens: int, sampling: dict, graphs, streamer,
             recorder: TokenLogProbs, cancels: list, eos: set, constraint, prefill) -> tuple:
    """Make the first token with generate into a graph slot's cache, the others by its graph.

    ``recorder`` is generate's processor; a plan grammar (``constraint``, which the recorder
    calls) masks the first token in generate and every later one. ``prefill``, where given,
    runs the first forward's decoder compiled (compiled_prefill.py).
    """
    slot = graphs.slot(*inputs['input_ids'].shape, max_new_tokens)
    at_least = int(sampling.get('min_new_tokens') or 0)
    first_only = {'do_sample': False, 'disable_compile': True, 'min_new_tokens': min(at_least, 1),
                  cache_keyword(loaded.model.forward): slot.cache}
    output = _generate(loaded, inputs, 1, first_only, streamer, recorder, cancels, prefill)
    first = output[:, -1]
    heads = recorder.finish(first)
    slot.start(first, inputs['attention_mask'], max(at_least - 1, 0))
    firsts = first.tolist()
    stopped = [token in eos or event.is_set() for token, event in zip(firsts, cancels,
                                                                       strict=True)]
    rest, rest_logprobs = graphs.decode(slot, max_new_tokens - 1, cancels, stopped,
                                        streamer.add, constraint, tuple(firsts))
    streamer.release()
    return ([[token] + more for token, more in zip(firsts, rest, strict=True)],
            [head + more for head, more in zip(heads, rest_logprobs, strict=True)])


def _without_padding(row: list, pad_id) -> list:
    """Drop the pad tokens generate() appended to a row after it stopped."""
    end = len(row)
    while end and row[end - 1] == pad_id:
        end -= 1
    return row[:end]
