// Relative-position attention on CUDA, the tensor-core forward (bfloat16 / float16, head dim D = 32, 64, 128).
//
// FlashAttention-2 layout: one block of 4 warps per (64-query tile, batch * head); each warp owns 16 query rows.
// Key/value tiles of 64 rows stream through shared memory with cp.async double buffering. Per key tile:
//   S   = Q K^T                       mma.sync m16n8k16, float32 accumulators in registers
//   S  += relative term               the block's key tile and query tile meet at 64 + 64 - 1 distinct offsets
//                                     j - p_i; their rel_emb rows (clamped) are loaded with K and V. Each warp
//                                     multiplies its 16 query rows by the 79 rows its pairs need (one more small
//                                     product, 16 x 80), stores that into its own shared buffer QR[r][u] and adds
//                                     QR[r][c - r + 15] to S[r][c] (offset j - p_i = warp base + c - r + 15).
//   mask (only tiles that reach past the causal diagonal, the key_start boundary or the last key)
//   online softmax in float32 registers (base-2 exponent, scale folded in), O += P V with P straight from registers.
// Causal tiles wholly above the diagonal and tiles wholly before key_start are never visited. Key rows past the
// valid range are zero-filled (never read), so unwritten cache slots cannot leak NaN through 0 * NaN. The
// log-sum-exp of each row is written for the backward (+inf for a row with no valid key, whose output is zero).
#pragma once

#include <c10/cuda/CUDAException.h>

#include "attention/cuda/tile.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

template <int D, bool HAS_REL>
struct FwdSmem {
  static constexpr int DP = D + 8;  // row pitch in elements: 16 bytes of padding keeps fragment loads conflict-free
  static constexpr int Q = 0;
  static constexpr int K = Q + kBQ * DP;           // 2 stages
  static constexpr int V = K + 2 * kBK * DP;       // 2 stages
  static constexpr int R = V + 2 * kBK * DP;       // 2 stages
  static constexpr int END16 = R + (HAS_REL ? 2 * kNR * DP : 0);  // in 16-bit elements
  static constexpr int QR_BYTES = HAS_REL ? 4 * 16 * kQRP * 4 : 0;
  static constexpr int BYTES = END16 * 2 + QR_BYTES;
};

template <typename T, int D, bool HAS_REL>
__global__ void __launch_bounds__(kThreads) fwd_mma_kernel(const MmaParams p) {
  using Sm = FwdSmem<D, HAS_REL>;
  constexpr int DP = Sm::DP;
  constexpr int NT = kBK / 8;  // score n-tiles per warp
  constexpr int OT = D / 8;    // output n-tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw) + Sm::Q;
  T* sK = reinterpret_cast<T*>(smem_raw) + Sm::K;
  T* sV = reinterpret_cast<T*>(smem_raw) + Sm::V;
  T* sR = reinterpret_cast<T*>(smem_raw) + Sm::R;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  float* sQR = reinterpret_cast<float*>(smem_raw + Sm::END16 * 2) + warp * 16 * kQRP;

  const int64_t bh = blockIdx.y, b = bh / p.g.H, h = bh % p.g.H;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBQ;
  const RowGeom rg = row_geom(p.g, b);
  const int64_t pos0 = rg.qpos0 + i0;  // position of the block's first query
  const int64_t kend = p.g.causal ? (pos0 + kBQ < rg.nk ? pos0 + kBQ : rg.nk) : rg.nk;
  const int64_t kt0 = rg.kstart / kBK;
  const int64_t kt1 = kend > rg.kstart ? (kend + kBK - 1) / kBK : kt0;

  const T* qb = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const T* relh = HAS_REL ? static_cast<const T*>(p.rel) + h * (2 * p.P - 1) * D : nullptr;
  const int64_t Tq = p.g.Tq, nk = rg.nk, ks = rg.kstart;

  auto issue = [&](int64_t kt, int stage) {
    const int64_t j0 = kt * kBK;
    load_tile<T, D>(sK + stage * kBK * DP, kBK, kb, [&](int r) -> const T* {
      const int64_t j = j0 + r;
      return j < nk && j >= ks ? kb + j * p.k_st : nullptr;
    });
    load_tile<T, D>(sV + stage * kBK * DP, kBK, vb, [&](int r) -> const T* {
      const int64_t j = j0 + r;
      return j < nk && j >= ks ? vb + j * p.v_st : nullptr;
    });
    if constexpr (HAS_REL) {
      // Row v holds offset j0 - (pos0 + kBQ - 1) + v.
      const int64_t off0 = j0 - (pos0 + kBQ - 1);
      load_tile<T, D>(sR + stage * kNR * DP, kNR, relh,
                      [&](int r) -> const T* { return relh + rel_row(off0 + r, p.P) * D; });
    }
  };

  load_tile<T, D>(sQ, kBQ, qb, [&](int r) -> const T* { return i0 + r < Tq ? qb + (i0 + r) * p.q_st : nullptr; });
  if (kt0 < kt1) issue(kt0, 0);
  cp_async_commit();

  float o[OT][4];
#pragma unroll
  for (int n = 0; n < OT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const float sc = p.scale * kLog2e;
  const int m0 = warp * 16;
  const int64_t posw = pos0 + m0;  // position of the warp's first query

  for (int64_t kt = kt0; kt < kt1; ++kt) {
    const int stage = static_cast<int>((kt - kt0) & 1);
    if (kt + 1 < kt1) {
      issue(kt + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* cK = sK + stage * kBK * DP;
    const T* cV = sV + stage * kBK * DP;
    const int64_t j0 = kt * kBK;

    float s[NT][4];
    warp_qk<T, D>(s, sQ, m0, cK, lane);
    if constexpr (HAS_REL) {
      warp_qr<T, D>(sQR, sQ, m0, sR + stage * kNR * DP + (kBQ - 16 - m0) * DP, lane);
      __syncwarp();
      add_rel(s, sQR, lane);
      __syncwarp();  // the buffer is rewritten for the next tile
    }

    // Scale into the base-2 domain, then mask where this tile crosses a boundary.
    const bool need_mask = j0 < ks || j0 + kBK > nk || (p.g.causal && j0 + kBK - 1 > posw);
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[n][e] * sc;
        if (need_mask) {
          const int r = g + (e >= 2 ? 8 : 0);
          const int64_t j = j0 + n * 8 + 2 * t + (e & 1);
          if (j < ks || j >= nk || (p.g.causal && j > posw + r)) x = -INFINITY;
        }
        s[n][e] = x;
      }

    // Online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3); the 4 lanes of a quad share a row.
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = m[hr];
#pragma unroll
      for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * hr], s[n][2 * hr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float base = mx == -INFINITY ? 0.f : mx;  // a row with nothing valid yet: exp2(-inf - 0) = 0
      const float corr = exp2f(m[hr] - base);          // m = -inf: 0 (and l, o are 0 anyway)
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        s[n][2 * hr] = exp2f(s[n][2 * hr] - base);
        s[n][2 * hr + 1] = exp2f(s[n][2 * hr + 1] - base);
        sum += s[n][2 * hr] + s[n][2 * hr + 1];
      }
      l[hr] = l[hr] * corr + sum;  // per-lane partial; the quad is summed at the end
      m[hr] = mx;
#pragma unroll
      for (int n = 0; n < OT; ++n) {
        o[n][2 * hr] *= corr;
        o[n][2 * hr + 1] *= corr;
      }
    }

    // O += P V: P's C fragments of n-tiles 2kk and 2kk+1 are the A fragment of key step kk.
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t a[4];
      a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < OT; n += 2) {
        uint32_t bv[4];
        load_b_cols_x2(bv, cV, DP, kk * 16, n * 8, lane);
        mma16816<T>(o[n], a, bv[0], bv[1]);
        mma16816<T>(o[n + 1], a, bv[2], bv[3]);
      }
    }
    __syncthreads();  // the next iteration overwrites this stage
  }
  cp_async_wait<0>();  // nothing left in flight (the Q load when there was no key tile)

  // Normalise and store.
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float lsum = l[hr];
    lsum += __shfl_xor_sync(0xffffffffu, lsum, 1);
    lsum += __shfl_xor_sync(0xffffffffu, lsum, 2);
    const int64_t i = i0 + m0 + g + 8 * hr;
    if (i >= Tq) continue;
    const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
    T* orow = static_cast<T*>(p.out) + (bh * Tq + i) * D;
#pragma unroll
    for (int n = 0; n < OT; ++n)
      *reinterpret_cast<uint32_t*>(orow + n * 8 + 2 * t) = pack2<T>(o[n][2 * hr] * inv, o[n][2 * hr + 1] * inv);
    if (t == 0) p.lse[bh * Tq + i] = lsum > 0.f ? m[hr] * kLn2 + __logf(lsum) : INFINITY;
  }
}

template <typename T, int D>
void launch_fwd_typed(const MmaParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.g.Tq + kBQ - 1) / kBQ), static_cast<unsigned>(p.g.B * p.g.H));
  auto go = [&](auto kernel, int bytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    kernel<<<grid, kThreads, bytes, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (p.rel != nullptr)
    go(fwd_mma_kernel<T, D, true>, FwdSmem<D, true>::BYTES);
  else
    go(fwd_mma_kernel<T, D, false>, FwdSmem<D, false>::BYTES);
}

template <int D>
void launch_mma_fwd(const MmaParams& p, bool bf16, cudaStream_t stream) {
  if (bf16)
    launch_fwd_typed<__nv_bfloat16, D>(p, stream);
  else
    launch_fwd_typed<__half, D>(p, stream);
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
