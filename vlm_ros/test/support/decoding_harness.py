"""What the decode-mode tests share: an engine per mode, three requests, their answers.

Every mode must give the eager answers (greedy decoding, the same model): test_decoding.py
(static cache, compiled) and test_graph_decoding.py (CUDA-graph steps) compare with eager_of.
"""

from engine_fixtures import TARGETS, scene
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.local import VlmEngine


def start_engine(model, mode: str) -> VlmEngine:
    """Load model on the CPU (float32) with decode_mode mode."""
    engine = VlmEngine(EngineConfig(model=str(model), device='cpu', dtype='float32',
                                    max_new_tokens=96, decode_mode=mode))
    engine.load()
    return engine


def three_requests() -> list:
    """Three tasks on two frames, with prompts of different lengths."""
    return [Request('caption', scene('red')), Request('vqa', scene('blue'), TARGETS['vqa'][0]),
            Request('plan', scene('red'), TARGETS['plan'][0])]


def answers(engine, requests) -> list:
    """Return (text, output tokens) of each answer."""
    return [(r.text, r.output_tokens) for r in engine.run(requests)]


def batched_and_single(engine) -> tuple:
    """Return the answers to three_requests() as one batch, and one request at a time."""
    return (answers(engine, three_requests()),
            [answers(engine, [r])[0] for r in three_requests()])


def eager_of(trained_tiny, families) -> dict:
    """Each family's eager answers to three_requests(), batched and one at a time."""
    found = {}
    for family in families:
        engine = start_engine(trained_tiny(family), 'eager')
        found[family] = batched_and_single(engine)
        engine.unload()
    return found
