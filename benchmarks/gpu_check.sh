#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU, build the extension in place, run every CUDA test and the CUDA
# benchmarks, and print a short table last. Logs go to ${OUT:-/tmp/enigma_fast_gpu_check}. Target: < 5 minutes.
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/enigma_fast_gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
PY="${PYTHON:-python3}"
summary=()
step() {  # step NAME COMMAND...: run, log to $OUT/NAME.log, remember pass/fail and the seconds it took
  local name=$1; shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-28s %-5s %4ss' "$name" "$([ $rc -eq 0 ] && echo ok || echo FAIL)" $((SECONDS - t0)))")
  tail -n 5 "$OUT/$name.log"
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
step build "$PY" -m pip install --no-build-isolation --no-deps -e . || { cat "$OUT/build.log" | tail -40; }
step backend "$PY" -c "import enigma_fast, json; print(json.dumps(enigma_fast.backend_info(), indent=1))"
step cuda_tests "$PY" -m pytest tests/ -q -m cuda -x -p no:cacheprovider
step rms_norm_bench "$PY" -m benchmarks.bench_rms_norm --device cuda --rounds 50

echo
echo "== RMSNorm on CUDA (median ms, interleaved rounds) =="
grep -E "^\| (forward|forward\+backward) bfloat16 \(16384, 4096\)" "$OUT/rms_norm_bench.log" || true
grep -E "^(PASS|FAIL)" "$OUT/rms_norm_bench.log" || true
echo
echo "== steps =="
printf '%s\n' "${summary[@]}"
