#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, as one prepared script of bounded time:
# real-size random-weight models through the engine (bf16, SDPA), the old default (eager
# decoding, SmolVLM's frame upscaled to 1536 px: 13 tiles) side by side with the new one
# (decode_mode auto = compiled static cache, no upscale: 5 tiles) in the same run, the node
# with 8 streams at max_batch_size 1 and 8, and the CUDA checks.
# Run from the repository root on a CUDA machine with torch; OUT names the output folder.
set -uo pipefail
out=${OUT:-/tmp/vlm_bench}
mkdir -p "$out"
export PYTHONPATH=$PWD/vlm_ros${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bench() { timeout 420 python3 -m vlm_ros.tools.benchmark --device cuda --dtype bfloat16 \
  --attn sdpa --repeats 5 "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, torch.cuda.get_device_name())' | tee -a "$out/gpu.txt"
timeout 300 python3 benchmarks/cuda_checks.py 2>&1 | tee "$out/cuda_checks.txt"
# Each SmolVLM's own longest edge (the old preprocessing: 640x480 upscaled to it, 12 tiles + 1).
for model_edge in smolvlm-2b:1536 smolvlm-256m:2048; do
  model=${model_edge%:*} edge=${model_edge#*:}
  bench --random "$model" --decode-mode eager --processor-kwargs "{\"size\": {\"longest_edge\": $edge}}" \
    --batch-sizes 1 8 2>>"$out/bench.err" | tee -a "$out/bench.md"
  bench --random "$model" --batch-sizes 1 8 2>>"$out/bench.err" | tee -a "$out/bench.md"
  bench --random "$model" --processor-kwargs '{"do_image_splitting": false}' --batch-sizes 1 8 \
    2>>"$out/bench.err" | tee -a "$out/bench.md"
done
bench --random florence-2-base --batch-sizes 1 8 2>>"$out/bench.err" | tee -a "$out/bench.md"
# The node's numbers: needs the ROS 2 install of this repository (scripts/bootstrap).
if [ -x scripts/with-env ] && [ -d install ]; then
  timeout 420 scripts/with-env vlm_benchmark --node --random smolvlm-2b --device cuda \
    --dtype bfloat16 --streams 8 --requests 4 --batch-sizes 1 8 2>>"$out/node.err" \
    | tee -a "$out/bench.md"
fi
