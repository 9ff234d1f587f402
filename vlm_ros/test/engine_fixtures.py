"""Shared test data: synthetic camera scenes and the answers tiny checkpoints are trained on."""

import json

import numpy as np
from vlm_ros.demo.tiny import FAMILIES as _FAMILIES
from vlm_ros.engine.prompts import load_templates, render_task

FAMILIES = tuple(_FAMILIES)
PLAN_JSON = json.dumps({'steps': [
    {'instruction': 'pick up the red block', 'skill': 'pick', 'target': 'red block'},
    {'instruction': 'place it in the bin', 'skill': 'place', 'target': 'bin'}]})
# task -> (request text, target answer)
TARGETS = {
    'caption': ('', 'a red block on a grey table'),
    'vqa': ('what color is the block?', 'blue'),
    'plan': ('put the red block in the bin', PLAN_JSON),
}
_COLOURS = {'red': (220, 30, 30), 'blue': (30, 60, 220), 'green': (30, 200, 60)}


def scene(colour: str, height: int = 48, width: int = 64) -> np.ndarray:
    """Draw a grey tabletop with one coloured block: distinct, deterministic frames."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[height // 3:2 * height // 3, width // 3:width // 2] = _COLOURS[colour]
    return image


def training_samples() -> list:
    """(image, prompt, target) triples, prompts rendered exactly as the engine renders them."""
    templates = load_templates()
    return [
        (scene('red'), render_task(templates, 'caption'), TARGETS['caption'][1]),
        (scene('blue'), render_task(templates, 'vqa', TARGETS['vqa'][0]), TARGETS['vqa'][1]),
        (scene('red'), render_task(templates, 'plan', TARGETS['plan'][0]), TARGETS['plan'][1]),
    ]
