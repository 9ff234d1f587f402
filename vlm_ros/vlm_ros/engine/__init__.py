"""The ROS-free inference core: load a VLM, then preprocess -> generate -> parse.

Nothing here imports rclpy, so the engine runs in notebooks, offline evaluation and on
machines without ROS 2. make_engine picks the backend: the model in this process, or an
OpenAI-compatible server answering through the same interface.
"""

from .config import BACKENDS, EngineConfig, RemoteConfig
from .engine import Request, Result, VlmEngine, parse_output
from .errors import VlmError
from .plan_parser import ParsedPlan, PlanStep, parse_plan
from .scoring import Reference, Score, mean_score, score


def make_engine(config: EngineConfig):
    """Return the engine of config.backend (not loaded yet): VlmEngine or RemoteEngine."""
    if config.backend not in BACKENDS:
        raise VlmError('bad_input', f'unknown backend {config.backend!r}; use one of {BACKENDS}')
    if config.backend == 'transformers':
        return VlmEngine(config)
    from .remote import RemoteEngine  # here: the openai client costs 0.5 s to import

    return RemoteEngine(config)


__all__ = ['BACKENDS', 'EngineConfig', 'ParsedPlan', 'PlanStep', 'Reference', 'RemoteConfig',
           'Request', 'Result', 'Score', 'VlmEngine', 'VlmError', 'make_engine',
           'mean_score', 'parse_output', 'parse_plan', 'score']
