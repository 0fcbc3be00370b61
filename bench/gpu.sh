#!/usr/bin/env bash
# On the GPU machine, from the repository root (through .gpu/on-device.sh, with dist/, the CPU addon and
# the CUDA addon carried): the test files given (default: all) on the CUDA backend, the PyTorch peers
# (../shared/device/peers.py, copied to .gpu/ by prepare.sh) and every bench/*-gpu.mjs, logs under $OUT.
# Usage: bash bench/gpu.sh [--no-tests] [--no-peers] [--peers "copy fftconv gemm w4a16"] [test files...]
set -uo pipefail
out=${OUT:-/tmp/ssmkit-out}
mkdir -p "$out"
tests=1
peers=1
peer_parts="copy fftconv gemm w4a16"
files=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-tests) tests=0 ;;
    --no-peers) peers=0 ;;
    --peers) peer_parts="$2"; shift ;;
    *) files+=("$1") ;;
  esac
  shift
done
echo "== $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown) $(nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader)"
status=0
if [ "$tests" = 1 ]; then
  node node_modules/vitest/vitest.mjs run "${files[@]}" > "$out/vitest.log" 2>&1 || status=1
  grep -E "FAIL|✗|×|Test Files|Tests " "$out/vitest.log" | sed 's/\x1b\[[0-9;]*m//g' | head -60
fi
if [ "$peers" = 1 ]; then
  PYTHONUNBUFFERED=1 python3 .gpu/peers.py $peer_parts > "$out/peers.jsonl" 2>&1 || status=1
  cat "$out/peers.jsonl"
fi
for b in bench/*-gpu.mjs; do
  [ -e "$b" ] || continue
  echo "== $b"
  node "$b" 2>&1 | tee -a "$out/bench.log" | tail -40 || status=1
done
exit $status
