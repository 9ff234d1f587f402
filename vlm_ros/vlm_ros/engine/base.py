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


class EngineBase(Engine):
    """The config and templates of an engine; subclasses load a model and answer requests."""

    def __init__(self, config: EngineConfig):
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
        if 'skills' in fields:
            fields['skills'] = tuple(fields['skills'])
            parse_skills(fields['skills'])
        self.config = dataclasses.replace(self.config, **fields)
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
