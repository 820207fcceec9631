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
# Every CUDA test, none stopping the rest: with pytest-xdist a test that crashes its process is reported as failed
# (its worker restarts) instead of ending the run.
XDIST=$("$PY" -c "import xdist" 2> /dev/null && echo "-n 4" || true)
step cuda_tests "$PY" -m pytest tests/ -q -m cuda -p no:cacheprovider $XDIST
step rms_norm_bench "$PY" -m benchmarks.bench_rms_norm --device cuda --rounds 50

# Relative-position attention: a small forward/backward/decode under compute-sanitizer (memcheck, racecheck), then
# the benchmarks (quick set; ATTN_BENCH_ARGS="" runs the full T x D x B x L grid).
ATTN_SMALL='import torch, enigma_fast.ops as o
d = "cuda"
for dt in (torch.bfloat16, torch.float32):
    q, k, v = (torch.randn(2, 2, 70, 64, device=d, dtype=dt, requires_grad=True) for _ in range(3))
    r = torch.randn(2, 41, 64, device=d, dtype=dt, requires_grad=True)
    ks = torch.tensor([0, 5], device=d)
    o.rel_attention(q, k, v, r, causal=True, key_start=ks).sum().backward()
    kc, vc = (torch.randn(2, 2, 300, 64, device=d, dtype=dt) for _ in range(2))
    o.rel_attention_with_kvcache(q[:, :, :1].detach(), kc, vc, r.detach(), cache_seqlens=torch.tensor([9, 250], device=d),
                                 k_new=q[:, :, :1].detach(), v_new=q[:, :, :1].detach())
torch.cuda.synchronize(); print("ok")'
SAN="${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer"
if [ -x "$SAN" ]; then
  step attn_memcheck "$SAN" --tool memcheck --error-exitcode 1 "$PY" -c "$ATTN_SMALL"
  step attn_racecheck "$SAN" --tool racecheck --error-exitcode 1 "$PY" -c "$ATTN_SMALL"
fi
step attn_bench "$PY" -m benchmarks.bench_attention_cuda ${ATTN_BENCH_ARGS---quick} --rounds 20

# k-mer tokenization: CUDA encode of 1 GB of bases (the CUDA tests ran with the rest above).
step kmer_bench "$PY" -m benchmarks.bench_kmer --rounds 10 --cuda-gb 1

echo
echo "== k-mer encode (GB/s of bases) =="
grep -iE "cuda" "$OUT/kmer_bench.log" | grep -E "^\|" | head -4 || true

echo
echo "== Relative attention on CUDA (bf16, causal) =="
grep -E "^\| (forward|forward\+backward) T=2048 D=64 \|" "$OUT/attn_bench.log" | head -8 || true
grep -E "^\| decode B=8 L=16384 \|" "$OUT/attn_bench.log" || true
grep -E "^(PASS|FAIL)" "$OUT/attn_bench.log" || true

echo
echo "== RMSNorm on CUDA (median ms, interleaved rounds) =="
grep -E "^\| (forward|forward\+backward) bfloat16 \(16384, 4096\)" "$OUT/rms_norm_bench.log" || true
grep -E "^(PASS|FAIL)" "$OUT/rms_norm_bench.log" || true
echo
echo "== steps =="
printf '%s\n' "${summary[@]}"
