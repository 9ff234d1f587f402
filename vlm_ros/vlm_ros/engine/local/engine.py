"""The in-process engine: requests in, results out, through preprocess -> generate -> parse.

Plain types only (numpy images, strings, dataclasses), no rclpy: the ROS node, the offline
evaluator and the benchmark all drive this same class.
"""

import threading
from collections.abc import Callable
from typing import Optional

from ..base import CancelSignal, EngineBase, check_batch
from ..chat import render_prompt
from ..config import EngineConfig
from ..errors import VlmError
from ..grounding import views_of
from ..plan_schema import PLAN_TASKS
from ..preprocess import fitted_size
from ..results import make_result, mark_closed
from . import constrain, decoding, loader, teacher_forcing
from .answer_text import answer_text
from .generate import eos_token_ids, generate
from .inputs import InputStage
from .positions import fitted_limits
from .token_logprobs import text_logprobs


class VlmEngine(EngineBase):
    """Loads one VLM and answers batches of requests; load() before run(), unload() to free.

    Implements interface.Engine with the model in this process.

    ``concurrency`` is 1: one model in one process runs one ``generate`` at a time, so callers
    batch requests instead of running them side by side.
    """

    concurrency = 1

    def __init__(self, config: EngineConfig):
        super().__init__(config)
        self._loaded: Optional[loader.LoadedModel] = None
        self.decoding = decoding.Decoding()  # the decode mode, resolved at load()
        self._grammars: Optional[constrain.GrammarCache] = None  # None: plans not constrained
        self._free_plans = ''  # why constrain_plans 'auto' left plans free ('' otherwise)
        self._stage = InputStage()  # the processor, its lock and the frame cache (inputs.py)

    @property
    def loaded(self) -> loader.LoadedModel:
        """The loaded model, or VlmError when load() has not run."""
        if self._loaded is None:
            raise VlmError('load_failed', 'the model is not loaded', self.config.model,
                           self.config.device)
        return self._loaded

    @property
    def is_loaded(self) -> bool:
        """Tell whether load() has run and unload() has not."""
        return self._loaded is not None

    @property
    def model_name(self) -> str:
        """The model's name as answers report it."""
        return self.config.model

    def describe(self) -> str:
        """Say what is loaded and where, for a log line."""
        loaded = self.loaded
        constrained = 'constrained' if self._grammars is not None else \
            f'unconstrained{f" ({self._free_plans})" if self._free_plans else ""}'
        return (f'{loaded.name} on {loaded.device} ({loaded.dtype}, {self.decoding.mode} '
                f'decoding, {constrained} plans, {loaded.cpu_threads} CPU threads, '
                f'warm-up {self.decoding.warm_up_seconds:.1f} s)')

    def check_cameras(self, names: tuple) -> None:
        """Place one image per camera in a prompt, as run() would; VlmError where it cannot."""
        render_prompt(self.loaded.processor, 'cameras', tuple(names))

    def status(self) -> dict:
        """Plain values for diagnostics: the device, torch's CPU threads, GPU memory on a GPU.

        Empty once unloaded: the node's diagnostics timer may ask while a shutdown unloads.
        """
        loaded, frames = self._loaded, self._stage.frames
        if loaded is None:
            return {}
        return {'device': str(loaded.device), **self.decoding.status(),
                'constrained_plans': str(self._grammars is not None).lower(),
                'frames_preprocessed': getattr(frames, 'frames_processed', 0),
                'frames_reused': getattr(frames, 'frames_reused', 0),
                **loader.compute_status(loaded)}

    def load(self) -> None:
        """Load weights and processor (downloads from the hub when model is a hub id).

        Then warm up (decoding.py) where the first request would otherwise pay for compiling
        or for CUDA's start-up; a warm-up that fails unloads and raises VlmError.
        """
        loaded = loader.load(self.config)
        self._stage.attach(loaded.processor, loaded.device)
        tokenizer = loaded.processor.tokenizer
        if not loaded.is_encoder_decoder:
            tokenizer.padding_side = 'left'  # new tokens follow the last prompt token per row
        self._loaded = loaded
        try:  # a load that fails on the way leaves nothing loaded
            self._grammars, self._free_plans = constrain.resolve(
                self.config, tokenizer, eos_token_ids(loaded.model, tokenizer))
            self.decoding.prepare(loaded, self.preprocess, self.config)
        except VlmError:
            self.unload()
            raise

    def unload(self) -> None:
        """Free the model (and cached GPU memory)."""
        self._grammars = None
        self.decoding.close()
        if self._loaded is not None:
            self._stage.detach()
            loader.unload(self._loaded)
            self._loaded = None

    def preprocess(self, requests: list):
        """Stage 1: resize images, fill prompt templates, tokenize into one batch (inputs.py)."""
        loaded = self.loaded
        return loader.to_device(self._stage.encode(loaded, requests, self.config, self.templates),
                                loaded.device, loaded.dtype)

    def prepare(self, images: list) -> None:
        """Preprocess the frames of requests still waiting, while the current batch generates.

        The frame cache keeps each frame's outputs, so the run() that answers those requests
        skips the image processor for them. Called from another thread than run(): the
        processor runs under a lock (a fast tokenizer refuses calls from two threads at once),
        and the model is not touched.
        """
        if self._stage.frames is not None and images:
            self._stage.prepare(self.loaded, images, self.config, self.templates)

    def update(self, **fields) -> None:
        """Change run-time fields; new skills compile first, so refused ones change nothing."""
        if 'skills' in fields and self._grammars is not None:
            self._grammars.grammar(tuple(fields['skills']))
        super().update(**fields)

    def generate_kwargs(self) -> dict:
        """Keyword arguments of model.generate: sampling, and the decode mode's cache."""
        if not self.config.do_sample:
            return {'do_sample': False, **self.decoding.arguments}
        return {'do_sample': True, 'temperature': self.config.temperature,
                'top_p': self.config.top_p, **self.decoding.arguments}

    def run(self, requests: list, on_text: Optional[Callable[[str], None]] = None,
            cancel: Optional[threading.Event] = None) -> list:
        """Answer requests in one batched generate; results in request order.

        Each request may carry its own ``on_text`` and ``cancel`` (Request); the arguments are
        for a single request's text stream, and the cancel of the requests without their own
        event. A cancelled request (or every one, on cancel()) stops between two decoding
        steps (the others go on) and its result is marked cancelled. Raises VlmError
        ('bad_input' for a bad image or text, 'out_of_memory' or 'generation_failed' for the
        model), never a bare exception.
        """
        check_batch(requests, on_text, cancel)
        if not requests:
            return []
        with self.running() as stop:  # cancel() sets stop
            cancels = [CancelSignal(r.cancel or cancel, stop) for r in requests]
            return self._run(requests, on_text, cancels)

    def plan_constraint(self, requests: list, budgets: Optional[list] = None):
        """Return the processor keeping a batch's plans in the schema (and budgets) or None."""
        return constrain.for_batch(self._grammars, self.config.skills, [r.task for r in requests],
                                   not self.config.do_sample, budgets,
                                   [r.camera_names() for r in requests])

    def _run(self, requests: list, on_text, cancels: list) -> list:
        loaded = self.loaded
        inputs = self._inputs(requests)
        if all(event.is_set() for event in cancels):  # cancelled while preprocessing
            return [make_result(r.task, '', 0, 0.0, 0.0, True,
                                fitted_size(r.image, self.config.max_image_side))
                    for r in requests]
        limits = fitted_limits(loaded.model, inputs['attention_mask'],
                               [r.max_new_tokens or self.config.max_new_tokens for r in requests])
        on_texts = [r.on_text or on_text for r in requests]
        try:
            constraint = self.plan_constraint(requests, limits)
            generated = generate(loaded, inputs, max(limits), self.generate_kwargs(), on_texts,
                                 cancels, constraint, self.decoding.graphs,
                                 [r.features for r in requests])
            rows = [row[:limit] for limit, row in zip(limits, generated.tokens, strict=True)]
            texts = [answer_text(loaded.processor.tokenizer, tokens) for tokens in rows]
        except Exception as exc:  # noqa: BLE001 - the caller answers with a status, not a crash
            raise loader.model_failure('generation', exc, self.config.model,
                                       loaded.device) from exc
        return _results(loaded, requests, texts, rows, generated, constraint,
                        self.config.max_image_side)

    def _inputs(self, requests: list):
        """Preprocess requests for the model; VlmError('bad_input') when the processor refuses."""
        try:
            return self.preprocess(requests)
        except VlmError:
            raise
        except Exception as exc:  # noqa: BLE001 - the processor refused this input
            raise VlmError('bad_input', f'preprocessing failed: {exc!r}', self.config.model,
                           str(self.loaded.device), exc) from exc

    def score(self, requests: list, targets: list) -> list:
        """Score each target as the answer to its request, teacher-forced, in one forward pass.

        Prompts go through preprocess(), so a model is scored on exactly the inputs it answers
        at run time (teacher_forcing.py). Errors as the interface declares (interface.py).
        """
        check_batch(requests)
        teacher_forcing.check_targets(requests, targets, self.config.model)
        if not requests:
            return []
        loaded = self.loaded
        inputs = self._inputs(requests)
        try:
            return teacher_forcing.score_batch(loaded.model, loaded.processor, inputs, targets)
        except VlmError:
            raise  # a target too long for the model's positions: the caller's, not the model's
        except Exception as exc:  # noqa: BLE001 - the caller gets a kind, not a crash
            raise loader.model_failure('scoring', exc, self.config.model, loaded.device) from exc


def _results(loaded, requests: list, texts: list, rows: list, generated, constraint,
             max_image_side: int) -> list:
    """Parse each row's text into its Result, with its tokens' log-probabilities.

    constraint: the batch's PlanConstraint (None: no plan grammar), which says which rows
    followed it to their end and where it closed a row's plan (results.mark_closed).
    """
    tokenizer = loaded.processor.tokenizer
    eos = eos_token_ids(loaded.model, tokenizer)
    image_processor = getattr(loaded.processor, 'image_processor', None)
    followed = constraint.followed if constraint else [False] * len(requests)
    results = [make_result(request.task, text, len(tokens), generated.time_to_first_token,
                           generated.total_time, cancelled, fitted_size(request.image,
                                                                        max_image_side),
                           constrained, *text_logprobs(tokenizer, tokens, logprobs, eos,
                                                       request.task in PLAN_TASKS),
                           views=views_of(image_processor, request, max_image_side),
                           features=features)
               for request, text, tokens, cancelled, constrained, logprobs, features in zip(
                   requests, texts, rows, generated.cancelled, followed, generated.logprobs,
                   generated.features or [None] * len(requests), strict=True)]
    if constraint is not None:  # where the grammar closed a row's plan: its last tokens
        for result, tokens, closed_at in zip(results, rows, constraint.closed_at, strict=True):
            if closed_at is not None:
                mark_closed(result, len(tokens) - closed_at,
                            answer_text(tokenizer, tokens[closed_at:]))
    return results
