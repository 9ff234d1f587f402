"""What both backends share: the config, the prompt templates, and run-time updates.

A node changes max_new_tokens, max_image_side and the prompt templates while a model is
loaded; the change applies from the next request on, in either backend, without a reload.
"""

import dataclasses

from .config import EngineConfig
from .errors import VlmError
from .prompts import load_templates

RUN_TIME_FIELDS = ('max_new_tokens', 'max_image_side', 'prompts')


class EngineBase:
    """The config and templates of an engine; subclasses load a model and answer requests."""

    def __init__(self, config: EngineConfig):
        self.config = config
        self.templates = load_templates(config.prompts)

    def update(self, **fields) -> None:
        """Change run-time fields of the config (RUN_TIME_FIELDS); the next request uses them.

        Templates are checked before anything changes, so a bad one leaves the engine as it was.
        """
        unknown = set(fields) - set(RUN_TIME_FIELDS)
        if unknown:
            raise VlmError('bad_input', f'{sorted(unknown)} cannot change while a model is '
                           f'loaded; only {RUN_TIME_FIELDS} can')
        templates = load_templates(fields['prompts']) if 'prompts' in fields else self.templates
        self.config = dataclasses.replace(self.config, **fields)
        self.templates = templates

    def prepare(self, images: list) -> None:
        """Preprocess images that waiting requests carry, before run() is asked to answer them.

        A hint for overlapping a batch's preprocessing with the previous batch's generation;
        this base does nothing, as a remote server preprocesses what it receives itself.
        """
