"""
The one place that turns a user prompt into the processor's text input.

Training (models.train) and inference both call render_prompt, so a fine-tuned model is
always queried with exactly the prompt layout it was trained on.
"""

import weakref
from collections.abc import Sequence
from typing import Optional

import numpy as np
from PIL import Image

from .errors import VlmError
from .frame_cache import DIGEST, frame_digest

# processor -> whether it inserts the image placeholder itself (see _processor_places_image).
_PLACES_IMAGE = weakref.WeakKeyDictionary()


def user_message(prompt: str, image: Optional[dict] = None,
                 cameras: Sequence[tuple] = ()) -> list[dict]:
    """Return the chat of one user turn holding one image followed by the prompt.

    ``image`` is the image's content part: a bare placeholder for a local processor (the
    default), an ``image_url`` part for an OpenAI-compatible server, so both see one layout.
    ``cameras``: several images instead, as (name, content part or None) pairs, each image
    introduced by its camera's name ('head:'), in order, then the prompt.
    """
    parts = [part for name, camera_image in cameras
             for part in ({'type': 'text', 'text': f'{name}:'},
                          camera_image or {'type': 'image'})] if cameras else \
        [image or {'type': 'image'}]
    return [{'role': 'user', 'content': [*parts, {'type': 'text', 'text': prompt}]}]


def _processor_places_image(processor, image_token: str) -> bool:
    """
    Tell whether the processor puts the image placeholder into the text by itself.

    Florence-2 and BLIP-2 put their image tokens in front of whatever text they get, while
    LLaVA-like processors require the caller to mark where the image goes and raise ValueError
    when an image has no placeholder. Rather than keeping a list of family names, the processor
    is asked once: it encodes a blank image with empty text, and the answer is cached.
    """
    if processor not in _PLACES_IMAGE:
        image_id = processor.tokenizer.convert_tokens_to_ids(image_token)
        try:
            ids = processor(text=[''], images=[[Image.new('RGB', (64, 64))]])['input_ids'][0]
        except ValueError:
            ids = []
        _PLACES_IMAGE[processor] = image_id in ids
    return _PLACES_IMAGE[processor]


def render_prompt(processor, prompt: str, cameras: Sequence[str] = ()) -> str:
    """
    Return the text to pass as processor(text=..., images=[image]) for one image and prompt.

    With a chat template, the user turn (image then prompt) is rendered with the generation
    prompt appended. Without one (Florence-2, BLIP-2), the prompt stays plain and the image
    token is prepended only when the processor does not insert it itself. ``cameras``: the
    names of several images, each placed after its name (user_message); a model without a chat
    template takes one image a prompt, and VlmError('unsupported') says so.
    """
    if getattr(processor, 'chat_template', None):
        message = user_message(prompt, cameras=[(name, None) for name in cameras])
        return processor.apply_chat_template(message, add_generation_prompt=True,
                                             tokenize=False)
    if len(cameras) > 1:
        raise VlmError('unsupported', f'this model takes one image a prompt (its processor has '
                       f'no chat template to place several); cameras {", ".join(cameras)} '
                       'need a model that takes several images (e.g. SmolVLM/Idefics3)')
    image_token = getattr(processor, 'image_token', None)
    if image_token is None or _processor_places_image(processor, str(image_token)):
        return prompt
    return str(image_token) + prompt


def build_inputs(processor, images: Sequence, prompts: Sequence[str], **processor_kwargs):
    """
    Encode one image and prompt per row into padded PyTorch model inputs.

    processor_kwargs go to the processor call, e.g. do_image_splitting=False to give an
    Idefics3/SmolVLM model one tile instead of a grid (fewer visual tokens, faster answers).

    Images may be numpy uint8 HxWx3 RGB arrays or PIL images: arrays are converted because some
    processors (Idefics2) accept only PIL images. Each row's image is wrapped in its own list,
    the layout every processor accepts and the one Mllama requires to pair images with rows.
    A row of several cameras is a tuple of (name, image) pairs instead (results.Request).
    """
    rows = [image if isinstance(image, tuple) else (('', image),) for image in images]
    return processor(text=[render_prompt(processor, prompt,
                                         [name for name, _ in row] if len(row) > 1 else ())
                           for prompt, row in zip(prompts, rows, strict=True)],
                     images=[[_pil(image) for _, image in row] for row in rows], padding=True,
                     return_tensors='pt', **processor_kwargs)


def _pil(image) -> Image.Image:
    return image if isinstance(image, Image.Image) else _to_pil(image)


def _to_pil(image) -> Image.Image:
    """Convert an RGB array to a PIL image that carries its pixels' digest (frame_cache.py)."""
    array = np.asarray(image, dtype=np.uint8)
    pil = Image.fromarray(array).convert('RGB')
    setattr(pil, DIGEST, frame_digest(array))
    return pil
