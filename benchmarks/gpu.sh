#!/usr/bin/env bash
# Runs the three benchmarks at full size on one GPU (H100/H200), about 5 minutes.
#
# Usage: benchmarks/gpu.sh [RESULTS_DIR]      (default benchmarks/results/gpu)
#   PYTHON=...            interpreter with feddmr_jax and a CUDA jax (default: python)
#   FEDDMR_DATA_DIR=...   folder holding ml-100k/ (default: shared/data next to or in the checkout)
#   BUDGET_SCALE=...      multiply every stage's time limit (default 1)
#   QUICK=1               run the --quick modes instead (a check of this script on a CPU)
#   SCALE_MODEL_ARGS=...  model of the scale stage (default attention=false; '' = full FedDMR)
#
# Writes into RESULTS_DIR: device.txt (nvidia-smi, jax devices), <bench>.json
# (figures), <bench>.log (table + stderr), summary.txt (exit status and the last
# JSON line of each). Stages run in order of importance, each under a time limit,
# so that one slow stage cannot take the others' time:
#   1. bench_round  ml-100k, all 943 clients, feddmr + feddmr_no_attention,
#                   engine against the full per-client loop, 3 timed rounds   (limit 120 s)
#   2. bench_flops  ml-100k, all clients, feddmr, optimized + unoptimized HLO   (limit 90 s)
#   3. bench_scale  synthetic 10^4, 10^5, 10^6 clients x 50,000 items, 1 warm-up
#                   + 1 timed round per size, FedDMR without attention (every size
#                   compiles ~11-15 chunk shapes; the attention model compiles ~2.5x
#                   slower on CPU and may not fit)                             (limit 150 s)
# Limits sum to 360 s; the expected total is about 5 minutes, mostly compilation.
# Not yet run on a GPU: read summary.txt for stages that timed out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu}
PY=${PYTHON:-python}
SCALE=${BUDGET_SCALE:-1}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
start=$(date +%s)

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
  echo
  nvidia-smi 2>&1
} > "$OUT/device.txt"
head -n 4 "$OUT/device.txt"

limit() { awk -v s="$1" -v k="$SCALE" 'BEGIN { v = int(s * k); print (v < 1 ? 1 : v) }'; }

run() {  # run NAME LIMIT_S ARGS...
  local name=$1 secs
  secs=$(limit "$2")
  shift 2
  echo "== $name (limit ${secs}s): $*"
  local t0=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$secs" \
    "$PY" "benchmarks/$name.py" "$@" --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$(( $(date +%s) - t0 ))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "$name: TIMED OUT after ${took}s" | tee -a "$OUT/summary.txt"
  else
    echo "$name: exit $rc in ${took}s" | tee -a "$OUT/summary.txt"
  fi
  grep -v '^{' "$OUT/$name.log" | tail -n 12
  tail -n 1 "$OUT/$name.log" | grep '^{' >> "$OUT/summary.txt"
}

if [ "${QUICK:-0}" = 1 ]; then
  run bench_round 150 --quick
  run bench_flops 150 --quick
  run bench_scale 150 --quick
else
  run bench_round 120 --rounds 3
  run bench_flops 90 --models feddmr --rounds 2
  run bench_scale 150 --sizes 10000,100000,1000000 --rounds 1 \
    --model-args "${SCALE_MODEL_ARGS-attention=false}" --size-timeout "$(limit 140)"
fi

echo "total $(( $(date +%s) - start ))s; results in $OUT" | tee -a "$OUT/summary.txt"
