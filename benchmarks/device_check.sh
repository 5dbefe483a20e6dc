#!/usr/bin/env bash
# One GPU session, prepared to run in a single call on one H200 (written for it, not yet run there):
#   1. retrain the toy networks on CUDA (the shipped ipsb/assets/toy weights; recipe in its README),
#   2. the CUDA test module (tests/cuda: CPU/GPU parity of every part, stages training on the GPU),
#   3. benchmarks/stage1_toy.py, generator.py and basis.py on CUDA.
# Usage: OUT=<folder> bash benchmarks/device_check.sh   (results: $OUT/log.txt, $OUT/toy/*.pt)
# Python packages the machine lacks are expected as wheels in .whl/ (kornia, lpips, jsonargparse, ...).
set -u
OUT=${OUT:-outputs/device}
mkdir -p "$OUT/toy"
LOG="$OUT/log.txt"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
step() { echo; echo "=== $1 ($(date +%T))"; }
{
  step "machine"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning, torchmetrics; print('torch', torch.__version__, 'lightning', lightning.__version__, 'torchmetrics', torchmetrics.__version__)"

  step "1. toy networks on CUDA"
  timeout 300 python3 -m ipsb.backbone.toy.train --device cuda --out "$OUT/toy" \
      --n-train 131072 --n-val 1024 --steps 20000 --batch 256 --lr 2e-3 --mask-steps 2000 \
      --identity-steps 10000 --invariance-steps 5000 4000 3000 --tangent-codes 8192 --tangent-steps 3000 \
      --tangent-weight 30 --time-budget 210
  if [ -f "$OUT/toy/masker.pt" ]; then cp "$OUT"/toy/*.pt ipsb/assets/toy/; echo "installed the new toy weights"; fi

  step "2. CUDA tests"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tail -30

  step "3. stages 1-2 in the toy world"
  timeout 130 python3 benchmarks/stage1_toy.py --device cuda --steps1 600 --steps2 150 --batch 16 \
      --out /tmp/stage1 2>&1 | grep -v "^  step" | tail -20
  step "4. generator benchmark"
  timeout 50 python3 benchmarks/generator.py --quick --device cuda 2>&1 | tail -15
  step "5. basis benchmark"
  timeout 60 python3 benchmarks/basis.py --quick --device cuda 2>&1 | tail -20
  step "done"
} 2>&1 | tee "$LOG"
