// The CPU attention kernels on raw pointers: one query tile of the forward (online softmax over key tiles) and
// one (batch, head) of the backward, as templates over the instruction-set level L. Included by attention_cpu.cpp
// only, which instantiates them once per level (EF_DEFINE_ISA_ENTRIES); everything here is always_inline so the
// whole body compiles for the entry point's level.
//
// Tiles: BQ queries x BK keys. Scores S = (scale q) K^T come from one small GEMM against the keys transposed once
// per call (Kt, D x Tk), or, for few queries (decode), from dot products with the key rows read in place. The
// relative term q_i . rel_emb[h, r(i, j)] depends on j - p_i only, so for a query tile it is the product of the
// scaled query tile with the rows of rel_emb its keys need, R[i, c] = scale q_i . rel_emb[h, c + P-1] for the
// clamped offsets c; row i of a key tile then adds R[i, clamp(j - p_i)], a contiguous slice of R's row (the
// "skewing" of Music Transformer). R grows by about BK offsets per key tile, so the relative term costs one more
// score GEMM, not a (T x T x D) gather. The backward collects dS per offset in G (same layout as R) and turns it
// into dq += G rel_emb and d(rel_emb) += G^T (scale q) with two GEMMs per query tile. Products with a transposed
// operand (P^T dO, dS^T q, G^T q) read it in place through the GEMM's strides: no tile is ever transposed.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/attention_tile.h"
#include "common/bf16.h"
#include "common/core/scratch.h"

namespace enigma_fast {
namespace attention {

constexpr int64_t BQ = 64;
constexpr int64_t BK = 128;
// Widest vector of any level, in floats: buffers are padded to it so every level reads whole vectors.
constexpr int64_t kMaxW = 16;
// Up to this many queries a tile's scores are dot products with the key rows (no transposed keys needed).
constexpr int64_t kFewQueries = 4;

template <typename T>
using acc_of = typename Storage<T>::acc_t;

// One problem's pointers and sizes. Element strides; every last dimension is contiguous.
template <typename T>
struct Problem {
  using A = acc_of<T>;
  int64_t B, H, Tq, Tk, D, Dp, P;  // Dp: D rounded up to kMaxW; P = 0: no relative term
  const T* q;
  int64_t qsb, qsh, qst;
  const T* k;
  int64_t ksb, ksh, kst;
  const T* v;
  int64_t vsb, vsh, vst;
  const A* kt;  // (B*H, D, kt_ld): keys transposed, zero columns past the last key; null: dot products (few queries)
  int64_t kt_ld;
  const A* vf;  // (B*H, Tk, Dp): values as zero-padded accumulator rows; null: read v in place (or stage per tile)
  const A* relT;  // (H, D, relT_ld): rel_emb[h] transposed, zero columns past 2P-1; null: use relP (few queries)
  int64_t relT_ld;
  const A* relP;  // (H, 2P-1, Dp): rel_emb rows zero-padded to Dp (backward, and the forward of few queries)
  const int64_t* qpos0;   // (B,) position of query 0
  const int64_t* nkeys;   // (B,) keys j < nkeys[b] exist
  const int64_t* kstart;  // (B,) keys j < kstart[b] are masked
  int64_t rld;            // leading dimension of the R / G buffers
  bool causal;
  A scale;
};

// A thread's work buffers, carved out of its scratch arena (common/core/scratch.h): no allocation per chunk.
// extra: that many more elements at `more` (the caller's accumulators). Not initialised.
template <typename A>
struct Work {
  A *qs, *s, *r, *rows;                // forward
  A *dos, *dp, *g, *dq, *kt, *vt;      // backward
  A* more;
  Scratch<A> mem;
  static size_t pad(size_t n) { return (n + 15) / 16 * 16; }  // keep every buffer 64-byte aligned
  static size_t size(int64_t Dp, int64_t D, int64_t rld, int64_t kt_ld, bool backward, size_t extra) {
    size_t n = pad(BQ * Dp) + pad(BQ * BK) + pad(BQ * rld) + pad(BK * Dp) + pad(extra);
    if (backward) n += pad(BQ * Dp) + pad(BQ * BK) + pad(BQ * rld) + pad(BQ * Dp) + 2 * pad(D * kt_ld);
    return n;
  }
  Work(int64_t Dp, int64_t D, int64_t rld, int64_t kt_ld, bool backward, size_t extra = 0)
      : mem(size(Dp, D, rld, kt_ld, backward, extra)) {
    A* p = mem.data();
    auto take = [&p](size_t n) {
      A* q = p;
      p += pad(n);
      return q;
    };
    qs = take(BQ * Dp), s = take(BQ * BK), r = take(BQ * rld), rows = take(BK * Dp), more = take(extra);
    dos = dp = g = dq = kt = vt = nullptr;
    if (!backward) return;
    dos = take(BQ * Dp), dp = take(BQ * BK), g = take(BQ * rld), dq = take(BQ * Dp);
    kt = take(D * kt_ld), vt = take(D * kt_ld);
  }
};

// Rows [0, n) of a (T, D) matrix as accumulator rows Dp wide: in place when the storage is already that, else
// converted into buf (zero-padded). Returns the rows and their leading dimension.
template <typename T, typename A>
EF_INLINE const A* rows_as_acc(const T* src, int64_t ld, int64_t n, int64_t D, int64_t Dp, A* buf, int64_t* out_ld) {
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

// Rows [0, n) of a (T, D) matrix transposed into dst (D x ld), zero columns [n, npad).
template <typename T, typename A>
EF_INLINE void transpose_rows(const T* src, int64_t ld_src, int64_t n, int64_t npad, int64_t D, A* dst, int64_t ld) {
  constexpr int64_t J = 16;  // a block of rows: its D columns are written as short contiguous runs
  for (int64_t j0 = 0; j0 < n; j0 += J) {
    const int64_t jn = std::min(J, n - j0);
    for (int64_t d = 0; d < D; ++d)
      for (int64_t j = 0; j < jn; ++j) dst[d * ld + j0 + j] = Storage<T>::load(src[(j0 + j) * ld_src + d]);
  }
  for (int64_t d = 0; d < D; ++d)
    for (int64_t j = n; j < npad; ++j) dst[d * ld + j] = A(0);
}

// Scaled query tile (bq x Dp, zero-padded).
template <typename T, typename A>
EF_INLINE void stage_rows(const T* src, int64_t ld, int64_t bq, int64_t D, int64_t Dp, A scale, A* dst) {
  for (int64_t i = 0; i < bq; ++i) {
    for (int64_t d = 0; d < D; ++d) dst[i * Dp + d] = Storage<T>::load(src[i * ld + d]) * scale;
    for (int64_t d = D; d < Dp; ++d) dst[i * Dp + d] = A(0);
  }
}

// s[j] = exp(s[j] - m) for j < n (a multiple of the level's width); returns the sum of the new s[j] (in lanes, then
// a fixed pairwise order). The scores are <= m here (m is their maximum, or -inf masks them), so exp's upper clamp is
// never needed: vexp_nonpos.
template <typename A, Isa L>
EF_INLINE A exp_sub_row(A* s, A m, int64_t n) {
  if constexpr (std::is_same_v<A, float>) {
    using V = typename cpu::Vec<float, L>::type;
    constexpr int W = cpu::Vec<float, L>::W;
    const V mv = cpu::vset<V>(m);
    V acc0{}, acc1{};
    int64_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {  // two independent sums: the adds do not wait on each other
      const V e0 = cpu::vexp_nonpos(cpu::vload<V>(s + j) - mv);
      const V e1 = cpu::vexp_nonpos(cpu::vload<V>(s + j + W) - mv);
      cpu::vstore(s + j, e0);
      cpu::vstore(s + j + W, e1);
      acc0 += e0;
      acc1 += e1;
    }
    for (; j < n; j += W) {
      const V e = cpu::vexp_nonpos(cpu::vload<V>(s + j) - mv);
      cpu::vstore(s + j, e);
      acc0 += e;
    }
    return cpu::hsum<float>(acc0 + acc1);
  } else {
    A t = 0;
    for (int64_t j = 0; j < n; ++j) t += (s[j] = std::exp(s[j] - m));
    return t;
  }
}

// The largest of s[0, n) (n a multiple of the level's width; -inf when every entry is). Four independent running
// maxima in vectors: the compare-and-select chain of one would take a latency per element.
template <typename A, Isa L>
EF_INLINE A row_max(const A* s, int64_t n) {
  using V = typename cpu::Vec<A, L>::type;
  constexpr int W = cpu::Vec<A, L>::W;
  const V ninf = cpu::vset<V>(-std::numeric_limits<A>::infinity());
  V m0 = ninf, m1 = ninf, m2 = ninf, m3 = ninf;
  int64_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    m0 = cpu::vmax(cpu::vload<V>(s + j), m0);
    m1 = cpu::vmax(cpu::vload<V>(s + j + W), m1);
    m2 = cpu::vmax(cpu::vload<V>(s + j + 2 * W), m2);
    m3 = cpu::vmax(cpu::vload<V>(s + j + 3 * W), m3);
  }
  for (; j < n; j += W) m0 = cpu::vmax(cpu::vload<V>(s + j), m0);
  return cpu::hmax<A>(cpu::vmax(cpu::vmax(m0, m1), cpu::vmax(m2, m3)));
}

// srow[jj] += R[clamp(j0 + jj - pos)] for jj < n; rrow is R's row indexed by offset - clo.
template <typename A>
EF_INLINE void add_rel_row(A* srow, const A* rrow, int64_t pos, int64_t j0, int64_t n, int64_t P, int64_t clo) {
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

// x[a] + ... + x[b - 1] in four interleaved partial sums (independent adds instead of one chain of latencies).
template <typename A>
EF_INLINE A span_sum(const A* x, int64_t a, int64_t b) {
  A t0 = 0, t1 = 0, t2 = 0, t3 = 0;
  int64_t j = a;
  for (; j + 4 <= b; j += 4) {
    t0 += x[j];
    t1 += x[j + 1];
    t2 += x[j + 2];
    t3 += x[j + 3];
  }
  for (; j < b; ++j) t0 += x[j];
  return (t0 + t1) + (t2 + t3);
}

// The transpose of add_rel_row: grow[clamp(j0 + jj - pos) - clo] += dsrow[jj].
template <typename A>
EF_INLINE void scatter_rel_row(const A* dsrow, A* grow, int64_t pos, int64_t j0, int64_t n, int64_t P, int64_t clo) {
  int64_t lo, hi;
  clamp_segments(pos, j0, n, P, &lo, &hi);
  if (lo > 0) grow[-(P - 1) - clo] += span_sum(dsrow, 0, lo);
  A* gg = grow + (j0 - pos - clo);
  for (int64_t jj = lo; jj < hi; ++jj) gg[jj] += dsrow[jj];
  if (hi < n) grow[(P - 1) - clo] += span_sum(dsrow, hi, n);
}

// Keys [j0, j0+bk) of a query tile whose first row sits at pos0: S (bq x bkp) with the relative term, computing
// R's missing offsets on the way (rdone: the last offset R holds). kt: the keys of (b, h) transposed (ld
// p.kt_ld), or null to take dot products with the key rows at kbase.
template <Isa L, typename T, typename A = acc_of<T>>
EF_INLINE void tile_scores(const Problem<T>& p, Work<A>& w, const A* kt, const T* kbase, int64_t h, int64_t bq,
                           int64_t pos0, int64_t j0, int64_t bk, int64_t bkp, int64_t clo, int64_t* rdone) {
  if (kt) {
    // Causal: query row i sees key column jj <= i + pos0 - j0; the rest of S is masked later, so not computed.
    const Causal cz = p.causal ? Causal{Band::kColsLe, pos0 - j0} : Causal{};
    gemm<A, L>(bq, bkp, p.D, w.qs, p.Dp, 1, kt + j0, p.kt_ld, w.s, BK, false, cz);
  } else {
    int64_t kld;
    const A* krows = rows_as_acc(kbase + j0 * p.kst, p.kst, bk, p.D, p.Dp, w.rows, &kld);
    row_dots<A, L>(bq, bk, p.Dp, w.qs, p.Dp, krows, kld, w.s, BK);
  }
  if (!p.P) return;
  const int64_t P = p.P;
  // The largest offset an unmasked (query, key) pair of the tile has: causal pairs have j - p_i <= 0, so R's
  // columns past offset 0 would only feed masked scores (add_rel_row still reads them: allocated, never used).
  const int64_t need = std::min(clamp_offset(j0 + bk - 1 - pos0, P), p.causal ? int64_t(0) : P - 1);
  if (need > *rdone) {
    const int64_t first = *rdone + 1;
    if (p.relT) {
      const A* relT_cols = p.relT + h * p.D * p.relT_ld + (first + P - 1);
      gemm<A, L>(bq, round_up(need - *rdone, cpu::Vec<A, L>::W), p.D, w.qs, p.Dp, 1, relT_cols, p.relT_ld,
                 w.r + (first - clo), p.rld, false);
    } else {
      row_dots<A, L>(bq, need - *rdone, p.Dp, w.qs, p.Dp, p.relP + (h * (2 * P - 1) + first + P - 1) * p.Dp,
                     p.Dp, w.r + (first - clo), p.rld);
    }
    *rdone = need;
  }
  for (int64_t i = 0; i < bq; ++i) add_rel_row(w.s + i * BK, w.r + i * p.rld, pos0 + i, j0, bk, P, clo);
}

// Valid key counts [lo, hi) of row i in the key tile at j0: keys in [kb, ke), and j <= pos when causal.
EF_INLINE void row_window(bool causal, int64_t pos, int64_t kb, int64_t ke, int64_t j0, int64_t bk, int64_t* lo,
                          int64_t* hi) {
  int64_t l = kb - j0, h = ke - j0;
  if (causal) h = std::min(h, pos + 1 - j0);
  *lo = std::max<int64_t>(l, 0);
  *hi = std::min(h, bk);
}

// Forward of queries [i0, i0+bq) of (b, h) over keys [kb, ke): unnormalised O (bq x Dp), running max m and sum l.
template <Isa L, typename T, typename A = acc_of<T>>
EF_INLINE void fwd_block(const Problem<T>& p, Work<A>& w, int64_t b, int64_t h, int64_t i0, int64_t bq, int64_t kb,
                         int64_t ke, A* O, A* m, A* l) {
  constexpr int W = cpu::Vec<A, L>::W;
  const int64_t Dp = p.Dp, P = p.P;
  const A inf = std::numeric_limits<A>::infinity();
  const int64_t pos0 = p.qpos0[b] + i0;
  const int64_t bh = b * p.H + h;
  stage_rows(p.q + b * p.qsb + h * p.qsh + i0 * p.qst, p.qst, bq, p.D, Dp, p.scale, w.qs);
  for (int64_t i = 0; i < bq; ++i) {
    m[i] = -inf;
    l[i] = 0;
  }
  std::fill(O, O + bq * Dp, A(0));
  if (ke <= kb) return;
  const T* kbase = p.k + b * p.ksb + h * p.ksh;
  const T* vbase = p.v + b * p.vsb + h * p.vsh;
  const A* kt = p.kt ? p.kt + bh * p.D * p.kt_ld : nullptr;
  const int64_t j_first = kb - kb % W;
  const int64_t clo = P ? clamp_offset(j_first - (pos0 + bq - 1), P) : 0;
  int64_t rdone = clo - 1;
  for (int64_t j0 = j_first; j0 < ke; j0 += BK) {
    const int64_t bk = std::min(BK, ke - j0), bkp = round_up(bk, W);
    tile_scores<L>(p, w, kt, kbase, h, bq, pos0, j0, bk, bkp, clo, &rdone);
    for (int64_t i = 0; i < bq; ++i) {
      A* srow = w.s + i * BK;
      int64_t lo, hi;
      row_window(p.causal, pos0 + i, kb, ke, j0, bk, &lo, &hi);
      if (hi <= lo) {
        std::fill(srow, srow + bkp, A(0));
        continue;
      }
      for (int64_t jj = 0; jj < lo; ++jj) srow[jj] = -inf;
      for (int64_t jj = hi; jj < bkp; ++jj) srow[jj] = -inf;
      const A m_new = std::max(m[i], row_max<A, L>(srow, bkp));  // (the masked entries are -inf)
      const A alpha = m[i] == -inf ? A(0) : std::exp(m[i] - m_new);
      l[i] = l[i] * alpha + exp_sub_row<A, L>(srow, m_new, bkp);
      m[i] = m_new;
      if (alpha != A(1))
        for (int64_t d = 0; d < Dp; ++d) O[i * Dp + d] *= alpha;
    }
    int64_t vld;
    const A* vrows;
    if (p.vf) {
      vrows = p.vf + (bh * p.Tk + j0) * Dp;
      vld = Dp;
    } else {
      vrows = rows_as_acc(vbase + j0 * p.vst, p.vst, bk, p.D, Dp, w.rows, &vld);
    }
    gemm<A, L>(bq, Dp, bk, w.s, BK, 1, vrows, vld, O, Dp, true,
               p.causal ? Causal{Band::kKLe, pos0 - j0} : Causal{});  // P is zero past the diagonal
  }
}

// Backward of (b, h): dq rows written, dk/dv accumulated into dk_acc/dv_acc (Tk x Dp), d(rel_emb) into drel
// (rows indexed by r - rlo, ld Dp). dout/out: (Tq, D) with row strides; lse: (Tq,).
template <Isa L, typename T, typename A = acc_of<T>>
EF_INLINE void bwd_head(const Problem<T>& p, Work<A>& w, int64_t b, int64_t h, const T* dout, int64_t dost,
                        const T* out, int64_t ost, const A* lse, T* dq, A* dk_acc, A* dv_acc, A* drel, int64_t rlo) {
  constexpr int W = cpu::Vec<A, L>::W;
  const int64_t D = p.D, Dp = p.Dp, P = p.P;
  const A inf = std::numeric_limits<A>::infinity();
  const T* kbase = p.k + b * p.ksb + h * p.ksh;
  const T* vbase = p.v + b * p.vsb + h * p.vsh;
  const int64_t nk = p.nkeys[b], kb = std::clamp<int64_t>(p.kstart[b], 0, nk);
  // This head's keys and values transposed (for S and dP), and its key rows as accumulator rows (for dQ).
  transpose_rows(kbase, p.kst, nk, round_up(nk, kMaxW), D, w.kt, p.kt_ld);
  transpose_rows(vbase, p.vst, nk, round_up(nk, kMaxW), D, w.vt, p.kt_ld);
  const A* kt = w.kt;
  A di[BQ];
  for (int64_t i0 = 0; i0 < p.Tq; i0 += BQ) {
    const int64_t bq = std::min(BQ, p.Tq - i0);
    const int64_t pos0 = p.qpos0[b] + i0;
    const int64_t ke = p.causal ? std::min(nk, pos0 + bq) : nk;
    stage_rows(p.q + b * p.qsb + h * p.qsh + i0 * p.qst, p.qst, bq, D, Dp, p.scale, w.qs);
    stage_rows(dout + i0 * dost, dost, bq, D, Dp, A(1), w.dos);
    for (int64_t i = 0; i < bq; ++i) {
      A t = 0;
      for (int64_t d = 0; d < D; ++d) t += w.dos[i * Dp + d] * Storage<T>::load(out[(i0 + i) * ost + d]);
      di[i] = t;
    }
    std::fill(w.dq, w.dq + BQ * Dp, A(0));
    const int64_t j_first = kb - kb % W;
    const int64_t clo = P ? clamp_offset(j_first - (pos0 + bq - 1), P) : 0;
    const int64_t cmax = std::min(clamp_offset(ke - 1 - pos0, P), p.causal ? int64_t(0) : P - 1);  // see tile_scores
    const int64_t ncols = P && ke > kb ? cmax - clo + 1 : 0;
    int64_t rdone = clo - 1;
    for (int64_t i = 0; i < bq; ++i) std::fill(w.g + i * p.rld, w.g + i * p.rld + ncols, A(0));
    for (int64_t j0 = j_first; j0 < ke && ke > kb; j0 += BK) {
      const int64_t bk = std::min(BK, ke - j0), bkp = round_up(bk, W);
      tile_scores<L>(p, w, kt, kbase, h, bq, pos0, j0, bk, bkp, clo, &rdone);
      const int64_t diag = pos0 - j0;  // query row i sees key column jj <= i + diag
      const Causal cols = p.causal ? Causal{Band::kColsLe, diag} : Causal{};
      gemm<A, L>(bq, bkp, D, w.dos, Dp, 1, w.vt + j0, p.kt_ld, w.dp, BK, false, cols);  // dP = dO V^T
      for (int64_t i = 0; i < bq; ++i) {
        A* srow = w.s + i * BK;
        A* dsrow = w.dp + i * BK;
        int64_t lo, hi;
        row_window(p.causal, pos0 + i, kb, ke, j0, bk, &lo, &hi);
        for (int64_t jj = 0; jj < std::max<int64_t>(lo, 0); ++jj) srow[jj] = -inf;
        for (int64_t jj = std::max(hi, lo); jj < bkp; ++jj) srow[jj] = -inf;
        exp_sub_row<A, L>(srow, lse[i0 + i], bkp);  // P; masked keys and all-masked rows (lse = +inf) give 0
        const A dii = di[i];
        // dS inside the row's window; zero outside (dP there may be unwritten: see the causal band).
        const int64_t a = std::max<int64_t>(lo, 0), e = std::max(hi, a);
        for (int64_t jj = 0; jj < a; ++jj) dsrow[jj] = A(0);
        for (int64_t jj = a; jj < e; ++jj) dsrow[jj] = srow[jj] * (dsrow[jj] - dii);
        for (int64_t jj = e; jj < bkp; ++jj) dsrow[jj] = A(0);
        if (P) scatter_rel_row(dsrow, w.g + i * p.rld, pos0 + i, j0, bk, P, clo);
      }
      // dV += P^T dO and dK += dS^T (s q): P and dS read transposed in place.
      const Causal from = p.causal ? Causal{Band::kKGe, diag} : Causal{};  // key jj meets queries i >= jj - diag
      gemm<A, L>(bk, Dp, bq, w.s, 1, BK, w.dos, Dp, dv_acc + j0 * Dp, Dp, true, from);
      gemm<A, L>(bk, Dp, bq, w.dp, 1, BK, w.qs, Dp, dk_acc + j0 * Dp, Dp, true, from);
      int64_t kld;
      const A* krows = rows_as_acc(kbase + j0 * p.kst, p.kst, bk, D, Dp, w.rows, &kld);
      gemm<A, L>(bq, Dp, bk, w.dp, BK, 1, krows, kld, w.dq, Dp, true,
                 p.causal ? Causal{Band::kKLe, diag} : Causal{});  // dQ += dS K
    }
    if (ncols > 0) {
      const A* relP_h = p.relP + (h * (2 * P - 1) + clo + P - 1) * Dp;
      gemm<A, L>(bq, Dp, ncols, w.g, p.rld, 1, relP_h, Dp, w.dq, Dp, true);  // dQ += G rel_emb
      gemm<A, L>(ncols, Dp, bq, w.g, 1, p.rld, w.qs, Dp, drel + (clo + P - 1 - rlo) * Dp, Dp,
                 true);  // d(rel_emb) += G^T (s q)
    }
    for (int64_t i = 0; i < bq; ++i)
      for (int64_t d = 0; d < D; ++d) dq[(i0 + i) * D + d] = Storage<T>::store(w.dq[i * Dp + d] * p.scale);
  }
}

}  // namespace attention
}  // namespace enigma_fast
