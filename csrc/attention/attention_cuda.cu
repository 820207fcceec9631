// Relative-position attention on CUDA: argument checks (attention.h, shared with the CPU), the choice of kernel and
// the registration under the CUDA dispatch key.
//
//   forward, bfloat16/float16, D in {32, 64, 128}, more than kRowsMaxTq queries: tensor-core tile kernel
//       (cuda/fwd.cuh, one source per head dim);
//   forward otherwise with D in {32, 64, 128} (decode, float32, float64): row kernel split over keys + combine
//       (cuda/rows.cuh);
//   backward, bfloat16/float16, D in {32, 64, 128}: tensor-core kernels (cuda/bwd.cuh);
//   anything else (other head dims, the float32/float64 backward): an ATen composite of the same math with a
//       materialised (Tq x Tk) score matrix, correct but O(T^2) memory; a one-time warning says so. The Python
//       routing sends other head dims to the reference before they get here.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "attention/attention.h"
#include "attention/cuda/launch.h"
#include "attention/cuda/rows.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {
namespace {

constexpr int64_t kRowsMaxTq = 16;  // at most this many queries: the row (decode) kernel even for 16-bit inputs
constexpr int64_t kMaxGridY = 65535;  // the tile kernels put batch * head on gridDim.y

bool supported_head_dim(int64_t D) { return D == 32 || D == 64 || D == 128; }

bool is_16bit(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf; }

int64_t eff_stride(const at::Tensor& t, int64_t d) { return t.size(d) == 1 ? 0 : t.stride(d); }

// Rows (last dimension) start on 16-byte boundaries: base pointer and every leading stride.
bool rows_aligned(const at::Tensor& t) {
  const int64_t vec = 16 / static_cast<int64_t>(t.element_size());
  if (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0) return false;
  for (int64_t d = 0; d + 1 < t.dim(); ++d)
    if (eff_stride(t, d) % vec != 0) return false;
  return true;
}

// t itself when its rows are 16-byte aligned, else an aligned contiguous copy (views at odd offsets only).
at::Tensor aligned(const at::Tensor& t) {
  if (t.numel() == 0 || rows_aligned(t)) return t;
  at::Tensor c = at::empty(t.sizes(), t.options());
  c.copy_(t);
  return c;
}

int sm_count(int device) {
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Index vectors are read on the device as plain arrays: a contiguous copy (kept alive by the caller) if needed.
std::optional<at::Tensor> contiguous_opt(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->contiguous()) : std::nullopt;
}

Geom make_geom(const at::Tensor& q, int64_t Tk, const at::Tensor* seqlens, int64_t n_new,
               const std::optional<at::Tensor>& key_start, bool causal) {
  Geom g{};
  g.B = q.size(0);
  g.H = q.size(1);
  g.Tq = q.size(2);
  g.Tk = Tk;
  g.seqlens = seqlens != nullptr ? seqlens->data_ptr() : nullptr;
  g.seqlens64 = seqlens != nullptr && seqlens->scalar_type() == at::kLong;
  g.key_start = key_start.has_value() ? key_start->data_ptr() : nullptr;
  g.key_start64 = key_start.has_value() && key_start->scalar_type() == at::kLong;
  g.n_new = n_new;
  g.causal = causal;
  return g;
}

template <typename F>
void head_dim_switch(int64_t D, F&& f) {
  switch (D) {
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 128>{}); break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Row kernel path
// ---------------------------------------------------------------------------------------------------------------
template <typename T>
void run_rows(const Geom& g, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& rel,
              int64_t P, double scale, at::Tensor& out, at::Tensor& lse, cudaStream_t stream) {
  using A = acc_t<T>;
  const int64_t D = q.size(3);
  const int64_t rows = g.B * g.H * g.Tq;
  RowsParams p{};
  p.g = g;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.rel = P ? rel.data_ptr() : nullptr;
  p.q_sb = eff_stride(q, 0), p.q_sh = eff_stride(q, 1), p.q_st = eff_stride(q, 2);
  p.k_sb = eff_stride(k, 0), p.k_sh = eff_stride(k, 1), p.k_st = k.stride(2);
  p.v_sb = eff_stride(v, 0), p.v_sh = eff_stride(v, 1), p.v_st = v.stride(2);
  p.P = P;
  p.scale = scale;
  p.out = out.data_ptr();
  p.lse = lse.data_ptr();
  // Split the keys when the rows alone cannot fill the GPU (decode): about 4 waves of blocks, at least 256 keys
  // per split. Chosen from Tk (Tmax for a cache), never from the device-side lengths, so shapes stay static.
  const int64_t want = 4 * static_cast<int64_t>(sm_count(q.get_device())) * 8;
  int64_t nsplit = 1;
  if (rows < want) nsplit = std::clamp<int64_t>((want + rows - 1) / rows, 1, std::max<int64_t>(1, g.Tk / 256));
  nsplit = std::min<int64_t>(nsplit, 128);
  p.nsplit = static_cast<int>(nsplit);
  at::Tensor part_o, part_ml;
  if (nsplit > 1) {
    part_o = at::empty({nsplit, rows, D}, lse.options());
    part_ml = at::empty({nsplit, rows, 2}, lse.options());
    p.part_o = part_o.data_ptr();
    p.part_ml = part_ml.data_ptr();
  }
  TORCH_CHECK(rows <= std::numeric_limits<int32_t>::max(),
              "rel_attention: too many query rows (B * H * Tq > 2^31 - 1) for one launch");
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(nsplit));
  head_dim_switch(D, [&](auto d_c) {
    constexpr int Dc = decltype(d_c)::value;
    if (P)
      rows_fwd_kernel<T, Dc, true><<<grid, kRowsThreads, 0, stream>>>(p);
    else
      rows_fwd_kernel<T, Dc, false><<<grid, kRowsThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  if (nsplit > 1) {
    combine_kernel<T, A><<<static_cast<unsigned>(rows), static_cast<unsigned>(D), 0, stream>>>(
        part_o.data_ptr<A>(), part_ml.data_ptr<A>(), static_cast<T*>(out.data_ptr()), lse.data_ptr<A>(), rows,
        p.nsplit, static_cast<int>(D));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tensor-core path
// ---------------------------------------------------------------------------------------------------------------
MmaParams mma_params(const Geom& g, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& rel, int64_t P, double scale) {
  MmaParams p{};
  p.g = g;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.rel = P ? rel.data_ptr() : nullptr;
  p.q_sb = eff_stride(q, 0), p.q_sh = eff_stride(q, 1), p.q_st = q.stride(2);
  p.k_sb = eff_stride(k, 0), p.k_sh = eff_stride(k, 1), p.k_st = k.stride(2);
  p.v_sb = eff_stride(v, 0), p.v_sh = eff_stride(v, 1), p.v_st = v.stride(2);
  p.P = P;
  p.scale = static_cast<float>(scale);
  return p;
}

void run_mma_fwd(const Geom& g, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& rel,
                 int64_t P, double scale, at::Tensor& out, at::Tensor& lse, cudaStream_t stream) {
  MmaParams p = mma_params(g, q, k, v, rel, P, scale);
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  head_dim_switch(q.size(3), [&](auto d_c) { launch_mma_fwd<decltype(d_c)::value>(p, bf16, stream); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_mma_bwd(
    const at::Tensor& dout_in, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const std::optional<at::Tensor>& rel_emb, int64_t P, const std::optional<at::Tensor>& key_start,
    const at::Tensor& out, const at::Tensor& lse, bool causal, double scale) {
  const int64_t B = q_in.size(0), H = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3), Tk = k_in.size(2);
  const at::Tensor q = aligned(q_in), k = aligned(k_in), v = aligned(v_in), dout = aligned(dout_in);
  const at::Tensor rel = P ? aligned(rel_emb->contiguous()) : at::Tensor();
  const at::Tensor lse_c = lse.contiguous();
  const Geom g = make_geom(q, Tk, nullptr, 0, key_start, causal);
  MmaParams p = mma_params(g, q, k, v, rel, P, scale);
  at::Tensor dq = at::empty(q.sizes(), q.options());
  at::Tensor dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  at::Tensor delta = at::empty({B, H, Tq}, q.options().dtype(at::kFloat));
  at::Tensor drel = at::empty({0}, q.options()), part;
  p.lse = const_cast<float*>(lse_c.const_data_ptr<float>());
  p.dout = dout.data_ptr();
  p.do_sb = eff_stride(dout, 0), p.do_sh = eff_stride(dout, 1), p.do_st = dout.stride(2);
  p.delta = delta.data_ptr<float>();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  if (P) {
    // d(rel_emb) band partials: (bsplit, H, nbands, 128, D) float32; batch rows split into groups until the band
    // kernel has about two blocks per multiprocessor.
    const int64_t nqt = (Tq + 63) / 64, nkt = (Tk + 63) / 64;
    p.nbands = nqt + nkt - 1;
    const int64_t want = 2 * static_cast<int64_t>(sm_count(q.get_device()));
    p.bsplit = static_cast<int>(std::clamp<int64_t>((want + H * p.nbands - 1) / (H * p.nbands), 1, B));
    part = at::empty({p.bsplit, H, p.nbands, 128, D}, delta.options());
    drel = at::empty(rel.sizes(), q.options());
    p.drel_part = part.data_ptr<float>();
    p.drel = drel.data_ptr();
  }
  const bool bf16 = q.scalar_type() == at::kBFloat16;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();
  head_dim_switch(D, [&](auto d_c) {
    launch_mma_bwd<decltype(d_c)::value>(p, bf16, out.data_ptr(), eff_stride(out, 0), eff_stride(out, 1),
                                         out.stride(2), stream);
  });
  return {dq, dk, dv, drel};
}

// ---------------------------------------------------------------------------------------------------------------
// ATen composite (other head dims; float32/float64 backward)
// ---------------------------------------------------------------------------------------------------------------
struct Positions {
  at::Tensor qpos;    // (B, Tq) int64
  at::Tensor nk;      // (B,)
  at::Tensor kstart;  // (B,)
};

Positions positions(const at::Tensor& q, int64_t Tk, const at::Tensor* seqlens, int64_t n_new,
                    const std::optional<at::Tensor>& key_start) {
  const int64_t B = q.size(0), Tq = q.size(2);
  const auto lopt = q.options().dtype(at::kLong);
  Positions r;
  r.nk = seqlens != nullptr ? (seqlens->to(at::kLong) + n_new).clamp(0, Tk) : at::full({B}, Tk, lopt);
  r.qpos = r.nk.view({B, 1}) - Tq + at::arange(Tq, lopt).view({1, Tq});
  r.kstart = key_start.has_value() ? at::minimum(key_start->to(at::kLong).clamp_min(0), r.nk) : at::zeros({B}, lopt);
  return r;
}

// Scaled, masked scores (B, H, Tq, Tk) in the accumulator dtype; ridx (B, 1, Tq, Tk) the rel_emb row of each pair.
at::Tensor composite_scores(const at::Tensor& qf, const at::Tensor& kf, const at::Tensor& relf, int64_t P,
                            const Positions& pos, bool causal, double scale, at::Tensor* ridx) {
  const int64_t B = qf.size(0), H = qf.size(1), Tq = qf.size(2), Tk = kf.size(2);
  at::Tensor s = at::matmul(qf, kf.transpose(-1, -2));
  const at::Tensor j = at::arange(Tk, pos.nk.options()).view({1, 1, Tk});
  if (P) {
    const at::Tensor qr = at::matmul(qf, relf.transpose(-1, -2).unsqueeze(0));  // (B, H, Tq, 2P-1)
    *ridx = ((j - pos.qpos.unsqueeze(-1)).clamp(-(P - 1), P - 1) + (P - 1)).unsqueeze(1);  // (B, 1, Tq, Tk)
    s = s + at::gather(qr, -1, ridx->expand({B, H, Tq, Tk}));
  }
  at::Tensor masked = (j >= pos.nk.view({B, 1, 1})) | (j < pos.kstart.view({B, 1, 1}));
  if (causal) masked = masked | (j > pos.qpos.unsqueeze(-1));
  return (s * scale).masked_fill(masked.unsqueeze(1), -std::numeric_limits<double>::infinity());
}

std::tuple<at::Tensor, at::Tensor> composite_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const std::optional<at::Tensor>& rel_emb, int64_t P,
                                                 const Positions& pos, bool causal, double scale) {
  const auto acc = stat_dtype(q.scalar_type());
  const at::Tensor qf = q.to(acc), kf = k.to(acc), vf = v.to(acc);
  const at::Tensor relf = P ? rel_emb->to(acc) : at::Tensor();
  at::Tensor ridx;
  const at::Tensor s = composite_scores(qf, kf, relf, P, pos, causal, scale, &ridx);
  at::Tensor m = std::get<0>(s.max(-1, true));
  m = at::where(at::isfinite(m), m, at::zeros_like(m));
  const at::Tensor e = at::exp(s - m);
  const at::Tensor l = e.sum(-1, true);
  const at::Tensor out = at::matmul(e / at::where(l > 0, l, at::ones_like(l)), vf).to(q.scalar_type()).contiguous();
  const at::Tensor lse =
      at::where(l > 0, m + at::log(l), at::full_like(l, std::numeric_limits<double>::infinity())).squeeze(-1);
  return {out, lse.contiguous()};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> composite_bwd(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& rel_emb, int64_t P, const at::Tensor& out, const at::Tensor& lse,
    const Positions& pos, bool causal, double scale) {
  const auto acc = stat_dtype(q.scalar_type());
  const auto dt = q.scalar_type();
  const at::Tensor qf = q.to(acc), kf = k.to(acc), vf = v.to(acc), dof = dout.to(acc);
  const at::Tensor relf = P ? rel_emb->to(acc) : at::Tensor();
  at::Tensor ridx;
  const at::Tensor s = composite_scores(qf, kf, relf, P, pos, causal, scale, &ridx);
  const at::Tensor p = at::exp(s - lse.to(acc).unsqueeze(-1));  // masked scores and empty rows (lse = +inf): 0
  const at::Tensor dv = at::matmul(p.transpose(-1, -2), dof);
  const at::Tensor dp = at::matmul(dof, vf.transpose(-1, -2));
  const at::Tensor delta = (dof * out.to(acc)).sum(-1, true);
  const at::Tensor ds = p * (dp - delta) * scale;  // d loss / d (q . (k + rel)), (B, H, Tq, Tk)
  at::Tensor dq = at::matmul(ds, kf);
  const at::Tensor dk = at::matmul(ds.transpose(-1, -2), qf);
  at::Tensor drel = at::empty({0}, q.options());
  if (P) {
    const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), Tk = k.size(2);
    // dS summed per rel_emb row, (B, H, Tq, 2P-1), without atomics (deterministic): an interior row r holds the one
    // key j = p_i + r - (P-1) (gathered), the two end rows the sums over the clamped offsets.
    const auto lopt = pos.qpos.options();
    const at::Tensor jj = pos.qpos.unsqueeze(-1) + (at::arange(2 * P - 1, lopt) - (P - 1)).view({1, 1, -1});
    const at::Tensor inside = ((jj >= 0) & (jj < Tk)).unsqueeze(1);
    at::Tensor dsr = at::gather(ds, -1, jj.clamp(0, Tk - 1).unsqueeze(1).expand({B, H, Tq, 2 * P - 1}));
    dsr = dsr * inside.to(dsr.scalar_type());
    const at::Tensor off = (at::arange(Tk, lopt).view({1, 1, -1}) - pos.qpos.unsqueeze(-1)).unsqueeze(1);
    if (P == 1) {
      dsr = ds.sum(-1, true);
    } else {
      dsr.select(-1, 0).copy_((ds * (off <= -(P - 1)).to(ds.scalar_type())).sum(-1));
      dsr.select(-1, 2 * P - 2).copy_((ds * (off >= P - 1).to(ds.scalar_type())).sum(-1));
    }
    dq = dq + at::matmul(dsr, relf.unsqueeze(0));
    drel = at::matmul(dsr.transpose(-1, -2), qf).sum(0).to(dt).contiguous();
  }
  return {dq.to(dt).contiguous(), dk.to(dt).contiguous(), dv.to(dt).contiguous(), drel};
}

// ---------------------------------------------------------------------------------------------------------------
// The forward shared by rel_attention_fwd and rel_attention_kvcache
// ---------------------------------------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                           const std::optional<at::Tensor>& rel_emb, int64_t P,
                                           const at::Tensor* seqlens, int64_t n_new,
                                           const std::optional<at::Tensor>& key_start, bool causal, double scale) {
  const int64_t B = q_in.size(0), H = q_in.size(1), Tq = q_in.size(2), D = q_in.size(3), Tk = k_in.size(2);
  at::Tensor out = at::empty(q_in.sizes(), q_in.options());
  at::Tensor lse = at::empty({B, H, Tq}, q_in.options().dtype(stat_dtype(q_in.scalar_type())));
  if (q_in.numel() == 0) return {out, lse};
  if (!supported_head_dim(D)) {
    warn_no_fused_cuda_kernel(D, q_in.scalar_type());
    return composite_fwd(q_in, k_in, v_in, rel_emb, P, positions(q_in, Tk, seqlens, n_new, key_start), causal,
                         scale);
  }
  const at::Tensor q = aligned(q_in), k = aligned(k_in), v = aligned(v_in);
  const at::Tensor rel = P ? aligned(rel_emb->contiguous()) : at::Tensor();
  const Geom g = make_geom(q, Tk, seqlens, n_new, key_start, causal);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();
  if (is_16bit(q) && Tq > kRowsMaxTq && B * H <= kMaxGridY) {
    run_mma_fwd(g, q, k, v, rel, P, scale, out, lse, stream);
    return {out, lse};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "rel_attention_fwd_cuda",
                                  [&] { run_rows<scalar_t>(g, q, k, v, rel, P, scale, out, lse, stream); });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> rel_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                          const at::Tensor& v, const std::optional<at::Tensor>& rel_emb,
                                                          const std::optional<at::Tensor>& key_start, bool causal,
                                                          double scale) {
  const int64_t P = check_fwd(q, k, v, rel_emb, key_start, "rel_attention");
  const c10::cuda::CUDAGuard guard(q.device());
  return forward(q, k, v, rel_emb, P, nullptr, 0, contiguous_opt(key_start), causal, scale);
}

at::Tensor rel_attention_kvcache_cuda(const at::Tensor& q, at::Tensor& k_cache, at::Tensor& v_cache,
                                      const std::optional<at::Tensor>& rel_emb, const at::Tensor& cache_seqlens,
                                      const std::optional<at::Tensor>& k_new, const std::optional<at::Tensor>& v_new,
                                      const std::optional<at::Tensor>& key_start, double scale) {
  const int64_t P = check_kvcache(q, k_cache, v_cache, rel_emb, cache_seqlens, k_new, v_new, key_start);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), H = q.size(1), Tq = q.size(2), D = q.size(3), Tmax = k_cache.size(2);
  const int64_t n_new = k_new.has_value() ? Tq : 0;
  const at::Tensor seqlens = cache_seqlens.contiguous();
  if (n_new && q.numel() > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(q.get_device()).stream();
    const int64_t total = B * H * Tq * D;
    constexpr int threads = 256;
    const at::Tensor& kn = *k_new;
    const at::Tensor& vn = *v_new;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "rel_attention_kvcache_write", [&] {
      cache_write_kernel<scalar_t><<<static_cast<unsigned>((total + threads - 1) / threads), threads, 0, stream>>>(
          kn.const_data_ptr<scalar_t>(), vn.const_data_ptr<scalar_t>(), kn.stride(0), kn.stride(1), kn.stride(2),
          vn.stride(0), vn.stride(1), vn.stride(2), k_cache.mutable_data_ptr<scalar_t>(),
          v_cache.mutable_data_ptr<scalar_t>(), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
          v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), seqlens.const_data_ptr(),
          seqlens.scalar_type() == at::kLong, H, Tq, Tmax, D, total);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return std::get<0>(
      forward(q, k_cache, v_cache, rel_emb, P, &seqlens, n_new, contiguous_opt(key_start), true, scale));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rel_attention_bwd_cuda(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& rel_emb, const std::optional<at::Tensor>& key_start, const at::Tensor& out,
    const at::Tensor& lse, bool causal, double scale) {
  const int64_t P = check_bwd(dout, q, k, v, rel_emb, key_start, out, lse);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t D = q.size(3), Tk = k.size(2);
  if (q.numel() == 0 || k.numel() == 0) {
    at::Tensor drel = P ? at::zeros(rel_emb->sizes(), q.options()) : at::empty({0}, q.options());
    return {at::zeros(q.sizes(), q.options()), at::zeros(k.sizes(), k.options()), at::zeros(v.sizes(), v.options()),
            drel};
  }
  if (!supported_head_dim(D) || !is_16bit(q) || q.size(0) * q.size(1) > kMaxGridY) {
    if (!supported_head_dim(D)) warn_no_fused_cuda_kernel(D, q.scalar_type());
    return composite_bwd(dout, q, k, v, rel_emb, P, out, lse, positions(q, Tk, nullptr, 0, key_start), causal,
                         scale);
  }
  return run_mma_bwd(dout, q, k, v, rel_emb, P, contiguous_opt(key_start), out, lse, causal, scale);
}

}  // namespace
}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast

TORCH_LIBRARY_IMPL(enigma_fast, CUDA, m) {
  m.impl("rel_attention_fwd", &enigma_fast::attention::cuda::rel_attention_fwd_cuda);
  m.impl("rel_attention_bwd", &enigma_fast::attention::cuda::rel_attention_bwd_cuda);
  m.impl("rel_attention_kvcache", &enigma_fast::attention::cuda::rel_attention_kvcache_cuda);
}
