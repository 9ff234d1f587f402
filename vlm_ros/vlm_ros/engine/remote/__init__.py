"""The 'openai' backend: an OpenAI-compatible server answers (no torch, no transformers).

May import the rest of engine/ except engine.local, and never rclpy or a higher layer: a robot
that sends all inference to a server runs without torch installed.
"""

from .engine import RemoteEngine

__all__ = ['RemoteEngine']
