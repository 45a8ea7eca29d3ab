#!/usr/bin/env bash
# GPU benchmarks in one go (< 8 minutes on one H100/H200), JSON under benchmarks/results/:
#   gpu_inference.json        sliding-window inference against MONAI (sw_batch_size 1,2,4,8;
#                             each tool also at the other's overlap, 0.25 / 0.125;
#                             float32 and bfloat16 autocast on both sides; Dice vs truth;
#                             peak device memory per variant)
#   gpu_training.json         training throughput under mixed precision (ours vs a plain loop),
#                             peak device memory
#   gpu_time_to_quality.json  whole-volume Dice after 30 and 60 s, ours vs MONAI's recipe
#   gpu_env.txt               nvidia-smi, load average before/after each step
#
# Usage (from the repository root, in the project's environment):
#   bash benchmarks/gpu.sh                   # full sizes on cuda
#   GPU_SH_SMOKE=1 bash benchmarks/gpu.sh    # tiny sizes, any device (CPU when no GPU): a check
# Settings: PYTHON (default python), GPU_SH_DEVICE (default cuda when nvidia-smi works, else
# cpu), GPU_SH_OUT (default benchmarks/results), GPU_SH_STEP_TIMEOUT (s per step, default 240; smoke 1200, for a busy CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
OUT=${GPU_SH_OUT:-benchmarks/results}
SMOKE=${GPU_SH_SMOKE:-0}
STEP_TIMEOUT=${GPU_SH_STEP_TIMEOUT:-$([[ "${GPU_SH_SMOKE:-0}" == 1 ]] && echo 1200 || echo 240)}
if [[ -z "${GPU_SH_DEVICE:-}" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        GPU_SH_DEVICE=cuda
    else
        GPU_SH_DEVICE=cpu
    fi
fi
DEV=$GPU_SH_DEVICE
mkdir -p "$OUT"
SUFFIX=""
if [[ "$SMOKE" == 1 ]]; then SUFFIX="_smoke"; fi
ENV_TXT="$OUT/gpu_env$SUFFIX.txt"

{
    echo "date: $(date -u +%FT%TZ)  device: $DEV  smoke: $SMOKE"
    (nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true)
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$ENV_TXT"

step() {  # step NAME COMMAND...: run with a time limit, load average before and after
    local name=$1
    shift
    echo "== $name: $(uptime)" | tee -a "$ENV_TXT"
    local t0=$SECONDS
    timeout "$STEP_TIMEOUT" "$@"
    echo "== $name done in $((SECONDS - t0)) s: $(uptime)" | tee -a "$ENV_TXT"
}

if [[ "$SMOKE" == 1 ]]; then
    step inference "$PYTHON" -m benchmarks.inference --smoke --device "$DEV" \
        --monai-batches 1,2 --out "$OUT/gpu_inference$SUFFIX.json"
    step training "$PYTHON" -m benchmarks.gpu_training --smoke --device "$DEV" \
        --out "$OUT/gpu_training$SUFFIX.json"
    step time_to_quality "$PYTHON" -m benchmarks.time_to_quality --smoke --device "$DEV" \
        --datasets sample --tools ours,monai --out "$OUT/gpu_time_to_quality$SUFFIX.json"
else
    step inference "$PYTHON" -m benchmarks.inference --device "$DEV" \
        --sizes 64x256x256,128x512x512 --repeats 3 --large-repeats 3 --all-variants \
        --compare-overlaps \
        --out "$OUT/gpu_inference.json"
    step training "$PYTHON" -m benchmarks.gpu_training --device "$DEV" --steps 100 \
        --warmup 10 --out "$OUT/gpu_training.json"
    step time_to_quality "$PYTHON" -m benchmarks.time_to_quality --device "$DEV" \
        --datasets sample --tools ours,monai --budgets 30,60 \
        --out "$OUT/gpu_time_to_quality.json"
fi
echo "wrote $OUT/gpu_*$SUFFIX.json"
