#!/usr/bin/env bash
# One prepared run for a machine with an NVIDIA GPU (torch with CUDA, nvcc,
# cmake, ninja, pytest already there): build the CUDA backend, run every test
# (the GPU-only ones included) and the benchmark on the GPU. Logs go to $OUT.
#   OUT=/tmp/gpu bash scripts/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/genfast-gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
t0=$(date +%s)
step() { printf '\n=== [%4ss] %s\n' "$(( $(date +%s) - t0 ))" "$*"; }

step "build (GENFAST_CUDA=1, archs ${GENFAST_CUDA_ARCHS:=90})"
export GENFAST_CUDA=1 GENFAST_CUDA_ARCHS MAX_JOBS=${MAX_JOBS:-16}
"$PY" -m pip install -q --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
"$PY" -m genfast info | tee "$OUT/info.txt"

step "tests"
"$PY" -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$OUT/tests.log" | tail -25

step "benchmark on the GPU"
"$PY" -m genfast bench --device cuda --json "$OUT/bench.json" 2>"$OUT/bench.progress" \
  | tee "$OUT/bench.txt"
step "done"
