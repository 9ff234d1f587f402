"""A processor that takes a video processor loads without it: the node sends images only.

Qwen2-VL's family (and SmolVLM2) take a video processor that transformers builds only with
torchvision; their image processor, tokenizer and template must load without it, on every
machine alike, and give what the full processor gives for images.
"""

import json

import numpy as np
import pytest
import transformers
from engine_fixtures import scene
from PIL import Image
from vlm_ros.engine.local.processors import images_only, load_processor
from vlm_ros.models import build_tiny
from vlm_ros.models.families import QWEN2_5_VL_TINY, build_qwen2_vl


def test_a_processor_without_video_loads_as_autoprocessor_gives_it(tmp_path):
    path = build_tiny('llava', tmp_path / 'llava')
    assert type(load_processor(str(path))) is type(transformers.AutoProcessor.from_pretrained(
        path))


def test_qwen2_vl_loads_without_its_video_processor_under_its_own_name(tmp_path):
    path = build_tiny('qwen2_vl', tmp_path / 'qwen2_vl')
    if not transformers.is_torchvision_available():
        with pytest.raises(OSError, match="Can't load video processor"):
            transformers.AutoProcessor.from_pretrained(path)  # why the loader does not use it
    processor = load_processor(str(path))
    assert isinstance(processor, transformers.Qwen2VLProcessor)
    assert type(processor).__name__ == 'Qwen2VLProcessor'
    assert processor.get_attributes() == ['image_processor', 'tokenizer']
    saved = json.loads((path / 'processor_config.json').read_text())
    assert saved['processor_class'] == 'Qwen2VLProcessor'  # as the hub's checkpoints name it
    text = processor.apply_chat_template(
        [{'role': 'user', 'content': [{'type': 'image'}, {'type': 'text', 'text': 'go'}]}],
        add_generation_prompt=True)
    inputs = processor(images=[Image.fromarray(scene('red'))], text=[text], return_tensors='np')
    # A 64x48 frame: 56x56 px, 4x4 patches, 4 image tokens after the 2x2 merge.
    assert inputs['image_grid_thw'].tolist() == [[1, 4, 4]]
    assert inputs['pixel_values'].shape == (16, 3 * 2 * 14 * 14)
    assert np.sum(inputs['input_ids'] == processor.image_token_id) == 4


def test_qwen2_5_vl_takes_the_same_way(tmp_path):
    path = build_qwen2_vl(tmp_path / 'qwen2_5_vl', QWEN2_5_VL_TINY)
    loaded = load_processor(str(path))
    assert isinstance(loaded, transformers.Qwen2_5_VLProcessor)
    assert loaded.get_attributes() == ['image_processor', 'tokenizer']


def test_images_only_is_made_once_per_class():
    assert images_only(transformers.Qwen2VLProcessor) is images_only(transformers.Qwen2VLProcessor)
