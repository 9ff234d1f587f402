"""Greedy decoding steps replayed from CUDA graphs, the host reading tokens only every few steps.

transformers' generate loop prepares inputs, runs its logits processors and stopping criteria
in Python at every step, then reads a flag back from the GPU before the next: on an H200 that
host time set SmolVLM-2B's 4.1 ms a token, compiled or not. Here generate still makes the
first token (prefill, time to first token, the cancel hooks and the streamer as before) into a
static cache kept per (batch size, cache length); every later step is the decoder's one-token
forward, the greedy pick and its log-probability (greedy_step), captured once as a CUDA graph
whose buffers feed its next replay. The host queues CHUNK replays at a time, two chunks ahead,
and reads the tokens of the older chunk (EOS, cancels, streaming) while the GPU works. On
CUDA the step is compiled first: replayed eagerly, each layer's dozens of small elementwise
kernels took as long as its matrix products (docs/BENCHMARKS.md, 2026-12-04); so is the
first forward's decoder (compiled_prefill.py). The products that share an input run as one
(fused_projections.py): the decoder's weights are read in fewer, wider products.

Under a plan grammar the host reads every step's tokens, since the grammar needs them before it
masks the next step's scores (constrain.py); the step is still one replay. Only where that
equals generate: greedy decoding, decoder-only families with one position per token and no
sliding window (LLaVA, Idefics3/SmolVLM, Qwen2-VL and Qwen2.5-VL), and generation configs that
add no logits processor but min_new_tokens. On a CPU the same steps run eagerly
(compiled on request); the tests check tokens and log-probabilities against generate.
"""

import collections
import inspect

import torch
from transformers import GenerationConfig, StaticCache

from .compiled_prefill import EAGER_ROUNDING, CompiledPrefill
from .fused_projections import fuse_projections
from .streams import side_stream

CHUNK = 4  # steps between two reads of the tokens; up to 2 x CHUNK steps run past a stop
BUCKET = 256  # cache lengths are rounded up to a multiple: few distinct graphs
MAX_SLOTS = 4  # (batch size, cache length) states kept; the least recently used goes
# Idefics2's Mistral: a sliding window cache. Qwen2-VL: 3-D rotary positions, one a token
# after the prompt, the same in each section (the prompt's own offset: rope_deltas).
FAMILIES = ('llava', 'idefics3', 'smolvlm', 'qwen2_vl', 'qwen2_5_vl')
GROWING_ROPE = ('dynamic', 'longrope')  # rotary tables that change with the length: not graphed
# Generation-config fields that add logits processors to generate (they must be the default).
PROCESSOR_FIELDS = ('repetition_penalty', 'encoder_repetition_penalty', 'no_repeat_ngram_size',
                    'bad_words_ids', 'suppress_tokens', 'begin_suppress_tokens',
                    'forced_bos_token_id', 'forced_eos_token_id', 'sequence_bias',
                    'exponential_decay_length_penalty', 'min_length', 'num_beams',
                    'renormalize_logits', 'guidance_scale', 'watermarking_config')


def family_supported(model) -> bool:
    """Whether this model's greedy steps can run here exactly as generate runs them."""
    if model.config.is_encoder_decoder or model.config.model_type not in FAMILIES:
        return False
    text = model.config.get_text_config()
    rope = getattr(text, 'rope_parameters', None) or getattr(text, 'rope_scaling', None) or {}
    if getattr(text, 'sliding_window', None) or rope.get('rope_type') in GROWING_ROPE:
        return False
    defaults, own = GenerationConfig(), model.generation_config
    return all(getattr(own, name, None) == getattr(defaults, name, None)
               for name in PROCESSOR_FIELDS)


def cache_length(prompt_length: int, new_tokens: int) -> int:
    """Return the static cache's length for a prompt and its token budget (up to BUCKET)."""
    return -(-(prompt_length + new_tokens) // BUCKET) * BUCKET


def cache_keyword(function) -> str:
    """Return the name ``function`` takes a cache by (5.24 renamed past_key_values)."""
    return 'cache' if 'cache' in inspect.signature(function).parameters else 'past_key_values'


def greedy_step(decoder, head, cache: dict, ids, attended, positions, cache_position,
                eos_blocked) -> tuple:
    """One token per row: the decoder's forward, the greedy pick, the logits and log-softmax.

    ``cache`` is {keyword: StaticCache}; ``eos_blocked`` masks EOS while min_new_tokens holds.
    The logits are kept for a plan grammar's mask, the log-softmax for the taken token's
    log-probability (the model's own, before any grammar, as TokenLogProbs records it).
    """
    hidden = decoder(input_ids=ids, attention_mask=attended, position_ids=positions,
                     cache_position=cache_position, use_cache=True, **cache).last_hidden_state
    logits = head(hidden[:, -1]).float().masked_fill(eos_blocked, float('-inf'))
    return logits.argmax(-1, keepdim=True), logits, torch.log_softmax(logits, -1)


class GraphDecoder:
    """The slots of one loaded model: a static cache, step buffers and a graph per shape."""

    def __init__(self, model, eos_ids: set, compiled: bool = False):
        self._model, self._eos_ids = model, frozenset(eos_ids)
        # one product for q, k, v and one for gate, up: fewer, wider reads of the weights
        if fuse_projections(model.get_decoder()) and model.device.type == 'cuda':
            torch.cuda.empty_cache()  # the separate weights' freed blocks: not kept reserved
        # torch.compile fuses each layer's elementwise kernels (norms, rotary, activations)
        self._step = torch.compile(greedy_step, dynamic=True, options=EAGER_ROUNDING) \
            if compiled else greedy_step
        self.prefill = CompiledPrefill(model) if compiled else None  # the first forward's
        self._slots = collections.OrderedDict()
        self.captures = 0  # graphs captured since load: none in steady state (benchmarks)

    @staticmethod
    def takes(sampling: dict) -> bool:
        """Whether a request decodes here: greedy (a plan grammar masks each step's scores)."""
        return not sampling.get('do_sample')

    def slot(self, batch: int, prompt_length: int, new_tokens: int) -> '_Slot':
        """Return the slot for this shape (made on first use), with its cache emptied."""
        key = (batch, cache_length(prompt_length, new_tokens))
        if key not in self._slots:
            if len(self._slots) >= MAX_SLOTS:
                self._slots.popitem(last=False)
            self._slots[key] = _Slot(self._model, *key, sorted(self._eos_ids), self._step)
        self._slots.move_to_end(key)
        slot = self._slots[key]
        slot.empty()
        return slot

    def decode(self, slot: '_Slot', steps: int, cancels: list, stopped: list, on_token,
               constraint=None, first: tuple = ()) -> tuple:
        """Decode up to ``steps`` more tokens per row after the first; return (tokens, logprobs).

        ``stopped[row]`` is true for a row that already ended (EOS as first token) and is set
        for each row that ends here: at EOS, or when its cancel event is seen (the tokens up
        to then are kept). ``on_token(row, token)`` sees each kept token in order. The GPU is
        kept two chunks ahead of the host, which reads the older chunk meanwhile. With a
        plan grammar (``constraint``, which saw the ``first`` tokens' step), one step at a time.
        """
        captured = slot.captured
        if constraint is not None:
            decoded = self._decode_constrained(slot, steps, cancels, stopped, on_token,
                                               constraint, first)
        else:
            decoded = self._decode_free(slot, steps, cancels, stopped, on_token)
        self.captures += slot.captured and not captured
        return decoded

    def _decode_free(self, slot: '_Slot', steps: int, cancels: list, stopped: list,
                     on_token) -> tuple:
        """Replay CHUNK steps at a time, two chunks ahead of the host that reads them."""
        batch = len(stopped)
        pinned = slot.on_gpu
        tokens = torch.empty((steps, batch), dtype=torch.long, pin_memory=pinned)
        logprobs = torch.empty((steps, batch), dtype=torch.float32, pin_memory=pinned)
        kept = [0] * batch
        queued, launched, read = collections.deque(), 0, 0
        while read < steps and not all(stopped):
            while launched < steps and launched - read < 2 * CHUNK:
                count = min(CHUNK, steps - launched)
                slot.run(count)
                queued.append((launched, launched + count,
                               slot.read(launched, launched + count, tokens, logprobs)))
                launched += count
            start, stop, event = queued.popleft()
            if event is not None:
                event.synchronize()
            for row, values in enumerate(tokens[start:stop].t().tolist()):
                for token in values:
                    if not self._keep(row, token, cancels, stopped, on_token):
                        break
                    kept[row] += 1
            read = stop
        return ([tokens[:count, row].tolist() for row, count in enumerate(kept)],
                [logprobs[:count, row].tolist() for row, count in enumerate(kept)])

    def _decode_constrained(self, slot: '_Slot', steps: int, cancels: list, stopped: list,
                            on_token, constraint, first: tuple) -> tuple:
        """Replay one step, mask its scores by the grammar, take the best allowed token.

        The grammar needs each row's token before it can mask the next step, so the host reads
        the tokens back at every step; the step itself is still one graph replay.
        """
        rows = [([], []) for _ in stopped]
        previous = list(first)
        for _ in range(steps):
            if all(stopped):
                break
            slot.run(1)
            constraint(torch.tensor(previous).view(-1, 1), slot.scores)
            previous, logprobs = slot.retake()
            for row, (token, logprob) in enumerate(zip(previous, logprobs, strict=True)):
                if self._keep(row, token, cancels, stopped, on_token):
                    rows[row][0].append(token)
                    rows[row][1].append(logprob)
        return [tokens for tokens, _ in rows], [logprobs for _, logprobs in rows]

    def _keep(self, row: int, token: int, cancels: list, stopped: list, on_token) -> bool:
        """Whether row keeps its next token: not once it ended or its cancel is seen.

        A kept token goes to ``on_token``; an EOS is kept and ends the row.
        """
        stopped[row] = stopped[row] or cancels[row].is_set()
        if stopped[row]:
            return False
        on_token(row, token)
        stopped[row] = token in self._eos_ids
        return True

    def close(self) -> None:
        """Drop every cache and graph (their memory goes back with the allocator's cache)."""
        self._slots.clear()
        self.prefill = None


class _Slot:
    """One shape's static cache, the buffers a step reads and writes, and its CUDA graph."""

    def __init__(self, model, batch: int, length: int, eos_ids: list, step):
        device = model.device
        self._step_function = step
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        # made now, not at the first prefill: a compiled prefill would compile apart for a
        # cache that is not made yet (compiled_prefill.py)
        text = model.config.get_text_config()
        self.cache.early_initialization(
            batch, text.num_key_value_heads,
            getattr(text, 'head_dim', None) or text.hidden_size // text.num_attention_heads,
            model.dtype, device)
        self._decoder, self._head = model.get_decoder(), model.get_output_embeddings()
        self._base = getattr(model, 'model', None)  # where Qwen2-VL keeps its rope_deltas
        self._cache_argument = cache_keyword(self._decoder.forward)
        self.on_gpu = device.type == 'cuda'
        self._graph = None

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(shape, dtype=dtype, device=device)
        self._ids, self._positions = zeros(batch, 1), zeros(batch, 1)
        self._cache_position, self._step, self._min_steps = zeros(1), zeros(1), zeros(1)
        self._attended = torch.ones((batch, length), dtype=torch.bool, device=device)
        self._columns = torch.arange(length, device=device)
        # step x row: the steps of a chunk are one contiguous block to copy to the host
        self._tokens, self._logprobs = zeros(length, batch), zeros(length, batch,
                                                                   dtype=torch.float32)
        vocabulary = self._head.weight.shape[0]
        self._eos = torch.zeros(vocabulary, dtype=torch.bool, device=device)
        self._eos[eos_ids] = True
        # the last step's logits (a grammar masks them in place) and log-softmax
        self.scores = torch.zeros((batch, vocabulary), dtype=torch.float32, device=device)
        self._log_softmax = torch.zeros_like(self.scores)

    @property
    def captured(self) -> bool:
        """Whether this slot's graph exists (captured at its first decode on a GPU)."""
        return self._graph is not None

    def empty(self) -> None:
        """Forget the cached states: the next prefill writes from position 0."""
        for layer in self.cache.layers:
            if getattr(layer, 'is_initialized', False):
                layer.cumulative_length.zero_()

    def start(self, first: torch.Tensor, attention_mask: torch.Tensor, min_steps: int) -> None:
        """Set the buffers after the prefill: first tokens, positions, padding, EOS floor."""
        prompt = attention_mask.shape[1]
        self._ids.copy_(first.view(-1, 1))
        self._positions.copy_(attention_mask.long().sum(-1, keepdim=True))
        # 3-D rotary positions: an image's tokens take fewer positions than their count, so
        # the text after it continues from the prompt's offset, set by its prefill
        deltas = getattr(self._base, 'rope_deltas', None)
        if deltas is not None:
            self._positions.add_(deltas.view(-1, 1))
        self._cache_position.fill_(prompt)
        self._step.zero_()
        self._min_steps.fill_(min_steps)
        self._attended.fill_(True)
        self._attended[:, :prompt] = attention_mask.bool()

    def run(self, steps: int) -> None:
        """Queue ``steps`` decoding steps (replays on a GPU, eager forwards on a CPU)."""
        if not self.on_gpu:
            for _ in range(steps):
                self._forward()
            return
        if self._graph is None:
            self._graph = self._capture()
        for _ in range(steps):
            self._graph.replay()

    def read(self, start: int, stop: int, out_tokens: torch.Tensor, out_logprobs: torch.Tensor):
        """Copy steps [start, stop) to the host; return an event that completes with the copy."""
        out_tokens[start:stop].copy_(self._tokens[start:stop], non_blocking=self.on_gpu)
        out_logprobs[start:stop].copy_(self._logprobs[start:stop], non_blocking=self.on_gpu)
        if not self.on_gpu:
            return None
        event = torch.cuda.Event()
        event.record()
        return event

    def retake(self) -> tuple:
        """Take the best token each row's masked scores leave, in place of the last step's.

        The step's log-probability stays the model's own (from the unmasked log-softmax).
        Return the tokens (one per row) and their log-probabilities, read back to the host.
        """
        token = self.scores.argmax(-1, keepdim=True)
        logprob = self._log_softmax.gather(1, token)
        index = self._step - 1
        self._tokens.index_copy_(0, index, token.view(1, -1))
        self._logprobs.index_copy_(0, index, logprob.view(1, -1))
        self._ids.copy_(token)
        return token.view(-1).tolist(), logprob.view(-1).tolist()

    def _forward(self) -> None:
        """One greedy step on the buffers; what it computes, replays compute again."""
        attended = (self._attended & (self._columns <= self._cache_position))[:, None, None, :]
        token, logits, log_softmax = self._step_function(
            self._decoder, self._head, {self._cache_argument: self.cache}, self._ids, attended,
            self._positions, self._cache_position, self._eos & (self._step < self._min_steps))
        self.scores.copy_(logits)
        self._log_softmax.copy_(log_softmax)
        self._tokens.index_copy_(0, self._step, token.view(1, -1))
        self._logprobs.index_copy_(0, self._step, log_softmax.gather(1, token).view(1, -1))
        self._ids.copy_(token)
        self._positions.add_(1)
        self._cache_position.add_(1)
        self._step.add_(1)

    def _capture(self):
        """Record one step as a CUDA graph, after one eager step that loads the kernels.

        The eager step writes the cache at the next position and moves the buffers on: both
        are put back, so the first replay makes the same step again.
        """
        state = [self._ids, self._positions, self._cache_position, self._step]
        state += [layer.cumulative_length for layer in self.cache.layers]
        saved = [tensor.clone() for tensor in state]
        side = side_stream(self._ids.device, 'capture')
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._forward()
        torch.cuda.current_stream().wait_stream(side)
        for tensor, value in zip(state, saved, strict=True):
            tensor.copy_(value)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side, capture_error_mode='thread_local'):
            self._forward()
        for tensor, value in zip(state, saved, strict=True):
            tensor.copy_(value)
        return graph
