// The CPU attention kernels on raw pointers: one query tile of the forward (online softmax over key tiles) and
// one (batch, head) of the backward. Included by attention_cpu.cpp only, which compiles them once per ISA level.
//
// Tiles: BQ queries x BK keys. Scores S = (scale q) K^T come from one small GEMM with the key tile transposed; the
// relative term q_i . rel_emb[h, r(i, j)] depends on j - p_i only, so for a query tile it is the product of the
// scaled query tile with the rows of rel_emb its keys need, R[i, c] = scale q_i . rel_emb[h, c + P-1] for the
// clamped offsets c; row i of a key tile then adds R[i, clamp(j - p_i)], a contiguous slice of R's row (the
// "skewing" of Music Transformer). R grows by about BK offsets per key tile, so the relative term costs one more
// score GEMM, not a (T x T x D) gather. The backward collects dS per offset in G (same layout as R) and turns it
// into dq += G rel_emb and d(rel_emb) += G^T (scale q) with two GEMMs per query tile.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/attention_tile.h"
#include "common/bf16.h"

namespace enigma_fast {
namespace attention {

constexpr int64_t BQ = 64;
constexpr int64_t BK = 128;

template <typename T>
using acc_of = typename Storage<T>::acc_t;

// One problem's pointers and sizes. Element strides; every last dimension is contiguous.
template <typename T>
struct Problem {
  using A = acc_of<T>;
  int64_t B, H, Tq, D, Dp, P;  // Dp: D rounded up to the vector width; P = 0: no relative term
  const T* q;
  int64_t qsb, qsh, qst;
  const T* k;
  int64_t ksb, ksh, kst;
  const T* v;
  int64_t vsb, vsh, vst;
  const A* relT;  // (H, D, relT_ld): rel_emb[h] transposed, zero columns past 2P-1
  int64_t relT_ld;
  const A* relP;  // (H, 2P-1, Dp): rel_emb rows zero-padded to Dp (backward)
  const int64_t* qpos0;   // (B,) position of query 0
  const int64_t* nkeys;   // (B,) keys j < nkeys[b] exist
  const int64_t* kstart;  // (B,) keys j < kstart[b] are masked
  int64_t rld;            // leading dimension of the R / G buffers
  bool causal;
  A scale;
};

template <typename A>
struct Work {
  std::vector<A> qs, kt, s, r, vs;               // forward
  std::vector<A> dos, vt, dp, pt, dst, g, gt, dq;  // backward
  Work(int64_t Dp, int64_t D, int64_t rld, bool backward)
      : qs(BQ * Dp), kt(D * BK), s(BQ * BK), r(BQ * rld), vs(BK * Dp) {
    if (!backward) return;
    dos.resize(BQ * Dp);
    vt.resize(D * BK);
    dp.resize(BQ * BK);
    pt.resize(BK * BQ);
    dst.resize(BK * BQ);
    g.resize(BQ * rld);
    gt.resize(rld * BQ);
    dq.resize(BQ * Dp);
  }
};

template <typename A>
EF_ATTN_INLINE void exp_sub_row(A* s, A m, int64_t n) {
  if constexpr (std::is_same_v<A, float>) {
    constexpr int W = VecT<float>::W;
    for (int64_t j = 0; j < n; j += W) {
      typename VecT<float>::type x;
      vload(x, s + j);
      x -= m;
      vexp(x);
      vstore(s + j, x);
    }
  } else {
    for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - m);
  }
}

template <typename A>
EF_ATTN_INLINE A row_max(const A* s, int64_t lo, int64_t hi) {
  A m = -std::numeric_limits<A>::infinity();
  for (int64_t j = lo; j < hi; ++j) m = s[j] > m ? s[j] : m;
  return m;
}

template <typename A>
EF_ATTN_INLINE A row_sum(const A* s, int64_t n) {
  constexpr int W = VecT<A>::W;
  typename VecT<A>::type acc{};
  for (int64_t j = 0; j < n; j += W) {
    typename VecT<A>::type x;
    vload(x, s + j);
    acc += x;
  }
  A t = 0;
  for (int l = 0; l < W; ++l) t += acc[l];
  return t;
}

// Stage rows [j0, j0+n) of a (T, D) matrix (row stride ld) transposed into dst (D x BK), zero columns to npad.
template <typename T, typename A>
EF_ATTN_INLINE void stage_transposed(const T* src, int64_t ld, int64_t n, int64_t npad, int64_t D, A* dst) {
  for (int64_t j = 0; j < n; ++j) {
    const T* row = src + j * ld;
    for (int64_t d = 0; d < D; ++d) dst[d * BK + j] = Storage<T>::load(row[d]);
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = n; j < npad; ++j) dst[d * BK + j] = A(0);
}

// Rows [0, n) of a (T, D) matrix as an (n x Dp) accumulator-type matrix: in place when possible, else staged.
template <typename T, typename A>
EF_ATTN_INLINE const A* rows_as_acc(const T* src, int64_t ld, int64_t n, int64_t D, int64_t Dp, A* buf,
                                    int64_t* out_ld) {
  if constexpr (std::is_same_v<T, A>) {
    if (D == Dp) {
      *out_ld = ld;
      return src;
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t d = 0; d < D; ++d) buf[j * Dp + d] = Storage<T>::load(src[j * ld + d]);
    for (int64_t d = D; d < Dp; ++d) buf[j * Dp + d] = A(0);
  }
  *out_ld = Dp;
  return buf;
}

// Scaled query tile (bq x Dp, zero-padded).
template <typename T, typename A>
EF_ATTN_INLINE void stage_queries(const T* src, int64_t ld, int64_t bq, int64_t D, int64_t Dp, A scale, A* dst) {
  for (int64_t i = 0; i < bq; ++i) {
    for (int64_t d = 0; d < D; ++d) dst[i * Dp + d] = Storage<T>::load(src[i * ld + d]) * scale;
    for (int64_t d = D; d < Dp; ++d) dst[i * Dp + d] = A(0);
  }
}

// srow[jj] += R[clamp(j0 + jj - pos)] for jj < n; rrow is R's row indexed by offset - clo.
template <typename A>
EF_ATTN_INLINE void add_rel_row(A* srow, const A* rrow, int64_t pos, int64_t j0, int64_t n, int64_t P, int64_t clo) {
  int64_t lo, hi;
  clamp_segments(pos, j0, n, P, &lo, &hi);
  if (lo > 0) {
    const A c = rrow[-(P - 1) - clo];
    for (int64_t jj = 0; jj < lo; ++jj) srow[jj] += c;
  }
  const A* rr = rrow + (j0 - pos - clo);
  for (int64_t jj = lo; jj < hi; ++jj) srow[jj] += rr[jj];
  if (hi < n) {
    const A c = rrow[(P - 1) - clo];
    for (int64_t jj = hi; jj < n; ++jj) srow[jj] += c;
  }
}

// The transpose of add_rel_row: grow[clamp(j0 + jj - pos) - clo] += dsrow[jj].
template <typename A>
EF_ATTN_INLINE void scatter_rel_row(const A* dsrow, A* grow, int64_t pos, int64_t j0, int64_t n, int64_t P,
                                    int64_t clo) {
  int64_t lo, hi;
  clamp_segments(pos, j0, n, P, &lo, &hi);
  if (lo > 0) {
    A t = 0;
    for (int64_t jj = 0; jj < lo; ++jj) t += dsrow[jj];
    grow[-(P - 1) - clo] += t;
  }
  A* gg = grow + (j0 - pos - clo);
  for (int64_t jj = lo; jj < hi; ++jj) gg[jj] += dsrow[jj];
  if (hi < n) {
    A t = 0;
    for (int64_t jj = hi; jj < n; ++jj) t += dsrow[jj];
    grow[(P - 1) - clo] += t;
  }
}

// Keys [j_first, ke) of a query tile whose first row sits at pos0: S (bq x bkp) for the key tile at j0, with the
// relative term, computing R's missing offsets on the way (rdone: the last offset R holds).
template <typename T, typename A = acc_of<T>>
EF_ATTN_INLINE void tile_scores(const Problem<T>& p, Work<A>& w, const T* kbase, const A* relT_h, int64_t bq,
                                int64_t pos0, int64_t j0, int64_t bk, int64_t bkp, int64_t clo, int64_t* rdone) {
  stage_transposed(kbase + j0 * p.kst, p.kst, bk, bkp, p.D, w.kt.data());
  gemm<A>(bq, bkp, p.D, w.qs.data(), p.Dp, w.kt.data(), BK, w.s.data(), BK, false);
  if (!p.P) return;
  const int64_t P = p.P;
  const int64_t need = clamp_offset(j0 + bk - 1 - pos0, P);
  if (need > *rdone) {
    const int64_t first = *rdone + 1;
    gemm<A>(bq, round_up(need - *rdone, VecT<A>::W), p.D, w.qs.data(), p.Dp, relT_h + (first + P - 1), p.relT_ld,
            w.r.data() + (first - clo), p.rld, false);
    *rdone = need;
  }
  for (int64_t i = 0; i < bq; ++i) add_rel_row(w.s.data() + i * BK, w.r.data() + i * p.rld, pos0 + i, j0, bk, P, clo);
}

// Valid key counts [lo, hi) of row i in the key tile at j0: keys in [kb, ke), and j <= pos when causal.
EF_ATTN_INLINE void row_window(bool causal, int64_t pos, int64_t kb, int64_t ke, int64_t j0, int64_t bk, int64_t* lo,
                               int64_t* hi) {
  int64_t l = kb - j0, h = ke - j0;
  if (causal) h = std::min(h, pos + 1 - j0);
  *lo = std::max<int64_t>(l, 0);
  *hi = std::min(h, bk);
}

// Forward of queries [i0, i0+bq) of (b, h) over keys [kb, ke): unnormalised O (bq x Dp), running max m and sum l.
template <typename T, typename A = acc_of<T>>
EF_ATTN_INLINE void fwd_block(const Problem<T>& p, Work<A>& w, int64_t b, int64_t h, int64_t i0, int64_t bq,
                              int64_t kb, int64_t ke, A* O, A* m, A* l) {
  constexpr int W = VecT<A>::W;
  const int64_t Dp = p.Dp, P = p.P;
  const A inf = std::numeric_limits<A>::infinity();
  const int64_t pos0 = p.qpos0[b] + i0;
  stage_queries(p.q + b * p.qsb + h * p.qsh + i0 * p.qst, p.qst, bq, p.D, Dp, p.scale, w.qs.data());
  for (int64_t i = 0; i < bq; ++i) {
    m[i] = -inf;
    l[i] = 0;
  }
  std::fill(O, O + bq * Dp, A(0));
  if (ke <= kb) return;
  const T* kbase = p.k + b * p.ksb + h * p.ksh;
  const T* vbase = p.v + b * p.vsb + h * p.vsh;
  const A* relT_h = P ? p.relT + h * p.D * p.relT_ld : nullptr;
  const int64_t j_first = kb - kb % W;
  const int64_t clo = P ? clamp_offset(j_first - (pos0 + bq - 1), P) : 0;
  int64_t rdone = clo - 1;
  for (int64_t j0 = j_first; j0 < ke; j0 += BK) {
    const int64_t bk = std::min(BK, ke - j0), bkp = round_up(bk, W);
    tile_scores(p, w, kbase, relT_h, bq, pos0, j0, bk, bkp, clo, &rdone);
    for (int64_t i = 0; i < bq; ++i) {
      A* srow = w.s.data() + i * BK;
      int64_t lo, hi;
      row_window(p.causal, pos0 + i, kb, ke, j0, bk, &lo, &hi);
      if (hi <= lo) {
        std::fill(srow, srow + bkp, A(0));
        continue;
      }
      for (int64_t jj = 0; jj < lo; ++jj) srow[jj] = -inf;
      for (int64_t jj = hi; jj < bkp; ++jj) srow[jj] = -inf;
      const A m_new = std::max(m[i], row_max(srow, lo, hi));
      const A alpha = m[i] == -inf ? A(0) : std::exp(m[i] - m_new);
      exp_sub_row(srow, m_new, bkp);
      l[i] = l[i] * alpha + row_sum(srow, bkp);
      m[i] = m_new;
      if (alpha != A(1))
        for (int64_t d = 0; d < Dp; ++d) O[i * Dp + d] *= alpha;
    }
    int64_t vld;
    const A* vt = rows_as_acc(vbase + j0 * p.vst, p.vst, bk, p.D, Dp, w.vs.data(), &vld);
    gemm<A>(bq, Dp, bk, w.s.data(), BK, vt, vld, O, Dp, true);
  }
}

// Backward of (b, h): dq rows written, dk/dv accumulated into dk_acc/dv_acc (Tk x Dp), d(rel_emb) into drel
// (rows indexed by r - rlo, ld Dp). dout/out: (Tq, D) with row strides; lse: (Tq,).
template <typename T, typename A = acc_of<T>>
EF_ATTN_INLINE void bwd_head(const Problem<T>& p, Work<A>& w, int64_t b, int64_t h, const T* dout, int64_t dost,
                             const T* out, int64_t ost, const A* lse, T* dq, A* dk_acc, A* dv_acc, A* drel,
                             int64_t rlo) {
  constexpr int W = VecT<A>::W;
  const int64_t D = p.D, Dp = p.Dp, P = p.P;
  const A inf = std::numeric_limits<A>::infinity();
  const T* kbase = p.k + b * p.ksb + h * p.ksh;
  const T* vbase = p.v + b * p.vsb + h * p.vsh;
  const A* relT_h = P ? p.relT + h * D * p.relT_ld : nullptr;
  const int64_t nk = p.nkeys[b], kb = std::clamp<int64_t>(p.kstart[b], 0, nk);
  A di[BQ];
  for (int64_t i0 = 0; i0 < p.Tq; i0 += BQ) {
    const int64_t bq = std::min(BQ, p.Tq - i0);
    const int64_t pos0 = p.qpos0[b] + i0;
    const int64_t ke = p.causal ? std::min(nk, pos0 + bq) : nk;
    stage_queries(p.q + b * p.qsb + h * p.qsh + i0 * p.qst, p.qst, bq, D, Dp, p.scale, w.qs.data());
    stage_queries(dout + i0 * dost, dost, bq, D, Dp, A(1), w.dos.data());
    for (int64_t i = 0; i < bq; ++i) {
      A t = 0;
      for (int64_t d = 0; d < D; ++d)
        t += w.dos[i * Dp + d] * Storage<T>::load(out[(i0 + i) * ost + d]);
      di[i] = t;
    }
    std::fill(w.dq.begin(), w.dq.end(), A(0));
    const int64_t j_first = kb - kb % W;
    const int64_t clo = P ? clamp_offset(j_first - (pos0 + bq - 1), P) : 0;
    const int64_t ncols = P && ke > kb ? clamp_offset(ke - 1 - pos0, P) - clo + 1 : 0;
    int64_t rdone = clo - 1;
    for (int64_t i = 0; i < bq; ++i) std::fill(w.g.data() + i * p.rld, w.g.data() + i * p.rld + ncols, A(0));
    for (int64_t j0 = j_first; j0 < ke && ke > kb; j0 += BK) {
      const int64_t bk = std::min(BK, ke - j0), bkp = round_up(bk, W);
      tile_scores(p, w, kbase, relT_h, bq, pos0, j0, bk, bkp, clo, &rdone);
      stage_transposed(vbase + j0 * p.vst, p.vst, bk, bkp, D, w.vt.data());
      gemm<A>(bq, bkp, D, w.dos.data(), Dp, w.vt.data(), BK, w.dp.data(), BK, false);  // dP = dO V^T
      for (int64_t i = 0; i < bq; ++i) {
        A* srow = w.s.data() + i * BK;
        A* dsrow = w.dp.data() + i * BK;
        int64_t lo, hi;
        row_window(p.causal, pos0 + i, kb, ke, j0, bk, &lo, &hi);
        for (int64_t jj = 0; jj < std::max<int64_t>(lo, 0); ++jj) srow[jj] = -inf;
        for (int64_t jj = std::max(hi, lo); jj < bkp; ++jj) srow[jj] = -inf;
        exp_sub_row(srow, lse[i0 + i], bkp);  // P; masked keys and all-masked rows (lse = +inf) give 0
        for (int64_t jj = 0; jj < bkp; ++jj) dsrow[jj] = srow[jj] * (dsrow[jj] - di[i]);  // dS
        for (int64_t jj = 0; jj < bk; ++jj) {
          w.pt[jj * BQ + i] = srow[jj];
          w.dst[jj * BQ + i] = dsrow[jj];
        }
        if (P) scatter_rel_row(dsrow, w.g.data() + i * p.rld, pos0 + i, j0, bk, P, clo);
      }
      gemm<A>(bk, Dp, bq, w.pt.data(), BQ, w.dos.data(), Dp, dv_acc + j0 * Dp, Dp, true);  // dV += P^T dO
      gemm<A>(bk, Dp, bq, w.dst.data(), BQ, w.qs.data(), Dp, dk_acc + j0 * Dp, Dp, true);  // dK += dS^T (s q)
      int64_t kld;
      const A* kt = rows_as_acc(kbase + j0 * p.kst, p.kst, bk, D, Dp, w.vs.data(), &kld);
      gemm<A>(bq, Dp, bk, w.dp.data(), BK, kt, kld, w.dq.data(), Dp, true);  // dQ += dS K
    }
    if (ncols > 0) {
      const A* relP_h = p.relP + (h * (2 * P - 1) + clo + P - 1) * Dp;
      gemm<A>(bq, Dp, ncols, w.g.data(), p.rld, relP_h, Dp, w.dq.data(), Dp, true);  // dQ += G rel_emb
      for (int64_t i = 0; i < bq; ++i)
        for (int64_t c = 0; c < ncols; ++c) w.gt[c * BQ + i] = w.g[i * p.rld + c];
      gemm<A>(ncols, Dp, bq, w.gt.data(), BQ, w.qs.data(), Dp, drel + (clo + P - 1 - rlo) * Dp, Dp, true);
    }
    for (int64_t i = 0; i < bq; ++i)
      for (int64_t d = 0; d < D; ++d) dq[(i0 + i) * D + d] = Storage<T>::store(w.dq[i * Dp + d] * p.scale);
  }
}

}  // namespace attention
}  // namespace enigma_fast
