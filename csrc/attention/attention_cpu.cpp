// Relative-position attention on the CPU: ATen glue around the tile kernels of attention_cpu_kernels.h.
//
// Forward: cpu_parallel_for (common/core/parallel.h) over (batch, head, query tile), or over (batch, head, query
// tile, key split) when there are too few query tiles to keep the threads busy (decode: a split over keys, merged
// by log-sum-exp).
// Backward: cpu_parallel_for over (batch, head); each task owns its dk/dv rows and its own d(rel_emb) partial, and
// the partials are summed over the batch in a fixed order afterwards, so results do not depend on the threads.
// The kernels are compiled once per instruction-set level (common/cpu_isa.h) and each call runs the level
// cpu::active_isa() names: the best the CPU has, or lower when capped (ENIGMA_FAST_CPU_CAPABILITY).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "attention/attention.h"
#include "attention/attention_cpu_kernels.h"
#include "common/cpu_isa.h"
#include "common/cpu_storage.h"
#include "common/cpu_parallel.h"

namespace enigma_fast {
namespace attention {
namespace {

// Estimated single-thread forward time of one (query, key) pair per head-dimension element, in ns: measured
// ~0.125 ns at D = 32 on AVX-512 (B=4, H=12, T=1024, causal); slower levels only make chunks longer.
constexpr double kPairNsPerD = 0.1;

// Per-task outputs of the forward: either final (out, lse) or, with key splits, partial (O, m, l).
template <typename T>
struct FwdOut {
  using A = acc_of<T>;
  T* out;         // (B, H, Tq, D) contiguous
  A* lse;         // (B, H, Tq)
  A* part_o;      // (nsplit, B*H*Tq, Dp) when nsplit > 1
  A* part_ml;     // (nsplit, B*H*Tq, 2)
  int64_t nqt, nsplit;
};

template <Isa L, typename T>
EF_INLINE void fwd_range(const Problem<T>& p, const FwdOut<T>& o, int64_t t0, int64_t t1) {
  using A = acc_of<T>;
  Work<A> w(p.Dp, p.D, p.rld, p.kt_ld, false, BQ * p.Dp + 2 * BQ);
  A* O = w.more;
  A *m = O + BQ * p.Dp, *l = m + BQ;
  const int64_t rows = p.B * p.H * p.Tq;
  for (int64_t t = t0; t < t1; ++t) {
    // Task order: (b, h) outer; query tiles alternate from both ends so that causal work is spread evenly.
    const int64_t split = t % o.nsplit, u = t / o.nsplit;
    const int64_t bh = u / o.nqt, x = u % o.nqt;
    const int64_t qt = x % 2 == 0 ? x / 2 : o.nqt - 1 - x / 2;
    const int64_t b = bh / p.H, h = bh % p.H, i0 = qt * BQ, bq = std::min(BQ, p.Tq - i0);
    const int64_t nk = p.nkeys[b];
    int64_t kb = std::clamp<int64_t>(p.kstart[b], 0, nk);
    int64_t ke = p.causal ? std::min(nk, p.qpos0[b] + i0 + bq) : nk;
    if (o.nsplit > 1) {
      const int64_t first = kb - kb % BK;
      const int64_t chunk = round_up(std::max<int64_t>(ke - first, 0), o.nsplit * BK) / o.nsplit;
      kb = std::max(kb, first + split * chunk);
      ke = std::min(ke, first + (split + 1) * chunk);
    }
    fwd_block<L>(p, w, b, h, i0, bq, kb, ke, O, m, l);
    const int64_t row0 = bh * p.Tq + i0;
    if (o.nsplit > 1) {
      A* po = o.part_o + (split * rows + row0) * p.Dp;
      A* pml = o.part_ml + (split * rows + row0) * 2;
      std::copy(O, O + bq * p.Dp, po);
      for (int64_t i = 0; i < bq; ++i) {
        pml[2 * i] = m[i];
        pml[2 * i + 1] = l[i];
      }
      continue;
    }
    for (int64_t i = 0; i < bq; ++i) {
      const A inv = l[i] > 0 ? A(1) / l[i] : A(0);
      T* orow = o.out + (row0 + i) * p.D;
      for (int64_t d = 0; d < p.D; ++d) orow[d] = Storage<T>::store(O[i * p.Dp + d] * inv);
      o.lse[row0 + i] = l[i] > 0 ? m[i] + std::log(l[i]) : std::numeric_limits<A>::infinity();
    }
  }
}

template <Isa L, typename T>
EF_INLINE void bwd_range(const Problem<T>& p, const T* dout, const int64_t* dos, const T* out, const int64_t* os,
                         const acc_of<T>* lse, T* dq, T* dk, T* dv, acc_of<T>* drel, int64_t nrel_used, int64_t rlo,
                         int64_t Tk, int64_t t0, int64_t t1) {
  using A = acc_of<T>;
  Work<A> w(p.Dp, p.D, p.rld, p.kt_ld, true, 2 * Tk * p.Dp);
  A* dk_acc = w.more;
  A* dv_acc = dk_acc + Tk * p.Dp;
  for (int64_t bh = t0; bh < t1; ++bh) {
    const int64_t b = bh / p.H, h = bh % p.H;
    std::fill(dk_acc, dk_acc + Tk * p.Dp, A(0));
    std::fill(dv_acc, dv_acc + Tk * p.Dp, A(0));
    if (drel) std::fill(drel + bh * nrel_used * p.Dp, drel + (bh + 1) * nrel_used * p.Dp, A(0));
    bwd_head<L>(p, w, b, h, dout + b * dos[0] + h * dos[1], dos[2], out + b * os[0] + h * os[1], os[2],
             lse + bh * p.Tq, dq + bh * p.Tq * p.D, dk_acc, dv_acc,
             drel ? drel + bh * nrel_used * p.Dp : nullptr, rlo);
    for (int64_t j = 0; j < Tk; ++j)
      for (int64_t d = 0; d < p.D; ++d) {
        dk[(bh * Tk + j) * p.D + d] = Storage<T>::store(dk_acc[j * p.Dp + d]);
        dv[(bh * Tk + j) * p.D + d] = Storage<T>::store(dv_acc[j * p.Dp + d]);
      }
  }
}

// The forward's copies made once per call: keys transposed (D x kt_ld per head) for the score GEMMs and, when v
// cannot be read in place (bfloat16, or D not a multiple of the widest vector), values as padded accumulator rows.
template <Isa L, typename T>
EF_INLINE void prep_range(const Problem<T>& p, acc_of<T>* kt, acc_of<T>* vf, int64_t nk, int64_t t0, int64_t t1) {
  for (int64_t bh = t0; bh < t1; ++bh) {
    const int64_t b = bh / p.H, h = bh % p.H;
    transpose_rows(p.k + b * p.ksb + h * p.ksh, p.kst, nk, p.kt_ld, p.D, kt + bh * p.D * p.kt_ld, p.kt_ld);
    if (vf) {
      int64_t ld;
      rows_as_acc(p.v + b * p.vsb + h * p.vsh, p.vst, nk, p.D, p.Dp, vf + bh * p.Tk * p.Dp, &ld);
    }
  }
}

// One entry point per storage type and level (common/cpu_isa.h); each dispatches on the active level.
#define EF_ATTN_DEFINE(T, SUFFIX)                                                                                    \
  EF_DEFINE_ISA_ENTRIES(void, fwd_##SUFFIX, (const Problem<T>& p, const FwdOut<T>& o, int64_t t0, int64_t t1),      \
                        (p, o, t0, t1), fwd_range)                                                                   \
  EF_DEFINE_ISA_ENTRIES(void, bwd_##SUFFIX,                                                                          \
                        (const Problem<T>& p, const T* dout, const int64_t* dos, const T* out, const int64_t* os,   \
                         const acc_of<T>* lse, T* dq, T* dk, T* dv, acc_of<T>* drel, int64_t nrel_used,             \
                         int64_t rlo, int64_t Tk, int64_t t0, int64_t t1),                                          \
                        (p, dout, dos, out, os, lse, dq, dk, dv, drel, nrel_used, rlo, Tk, t0, t1), bwd_range)      \
  EF_DEFINE_ISA_ENTRIES(void, prep_##SUFFIX,                                                                         \
                        (const Problem<T>& p, acc_of<T>* kt, acc_of<T>* vf, int64_t nk, int64_t t0, int64_t t1),    \
                        (p, kt, vf, nk, t0, t1), prep_range)
EF_ATTN_DEFINE(float, f32)
EF_ATTN_DEFINE(double, f64)
EF_ATTN_DEFINE(bf16_t, bf16)
#undef EF_ATTN_DEFINE

inline void fwd_dispatch(const Problem<float>& p, const FwdOut<float>& o, int64_t a, int64_t b) { fwd_f32(p, o, a, b); }
inline void fwd_dispatch(const Problem<double>& p, const FwdOut<double>& o, int64_t a, int64_t b) {
  fwd_f64(p, o, a, b);
}
inline void fwd_dispatch(const Problem<bf16_t>& p, const FwdOut<bf16_t>& o, int64_t a, int64_t b) {
  fwd_bf16(p, o, a, b);
}
inline void prep_dispatch(const Problem<float>& p, float* kt, float* vf, int64_t nk, int64_t a, int64_t b) {
  prep_f32(p, kt, vf, nk, a, b);
}
inline void prep_dispatch(const Problem<double>& p, double* kt, double* vf, int64_t nk, int64_t a, int64_t b) {
  prep_f64(p, kt, vf, nk, a, b);
}
inline void prep_dispatch(const Problem<bf16_t>& p, float* kt, float* vf, int64_t nk, int64_t a, int64_t b) {
  prep_bf16(p, kt, vf, nk, a, b);
}
template <typename T>
void bwd_dispatch(const Problem<T>& p, const T* dout, const int64_t* dos, const T* out, const int64_t* os,
                  const acc_of<T>* lse, T* dq, T* dk, T* dv, acc_of<T>* drel, int64_t nrel_used, int64_t rlo,
                  int64_t Tk, int64_t t0, int64_t t1) {
  if constexpr (std::is_same_v<T, float>)
    bwd_f32(p, dout, dos, out, os, lse, dq, dk, dv, drel, nrel_used, rlo, Tk, t0, t1);
  else if constexpr (std::is_same_v<T, double>)
    bwd_f64(p, dout, dos, out, os, lse, dq, dk, dv, drel, nrel_used, rlo, Tk, t0, t1);
  else
    bwd_bf16(p, dout, dos, out, os, lse, dq, dk, dv, drel, nrel_used, rlo, Tk, t0, t1);
}

// Everything a kernel call needs that lives in tensors: the per-row position vectors and rel_emb's padded copies.
struct Prepared {
  at::Tensor qpos0, nkeys, kstart, relT, relP, kt, vf;
};

std::vector<int64_t> to_vector(const std::optional<at::Tensor>& t, int64_t n, int64_t fill) {
  if (!t.has_value()) return std::vector<int64_t>(n, fill);
  at::Tensor c = t->to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + n);
}

template <typename scalar_t>
Problem<typename Kernel<scalar_t>::type> make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                      const std::optional<at::Tensor>& rel_emb, int64_t P,
                                                      const std::vector<int64_t>& qpos0,
                                                      const std::vector<int64_t>& nkeys,
                                                      const std::vector<int64_t>& kstart, bool causal, double scale,
                                                      bool backward, Prepared& keep) {
  using T = typename Kernel<scalar_t>::type;
  using A = acc_of<T>;
  constexpr int64_t W = kMaxW;
  const auto acc_dtype = stat_dtype(q.scalar_type());
  Problem<T> p{};
  p.B = q.size(0);
  p.H = q.size(1);
  p.Tq = q.size(2);
  p.D = q.size(3);
  p.Dp = round_up(p.D, W);
  p.P = P;
  p.q = ptr<scalar_t>(q);
  p.qsb = q.stride(0), p.qsh = q.stride(1), p.qst = q.stride(2);
  p.k = ptr<scalar_t>(k);
  p.ksb = k.stride(0), p.ksh = k.stride(1), p.kst = k.stride(2);
  p.v = ptr<scalar_t>(v);
  p.vsb = v.stride(0), p.vsh = v.stride(1), p.vst = v.stride(2);
  const int64_t Tk = k.size(2);
  p.Tk = Tk;
  int64_t maxk = 0;
  for (int64_t n : nkeys) maxk = std::max(maxk, n);
  const bool few_queries = p.Tq <= kFewQueries;
  // Transposed keys: per head in the backward's work buffers, for the whole call in the forward (run_fwd).
  p.kt_ld = backward ? round_up(Tk, W) : (few_queries ? 0 : round_up(maxk, W));
  if (P) {
    const int64_t nrel = 2 * P - 1;
    p.relT_ld = nrel + W;
    // rel_emb[h] transposed to (D, 2P-1) in the accumulator type; only the rows some (query, key) pair can reach
    // (clamped offsets between key 0 - last query and last key - first query) are filled, the rest zeroed.
    int64_t pmin = qpos0[0], pmax = qpos0[0];
    for (int64_t x : qpos0) pmin = std::min(pmin, x), pmax = std::max(pmax, x);
    const int64_t r_lo = clamp_offset(-(pmax + p.Tq - 1), P) + P - 1;
    const int64_t r_hi = clamp_offset(std::max(maxk, int64_t(1)) - 1 - pmin, P) + P - 1;
    const at::Tensor rel_c = rel_emb->contiguous();
    const T* relp = ptr<scalar_t>(rel_c);
    // Few queries (decode): dot products with rel_emb's rows beat transposing it for the GEMM.
    if (!few_queries || backward) {
      keep.relT = at::empty({p.H, p.D, p.relT_ld}, q.options().dtype(acc_dtype));
      A* relT = keep.relT.data_ptr<A>();
      const int64_t D = p.D, ld = p.relT_ld, nr = r_hi - r_lo + 1;
      // Heads in parallel only when the copy is big enough to pay for waking the threads (~1 ns an element).
      cpu_parallel_for(0, p.H, grain_for(1.0 * nr * D), [&](int64_t h0, int64_t h1) {
        for (int64_t h = h0; h < h1; ++h) {
          A* dst = relT + h * D * ld;
          const T* src = relp + h * nrel * D;
          for (int64_t d = 0; d < D; ++d) {
            std::fill(dst + d * ld, dst + d * ld + r_lo, A(0));
            std::fill(dst + d * ld + r_hi + 1, dst + (d + 1) * ld, A(0));
          }
          for (int64_t r = r_lo; r <= r_hi; ++r)
            for (int64_t d = 0; d < D; ++d) dst[d * ld + r] = Storage<T>::load(src[r * D + d]);
        }
      });
      p.relT = relT;
    }
    if (backward || few_queries) {
      if constexpr (std::is_same_v<T, A>) {
        if (p.D == p.Dp) p.relP = relp, keep.relP = rel_c;
      }
      if (!p.relP) {
        keep.relP = at::zeros({p.H, nrel, p.Dp}, q.options().dtype(acc_dtype));
        keep.relP.narrow(2, 0, p.D).copy_(rel_c);
        p.relP = keep.relP.data_ptr<A>();
      }
    }
    p.rld = std::min(nrel, std::max(maxk, Tk) + W + BQ) + 2 * W;
  } else {
    p.rld = 0;
  }
  keep.qpos0 = at::tensor(qpos0, at::kLong);
  keep.nkeys = at::tensor(nkeys, at::kLong);
  keep.kstart = at::tensor(kstart, at::kLong);
  p.qpos0 = keep.qpos0.data_ptr<int64_t>();
  p.nkeys = keep.nkeys.data_ptr<int64_t>();
  p.kstart = keep.kstart.data_ptr<int64_t>();
  p.causal = causal;
  p.scale = static_cast<A>(scale);
  return p;
}

// Runs the forward for already-checked arguments; returns (out, lse).
std::tuple<at::Tensor, at::Tensor> run_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const std::optional<at::Tensor>& rel_emb, int64_t P,
                                           const std::vector<int64_t>& qpos0, const std::vector<int64_t>& nkeys,
                                           const std::vector<int64_t>& kstart, bool causal, double scale) {
  at::Tensor out = at::empty(q.sizes(), q.options());
  at::Tensor lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(stat_dtype(q.scalar_type())));
  if (q.numel() == 0) return {out, lse};
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "rel_attention_fwd_cpu", [&] {
    using T = typename Kernel<scalar_t>::type;
    using A = acc_of<T>;
    Prepared keep;
    Problem<T> p = make_problem<scalar_t>(q, k, v, rel_emb, P, qpos0, nkeys, kstart, causal, scale, false, keep);
    FwdOut<T> o{mut_ptr<scalar_t>(out), lse.data_ptr<A>(), nullptr, nullptr, (p.Tq + BQ - 1) / BQ, 1};
    const int64_t base = p.B * p.H * o.nqt;
    const int64_t threads = at::get_num_threads();
    int64_t maxk = 0;
    for (int64_t n : nkeys) maxk = std::max(maxk, n);
    // Split the keys when the query tiles alone cannot keep the threads busy (decode: Tq = 1).
    if (base < 2 * threads) o.nsplit = std::max<int64_t>(1, std::min((4 * threads + base - 1) / base, maxk / (2 * BK)));
    at::Tensor part_o, part_ml;
    const int64_t rows = p.B * p.H * p.Tq;
    if (o.nsplit > 1) {
      part_o = at::empty({o.nsplit, rows, p.Dp}, lse.options());
      part_ml = at::empty({o.nsplit, rows, 2}, lse.options());
      o.part_o = part_o.data_ptr<A>();
      o.part_ml = part_ml.data_ptr<A>();
    }
    if (p.kt_ld) {
      // Keys transposed once for every query tile's score GEMMs; values as accumulator rows when needed.
      keep.kt = at::empty({p.B * p.H, p.D, p.kt_ld}, lse.options());
      const bool need_vf = !std::is_same_v<T, A> || p.D != p.Dp;
      if (need_vf) keep.vf = at::empty({p.B * p.H, p.Tk, p.Dp}, lse.options());
      p.kt = keep.kt.data_ptr<A>();
      p.vf = need_vf ? keep.vf.data_ptr<A>() : nullptr;
      A* ktp = keep.kt.data_ptr<A>();
      A* vfp = need_vf ? keep.vf.data_ptr<A>() : nullptr;
      const int64_t grain = grain_for(1.0 * maxk * p.D * (need_vf ? 2 : 1));  // ~1 ns an element
      cpu_parallel_for(0, p.B * p.H, grain, [&](int64_t t0, int64_t t1) { prep_dispatch(p, ktp, vfp, maxk, t0, t1); });
    }
    // Tasks in parallel only when each chunk holds enough (query, key) pairs: the mean task's pairs at
    // kPairNsPerD * D each.
    const double keys = p.causal ? std::max(1.0, maxk - 0.5 * p.Tq) : double(maxk);
    const double task_ns = kPairNsPerD * p.D * std::min<double>(p.Tq, BQ) * keys / o.nsplit;
    cpu_parallel_for(0, base * o.nsplit, grain_for(task_ns), [&](int64_t t0, int64_t t1) { fwd_dispatch(p, o, t0, t1); });
    if (o.nsplit > 1) {
      // Merge the key splits: m = max m_s, l = sum l_s e^(m_s - m), out = sum O_s e^(m_s - m) / l.
      T* op = o.out;
      A* lp = o.lse;
      cpu_parallel_for(0, rows, grain_for(1.0 * o.nsplit * p.D), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          A mx = -std::numeric_limits<A>::infinity();
          for (int64_t s = 0; s < o.nsplit; ++s) mx = std::max(mx, o.part_ml[(s * rows + r) * 2]);
          A l = 0;
          std::vector<A> acc(p.D, A(0));
          for (int64_t s = 0; s < o.nsplit; ++s) {
            const A ms = o.part_ml[(s * rows + r) * 2];
            if (ms == -std::numeric_limits<A>::infinity()) continue;
            const A f = std::exp(ms - mx);
            l += o.part_ml[(s * rows + r) * 2 + 1] * f;
            for (int64_t d = 0; d < p.D; ++d) acc[d] += o.part_o[(s * rows + r) * p.Dp + d] * f;
          }
          const A inv = l > 0 ? A(1) / l : A(0);
          for (int64_t d = 0; d < p.D; ++d) op[r * p.D + d] = Storage<T>::store(acc[d] * inv);
          lp[r] = l > 0 ? mx + std::log(l) : std::numeric_limits<A>::infinity();
        }
      });
    }
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> rel_attention_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                         const at::Tensor& v, const std::optional<at::Tensor>& rel_emb,
                                                         const std::optional<at::Tensor>& key_start, bool causal,
                                                         double scale) {
  const int64_t P = check_fwd(q, k, v, rel_emb, key_start, "rel_attention");
  const int64_t B = q.size(0), Tq = q.size(2), Tk = k.size(2);
  return run_fwd(q, k, v, rel_emb, P, std::vector<int64_t>(B, Tk - Tq), std::vector<int64_t>(B, Tk),
                 to_vector(key_start, B, 0), causal, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rel_attention_bwd_cpu(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start, const at::Tensor& out,
    const at::Tensor& lse, bool causal, double scale) {
  const int64_t P = check_bwd(dout, q, k, v, rel_emb, key_start, out, lse);
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2), D = q.size(3);
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor drel = P ? at::zeros(rel_emb->sizes(), q.options()) : at::empty({0}, q.options());
  if (q.numel() == 0 || k.numel() == 0) {
    dq.zero_(), dk.zero_(), dv.zero_();
    return {dq, dk, dv, drel};
  }
  const at::Tensor lse_c = lse.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "rel_attention_bwd_cpu", [&] {
    using T = typename Kernel<scalar_t>::type;
    using A = acc_of<T>;
    Prepared keep;
    const Problem<T> p = make_problem<scalar_t>(q, k, v, rel_emb, P, std::vector<int64_t>(B, Tk - Tq),
                                                std::vector<int64_t>(B, Tk), to_vector(key_start, B, 0), causal, scale,
                                                true, keep);
    // d(rel_emb) rows any (query, key) pair can reach: clamped offsets [-(Tk-1), Tq-1].
    int64_t rlo = 0, nrel_used = 0;
    at::Tensor drel_part;
    A* drel_ptr = nullptr;
    if (P) {
      rlo = clamp_offset(-(Tk - 1), P) + P - 1;
      nrel_used = clamp_offset(Tq - 1, P) + P - 1 - rlo + 1;
      drel_part = at::empty({B, H, nrel_used, p.Dp}, lse_c.options());  // each task zeroes its own
      drel_ptr = drel_part.data_ptr<A>();
    }
    const int64_t dos[3] = {dout.stride(0), dout.stride(1), dout.stride(2)};
    const int64_t os[3] = {out.stride(0), out.stride(1), out.stride(2)};
    const T* doutp = ptr<scalar_t>(dout);
    const T* outp = ptr<scalar_t>(out);
    const A* lsep = lse_c.data_ptr<A>();
    T* dqp = mut_ptr<scalar_t>(dq);
    T* dkp = mut_ptr<scalar_t>(dk);
    T* dvp = mut_ptr<scalar_t>(dv);
    // One task is a whole head: Tq x Tk pairs (half when causal), ~2.5x the forward's cost each.
    const double head_ns = 2.5 * kPairNsPerD * D * Tq * (causal ? std::max(1.0, Tk - 0.5 * Tq) : double(Tk));
    cpu_parallel_for(0, B * H, grain_for(head_ns), [&](int64_t t0, int64_t t1) {
      bwd_dispatch<T>(p, doutp, dos, outp, os, lsep, dqp, dkp, dvp, drel_ptr, nrel_used, rlo, Tk, t0, t1);
    });
    if (P) {
      // Sum the partials over the batch in batch order (deterministic), rows of (head, offset) in parallel.
      T* drp = mut_ptr<scalar_t>(drel);
      const A* part = drel_ptr;
      const int64_t nrel = 2 * P - 1, Dp = p.Dp;
      cpu_parallel_for(0, H * nrel_used, grain_for(1.0 * B * D), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t h = r / nrel_used, c = r % nrel_used;
          for (int64_t d = 0; d < D; ++d) {
            A sum = part[(h * nrel_used + c) * Dp + d];
            for (int64_t b = 1; b < B; ++b) sum += part[((b * H + h) * nrel_used + c) * Dp + d];
            drp[(h * nrel + rlo + c) * D + d] = Storage<T>::store(sum);
          }
        }
      });
    }
  });
  return {dq, dk, dv, drel};
}

at::Tensor rel_attention_kvcache_cpu(const at::Tensor& q, at::Tensor& k_cache, at::Tensor& v_cache,
                                     const std::optional<at::Tensor>& rel_emb, const at::Tensor& cache_seqlens,
                                     const std::optional<at::Tensor>& k_new, const std::optional<at::Tensor>& v_new,
                                     const std::optional<at::Tensor>& key_start, double scale) {
  const int64_t P = check_kvcache(q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start);
  const int64_t B = q.size(0), Tq = q.size(2), Tmax = k_cache.size(2);
  const int64_t n_new = k_new.has_value() ? Tq : 0;
  const std::vector<int64_t> seqlens = to_vector(cache_seqlens, B, 0);
  std::vector<int64_t> qpos0(B), nkeys(B);
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(seqlens[b] >= 0 && seqlens[b] + n_new <= Tmax, "rel_attention_with_kvcache: cache_seqlens[", b,
                "] + ", n_new, " new tokens must be within the cache length Tmax = ", Tmax, ", got cache_seqlens[", b,
                "] = ", seqlens[b]);
    TORCH_CHECK(seqlens[b] + n_new >= Tq, "rel_attention_with_kvcache: row ", b, " holds ", seqlens[b] + n_new,
                " keys, fewer than the Tq = ", Tq, " queries (without k_new the cache must already hold them)");
    nkeys[b] = seqlens[b] + n_new;
    qpos0[b] = nkeys[b] - Tq;
  }
  if (n_new)
    for (int64_t b = 0; b < B; ++b) {
      k_cache[b].narrow(1, seqlens[b], n_new).copy_((*k_new)[b]);
      v_cache[b].narrow(1, seqlens[b], n_new).copy_((*v_new)[b]);
    }
  auto res = run_fwd(q, k_cache, v_cache, rel_emb, P, qpos0, nkeys, to_vector(key_start, B, 0), true, scale);
  return std::get<0>(res);
}

}  // namespace

TORCH_LIBRARY_IMPL(enigma_fast, CPU, m) {
  m.impl("rel_attention_fwd", &rel_attention_fwd_cpu);
  m.impl("rel_attention_bwd", &rel_attention_bwd_cpu);
  m.impl("rel_attention_kvcache", &rel_attention_kvcache_cpu);
}

}  // namespace attention
}  // namespace enigma_fast
