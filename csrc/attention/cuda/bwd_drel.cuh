// Relative-position attention on CUDA, the tensor-core backward, part 2: d(rel_emb) by bands of tile pairs
// (band_kernel, drel_reduce_kernel; see bwd.cuh for the scheme) and the launcher of the whole backward.
#pragma once

#include "attention/cuda/bwd.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

// ---------------------------------------------------------------------------------------------------------------
// d(rel_emb): band partials and their reduction
// ---------------------------------------------------------------------------------------------------------------
// Band k (kt - qt = k - (nqt - 1)) meets offsets band_off0(k) + u, u = 0 .. 126 (the tile's sR rows).
__host__ __device__ __forceinline__ int64_t band_off0(int64_t k, int64_t nqt, int64_t qpos0) {
  return (k - (nqt - 1)) * kBK - qpos0 - (kBQ - 1);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) band_kernel(const MmaParams p) {
  using Sm = BwdSmem<D, true>;
  constexpr int DP = Sm::DP, OT = D / 8, NCH = OT < 8 ? OT : 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + Sm::TILE;
  T* sK = sQ + 2 * Sm::TILE;
  T* sV = sQ + 3 * Sm::TILE;
  T* sR = sQ + Sm::R;
  T* sGt = reinterpret_cast<T*>(smem_raw + Sm::GT);
  float* sAcc = reinterpret_cast<float*>(smem_raw + Sm::ACC);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int m0 = warp * 16;
  float* sQRw = reinterpret_cast<float*>(smem_raw + Sm::QR) + warp * 16 * kQRP;

  const int64_t band = blockIdx.x, h = blockIdx.y, bs = blockIdx.z;
  const int64_t Tq = p.g.Tq, Tk = p.g.Tk;
  const int64_t nqt = (Tq + kBQ - 1) / kBQ, nkt = (Tk + kBK - 1) / kBK;
  const int64_t dband = band - (nqt - 1);
  const int64_t qpos0 = Tk - Tq;
  const T* relh = static_cast<const T*>(p.rel) + h * (2 * p.P - 1) * D;
  const int64_t off0 = band_off0(band, nqt, qpos0);
  load_tile<T, D>(sR, kNR, relh, [&](int r) -> const T* { return relh + rel_row(off0 + r, p.P) * D; });
  cp_async_commit();
  for (int idx = threadIdx.x; idx < kNR * D; idx += kThreads) sAcc[idx] = 0.f;
  const T* cRw = sR + (kBQ - 16 - m0) * DP;

  const int64_t b0 = bs * p.g.B / p.bsplit, b1 = (bs + 1) * p.g.B / p.bsplit;
  const int64_t qt_lo = dband < 0 ? -dband : 0;
  const int64_t qt_hi = nqt < nkt - dband ? nqt : nkt - dband;
  for (int64_t b = b0; b < b1; ++b) {
    const RowGeom rg = row_geom(p.g, b);
    const int64_t bh = b * p.g.H + h;
    const T* qb = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
    const T* dob = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
    const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
    const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
    for (int64_t qt = qt_lo; qt < qt_hi; ++qt) {
      const int64_t i0 = qt * kBQ, j0 = (qt + dband) * kBK, pos0 = rg.qpos0 + i0;
      const int64_t nk = rg.nk, ks = rg.kstart;
      if (j0 >= nk || j0 + kBK <= ks || (p.g.causal && j0 > pos0 + kBQ - 1)) continue;  // no unmasked pair
      load_rows<T, D>(sQ, kBQ, qb + i0 * p.q_st, p.q_st, Tq - i0);
      load_rows<T, D>(sdO, kBQ, dob + i0 * p.do_st, p.do_st, Tq - i0);
      load_tile<T, D>(sK, kBK, kb, [&](int r) -> const T* {
        return j0 + r < nk && j0 + r >= ks ? kb + (j0 + r) * p.k_st : nullptr;
      });
      load_tile<T, D>(sV, kBK, vb, [&](int r) -> const T* {
        return j0 + r < nk && j0 + r >= ks ? vb + (j0 + r) * p.v_st : nullptr;
      });
      cp_async_commit();
      for (int idx = threadIdx.x; idx < kNR * kGTP / 2; idx += kThreads) reinterpret_cast<uint32_t*>(sGt)[idx] = 0u;
      float lse2[2], dlt[2];
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int64_t i = i0 + m0 + g + 8 * hr;
        lse2[hr] = i < Tq ? p.lse[bh * Tq + i] * kLog2e : INFINITY;
        dlt[hr] = i < Tq ? p.delta[bh * Tq + i] : 0.f;
      }
      cp_async_wait<0>();
      __syncthreads();
      float s[kBK / 8][4];
      warp_ds<T, D, true>(s, p, sQ, sdO, sK, sV, cRw, sQRw, m0, lane, j0, pos0 + m0, ks, nk, lse2, dlt);
      // Gt[u][i] = dS[i][c] at u = c - i + 63 (block-local query i, key c): offset off0 + u.
#pragma unroll
      for (int n = 0; n < kBK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = m0 + g + (e >= 2 ? 8 : 0), c = n * 8 + 2 * t + (e & 1);
          sGt[(c - i + kBQ - 1) * kGTP + i] = to16<T>(s[n][e]);
        }
      __syncthreads();
      // Acc[u][:] += sum_i Gt[u][i] q_i: warp w takes offsets 32w .. 32w+31.
#pragma unroll
      for (int nc = 0; nc < OT; nc += NCH) {
        float acc[2][NCH][4];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int n = 0; n < NCH; ++n) acc[mi][n][0] = acc[mi][n][1] = acc[mi][n][2] = acc[mi][n][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < kBQ / 16; ++kk) {
          uint32_t a0[4], a1[4];
          load_a(a0, sGt, kGTP, 32 * warp, kk * 16, lane);
          load_a(a1, sGt, kGTP, 32 * warp + 16, kk * 16, lane);
#pragma unroll
          for (int n = 0; n < NCH; n += 2) {
            uint32_t bb[4];
            load_b_cols_x2(bb, sQ, DP, kk * 16, (nc + n) * 8, lane);
            mma16816<T>(acc[0][n], a0, bb[0], bb[1]);
            mma16816<T>(acc[0][n + 1], a0, bb[2], bb[3]);
            mma16816<T>(acc[1][n], a1, bb[0], bb[1]);
            mma16816<T>(acc[1][n + 1], a1, bb[2], bb[3]);
          }
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int n = 0; n < NCH; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int u = 32 * warp + 16 * mi + g + (e >= 2 ? 8 : 0), d = (nc + n) * 8 + 2 * t + (e & 1);
              sAcc[u * D + d] += acc[mi][n][e];
            }
      }
      __syncthreads();  // the next pair overwrites the tiles and Gt
    }
  }
  cp_async_wait<0>();
  __syncthreads();
  float* part = p.drel_part + ((bs * p.g.H + h) * p.nbands + band) * kNR * D;
  for (int idx = threadIdx.x; idx < kNR * D; idx += kThreads) part[idx] = sAcc[idx] * p.scale;
}

// drel[h, r, d] = sum of the band partials at offset r - (P-1), in (batch group, band, u) order; the end rows take
// every offset beyond +-(P-1). One block of D threads per (r, h).
template <typename T>
__global__ void drel_reduce_kernel(const MmaParams p, int D) {
  const int64_t r = blockIdx.x, h = blockIdx.y, P = p.P;
  const int d = threadIdx.x;
  const int64_t Tq = p.g.Tq, Tk = p.g.Tk, nqt = (Tq + kBQ - 1) / kBQ, qpos0 = Tk - Tq;
  const int64_t off = r - (P - 1);
  const bool lo_end = r == 0, hi_end = r == 2 * P - 2;
  float sum = 0.f;
  for (int bs = 0; bs < p.bsplit; ++bs) {
    const float* base = p.drel_part + (static_cast<int64_t>(bs) * p.g.H + h) * p.nbands * kNR * D;
    int64_t k_lo = 0, k_hi = p.nbands;  // bands whose window can reach this row
    if (!lo_end && !hi_end) {
      const int64_t o0 = band_off0(0, nqt, qpos0);
      k_lo = (off - (kNR - 2) - o0 + kBK - 1) / kBK;  // off0(k) + 126 >= off (o0 <= off - 126 + ... , floor-safe)
      if (off - (kNR - 2) - o0 < 0) k_lo = 0;
      k_hi = (off - o0) / kBK + 1;
      if (off - o0 < 0) k_hi = 0;
      if (k_hi > p.nbands) k_hi = p.nbands;
    }
    for (int64_t k = k_lo; k < k_hi; ++k) {
      const int64_t o = band_off0(k, nqt, qpos0);
      int64_t u0, u1;  // u range in [0, kNR - 1) with offset o + u mapping to row r
      if (lo_end && hi_end) {
        u0 = 0, u1 = kNR - 1;
      } else if (lo_end) {
        u0 = 0, u1 = -(P - 1) - o + 1;
      } else if (hi_end) {
        u0 = (P - 1) - o, u1 = kNR - 1;
      } else {
        u0 = off - o, u1 = off - o + 1;
      }
      if (u0 < 0) u0 = 0;
      if (u1 > kNR - 1) u1 = kNR - 1;
      for (int64_t u = u0; u < u1; ++u) sum += base[(k * kNR + u) * D + d];
    }
  }
  static_cast<T*>(p.drel)[(h * (2 * P - 1) + r) * D + d] = to16<T>(sum);
}

// ---------------------------------------------------------------------------------------------------------------
// Launch
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int D>
void launch_bwd_typed(const MmaParams& p, const void* out, int64_t o_sb, int64_t o_sh, int64_t o_st,
                      cudaStream_t stream) {
  const int64_t rows = p.g.B * p.g.H * p.g.Tq;
  delta_kernel<T><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(
      p, static_cast<const T*>(out), o_sb, o_sh, o_st, const_cast<float*>(p.delta), D);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const unsigned bhs = static_cast<unsigned>(p.g.B * p.g.H);
  auto go = [&](auto kernel, dim3 grid, int bytes) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    kernel<<<grid, kThreads, bytes, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  const dim3 kgrid(static_cast<unsigned>((p.g.Tk + kBK - 1) / kBK), bhs);
  const dim3 qgrid(static_cast<unsigned>((p.g.Tq + kBQ - 1) / kBQ), bhs);
  if (p.rel != nullptr) {
    go(dkdv_kernel<T, D, true>, kgrid, BwdSmem<D, true>::BYTES);
    go(dq_kernel<T, D, true>, qgrid, BwdSmem<D, true>::BYTES);
    go(band_kernel<T, D>,
       dim3(static_cast<unsigned>(p.nbands), static_cast<unsigned>(p.g.H), static_cast<unsigned>(p.bsplit)),
       BwdSmem<D, true>::BAND_BYTES);
    drel_reduce_kernel<T><<<dim3(static_cast<unsigned>(2 * p.P - 1), static_cast<unsigned>(p.g.H)), D, 0, stream>>>(p, D);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    go(dkdv_kernel<T, D, false>, kgrid, BwdSmem<D, false>::BYTES);
    go(dq_kernel<T, D, false>, qgrid, BwdSmem<D, false>::BYTES);
  }
}

template <int D>
void launch_mma_bwd(const MmaParams& p, bool bf16, const void* out, int64_t o_sb, int64_t o_sh, int64_t o_st,
                    cudaStream_t stream) {
  if (bf16)
    launch_bwd_typed<__nv_bfloat16, D>(p, out, o_sb, o_sh, o_st, stream);
  else
    launch_bwd_typed<__half, D>(p, out, o_sb, o_sh, o_st, stream);
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
