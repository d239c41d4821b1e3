#!/usr/bin/env bash
# The GPU checks, for a machine with a CUDA device: the serving benchmark with the models on CUDA
# (champion, shadow and canary share the device; micro-batching on) and the update benchmark with
# trainer=gpu. Figures go to docs/benchmarks-gpu.md with the card's name, or to the file given:
#
#     bash scripts/gpu_check.sh                    # about 10 minutes on one GPU
#     bash scripts/gpu_check.sh "$OUT/gpu.md"      # e.g. where a remote runner collects results
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUTFILE=${1:-docs/benchmarks-gpu.md}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

[ -x "$PY" ] || make setup
"$PY" - <<'PY'
import sys
import torch

if not torch.cuda.is_available():
    sys.exit("gpu_check: torch sees no CUDA device here (torch.cuda.is_available() is False)")
print("CUDA device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
"$PY" scripts/bench_serve.py --device cuda --out "$OUTFILE"
"$PY" scripts/bench_update.py --trainer gpu --out "$OUTFILE"
echo "gpu_check: figures written to $OUTFILE"
