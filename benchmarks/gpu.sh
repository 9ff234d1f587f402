#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, as one prepared script of bounded time.
#
# Real-size random-weight SmolVLM-2B through the engine (bf16, SDPA), one 640x480 frame, 64
# tokens, batch 1 and 8. The new default (decode_mode auto = compiled static cache, no
# upscale: 4 tiles + 1, each distinct frame preprocessed once) beside the old default (eager
# decoding, the frame upscaled to 1536 px: 12 tiles + 1), in the same run, then the variants
# that say where the time goes, the CUDA checks, and the smaller models. SmolVLM resizes with
# Lanczos, which stays on the CPU; Florence-2 (bicubic) shows preprocessing on the GPU against
# the CPU.
# Steps run in order of importance; a step that would pass the budget (BUDGET_S seconds,
# default 480) is skipped and says so, so the tables that matter come back first.
# Run from the repository root on a CUDA machine with torch; OUT names the output folder.
# A dry run on a CPU: MODEL=tiny:idefics3 DEVICE=cpu DTYPE=float32 bash benchmarks/gpu.sh
set -uo pipefail
out=${OUT:-/tmp/vlm_bench}
model_name=${MODEL:-smolvlm-2b} device=${DEVICE:-cuda} dtype=${DTYPE:-bfloat16}
deadline=$((SECONDS + ${BUDGET_S:-480}))
mkdir -p "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export PYTHONPATH=$PWD/vlm_ros${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec 3>&2  # progress lines, also where stderr goes to a file

# step NAME SECONDS CMD...: run CMD for at most SECONDS, never past the deadline.
step() {
  local name=$1 limit=$2 left=$((deadline - SECONDS))
  shift 2
  if ((left < 20)); then echo "skipped: $name (budget spent)" >&3; return; fi
  ((limit > left)) && limit=$left
  echo "== $name (at most ${limit} s, $((deadline - SECONDS)) s of the budget left)" >&3
  local start=$SECONDS
  timeout "$limit" "$@"
  echo "== $name: exit $? after $((SECONDS - start)) s" >&3
}
# bench NAME SECONDS ARGS...: one vlm_benchmark step, its table appended to bench.md.
bench() {
  local name=$1 limit=$2
  shift 2
  step "$name" "$limit" python3 -m vlm_ros.tools.benchmark --device "$device" --dtype "$dtype" \
    --attn sdpa --repeats 5 "$@" 2>>"$out/bench.err" | tee -a "$out/bench.md"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$out/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "")' \
  | tee -a "$out/gpu.txt"
step "build $model_name" 120 python3 -c 'import sys
from vlm_ros.demo.tiny.real_size import build_random
print(build_random(sys.argv[1], sys.argv[2]))' "$model_name" "$scratch" >"$scratch/path"
model=$(cat "$scratch/path")
echo "### $model_name (random weights), built in $model" | tee -a "$out/bench.md"
bench 'new default' 240 --model "$model" --batch-sizes 1 8 --frames distinct shared queued
bench 'old default' 90 --model "$model" --decode-mode eager \
  --processor-kwargs '{"size": {"longest_edge": 1536}, "device": "cpu"}' --batch-sizes 1 8
step 'CUDA checks' 120 python3 benchmarks/cuda_checks.py 2>&1 | tee "$out/cuda_checks.txt"
bench 'one tile' 120 --model "$model" --processor-kwargs '{"do_image_splitting": false}' \
  --batch-sizes 1 8
bench 'florence-2-base' 90 --random florence-2-base --batch-sizes 1 8
bench 'florence-2-base, CPU preprocessing' 90 --random florence-2-base --batch-sizes 1 8 \
  --processor-kwargs '{"device": "cpu"}'
bench 'smolvlm-256m' 90 --random smolvlm-256m --batch-sizes 1 8
# The node's numbers: needs the ROS 2 install of this repository (scripts/bootstrap).
if [ -x scripts/with-env ] && [ -d install ]; then
  step 'node' 300 scripts/with-env vlm_benchmark --node --random "$model_name" \
    --device "$device" --dtype "$dtype" --streams 8 --requests 4 --batch-sizes 1 8 \
    2>>"$out/node.err" | tee -a "$out/bench.md"
fi
