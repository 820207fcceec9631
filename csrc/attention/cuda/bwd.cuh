// Relative-position attention on CUDA, the tensor-core backward (bfloat16 / float16, D = 32, 64, 128).
//
// Every kernel recomputes the probabilities from the saved log-sum-exp, P = exp(S - lse), and uses
// delta_i = rowsum(dO_i * O_i) (delta_kernel), dP = dO V^T, dS = P (dP - delta). No atomics anywhere: each output
// element is summed by one block in a fixed order, so results are bitwise reproducible run to run.
//   dkdv_kernel  one block per (key tile, batch * head), warps own 16 keys each (S^T = K Q^T is computed directly,
//                so P^T and dS^T are A fragments without a transpose): dV += P^T dO, dK += dS^T Q over query tiles.
//   dq_kernel    one block per (query tile, batch * head), like the forward: dQ += dS K, and for the relative term
//                dQ += G R where G[r][u] = dS[r][u + r - 15] is dS skewed into the warp's 80 offsets (shared
//                memory, 16-bit) and R the warp's rel_emb rows.
//   band_kernel  d(rel_emb): the (query tile, key tile) pairs with the same kt - qt ("band") meet at the same 127
//                offsets, so one block per (band, head, batch group) walks its band's pairs, keeps the band's
//                127 x D partial in shared memory (float32), and writes it once; drel_reduce_kernel then sums, for
//                every rel_emb row, the band partials that reach it (two for an interior row; all offsets beyond
//                +-(P-1) for the two end rows) in a fixed order.
#pragma once

#include <c10/cuda/CUDAException.h>

#include "attention/cuda/tile.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

constexpr int kGP = kQRW + 8;  // pitch (16-bit elements) of a warp's skewed dS buffer in the dq kernel
constexpr int kGTP = kBQ + 8;  // pitch of the block's transposed skewed dS in the band kernel

template <int D, bool HAS_REL>
struct BwdSmem {
  static constexpr int DP = D + 8;
  static constexpr int TILE = 64 * DP;  // elements of one 64-row tile
  // dkdv and dq: Q, dO, K, V tiles, R rows; then floats: QR buffers (+ lse/delta for dkdv); then dq's G buffers.
  static constexpr int R = 4 * TILE;
  static constexpr int END16 = R + (HAS_REL ? kNR * DP : 0);
  static constexpr int QR = END16 * 2;  // byte offsets from here
  static constexpr int STATS = QR + (HAS_REL ? 4 * 16 * kQRP * 4 : 0);
  static constexpr int G = STATS + 2 * kBQ * 4;
  static constexpr int BYTES = G + (HAS_REL ? 4 * 16 * kGP * 2 : 0);
  // band kernel: the same tiles and R, QR buffers, then Gt (128 x kGTP, 16-bit) and the float32 accumulator.
  static constexpr int GT = STATS;
  static constexpr int ACC = GT + kNR * kGTP * 2;
  static constexpr int BAND_BYTES = ACC + kNR * D * 4;
};

// delta[row] = sum_d dout[row, d] * out[row, d] in float32; one warp per row.
template <typename T>
__global__ void delta_kernel(const MmaParams p, const T* __restrict__ o, int64_t o_sb, int64_t o_sh, int64_t o_st,
                             float* __restrict__ delta, int D) {
  const int64_t rows = p.g.B * p.g.H * p.g.Tq;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int64_t i = row % p.g.Tq, bh = row / p.g.Tq, b = bh / p.g.H, h = bh % p.g.H;
  const T* dr = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh + i * p.do_st;
  const T* orow = o + b * o_sb + h * o_sh + i * o_st;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) {
    const uint16_t x = reinterpret_cast<const uint16_t*>(dr)[d], y = reinterpret_cast<const uint16_t*>(orow)[d];
    const float2 f = unpack2<T>(static_cast<uint32_t>(x) | (static_cast<uint32_t>(y) << 16));
    s += f.x * f.y;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
  if (lane == 0) delta[row] = s;
}

// ---------------------------------------------------------------------------------------------------------------
// dK, dV
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int D, bool HAS_REL>
__global__ void __launch_bounds__(kThreads) dkdv_kernel(const MmaParams p) {
  using Sm = BwdSmem<D, HAS_REL>;
  constexpr int DP = Sm::DP, OT = D / 8, NT = kBQ / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + Sm::TILE;
  T* sK = sQ + 2 * Sm::TILE;
  T* sV = sQ + 3 * Sm::TILE;
  T* sR = sQ + Sm::R;
  float* sQR = reinterpret_cast<float*>(smem_raw + Sm::QR);
  float* sLse = reinterpret_cast<float*>(smem_raw + Sm::STATS);
  float* sDelta = sLse + kBQ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int m0 = warp * 16;

  const int64_t bh = blockIdx.y, b = bh / p.g.H, h = bh % p.g.H;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBK;
  const RowGeom rg = row_geom(p.g, b);
  const int64_t Tq = p.g.Tq, Tk = p.g.Tk, nk = rg.nk, ks = rg.kstart;
  const T* qb = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* dob = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const T* relh = HAS_REL ? static_cast<const T*>(p.rel) + h * (2 * p.P - 1) * D : nullptr;
  const float sc = p.scale * kLog2e;

  auto valid_key = [&](int r) -> const T* { return j0 + r < nk && j0 + r >= ks ? kb + (j0 + r) * p.k_st : nullptr; };
  load_tile<T, D>(sK, kBK, kb, valid_key);
  load_tile<T, D>(sV, kBK, vb,
                  [&](int r) -> const T* { return j0 + r < nk && j0 + r >= ks ? vb + (j0 + r) * p.v_st : nullptr; });
  cp_async_commit();

  float dk[OT][4], dv[OT][4];
#pragma unroll
  for (int n = 0; n < OT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;

  const bool any_key = j0 < nk && j0 + kBK > ks;
  int64_t qt0 = 0;
  if (p.g.causal && j0 - rg.qpos0 > 0) qt0 = (j0 - rg.qpos0) / kBQ;  // queries before qt0's tile cannot see j0..
  const int64_t nqt = any_key ? (Tq + kBQ - 1) / kBQ : 0;
  for (int64_t qt = qt0; qt < nqt; ++qt) {
    const int64_t i0 = qt * kBQ, pos0 = rg.qpos0 + i0;
    load_rows<T, D>(sQ, kBQ, qb + i0 * p.q_st, p.q_st, Tq - i0);
    load_rows<T, D>(sdO, kBQ, dob + i0 * p.do_st, p.do_st, Tq - i0);
    if constexpr (HAS_REL) {
      const int64_t off0 = j0 - (pos0 + kBQ - 1);
      load_tile<T, D>(sR, kNR, relh, [&](int r) -> const T* { return relh + rel_row(off0 + r, p.P) * D; });
    }
    cp_async_commit();
    if (threadIdx.x < kBQ) {
      const int64_t i = i0 + threadIdx.x;
      sLse[threadIdx.x] = i < Tq ? p.lse[bh * Tq + i] * kLog2e : INFINITY;  // +inf: P = 0
      sDelta[threadIdx.x] = i < Tq ? p.delta[bh * Tq + i] : 0.f;
    }
    cp_async_wait<0>();
    __syncthreads();
    if constexpr (HAS_REL) {
      warp_qr<T, D>(sQR + warp * 16 * kQRP, sQ, m0, sR + (kBQ - 16 - m0) * DP, lane);
      __syncthreads();  // every warp reads every warp's buffer below
    }
    // S^T: rows = the warp's keys m0 + g (+8), columns = queries n * 8 + 2t (+1).
    float st[NT][4];
#pragma unroll
    for (int n = 0; n < NT; ++n) st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D; kk += 16) {
      uint32_t a[4];
      load_a(a, sK, DP, m0, kk, lane);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        uint32_t b0, b1;
        load_b_rows(b0, b1, sQ, DP, n * 8, kk, lane);
        mma16816<T>(st[n], a, b0, b1);
      }
    }
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ck = m0 + g + (e >= 2 ? 8 : 0);  // key within the tile
        const int qc = n * 8 + 2 * t + (e & 1);    // query within the tile
        float x = st[n][e];
        if constexpr (HAS_REL) {
          const int rq = qc & 15;
          x += sQR[(qc >> 4) * 16 * kQRP + rq * kQRP + ck - rq + 15];
        }
        x *= sc;
        const int64_t j = j0 + ck;
        if (j < ks || j >= nk || (p.g.causal && j > pos0 + qc)) x = -INFINITY;
        st[n][e] = exp2f(x - sLse[qc]);  // P^T
      }
#pragma unroll
    for (int kk = 0; kk < kBQ / 16; ++kk) {
      // dP^T for queries kk*16 .. kk*16+15: V_w dO^T.
      float dp[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
      for (int kd = 0; kd < D; kd += 16) {
        uint32_t a[4], b0, b1;
        load_a(a, sV, DP, m0, kd, lane);
        load_b_rows(b0, b1, sdO, DP, kk * 16, kd, lane);
        mma16816<T>(dp[0], a, b0, b1);
        load_b_rows(b0, b1, sdO, DP, kk * 16 + 8, kd, lane);
        mma16816<T>(dp[1], a, b0, b1);
      }
      float ds[2][4];
#pragma unroll
      for (int x = 0; x < 2; ++x)
#pragma unroll
        for (int e = 0; e < 4; ++e) ds[x][e] = st[2 * kk + x][e] * (dp[x][e] - sDelta[kk * 16 + x * 8 + 2 * t + (e & 1)]);
      uint32_t ap[4], as[4];
      ap[0] = pack2<T>(st[2 * kk][0], st[2 * kk][1]);
      ap[1] = pack2<T>(st[2 * kk][2], st[2 * kk][3]);
      ap[2] = pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      ap[3] = pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
      as[0] = pack2<T>(ds[0][0], ds[0][1]);
      as[1] = pack2<T>(ds[0][2], ds[0][3]);
      as[2] = pack2<T>(ds[1][0], ds[1][1]);
      as[3] = pack2<T>(ds[1][2], ds[1][3]);
#pragma unroll
      for (int n = 0; n < OT; n += 2) {
        uint32_t bb[4];
        load_b_cols_x2(bb, sdO, DP, kk * 16, n * 8, lane);
        mma16816<T>(dv[n], ap, bb[0], bb[1]);
        mma16816<T>(dv[n + 1], ap, bb[2], bb[3]);
        load_b_cols_x2(bb, sQ, DP, kk * 16, n * 8, lane);
        mma16816<T>(dk[n], as, bb[0], bb[1]);
        mma16816<T>(dk[n + 1], as, bb[2], bb[3]);
      }
    }
    __syncthreads();  // the next query tile overwrites Q, dO, R, the QR buffers and the stats
  }
  cp_async_wait<0>();

#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int64_t j = j0 + m0 + g + 8 * hr;
    if (j >= Tk) continue;
    T* dkr = static_cast<T*>(p.dk) + (bh * Tk + j) * D;
    T* dvr = static_cast<T*>(p.dv) + (bh * Tk + j) * D;
#pragma unroll
    for (int n = 0; n < OT; ++n) {
      *reinterpret_cast<uint32_t*>(dkr + n * 8 + 2 * t) = pack2<T>(dk[n][2 * hr] * p.scale, dk[n][2 * hr + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dvr + n * 8 + 2 * t) = pack2<T>(dv[n][2 * hr], dv[n][2 * hr + 1]);
    }
  }
}

// dS for the warp's 16 query rows against the key tile in sK/sV (query-major warps; dq and band kernels).
// lse2: the rows' log-sum-exp times log2(e) (+inf for rows past Tq); dlt: their delta.
template <typename T, int D, bool HAS_REL>
__device__ __forceinline__ void warp_ds(float (&s)[kBK / 8][4], const MmaParams& p, const T* sQ, const T* sdO,
                                        const T* sK, const T* sV, const T* cRw, float* sQRw, int m0, int lane,
                                        int64_t j0, int64_t posw, int64_t ks, int64_t nk, const float (&lse2)[2],
                                        const float (&dlt)[2]) {
  constexpr int DP = D + 8, NT = kBK / 8;
  const int g = lane >> 2, t = lane & 3;
  if constexpr (HAS_REL) {
    warp_qr<T, D>(sQRw, sQ, m0, cRw, lane);  // first, while no score registers are live
    __syncwarp();
  }
  warp_qk<T, D>(s, sQ, m0, sK, lane);
  if constexpr (HAS_REL) {
    add_rel(s, sQRw, lane);
    __syncwarp();
  }
  const float sc = p.scale * kLog2e;
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = g + (e >= 2 ? 8 : 0);
      const int64_t j = j0 + n * 8 + 2 * t + (e & 1);
      float x = s[n][e] * sc;
      if (j < ks || j >= nk || (p.g.causal && j > posw + r)) x = -INFINITY;
      s[n][e] = exp2f(x - lse2[e >> 1]);
    }
  // dP = dO V^T in two halves of the key tile (fewer live registers), then dS = P (dP - delta) in place.
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    constexpr int NH = NT / 2;
    float dp[NH][4];
#pragma unroll
    for (int n = 0; n < NH; ++n) dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
#pragma unroll
    for (int kd = 0; kd < D; kd += 16) {
      uint32_t a[4];
      load_a(a, sdO, DP, m0, kd, lane);
#pragma unroll
      for (int n = 0; n < NH; ++n) {
        uint32_t b0, b1;
        load_b_rows(b0, b1, sV, DP, (half * NH + n) * 8, kd, lane);
        mma16816<T>(dp[n], a, b0, b1);
      }
    }
#pragma unroll
    for (int n = 0; n < NH; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[half * NH + n][e] *= dp[n][e] - dlt[e >> 1];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// dQ
// ---------------------------------------------------------------------------------------------------------------
template <typename T, int D, bool HAS_REL>
__global__ void __launch_bounds__(kThreads) dq_kernel(const MmaParams p) {
  using Sm = BwdSmem<D, HAS_REL>;
  constexpr int DP = Sm::DP, OT = D / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + Sm::TILE;
  T* sK = sQ + 2 * Sm::TILE;
  T* sV = sQ + 3 * Sm::TILE;
  T* sR = sQ + Sm::R;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int m0 = warp * 16;
  float* sQRw = reinterpret_cast<float*>(smem_raw + Sm::QR) + warp * 16 * kQRP;
  T* sGw = reinterpret_cast<T*>(smem_raw + Sm::G) + warp * 16 * kGP;

  const int64_t bh = blockIdx.y, b = bh / p.g.H, h = bh % p.g.H;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBQ;
  const RowGeom rg = row_geom(p.g, b);
  const int64_t Tq = p.g.Tq, nk = rg.nk, ks = rg.kstart, pos0 = rg.qpos0 + i0, posw = pos0 + m0;
  const T* qb = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* dob = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + h * p.k_sh;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + h * p.v_sh;
  const T* relh = HAS_REL ? static_cast<const T*>(p.rel) + h * (2 * p.P - 1) * D : nullptr;

  load_rows<T, D>(sQ, kBQ, qb + i0 * p.q_st, p.q_st, Tq - i0);
  load_rows<T, D>(sdO, kBQ, dob + i0 * p.do_st, p.do_st, Tq - i0);
  float lse2[2], dlt[2];
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int64_t i = i0 + m0 + g + 8 * hr;
    lse2[hr] = i < Tq ? p.lse[bh * Tq + i] * kLog2e : INFINITY;
    dlt[hr] = i < Tq ? p.delta[bh * Tq + i] : 0.f;
  }
  float dq[OT][4];
#pragma unroll
  for (int n = 0; n < OT; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  const int64_t kend = p.g.causal ? (pos0 + kBQ < nk ? pos0 + kBQ : nk) : nk;
  const int64_t kt0 = ks / kBK, kt1 = kend > ks ? (kend + kBK - 1) / kBK : kt0;
  for (int64_t kt = kt0; kt < kt1; ++kt) {
    const int64_t j0 = kt * kBK;
    load_tile<T, D>(sK, kBK, kb,
                    [&](int r) -> const T* { return j0 + r < nk && j0 + r >= ks ? kb + (j0 + r) * p.k_st : nullptr; });
    load_tile<T, D>(sV, kBK, vb,
                    [&](int r) -> const T* { return j0 + r < nk && j0 + r >= ks ? vb + (j0 + r) * p.v_st : nullptr; });
    if constexpr (HAS_REL) {
      const int64_t off0 = j0 - (pos0 + kBQ - 1);
      load_tile<T, D>(sR, kNR, relh, [&](int r) -> const T* { return relh + rel_row(off0 + r, p.P) * D; });
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    const T* cRw = sR + (kBQ - 16 - m0) * DP;
    float s[kBK / 8][4];
    warp_ds<T, D, HAS_REL>(s, p, sQ, sdO, sK, sV, cRw, sQRw, m0, lane, j0, posw, ks, nk, lse2, dlt);
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t a[4];
      a[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      a[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      a[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int n = 0; n < OT; n += 2) {
        uint32_t bb[4];
        load_b_cols_x2(bb, sK, DP, kk * 16, n * 8, lane);
        mma16816<T>(dq[n], a, bb[0], bb[1]);
        mma16816<T>(dq[n + 1], a, bb[2], bb[3]);
      }
    }
    if constexpr (HAS_REL) {
      // G[r][u] = dS[r][u + r - 15] (zero elsewhere), then dQ += G R_w over the warp's 80 offsets.
      for (int idx = lane; idx < 16 * kQRW / 2; idx += 32)
        reinterpret_cast<uint32_t*>(sGw)[(idx / (kQRW / 2)) * (kGP / 2) + idx % (kQRW / 2)] = 0u;
      __syncwarp();
#pragma unroll
      for (int n = 0; n < kBK / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int r = g + (e >= 2 ? 8 : 0), c = n * 8 + 2 * t + (e & 1);
          sGw[r * kGP + c - r + 15] = to16<T>(s[n][e]);
        }
      __syncwarp();
#pragma unroll
      for (int ku = 0; ku < kQRW / 16; ++ku) {
        uint32_t a[4];
        load_a(a, sGw, kGP, 0, ku * 16, lane);
#pragma unroll
        for (int n = 0; n < OT; n += 2) {
          uint32_t bb[4];
          load_b_cols_x2(bb, cRw, DP, ku * 16, n * 8, lane);
          mma16816<T>(dq[n], a, bb[0], bb[1]);
          mma16816<T>(dq[n + 1], a, bb[2], bb[3]);
        }
      }
    }
    __syncthreads();  // the next key tile overwrites K, V, R
  }
  cp_async_wait<0>();
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    const int64_t i = i0 + m0 + g + 8 * hr;
    if (i >= Tq) continue;
    T* dqr = static_cast<T*>(p.dq) + (bh * Tq + i) * D;
#pragma unroll
    for (int n = 0; n < OT; ++n)
      *reinterpret_cast<uint32_t*>(dqr + n * 8 + 2 * t) = pack2<T>(dq[n][2 * hr] * p.scale, dq[n][2 * hr + 1] * p.scale);
  }
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
