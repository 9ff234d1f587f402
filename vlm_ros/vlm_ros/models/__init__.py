"""Synthetic checkpoints: tiny real-architecture VLMs, random models of real sizes (needs torch).

Built offline (nothing downloaded) for the tests, the demo and the benchmarks: one tiny
checkpoint per fusion family, its training to exact answers, and random weights at the sizes
of published models. Not the demo and not a benchmark, so both of those (and the tests) share
it. May import engine/ only (training uses the engine's teacher forcing, as scoring does); the
node and the tools never import it.
"""

from .families import FAMILIES, build_tiny
from .train import train_tiny

__all__ = ['FAMILIES', 'build_tiny', 'train_tiny']
