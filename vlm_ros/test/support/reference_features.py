"""The engine's own features of frames and texts: what the node and vlm_export must match.

The node's ~/features, vlm_export's dataset and an own-code model's export are each compared
with these: the same weights and image processing through VlmEngine, whose features are in turn
checked against transformers' own hidden states (test_features.py).
"""

import numpy as np
from vlm_ros.engine import EngineConfig, Request
from vlm_ros.engine.features import FeatureSpec
from vlm_ros.engine.local import VlmEngine


def engine_features(model, asked, spec: FeatureSpec, task: str = 'plan',
                    **config) -> np.ndarray:
    """Return the features of each (image, text) in asked, stacked, from a model loaded for it.

    config: the EngineConfig fields the tool or node under test ran with (max_image_side,
    processor_kwargs, ...) over a float32 engine on the CPU. One token is generated a request:
    the features are the prompt's.
    """
    engine = VlmEngine(EngineConfig(**{'model': str(model), 'device': 'cpu',
                                       'dtype': 'float32', **config}))
    engine.load()
    try:
        return np.stack([engine.run([Request(task, image, text, 1, features=spec)])[0]
                         .features.data for image, text in asked])
    finally:
        engine.unload()
