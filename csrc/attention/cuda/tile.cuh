// Tile geometry and warp-level products shared by the tensor-core forward (fwd.cuh) and backward (bwd.cuh).
//
// A block covers kBQ = 64 queries and streams key tiles of kBK = 64 keys; warp w of 4 owns query rows
// m0 = 16 w .. m0 + 15 (or, in the key-major dk/dv kernel, key rows). Shared tiles are row-major with a pitch of
// D + 8 elements (16 bytes of padding: the fragment loads of mma.cuh are then free of bank conflicts).
//
// The relative term. For a query tile whose first query sits at pos0 and a key tile starting at j0, the pairs meet
// at the offsets j - p_i = j0 - (pos0 + 63) + v, v = 0 .. 126; the tile's rel_emb rows are loaded as sR[v] =
// rel_emb[h, clamp(j0 - (pos0 + 63) + v)] (128 rows, the last unused). Warp w's queries only meet the 79 offsets
// v = u + 48 - m0, u = 0 .. 78, so it computes QR[r][u] = q_{m0+r} . sR[u + 48 - m0] (16 x 80, one small product)
// into its own float buffer; the pair (query m0 + r, key c of the tile) then reads QR[r][c - r + 15].
#pragma once

#include "attention/cuda/launch.h"
#include "attention/cuda/mma.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

constexpr int kBQ = 64;         // query rows per block (4 warps x 16)
constexpr int kBK = 64;         // key rows per tile
constexpr int kThreads = 128;   // 4 warps
constexpr int kNR = kBQ + kBK;  // rel_emb rows per tile (kBQ + kBK - 1 used)
constexpr int kQRW = 16 + kBK;  // columns of a warp's relative-term buffer (16 + kBK - 1 used)
constexpr int kQRP = kQRW + 8;  // its pitch in floats
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Copies `rows` rows of D elements from global (row r at src(r), or zeros where src(r) is null) into a padded tile;
// `any` is some valid global address (cp.async gets one even when it reads nothing).
template <typename T, int D, typename Src>
__device__ __forceinline__ void load_tile(T* dst, int rows, const T* any, Src src) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  for (int idx = threadIdx.x; idx < rows * CH; idx += kThreads) {
    const int r = idx / CH, c = idx % CH;
    const T* s = src(r);
    cp_async16(dst + r * (D + 8) + c * 8, s != nullptr ? s + c * 8 : any, s != nullptr);
  }
}

// s[n] (16 x 8 each, kBK / 8 of them) = Q[m0 .. m0+15] . K[n*8 .. n*8+7]^T over D.
template <typename T, int D>
__device__ __forceinline__ void warp_qk(float (&s)[kBK / 8][4], const T* sQ, int m0, const T* sK, int lane) {
  constexpr int DP = D + 8;
#pragma unroll
  for (int n = 0; n < kBK / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D; kk += 16) {
    uint32_t a[4];
    load_a(a, sQ, DP, m0, kk, lane);
#pragma unroll
    for (int n = 0; n < kBK / 8; ++n) {
      uint32_t b0, b1;
      load_b_rows(b0, b1, sK, DP, n * 8, kk, lane);
      mma16816<T>(s[n], a, b0, b1);
    }
  }
}

// The warp's relative-term buffer: sQRw[r][u] = q_{m0+r} . cRw[u] for u < kQRW, cRw = sR + (48 - m0) rows.
template <typename T, int D>
__device__ __forceinline__ void warp_qr(float* sQRw, const T* sQ, int m0, const T* cRw, int lane) {
  constexpr int DP = D + 8;
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < kQRW / 8; ++n) {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int kk = 0; kk < D; kk += 16) {
      uint32_t a[4], b0, b1;
      load_a(a, sQ, DP, m0, kk, lane);
      load_b_rows(b0, b1, cRw, DP, n * 8, kk, lane);
      mma16816<T>(acc, a, b0, b1);
    }
    *reinterpret_cast<float2*>(sQRw + g * kQRP + n * 8 + 2 * t) = make_float2(acc[0], acc[1]);
    *reinterpret_cast<float2*>(sQRw + (g + 8) * kQRP + n * 8 + 2 * t) = make_float2(acc[2], acc[3]);
  }
}

// s[r][c] += QR[r][c - r + 15] for the warp's own rows (query-major warps).
__device__ __forceinline__ void add_rel(float (&s)[kBK / 8][4], const float* sQRw, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < kBK / 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = g + (e >= 2 ? 8 : 0), c = n * 8 + 2 * t + (e & 1);
      s[n][e] += sQRw[r * kQRP + c - r + 15];
    }
}

// Rows of `rows` x D starting at `src` with row stride `st` (elements), rows >= `valid` zero-filled.
template <typename T, int D>
__device__ __forceinline__ void load_rows(T* dst, int rows, const T* src, int64_t st, int64_t valid) {
  load_tile<T, D>(dst, rows, src, [&](int r) -> const T* { return r < valid ? src + r * st : nullptr; });
}

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
