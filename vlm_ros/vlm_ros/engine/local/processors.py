"""Load a checkpoint's processor; one that takes a video processor, without it.

Qwen2-VL, Qwen2.5-VL, Qwen3-VL and SmolVLM2 processors take a video processor besides the
image processor and the tokenizer, and transformers builds video processors only where
torchvision is installed: without it ``AutoProcessor`` fails for these checkpoints ("Can't load
video processor", or ``VIDEO_PROCESSOR_MAPPING`` has no ``_extra_content``). The node sends
images only, so such a processor is loaded without its video processor, with torchvision or
not: the checkpoint's own image processor, tokenizer and chat template, and the class's own
``__call__``, so prompts and pixels are what the full processor gives for images, on every
machine alike.
"""

import functools

import transformers
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

VIDEO = 'video_processor'


def load_processor(source: str, *, trust_remote_code: bool = False,
                   local_files_only: bool = False):
    """Return source's processor: AutoProcessor's, or its class less video where it has one."""
    kwargs = {'trust_remote_code': trust_remote_code, 'local_files_only': local_files_only}
    with_video = None if trust_remote_code else _video_class(source, kwargs)
    if with_video is None:
        return transformers.AutoProcessor.from_pretrained(source, **kwargs)
    return images_only(with_video).from_pretrained(source, **kwargs)


def _video_class(source: str, kwargs: dict):
    """Return the processor class of source's model type when it takes a video processor."""
    model_type = transformers.AutoConfig.from_pretrained(source, **kwargs).model_type
    found = getattr(transformers, PROCESSOR_MAPPING_NAMES.get(model_type) or '', None)
    attributes = getattr(found, 'get_attributes', lambda: [])()
    return found if VIDEO in attributes else None


@functools.cache
def images_only(processor_class: type) -> type:
    """Return processor_class less its video processor, saved and loaded under its own name.

    ``ProcessorMixin`` loads, checks and saves the sub-processors that ``get_attributes``
    names; without the video processor's name it neither looks for one nor type-checks the
    None the class's ``__init__`` passes on for it.
    """

    class ImagesOnly(processor_class):
        @classmethod
        def get_attributes(cls):
            return [name for name in super().get_attributes() if name != VIDEO]

        def to_dict(self):
            # A checkpoint saved here names the real class, as the hub's checkpoints do, so an
            # install with torchvision loads it with AutoProcessor.
            return {**super().to_dict(), 'processor_class': processor_class.__name__}

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = processor_class.__name__
    ImagesOnly.__doc__ = f'{processor_class.__name__} for images only (no torchvision).'
    return ImagesOnly
