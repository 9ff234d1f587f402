"""Tiny random-weight checkpoints of real VLM architectures, built offline for tests."""

from .families import FAMILIES, build_tiny
from .train import train_tiny

__all__ = ['FAMILIES', 'build_tiny', 'train_tiny']
