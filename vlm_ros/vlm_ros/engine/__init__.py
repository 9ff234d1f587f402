"""The ROS-free inference core: load a VLM, then preprocess -> generate -> parse.

Imports no rclpy and no other part of vlm_ros, so the engine runs in notebooks, offline
evaluation and on machines without ROS 2. This level (config, errors, prompts, chat,
preprocess, plan_parser, results) imports no torch either: local/ holds the in-process model
(torch + transformers), remote/ the OpenAI-compatible client, and make_engine imports only the
one a config asks for. Both implement interface.Engine, whose CONTRACT says what each
operation returns and raises.
"""

from .config import BACKENDS, EngineConfig, RemoteConfig
from .errors import VlmError
from .interface import CONTRACT, Engine
from .plan_parser import ParsedPlan, PlanStep, parse_plan
from .results import Request, Result, parse_output


def make_engine(config: EngineConfig) -> Engine:
    """Return the engine of config.backend (not loaded yet): VlmEngine or RemoteEngine.

    The backend's package is imported here, not above: the openai client costs 0.5 s to
    import, and torch seconds (or an ImportError where only the remote backend is installed).
    """
    if config.backend not in BACKENDS:
        raise VlmError('bad_input', f'unknown backend {config.backend!r}; use one of {BACKENDS}')
    try:
        if config.backend == 'transformers':
            from .local import VlmEngine

            return VlmEngine(config)
        from .remote import RemoteEngine

        return RemoteEngine(config)
    except ImportError as exc:
        needs = 'torch and transformers' if config.backend == 'transformers' else 'openai'
        raise VlmError('unsupported', f'the {config.backend} backend needs {needs}, which '
                       f'cannot be imported here ({exc}); install the requirements of that '
                       'backend (README, "On a robot")', config.model, config.device,
                       exc) from exc


__all__ = ['BACKENDS', 'CONTRACT', 'Engine', 'EngineConfig', 'ParsedPlan', 'PlanStep',
           'RemoteConfig', 'Request', 'Result', 'VlmError', 'make_engine', 'parse_output',
           'parse_plan']
