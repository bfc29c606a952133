#!/usr/bin/env bash
# GPU checks of issue 11: the masks' exactness on the GPU (float32, bfloat16) and one PPO step of the
# real-size Qwen2.5-0.5B per trajectory layout, timed, as a table (mem1lite/gpu_check.py says what
# exactly). On a machine without CUDA it prints one line and exits 0.
#
#   scripts/gpu_check.sh                      # ~3-6 minutes on one GPU
#   scripts/gpu_check.sh --json gpu.json      # and keep every record
#   MEM1_QWEN_DIR=/path/to/Qwen2.5-0.5B-Instruct scripts/gpu_check.sh   # time the real weights
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m mem1lite.gpu_check "$@"
