"""Thin console entry points: vlm_replay, vlm_eval, vlm_client, vlm_benchmark.

Arguments in, the lower layers do the work. May import any layer; nothing imports tools/.
"""
