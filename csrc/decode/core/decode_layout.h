// Torch-free geometry of a whole-step decode and where everything lives in its packed weights and its workspace.
//
// A decode step runs one new token per batch row through a whole decoder stack: EnBERT (kind 0) or the decoder of
// Enigma (kind 1, with cross-attention to a projected encoder memory). The model is described by a short list of
// ints (the `geometry` argument of the ops, in GeometryIndex order); the weights are packed once into one flat
// buffer whose layout is a function of the geometry and a panel width NB alone:
//
//   a linear layer y = x W^T + b with W (N, K) is stored as ceil(N / NB) panels of K x NB (panel p holds columns
//   [p NB, p NB + NB) of W^T, zero past N), so a step streams each weight once, contiguously, and the CPU GEMM
//   micro-kernel reads a panel as its row-major B operand; NB = 1 is plain row-major W (the CUDA layout). Its bias
//   follows, zero-padded to ceil(N / NB) NB.
//
// Packed order (every block starts on a multiple of kAlign elements):
//   tok_emb (V, d) | pos_emb (n_pos, d), Enigma | lm_head panels (V -> d) | norm_f (d)
//   per layer: norm1 (d) | qkv panels (3d x d) + bias | rel_emb causal half (H, P, D): rows r = 0 .. P-1 of the
//              module's (H, 2P-1, D) table, the offsets -(P-1) .. 0 a decode query meets | out panels (d x d) + bias
//              | Enigma: norm_cross (d) | cross q panels (d x d) + bias | cross out panels (d x d) + bias
//              | cross rel_bias (H, 2R+1) when R > 0 | norm2 (d) | fc panels (F x d) + bias | proj panels (d x F) + bias
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace enigma_fast {
namespace decode {

// Positions in the geometry list.
enum GeometryIndex : int {
  kKind = 0,         // 0 EnBERT, 1 Enigma decoder
  kLayers = 1,       // decoder blocks
  kDModel = 2,       // d
  kHeads = 3,        // H (d = H D)
  kFfn = 4,          // F, feed-forward width
  kVocab = 5,        // V
  kRelPos = 6,       // P, self-attention offsets clamp to [-(P-1), P-1]
  kCrossRelPos = 7,  // R, cross-attention bias offsets clamp to [-R, R]; 0 = no bias (and always 0 for EnBERT)
  kBias = 8,         // 1 when the projections have biases
  kPositions = 9,    // rows of Enigma's absolute position table (0 for EnBERT)
  kGeometrySize = 10
};

constexpr int64_t kAlign = 16;  // elements: 64 bytes of float

// Panel width of the CPU's packed weights: 64 columns, one 256-byte row of float per k (one 4-register row of the
// AVX-512 GEMM, 8 registers at AVX2, 16 at SSE2), so one layout serves every instruction-set level.
constexpr int64_t kCpuPanel = 64;
inline int64_t align_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

struct Geometry {
  int64_t kind = 0, L = 0, d = 0, H = 0, D = 0, F = 0, V = 0, P = 0, R = 0, bias = 0, npos = 0;
  bool enigma() const { return kind == 1; }
};

// Parses and checks a geometry list; returns "" or a one-line description of what is wrong.
inline std::string parse_geometry(const int64_t* g, int64_t n, Geometry* out) {
  if (n != kGeometrySize)
    return "geometry must hold " + std::to_string(int(kGeometrySize)) + " ints, got " + std::to_string(n);
  Geometry r;
  r.kind = g[kKind], r.L = g[kLayers], r.d = g[kDModel], r.H = g[kHeads], r.F = g[kFfn], r.V = g[kVocab];
  r.P = g[kRelPos], r.R = g[kCrossRelPos], r.bias = g[kBias], r.npos = g[kPositions];
  const int64_t big = int64_t(1) << 31;
  auto bad = [](const char* what, int64_t v, const char* want) {
    return std::string("geometry ") + what + " must be " + want + ", got " + std::to_string(v);
  };
  if (r.kind != 0 && r.kind != 1) return bad("kind", r.kind, "0 (EnBERT) or 1 (Enigma)");
  for (auto [v, name] : {std::pair<int64_t, const char*>{r.L, "n_layer"}, {r.d, "d_model"}, {r.H, "n_head"},
                         {r.F, "ffn width"}, {r.V, "vocab_size"}, {r.P, "max_rel_pos"}})
    if (v < 1 || v >= big) return bad(name, v, "in [1, 2^31)");
  if (r.d % r.H != 0) return "geometry d_model = " + std::to_string(r.d) + " must be divisible by n_head = " +
                             std::to_string(r.H);
  if (r.bias != 0 && r.bias != 1) return bad("bias", r.bias, "0 or 1");
  if (r.R < 0 || r.R >= big) return bad("cross_rel_pos", r.R, "in [0, 2^31)");
  if (!r.enigma() && (r.R != 0 || r.npos != 0))
    return "geometry of an EnBERT (kind 0) must have cross_rel_pos = 0 and n_pos = 0, got " + std::to_string(r.R) +
           " and " + std::to_string(r.npos);
  if (r.enigma() && (r.npos < 1 || r.npos >= big)) return bad("n_pos", r.npos, "in [1, 2^31) for an Enigma");
  r.D = r.d / r.H;
  *out = r;
  return "";
}

// A packed linear layer: panels at `w` (K x NB each), bias at `b` (-1 when none), N outputs (Np padded), K inputs.
struct Linear {
  int64_t w = 0, b = -1, N = 0, K = 0, Np = 0;
  int64_t panels(int64_t nb) const { return Np / nb; }
};

// Offsets of one layer's blocks. Every layer's block has the same size, so layer l's offsets are layer 0's plus
// l * Layout::layer_size (no per-layer table: a step computes them without allocating).
struct LayerLayout {
  int64_t norm1 = 0, rel = 0, norm_cross = -1, cross_bias = -1, norm2 = 0;
  Linear qkv, out, cq, cout, fc, proj;
};

inline void shift(Linear* l, int64_t by) {
  l->w += by;
  if (l->b >= 0) l->b += by;
}

struct Layout {
  int64_t nb = 1;
  int64_t tok_emb = 0, pos_emb = -1, norm_f = 0;
  Linear head;
  LayerLayout first;
  int64_t layer_size = 0;
  int64_t total = 0;

  LayerLayout layer(int64_t l) const {
    LayerLayout y = first;
    const int64_t by = l * layer_size;
    y.norm1 += by, y.rel += by, y.norm2 += by;
    if (y.norm_cross >= 0) y.norm_cross += by;
    if (y.cross_bias >= 0) y.cross_bias += by;
    for (Linear* x : {&y.qkv, &y.out, &y.fc, &y.proj}) shift(x, by);
    if (y.norm_cross >= 0) shift(&y.cq, by), shift(&y.cout, by);
    return y;
  }
};

inline Layout make_layout(const Geometry& g, int64_t nb) {
  Layout lay;
  lay.nb = nb;
  int64_t at = 0;
  auto take = [&at](int64_t n) {
    const int64_t o = at;
    at = align_up(at + n, kAlign);
    return o;
  };
  auto linear = [&](int64_t N, int64_t K, bool bias) {
    Linear l;
    l.N = N, l.K = K, l.Np = align_up(N, nb);
    l.w = take(l.Np * K);
    l.b = bias ? take(l.Np) : -1;
    return l;
  };
  lay.tok_emb = take(g.V * g.d);
  if (g.enigma()) lay.pos_emb = take(g.npos * g.d);
  lay.head = linear(g.V, g.d, false);
  lay.norm_f = take(g.d);
  const bool b = g.bias != 0;
  const int64_t start = at;
  LayerLayout& y = lay.first;
  y.norm1 = take(g.d);
  y.qkv = linear(3 * g.d, g.d, b);
  y.rel = take(g.H * g.P * g.D);
  y.out = linear(g.d, g.d, b);
  if (g.enigma()) {
    y.norm_cross = take(g.d);
    y.cq = linear(g.d, g.d, b);
    y.cout = linear(g.d, g.d, b);
    if (g.R > 0) y.cross_bias = take(g.H * (2 * g.R + 1));
  }
  y.norm2 = take(g.d);
  y.fc = linear(g.F, g.d, b);
  y.proj = linear(g.d, g.F, b);
  lay.layer_size = at - start;
  lay.total = start + g.L * lay.layer_size;
  return lay;
}

// The step's work buffers, in elements of the model's dtype. Rows are batch rows; `*_ld` their strides.
//   h, f, y, att (B x d): residual stream, branch output still to add, normalised input of a projection, attention
//   output; qkv (B x qkv_ld), a (B x d_ld), u (B x f_ld), q2 (B x d_ld), logit (B x v_ld): projection outputs (NB
//   padded); per (row, head) task: scores (s_ld: max(Tmax, S) keys), rel (r_ld: P offsets), q (dh_ld), acc (dh_ld).
struct Work {
  int64_t h, f, y, att, qkv, a, u, q2, logit, scores, rel, q, acc;
  int64_t d_ld, qkv_ld, f_ld, v_ld, s_ld, r_ld, dh_ld;
  int64_t total;
};

inline Work make_work(const Geometry& g, int64_t B, int64_t Tmax, int64_t S, int64_t nb) {
  Work w;
  int64_t at = 0;
  auto take = [&at](int64_t n) {
    const int64_t o = at;
    at = align_up(at + n, kAlign);
    return o;
  };
  w.d_ld = align_up(align_up(g.d, nb), kAlign);
  w.qkv_ld = align_up(align_up(3 * g.d, nb), kAlign);
  w.f_ld = align_up(align_up(g.F, nb), kAlign);
  w.v_ld = align_up(align_up(g.V, nb), kAlign);
  w.s_ld = align_up(Tmax > S ? Tmax : S, kAlign);
  w.r_ld = align_up(g.P > 2 * g.R + 1 ? g.P : 2 * g.R + 1, kAlign);
  w.dh_ld = align_up(g.D, kAlign);
  w.h = take(B * w.d_ld);
  w.f = take(B * w.d_ld);
  w.y = take(B * w.d_ld);
  w.att = take(B * w.d_ld);
  w.qkv = take(B * w.qkv_ld);
  w.a = take(B * w.d_ld);
  w.u = take(B * w.f_ld);
  w.q2 = take(B * w.d_ld);
  w.logit = take(B * w.v_ld);
  const int64_t tasks = B * g.H;
  w.scores = take(tasks * w.s_ld);
  w.rel = take(tasks * w.r_ld);
  w.q = take(tasks * w.dh_ld);
  w.acc = take(tasks * w.dh_ld);
  w.total = at;
  return w;
}

}  // namespace decode
}  // namespace enigma_fast
