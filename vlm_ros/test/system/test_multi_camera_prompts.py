"""Several cameras in one prompt: each image after its camera's name, none dropped.

A request with ``cameras`` (engine Request) gives the model every camera's image, in order,
each introduced by its name, for every tiny family whose processor places several images; a
model that takes one image a prompt (Florence-2) refuses with the reason, never silently
answering from one camera.
"""

import numpy as np
import pytest
import torch
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.chat import build_inputs
from vlm_ros.engine.local import VlmEngine

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent
RNG = np.random.default_rng(26)
HEAD = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)
WRIST = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)  # another size and aspect


def _engine(model) -> VlmEngine:
    engine = VlmEngine(EngineConfig(model=str(model), device='cpu', max_new_tokens=6))
    engine.load()
    return engine


@pytest.mark.parametrize('family', ['llava', 'idefics3', 'idefics2', 'mllama', 'qwen2_vl'])
def test_every_camera_reaches_the_model_after_its_name(family, trained_tiny):
    engine = _engine(trained_tiny(family))
    try:
        processor, model = engine.loaded.processor, engine.loaded.model
        cameras = (('head', HEAD), ('wrist', WRIST))
        inputs = build_inputs(processor, [cameras], ['what is it?'])
        text = processor.batch_decode(inputs['input_ids'])[0]
        assert 0 <= text.index('head:') < text.index('wrist:'), text
        other = build_inputs(processor, [(('head', HEAD), ('wrist', 255 - WRIST))],
                             ['what is it?'])
        with torch.inference_mode():  # the wrist camera's pixels change the answer's logits
            logits = model(**inputs).logits[0, -1]
            assert not torch.allclose(logits, model(**other).logits[0, -1])

        both = Request('vqa', None, 'what is it?', cameras=cameras)
        alone = Request('vqa', HEAD, 'what is it?')
        batched = [r.text for r in engine.run([both, alone, both])]
        single = [engine.run([request])[0].text for request in (both, alone)]
        assert batched == [single[0], single[1], single[0]]
    finally:
        engine.unload()


def test_a_model_that_takes_one_image_refuses_several_cameras(trained_tiny):
    engine = _engine(trained_tiny('florence2'))
    try:
        with pytest.raises(VlmError, match='one image a prompt.*head, wrist') as refused:
            engine.run([Request('caption', None, cameras=(('head', HEAD), ('wrist', WRIST)))])
        assert refused.value.kind == 'unsupported'
        assert engine.run([Request('caption', HEAD)])[0].text  # one camera: as before
    finally:
        engine.unload()
