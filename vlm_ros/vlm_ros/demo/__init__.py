"""Synthetic data and models for the demo, the tests and the benchmarks (needs torch).

The tabletop scene, tiny checkpoints of real architectures with their training, the demo
model. May import engine/, bag/ and eval/; the node never imports it.
"""
