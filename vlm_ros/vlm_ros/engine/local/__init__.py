"""The 'transformers' backend: the model in this process (torch + transformers).

May import the rest of engine/, never engine.remote, rclpy or a higher layer. Importing this
loads torch; engine/__init__ therefore reaches it only when a local engine is made.
"""

from .engine import VlmEngine

__all__ = ['VlmEngine']
