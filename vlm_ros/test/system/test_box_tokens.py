"""A box a model writes in its tokenizer's special tokens reaches the caller (Qwen2-VL).

Qwen2-VL's tokenizer makes its box and object markers special tokens, as Florence-2's makes
its location bins: decoded the usual way (special tokens skipped) the answer would keep the
coordinates and lose what says they are a box.
"""

import pytest
import torch
from engine_fixtures import QWEN2_GROUND, RED_BLOCK, scene
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.prompts import load_templates, render_task
from vlm_ros.models import build_tiny, train_tiny

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent
PHRASE = 'the red block'


def test_qwen2_vls_box_tokens_reach_the_answer_and_map_onto_the_block(tmp_path):
    with torch.random.fork_rng():
        torch.manual_seed(7)
        path = build_tiny('qwen2_vl', tmp_path / 'qwen2_vl')
        train_tiny(path, [(scene('red'), render_task(load_templates(), 'ground', PHRASE),
                           QWEN2_GROUND)])
    engine = VlmEngine(EngineConfig(model=str(path), device='cpu', max_new_tokens=40))
    engine.load()
    try:
        pieces = []
        result = engine.run([Request('ground', scene('red'), PHRASE)], on_text=pieces.append)[0]
    finally:
        engine.unload()
    assert result.text == QWEN2_GROUND and ''.join(pieces) == QWEN2_GROUND
    assert result.valid and result.box_problems == ('',)
    assert result.boxes[0] == pytest.approx(RED_BLOCK, abs=0.1)
