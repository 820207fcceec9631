// k-mer encode on the GPU: one thread per window over a uint8 device tensor, so a GPU data pipeline never leaves
// the device. Same semantics as the CPU op (kmer/core/kmer_core.h supplies the index math and the lookups).
//
// Steps: (1) a one-thread kernel encodes the short tail; its token count (and any bad byte) comes back to the
// host with a small copy, which sizes the output exactly; (2) the window kernel writes each window's id (-1 when
// it needs the byte fallback) straight into the output and counts those; (3) only when some window missed, a
// prefix sum of tokens per window places the fallback bytes and a second kernel writes the expanded output.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "kmer/kmer.h"

namespace enigma_fast {
namespace kmer {
namespace {

constexpr int kThreads = 256;

// Stats slots filled on the device: [0] windows that missed, [1] tail token count, [2] position of the first
// byte without a token (INT64_MAX = none).
constexpr int kMissing = 0, kTailCount = 1, kBadPos = 2;

__device__ __forceinline__ void load_lut(const BaseLut& lut, uint8_t* shared) {
  for (int i = threadIdx.x; i < 256; i += blockDim.x) shared[i] = lut.code[i];
  __syncthreads();
}

template <typename Out, bool Dense>
__global__ void windows_kernel(const uint8_t* __restrict__ s, int64_t n_win, Lookup v, BaseLut lut_in,
                               Out* __restrict__ out, int64_t* __restrict__ stats) {
  __shared__ uint8_t lut[256];
  load_lut(lut_in, lut);
  int64_t missing = 0;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < n_win; w += step) {
    const uint8_t* p = s + w * v.stride;
    uint64_t code = 0;
    unsigned bad = 0;
#pragma unroll 4
    for (int j = 0; j < v.k; ++j) {
      const unsigned c = lut[p[j]];
      code = (code << 2) | (c & 3u);
      bad |= c;
    }
    int64_t id = -1;
    if (!(bad & kBad)) {
      if constexpr (Dense)
        id = v.dense[code];
      else
        id = find_hashed(v.hash_slots, v.hash_bits, static_cast<int64_t>(code));
    }
    if (id < 0) id = v.missing_id;
    missing += id < 0;
    out[w] = static_cast<Out>(id);
  }
  // Block reduction of the miss count, one atomic per block.
  __shared__ unsigned long long block_missing;
  if (threadIdx.x == 0) block_missing = 0;
  __syncthreads();
  if (missing) atomicAdd(&block_missing, static_cast<unsigned long long>(missing));
  __syncthreads();
  if (threadIdx.x == 0 && block_missing)
    atomicAdd(reinterpret_cast<unsigned long long*>(stats + kMissing), block_missing);
}

__device__ __forceinline__ void note_bad(int64_t* stats, int64_t pos) {
  atomicMin(reinterpret_cast<long long*>(stats + kBadPos), static_cast<long long>(pos));
}

// One thread: the tail's tokens into tail_out (room for k - 1), their count into stats.
__global__ void tail_kernel(const uint8_t* __restrict__ s, int64_t n, Lookup v, BaseLut lut, int64_t* tail_out,
                            int64_t* stats) {
  const int64_t b = tail_begin(n, v.k, v.stride);
  const int64_t len = n - b;
  if (len <= 0) return;
  if (v.tail != nullptr) {
    uint64_t code = 0;
    unsigned bad = 0;
    for (int64_t j = 0; j < len; ++j) {
      const unsigned c = lut.code[s[b + j]];
      code = (code << 2) | (c & 3u);
      bad |= c;
    }
    if (!(bad & kBad)) {
      const int64_t id = v.tail[tail_offset(len) + static_cast<int64_t>(code)];
      if (id >= 0) {
        tail_out[0] = id;
        stats[kTailCount] = 1;
        return;
      }
    }
  }
  for (int64_t j = 0; j < len; ++j) {
    const int32_t id = v.char_ids[s[b + j]];
    if (id < 0) {
      note_bad(stats, b + j);
      return;
    }
    tail_out[j] = id;
  }
  stats[kTailCount] = len;
}

// Expansion: window w's tokens start at ends[w] - tokens(w); a missed window writes its c fallback bytes.
template <typename Out>
__global__ void expand_kernel(const uint8_t* __restrict__ s, int64_t n_win, Lookup v, const Out* __restrict__ win,
                              const int64_t* __restrict__ ends, Out* __restrict__ out, int64_t* stats) {
  const int64_t c = cover(v.k, v.stride);
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t w = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; w < n_win; w += step) {
    const Out id = win[w];
    if (id >= 0) {
      out[ends[w] - 1] = id;
      continue;
    }
    const int64_t start = ends[w] - c, i = w * v.stride;
    for (int64_t j = 0; j < c; ++j) {
      const int32_t cid = v.char_ids[s[i + j]];
      if (cid < 0) {
        note_bad(stats, i + j);
        break;
      }
      out[start + j] = static_cast<Out>(cid);
    }
  }
}

int blocks_for(int64_t items) {
  const int64_t b = (items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(b, 65535 * 8)));
}

void fail_if_bad(const at::Tensor& stats_host, const at::Tensor& bases) {
  const int64_t pos = stats_host.data_ptr<int64_t>()[kBadPos];
  if (pos == INT64_MAX) return;
  const uint8_t byte = bases.narrow(0, pos, 1).cpu().data_ptr<uint8_t>()[0];
  fail_no_token("kmer_encode", byte, pos);
}

template <typename Out>
at::Tensor encode_cuda_impl(const at::Tensor& bases, const Lookup& v, const BaseLut& lut, at::ScalarType dtype) {
  const int64_t n = bases.numel();
  const int64_t nw = num_windows(n, v.k, v.stride);
  const uint8_t* s = bases.data_ptr<uint8_t>();
  auto stream = c10::cuda::getCurrentCUDAStream();
  const auto i64 = bases.options().dtype(at::kLong);
  at::Tensor stats = at::tensor({int64_t(0), int64_t(0), INT64_MAX}, at::TensorOptions().dtype(at::kLong))
                         .to(bases.device());
  at::Tensor tail = at::empty({kMaxK}, i64);
  tail_kernel<<<1, 1, 0, stream>>>(s, n, v, lut, tail.data_ptr<int64_t>(), stats.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  at::Tensor host = stats.cpu();
  fail_if_bad(host, bases);
  const int64_t nt = host.data_ptr<int64_t>()[kTailCount];

  at::Tensor out = at::empty({nw + nt}, bases.options().dtype(dtype));
  if (nw > 0) {
    if (v.dense != nullptr)
      windows_kernel<Out, true><<<blocks_for(nw), kThreads, 0, stream>>>(s, nw, v, lut, out.data_ptr<Out>(),
                                                                          stats.data_ptr<int64_t>());
    else
      windows_kernel<Out, false><<<blocks_for(nw), kThreads, 0, stream>>>(s, nw, v, lut, out.data_ptr<Out>(),
                                                                           stats.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (nt > 0) out.narrow(0, nw, nt).copy_(tail.narrow(0, 0, nt));
  if (nw == 0) return out;
  host = stats.cpu();
  const int64_t missing = host.data_ptr<int64_t>()[kMissing];
  if (missing == 0) return out;

  const int64_t c = cover(v.k, v.stride);
  at::Tensor win = out.narrow(0, 0, nw);
  at::Tensor ends = at::cumsum(at::where(win >= 0, int64_t(1), c), 0);  // int64 (nw,)
  const int64_t body = nw + missing * (c - 1);
  at::Tensor full = at::empty({body + nt}, out.options());
  expand_kernel<Out><<<blocks_for(nw), kThreads, 0, stream>>>(s, nw, v, win.data_ptr<Out>(), ends.data_ptr<int64_t>(),
                                                              full.data_ptr<Out>(), stats.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (nt > 0) full.narrow(0, body, nt).copy_(tail.narrow(0, 0, nt));
  fail_if_bad(stats.cpu(), bases);
  return full;
}

at::Tensor kmer_encode_cuda(const at::Tensor& bases, const at::Tensor& table, const at::Tensor& tail_table,
                            const at::Tensor& char_ids, int64_t k, int64_t stride, int64_t missing_id, bool fold_case,
                            at::ScalarType dtype) {
  const char* op = "kmer_encode";
  check_k_stride(k, stride, op);
  check_bases(bases, op);
  check_vocab(bases, table, tail_table, char_ids, k, dtype, op);
  const c10::cuda::CUDAGuard guard(bases.device());
  const BaseLut lut = make_base_lut(fold_case);
  // The kernels take lut by value into shared memory; Lookup::lut is unused on the device.
  const Lookup v = make_lookup(table, tail_table, char_ids, k, stride, missing_id, nullptr);
  return dtype == at::kLong ? encode_cuda_impl<int64_t>(bases, v, lut, dtype)
                            : encode_cuda_impl<int32_t>(bases, v, lut, dtype);
}

}  // namespace
}  // namespace kmer
}  // namespace enigma_fast

TORCH_LIBRARY_IMPL(enigma_fast, CUDA, m) { m.impl("kmer_encode", &enigma_fast::kmer::kmer_encode_cuda); }
