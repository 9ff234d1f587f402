"""Every benchmark, in one place: each module runs as ``python -m vlm_ros.benchmarks.NAME``.

engine_speed is ``vlm_benchmark`` (the engine, per batch size; ``--node``: node_speed, a
vlm_node under concurrent streams); ros_overhead, remote_overhead, replay_timing,
shutdown_soak, lifecycle_storm, abuse_long and prefill_cancel measure one cost each (numbers
in docs/BENCHMARKS.md); cuda_checks checks the GPU paths (scripts/gpu-benchmarks runs it with
the GPU tables). Benchmarks assert nothing. May import any layer but demo/; nothing imports
benchmarks/.
"""
