"""Thin console entry points: vlm_replay, vlm_eval, vlm_client, scripted_vla_head.

Arguments in, the lower layers do the work. May import engine/ to eval/; never models/ (the
synthetic checkpoints), demo/ or benchmarks/: an operator's tool runs the operator's model.
Only benchmarks/ imports tools/ (engine_args: the engine flags vlm_eval and vlm_benchmark share).
"""
