"""What both backends share: the config, the prompt templates, run-time updates and cancel().

A node changes max_new_tokens, max_image_side, the prompt templates and the skills while a
model is loaded; the change applies from the next request on, in either backend, without a reload.
"""

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Optional

from .config import EngineConfig
from .errors import VlmError
from .interface import CONTRACT, Engine
from .plan_schema import parse_skills
from .prompts import load_templates
from .results import Request, Result

RUN_TIME_FIELDS = ('max_new_tokens', 'max_image_side', 'prompts', 'skills')

__all__ = ['CONTRACT', 'CancelSignal', 'Engine', 'EngineBase', 'RUN_TIME_FIELDS']


class CancelSignal:
    """Set once any of its events is: a request's own cancel, run()'s, or the engine's cancel().

    Engines only ask is_set(), so a signal stands wherever a threading.Event is read.
    """

    def __init__(self, *events):
        self._events = [event for event in events if event is not None]

    def is_set(self) -> bool:
        """Tell whether any of the events is set."""
        return any(event.is_set() for event in self._events)


def _whole(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise VlmError('bad_input', f'{name} must be a whole number >= {low}; got {value!r}'[:200])


def check_values(config: EngineConfig) -> None:
    """Refuse (VlmError 'bad_input') run-time values no request could be answered under.

    Checked when an engine is made and on every update(): a max_new_tokens of 0 failed every
    later request as the model's failure, and a skills string was read letter by letter.
    """
    for name in ('model', 'device'):  # a pathlib.Path or None failed deep inside load()
        if not isinstance(getattr(config, name), str):
            raise VlmError('bad_input', f'{name} must be a string; got '
                           f'{type(getattr(config, name)).__name__} {getattr(config, name)!r}'
                           + (' (pass str(path))' if name == 'model' else ''))
    _whole('max_new_tokens', config.max_new_tokens, 1)
    _whole('max_image_side', config.max_image_side, 0)
    parse_skills(config.skills)


def check_batch(requests, on_text=None, cancel=None) -> None:
    """Refuse (VlmError 'bad_input') what run() cannot take: the caller's error, not a crash."""
    what = 'requests must be a list of vlm_ros.engine.Request'
    if not isinstance(requests, (list, tuple)):
        raise VlmError('bad_input', f'{what}; got a {type(requests).__name__}')
    wrong = sorted({type(r).__name__ for r in requests if not isinstance(r, Request)})
    if wrong:
        raise VlmError('bad_input', f'{what}; it holds {", ".join(wrong)}')
    if on_text is not None and len(requests) > 1:
        raise VlmError('bad_input', 'on_text streams a single request; give each request of '
                       'a batch its own Request.on_text')
    if cancel is not None and not callable(getattr(cancel, 'is_set', None)):
        raise VlmError('bad_input', f'cancel must be a threading.Event; got {cancel!r}'[:200])
    for request in requests:
        if request.max_new_tokens is not None:  # 0: the engine's max_new_tokens
            _whole('Request.max_new_tokens', request.max_new_tokens, 0)


class EngineBase(Engine):
    """The config and templates of an engine; subclasses load a model and answer requests."""

    def __init__(self, config: EngineConfig):
        check_values(config)
        self.config = config
        self.templates = load_templates(config.prompts)
        self._running: set = set()  # one Event per run() in progress, set by cancel()
        self._running_lock = threading.Lock()

    def update(self, **fields) -> None:
        """Change run-time fields of the config (RUN_TIME_FIELDS); the next request uses them.

        Templates are checked before anything changes, so a bad one leaves the engine as it was.
        """
        unknown = set(fields) - set(RUN_TIME_FIELDS)
        if unknown:
            raise VlmError('bad_input', f'{sorted(unknown)} cannot change while a model is '
                           f'loaded; only {RUN_TIME_FIELDS} can')
        templates = load_templates(fields['prompts']) if 'prompts' in fields else self.templates
        config = dataclasses.replace(self.config, **fields)
        check_values(config)
        if 'skills' in fields:
            config = dataclasses.replace(config, skills=tuple(fields['skills']))
        self.config = config
        self.templates = templates

    def stream(self, request: Request, on_text: Callable[[str], None],
               cancel: Optional[threading.Event] = None) -> Result:
        """Answer one request through run(), streaming its text to on_text."""
        return self.run([request], on_text, cancel)[0]

    def cancel(self) -> None:
        """Set the cancel signal of every run() in progress (see running())."""
        with self._running_lock:
            for event in self._running:
                event.set()

    @contextlib.contextmanager
    def running(self):
        """Hold an Event for one run(), which cancel() sets; include it in each CancelSignal."""
        event = threading.Event()
        with self._running_lock:
            self._running.add(event)
        try:
            yield event
        finally:
            with self._running_lock:
                self._running.discard(event)
