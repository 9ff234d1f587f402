"""The ROS-free inference core: load a VLM, then preprocess -> generate -> parse.

Nothing here imports rclpy, so the engine runs in notebooks, offline evaluation and on
machines without ROS 2.
"""

from .config import EngineConfig
from .engine import Request, Result, VlmEngine, parse_output
from .errors import VlmError
from .plan_parser import ParsedPlan, PlanStep, parse_plan

__all__ = ['EngineConfig', 'ParsedPlan', 'PlanStep', 'Request', 'Result', 'VlmEngine',
           'VlmError', 'parse_output', 'parse_plan']
