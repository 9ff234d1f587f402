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

from .frame_cache import DIGEST, frame_digest

# processor -> whether it inserts the image placeholder itself (see _processor_places_image).
_PLACES_IMAGE = weakref.WeakKeyDictionary()


def user_message(prompt: str, image: Optional[dict] = None) -> list[dict]:
    """Return the chat of one user turn holding one image followed by the prompt.

    ``image`` is the image's content part: a bare placeholder for a local processor (the
    default), an ``image_url`` part for an OpenAI-compatible server, so both see one layout.
    """
    return [{'role': 'user', 'content': [image or {'type': 'image'},
                                         {'type': 'text', 'text': prompt}]}]


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


def render_prompt(processor, prompt: str) -> str:
    """
    Return the text to pass as processor(text=..., images=[image]) for one image and prompt.

    With a chat template, the user turn (image then prompt) is rendered with the generation
    prompt appended. Without one (Florence-2, BLIP-2), the prompt stays plain and the image
    token is prepended only when the processor does not insert it itself.
    """
    if getattr(processor, 'chat_template', None):
        return processor.apply_chat_template(user_message(prompt), add_generation_prompt=True,
                                             tokenize=False)
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
    """
    pil = [image if isinstance(image, Image.Image) else _to_pil(image) for image in images]
    return processor(text=[render_prompt(processor, prompt) for prompt in prompts],
                     images=[[image] for image in pil], padding=True, return_tensors='pt',
                     **processor_kwargs)


def _to_pil(image) -> Image.Image:
    """Convert an RGB array to a PIL image that carries its pixels' digest (frame_cache.py)."""
    array = np.asarray(image, dtype=np.uint8)
    pil = Image.fromarray(array).convert('RGB')
    setattr(pil, DIGEST, frame_digest(array))
    return pil
