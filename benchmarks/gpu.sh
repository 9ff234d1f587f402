#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md: real-size random-weight models through the engine
# (bf16, SDPA), batch sizes 1/4/8, plus a static-cache (torch.compile) run and CUDA checks.
# Run from the repository root on a CUDA machine that has torch; OUT names the output folder.
set -uo pipefail
out=${OUT:-/tmp/vlm_bench}
mkdir -p "$out"
export PYTHONPATH=$PWD/vlm_ros${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
python3 benchmarks/cuda_checks.py 2>&1 | tee "$out/cuda_checks.txt"
for model in smolvlm-2b smolvlm-256m florence-2-base; do
  python3 -m vlm_ros.tools.benchmark --random "$model" --device cuda --dtype bfloat16 --attn sdpa \
    --batch-sizes 1 4 8 --repeats 5 2>"$out/$model.err" | tee -a "$out/bench.md"
done
python3 -m vlm_ros.tools.benchmark --random smolvlm-2b --device cuda --dtype bfloat16 --attn sdpa \
  --static-cache --batch-sizes 1 --repeats 5 2>"$out/static.err" | tee -a "$out/bench.md"
# SmolVLM's processor upsizes a 640x480 frame to 1536 px and splits it into 12 tiles plus a
# global view (13 x 81 visual tokens); one tile is the fast setting for a robot.
for cache in '' --static-cache; do
  python3 -m vlm_ros.tools.benchmark --random smolvlm-2b --device cuda --dtype bfloat16 --attn sdpa \
    $cache --processor-kwargs '{"do_image_splitting": false}' --batch-sizes 1 4 8 --repeats 5 \
    2>"$out/single_tile$cache.err" | tee -a "$out/bench.md"
done
