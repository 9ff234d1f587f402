"""
The tiny real-architecture checkpoints, one per fusion family, through the public transformers API.

The engine's tests trust these checkpoints to behave like hub models: loadable by the Auto
classes, generating through the real generate(), batching without changing any answer, and
trainable to exact target texts. Each of those properties is checked here for every family.
"""

import shutil

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText
from vlm_ros.engine.chat import build_inputs, render_prompt
from vlm_ros.engine.local.processors import load_processor
from vlm_ros.models import FAMILIES, build_tiny, train_tiny

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent

CLASSES = {
    'llava': ('LlavaProcessor', 'LlavaForConditionalGeneration'),
    'idefics3': ('Idefics3Processor', 'Idefics3ForConditionalGeneration'),
    'idefics2': ('Idefics2Processor', 'Idefics2ForConditionalGeneration'),
    'mllama': ('MllamaProcessor', 'MllamaForConditionalGeneration'),
    'florence2': ('Florence2Processor', 'Florence2ForConditionalGeneration'),
    'qwen2_vl': ('Qwen2VLProcessor', 'Qwen2VLForConditionalGeneration'),
}
# Three requests of different prompt lengths and image sizes, so a batch needs padding.
REQUESTS = (
    ('red', (48, 64), 'pick up the red block'),
    ('blue', (30, 30), 'place it in the bin, then pick up the blue cube and put it on the table'),
    ('green', (80, 40), 'what?'),
)
SAMPLES = (
    ('red', (48, 64), 'pick up the red block',
     '{"steps": [{"skill": "pick", "target": "red block"}]}'),
    ('blue', (64, 48), 'place it in the bin',
     '{"steps": [{"skill": "place", "target": "bin"}, {"skill": "done"}]}'),
)
COLOURS = {'red': (220, 30, 30), 'blue': (30, 60, 220), 'green': (30, 200, 60)}


def scene(colour: str, size: tuple[int, int]) -> np.ndarray:
    """Draw a grey table with one coloured block, as a camera frame (uint8 HxWx3 RGB)."""
    height, width = size
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[height // 3:2 * height // 3, width // 3:width // 2] = COLOURS[colour]
    return image


@pytest.fixture(scope='session', params=sorted(FAMILIES))
def tiny(request, tmp_path_factory):
    """Build each family's checkpoint once; tests that change it work on a copy."""
    return request.param, build_tiny(request.param, tmp_path_factory.mktemp(request.param))


def load(path):
    """Load a checkpoint the way the node loads a hub model."""
    return (load_processor(str(path)),
            AutoModelForImageTextToText.from_pretrained(path).eval())


def generate(processor, model, images, prompts, **kwargs):
    """Greedy-generate for a batch; return the new tokens and the per-step logits."""
    inputs = build_inputs(processor, images, prompts)
    with torch.no_grad():
        output = model.generate(**inputs, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, **kwargs)
    start = 1 if model.config.is_encoder_decoder else inputs['input_ids'].shape[1]
    return inputs, output.sequences[:, start:], torch.stack(output.logits, dim=1)


def test_loads_real_classes(tiny):
    family, path = tiny
    processor, model = load(path)
    assert (type(processor).__name__, type(model).__name__) == CLASSES[family]
    assert type(processor.image_processor).__name__.endswith('Pil')
    assert model.num_parameters() < 400_000


def test_render_prompt(tiny):
    family, path = tiny
    processor, model = load(path)
    prompt = 'pick up the red block'
    text = render_prompt(processor, prompt)
    if family == 'florence2':
        assert text == prompt, 'no chat template, and the processor places the image itself'
        return
    assert prompt in text
    assert text.count(processor.image_token) == 1
    # Without a chat template the caller must place the image token: it goes first.
    processor.chat_template = None
    assert render_prompt(processor, prompt) == processor.image_token + prompt
    inputs = build_inputs(processor, [scene('red', (48, 64))], [prompt])
    assert (inputs['input_ids'] == model.config.image_token_id).any()


def test_generates_new_tokens(tiny):
    _, path = tiny
    processor, model = load(path)
    colour, size, prompt = REQUESTS[0]
    _, tokens, _ = generate(processor, model, [scene(colour, size)], [prompt],
                            max_new_tokens=16)
    assert 1 <= tokens.shape[1] <= 16


def test_batched_generate_matches_single_calls(tiny):
    _, path = tiny
    processor, model = load(path)
    images = [scene(colour, size) for colour, size, _ in REQUESTS]
    prompts = [prompt for _, _, prompt in REQUESTS]
    # A fixed length keeps every row generating, so all 8 steps of every row are compared.
    fixed = {'max_new_tokens': 8, 'min_new_tokens': 8}
    inputs, batch_tokens, batch_logits = generate(processor, model, images, prompts, **fixed)
    assert not inputs['attention_mask'].all(), 'the batch must contain padding'
    side = 'right' if model.config.is_encoder_decoder else 'left'
    assert processor.tokenizer.padding_side == side
    for row, (image, prompt) in enumerate(zip(images, prompts, strict=True)):
        _, tokens, logits = generate(processor, model, [image], [prompt], **fixed)
        assert batch_tokens[row].tolist() == tokens[0].tolist()
        torch.testing.assert_close(batch_logits[row], logits[0], atol=1e-5, rtol=0)


def test_training_reproduces_targets(tiny, tmp_path):
    _, path = tiny
    trained = shutil.copytree(path, tmp_path / 'trained')
    samples = [(scene(colour, size), prompt, target)
               for colour, size, prompt, target in SAMPLES]
    result = train_tiny(trained, samples)
    assert result['loss'] < result['initial_loss']
    processor, model = load(trained)
    images = [image for image, _, _ in samples]
    prompts = [prompt for _, prompt, _ in samples]
    targets = [target for _, _, target in samples]
    for image, prompt, target in samples:
        _, tokens, _ = generate(processor, model, [image], [prompt], max_new_tokens=48)
        assert processor.decode(tokens[0], skip_special_tokens=True) == target
    _, tokens, _ = generate(processor, model, images, prompts, max_new_tokens=48)
    assert processor.batch_decode(tokens, skip_special_tokens=True) == targets
