// k-mer tokenization on the CPU: windows split across threads, each chunk writing its ids straight into the
// output tensor through the torch-free core. When some window is missing from the vocabulary (rare with a
// vocabulary built from the data) one extra serial pass expands it into fallback tokens.
//
// Threads: the shared pool (common/cpu_parallel.h: the caller never waits for a worker that has not started, so
// extra threads never make a call slower), with every grain derived from the measured cost of its work
// (constants below): a chunk holds at least kMinChunkNs = 50 us of work, so small inputs (short sequences, small
// batches, short decodes) stay on the calling thread whatever the thread count.
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <vector>

#include "common/cpu_parallel.h"
#include "kmer/kmer.h"

namespace enigma_fast {
namespace kmer {
namespace {

// ---- costs, measured; they set the grain of every parallel loop (docs/tokenizers.md, "Threads") ----
//
// Measured on a 2-core AMD EPYC (Zen 4) VM, one thread, baseline build (the k-mer kernels are the same code at
// every CPU level), the shipped genome (2.46 Mbp), medians of 11 interleaved rounds with the best round in
// brackets, at a quiet moment (load average 1.3 falling, both cores idle before the run):
//   encode, dense table, stride >= k, k <= 8 (two bases per table lookup), ns per base read:
//     k = 8: 0.39 (0.28) with int32 ids, 0.51 (0.40) int64; k = 5: 0.43 (0.37); k = 3: 0.60 (0.44); k = 1: 0.9 (0.65)
//   encode, every other path (a lookup per byte), ns per base read: k = 5 stride 1 (rolling) 1.6 (1.44);
//     k = 10: 2.6 (1.7); hashed k = 16: 7 (4.5); k = 12 stride 1: 28 (22, the 64 MiB table misses the cache)
//   decode (core), ns per token: lengths pass 0.57-0.68 (0.55); copy pass 1.2 (1.03) for 5-byte pieces,
//     3.4 (3.0) for 1-byte pieces
//   encode_batch, per row beyond its windows: 15 (12) ns in all for 200,000 empty rows, about a third of it in
//     the lengths pass; padding ids 0.53 (0.42) ns each into a 16 MB output (memory-bound; less when cached)
//   a parallel region on 2 threads, an empty one and ones of 5-100 us of work timed against the same work on one
//     thread: 0.7-1.4 us back to back, 5-13 us after 2 ms idle (at::parallel_for, libgomp); the shared pool's
//     wake-up of a sleeping worker 10-30 us (docs/kernels.md)
// grain_for(ns per unit) gives chunks of at least kMinChunkNs = 50 us (common/core/parallel.h), several times a
// region's cost. The constants are the cheapest figures (best rounds) of each path: underestimated costs only make
// chunks longer than needed, never a parallel call that costs more than it saves.
constexpr double kEncodePairNsPerBase = 0.28;
constexpr double kEncodeNsPerBase = 1.4;
constexpr double kDecodeLengthNsPerToken = 0.55;
constexpr double kDecodeCopyNsPerToken = 1.0;
constexpr double kBatchLengthNsPerRow = 4.0;
constexpr double kBatchRowNs = 8.0;
constexpr double kPadNsPerId = 0.1;

// Calls f over [begin, end) in chunks of at least kMinChunkNs of units costing unit_ns each, on the pool.
template <typename F>
void par_for(int64_t begin, int64_t end, double unit_ns, const F& f) {
  cpu_parallel_for(begin, end, grain_for(unit_ns), f);
}

// Cost of one window of the encode loops: the bases it reads times the per-base cost of its path.
double window_ns(const Lookup& v) {
  const bool pair_path = v.dense != nullptr && v.pair_lut != nullptr && v.stride >= v.k && v.k <= 8;
  return (pair_path ? kEncodePairNsPerBase : kEncodeNsPerBase) * static_cast<double>(cover(v.k, v.stride));
}

[[noreturn]] void fail_byte(const char* op, const Status& st, int64_t seq) {
  fail_no_token(op, st.byte, st.position, seq);
}

template <typename Out>
at::Tensor encode_impl(const uint8_t* s, int64_t n, const Lookup& v, at::ScalarType dtype) {
  const int64_t nw = num_windows(n, v.k, v.stride);
  Out tail[kMaxK];
  Status st;
  const int64_t nt = encode_tail<Out>(s, n, v, tail, st);
  if (nt < 0) fail_byte("kmer_encode", st, -1);
  at::Tensor out = at::empty({nw + nt}, at::TensorOptions().dtype(dtype));
  Out* o = out.data_ptr<Out>();
  std::atomic<int64_t> missing{0};
  par_for(0, nw, window_ns(v), [&](int64_t w0, int64_t w1) {
    const int64_t m = encode_windows<Out>(s, n, v, w0, w1, o + w0);
    if (m) missing.fetch_add(m, std::memory_order_relaxed);
  });
  const int64_t m = missing.load();
  if (m > 0) {
    const int64_t body = nw + m * (cover(v.k, v.stride) - 1);
    at::Tensor full = at::empty({body + nt}, out.options());
    Out* f = full.data_ptr<Out>();
    st = expand_windows<Out>(s, v, o, nw, f);
    if (!st.ok) fail_byte("kmer_encode", st, -1);
    out = full;
    o = f + body;
  } else {
    o += nw;
  }
  std::copy(tail, tail + nt, o);
  return out;
}

at::Tensor kmer_encode_cpu(const at::Tensor& bases, const at::Tensor& table, const at::Tensor& tail_table,
                           const at::Tensor& char_ids, int64_t k, int64_t stride, int64_t missing_id, bool fold_case,
                           at::ScalarType dtype) {
  const char* op = "kmer_encode";
  check_k_stride(k, stride, op);
  check_bases(bases, op);
  check_vocab(bases, table, tail_table, char_ids, k, dtype, op);
  const BaseLut lut = make_base_lut(fold_case);
  Lookup v = make_lookup(table, tail_table, char_ids, k, stride, missing_id, lut.code);
  v.pair_lut = pair_lut(fold_case);
  const uint8_t* s = bases.data_ptr<uint8_t>();
  return dtype == at::kLong ? encode_impl<int64_t>(s, bases.numel(), v, dtype)
                            : encode_impl<int32_t>(s, bases.numel(), v, dtype);
}

void check_offsets(const at::Tensor& bases, const at::Tensor& offsets, const char* op) {
  TORCH_CHECK(offsets.device().is_cpu() && offsets.scalar_type() == at::kLong && offsets.dim() == 1 &&
                  offsets.size(0) >= 1 && offsets.is_contiguous(),
              op, ": offsets must be a contiguous CPU int64 (B+1,) tensor, got ", dtype_name(offsets.scalar_type()),
              " ", offsets.sizes(), " on ", offsets.device());
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t b = offsets.size(0) - 1;
  TORCH_CHECK(off[0] >= 0 && off[b] <= bases.numel(), op, ": offsets must lie in [0, ", bases.numel(),
              "], got first ", off[0], " and last ", off[b]);
  for (int64_t i = 0; i < b; ++i)
    TORCH_CHECK(off[i] <= off[i + 1], op, ": offsets must be non-decreasing, got offsets[", i, "] = ", off[i],
                " > offsets[", i + 1, "] = ", off[i + 1]);
}

// Batch encode. Most rows have no window missing from the vocabulary, so their length is known before encoding
// (windows + tail tokens): the rows are encoded straight into their place in the padded output, and only rows
// where some window missed (when missing_id < 0) are encoded again through the core's general path and put in
// place afterwards (re-laid out when one of them outgrows the widest row).
//
// Parallel work is cut by cost, not by rows: row b is u_b = (its overhead in window units) + (its windows) units,
// laid end to end; a chunk of units covers whole rows or a stretch of a long row's windows, so many short rows
// share a thread and one long row among short ones is split across threads.
template <typename Out>
std::tuple<at::Tensor, at::Tensor> batch_impl(const uint8_t* s, const int64_t* off, int64_t nb, const Lookup& v,
                                              at::ScalarType dtype, int64_t pad_id, bool left_pad) {
  const char* op = "kmer_encode_batch";
  const size_t B = static_cast<size_t>(nb);
  std::vector<int64_t> nw(B), len(B);
  std::atomic<int64_t> first_bad{nb};  // the first row whose tail has a byte without a token
  // Pass 1: windows and tail tokens of every row (the tail decides whether it is one piece or fallback bytes).
  par_for(0, nb, kBatchLengthNsPerRow, [&](int64_t b0, int64_t b1) {
    int64_t last_n = -1, last_nw = 0;  // reads often share a length: one division per length
    Out tail[kMaxK];
    Status st;
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = off[b + 1] - off[b];
      if (n != last_n) {
        last_n = n;
        last_nw = num_windows(n, v.k, v.stride);
      }
      const size_t i = static_cast<size_t>(b);
      nw[i] = last_nw;
      int64_t nt = 0;
      if (last_nw * v.stride < n) {
        nt = encode_tail<Out>(s + off[b], n, v, tail, st);
        if (nt < 0) {
          nt = 0;
          int64_t seen = first_bad.load(std::memory_order_relaxed);
          while (b < seen && !first_bad.compare_exchange_weak(seen, b, std::memory_order_relaxed)) {
          }
        }
      }
      len[i] = last_nw + nt;
    }
  });
  int64_t t = 0;
  for (int64_t b = 0; b < nb; ++b) t = std::max(t, len[static_cast<size_t>(b)]);
  if (first_bad.load() < nb) {
    // Error path: the first row that fails, as a row-by-row encode finds it (windows before the tail).
    std::vector<Out> scratch;
    for (int64_t b = 0; b <= first_bad.load(); ++b) {
      const Status st = encode<Out>(s + off[b], off[b + 1] - off[b], v, scratch);
      if (!st.ok) fail_byte(op, st, b);
    }
    TORCH_INTERNAL_ASSERT(false, op, ": the tail of sequence ", first_bad.load(), " has no token but encodes");
  }
  // Units: row b spans [units[b], units[b + 1]); its last nw[b] units are its windows.
  const double wns = window_ns(v), per_wns = 1.0 / wns;
  std::vector<int64_t> units(B + 1, 0);
  for (size_t i = 0; i < B; ++i) {
    const double row_ns = kBatchRowNs + kPadNsPerId * static_cast<double>(t - len[i]);
    units[i + 1] = units[i] + 1 + static_cast<int64_t>(row_ns * per_wns) + nw[i];
  }
  at::Tensor ids = at::empty({nb, t}, at::TensorOptions().dtype(dtype));
  at::Tensor lengths = at::empty({nb}, at::TensorOptions().dtype(at::kLong));
  Out* o = ids.data_ptr<Out>();
  int64_t* lens = lengths.data_ptr<int64_t>();
  const Out pad = static_cast<Out>(pad_id);
  std::unique_ptr<std::atomic<uint8_t>[]> missing(new std::atomic<uint8_t>[B]());  // 1: a window missed
  // Pass 2: every row in place, as if no window missed.
  par_for(0, units[B], wns, [&](int64_t u0, int64_t u1) {
    int64_t b = std::upper_bound(units.begin(), units.end(), u0) - units.begin() - 1;
    for (; b < nb && units[static_cast<size_t>(b)] < u1; ++b) {
      const size_t i = static_cast<size_t>(b);
      const int64_t n = off[b + 1] - off[b];
      Out* row = o + b * t;
      const int64_t start = left_pad ? t - len[i] : 0;
      if (u0 <= units[i]) {  // this chunk holds the row's head: tail, padding and length
        Status st;
        if (len[i] > nw[i]) encode_tail<Out>(s + off[b], n, v, row + start + nw[i], st);
        std::fill(row, row + start, pad);
        std::fill(row + start + len[i], row + t, pad);
        lens[b] = len[i];
      }
      const int64_t first_window = units[i + 1] - nw[i];
      const int64_t w0 = std::max(u0, first_window) - first_window;
      const int64_t w1 = std::min(u1, units[i + 1]) - first_window;
      if (w0 < w1) {
        const int64_t m = encode_windows<Out>(s + off[b], n, v, w0, w1, row + start + w0);
        if (m) missing[i].store(1, std::memory_order_relaxed);
      }
    }
  });
  std::vector<int64_t> redo;
  for (int64_t b = 0; b < nb; ++b)
    if (missing[static_cast<size_t>(b)].load(std::memory_order_relaxed)) redo.push_back(b);
  if (redo.empty()) return {ids, lengths};

  // Pass 3 (rows with missing windows): the general path, then the rows in place.
  const int64_t nr = static_cast<int64_t>(redo.size());
  std::vector<std::vector<Out>> rows(redo.size());
  std::vector<Status> status(redo.size());
  int64_t redo_bases = 0;
  for (int64_t b : redo) redo_bases += off[b + 1] - off[b];
  const double redo_row_ns = kBatchRowNs + kEncodeNsPerBase * static_cast<double>(redo_bases) / static_cast<double>(nr);
  par_for(0, nr, redo_row_ns, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = redo[static_cast<size_t>(r)];
      status[static_cast<size_t>(r)] = encode<Out>(s + off[b], off[b + 1] - off[b], v, rows[static_cast<size_t>(r)]);
    }
  });
  int64_t t_new = t;
  for (int64_t r = 0; r < nr; ++r) {
    if (!status[static_cast<size_t>(r)].ok) fail_byte(op, status[static_cast<size_t>(r)], redo[static_cast<size_t>(r)]);
    t_new = std::max<int64_t>(t_new, static_cast<int64_t>(rows[static_cast<size_t>(r)].size()));
  }
  std::vector<int64_t> redo_of(B, -1);
  for (int64_t r = 0; r < nr; ++r) redo_of[static_cast<size_t>(redo[static_cast<size_t>(r)])] = r;
  // Rows are rewritten in place when the width holds, else every row moves to the wider output.
  at::Tensor out = t_new == t ? ids : at::empty({nb, t_new}, ids.options());
  Out* f = out.data_ptr<Out>();
  auto place = [&](int64_t b, const Out* src, int64_t l) {
    Out* row = f + b * t_new;
    const int64_t start = left_pad ? t_new - l : 0;
    std::copy(src, src + l, row + start);
    std::fill(row, row + start, pad);
    std::fill(row + start + l, row + t_new, pad);
    lens[b] = l;
  };
  if (t_new == t) {
    for (int64_t r = 0; r < nr; ++r) {
      const auto& row = rows[static_cast<size_t>(r)];
      place(redo[static_cast<size_t>(r)], row.data(), static_cast<int64_t>(row.size()));
    }
    return {out, lengths};
  }
  par_for(0, nb, kBatchRowNs + kPadNsPerId * static_cast<double>(t_new), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r = redo_of[static_cast<size_t>(b)];
      if (r >= 0) {
        const auto& row = rows[static_cast<size_t>(r)];
        place(b, row.data(), static_cast<int64_t>(row.size()));
      } else {
        const int64_t l = len[static_cast<size_t>(b)];
        place(b, o + b * t + (left_pad ? t - l : 0), l);
      }
    }
  });
  return {out, lengths};
}

std::tuple<at::Tensor, at::Tensor> kmer_encode_batch_cpu(const at::Tensor& bases, const at::Tensor& offsets,
                                                         const at::Tensor& table, const at::Tensor& tail_table,
                                                         const at::Tensor& char_ids, int64_t k, int64_t stride,
                                                         int64_t missing_id, bool fold_case, at::ScalarType dtype,
                                                         int64_t pad_id, bool left_pad) {
  const char* op = "kmer_encode_batch";
  check_k_stride(k, stride, op);
  check_bases(bases, op);
  check_vocab(bases, table, tail_table, char_ids, k, dtype, op);
  check_offsets(bases, offsets, op);
  const BaseLut lut = make_base_lut(fold_case);
  Lookup v = make_lookup(table, tail_table, char_ids, k, stride, missing_id, lut.code);
  v.pair_lut = pair_lut(fold_case);
  const uint8_t* s = bases.data_ptr<uint8_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t nb = offsets.size(0) - 1;
  return dtype == at::kLong ? batch_impl<int64_t>(s, off, nb, v, dtype, pad_id, left_pad)
                            : batch_impl<int32_t>(s, off, nb, v, dtype, pad_id, left_pad);
}

at::Tensor kmer_decode_cpu(const at::Tensor& ids, const at::Tensor& pieces, const at::Tensor& piece_offsets) {
  const char* op = "kmer_decode";
  TORCH_CHECK(ids.scalar_type() == at::kLong && ids.dim() == 1, op, ": ids must be int64 (T,), got ",
              dtype_name(ids.scalar_type()), " ", ids.sizes());
  TORCH_CHECK(pieces.scalar_type() == at::kByte && pieces.dim() == 1, op, ": pieces must be uint8 (P,), got ",
              dtype_name(pieces.scalar_type()), " ", pieces.sizes());
  TORCH_CHECK(piece_offsets.scalar_type() == at::kLong && piece_offsets.dim() == 1 && piece_offsets.size(0) >= 1, op,
              ": piece_offsets must be int64 (V+1,), got ", dtype_name(piece_offsets.scalar_type()), " ",
              piece_offsets.sizes());
  check_same_device(ids, "ids", pieces, "pieces");
  check_same_device(ids, "ids", piece_offsets, "piece_offsets");
  const at::Tensor idc = ids.contiguous(), pc = pieces.contiguous(), oc = piece_offsets.contiguous();
  const int64_t* id = idc.data_ptr<int64_t>();
  const int64_t* offs = oc.data_ptr<int64_t>();
  const int64_t vocab = oc.size(0) - 1;
  TORCH_CHECK(offs[0] == 0 && offs[vocab] <= pc.numel(), op, ": piece_offsets must run from 0 to at most len(pieces) = ",
              pc.numel(), ", got ", offs[0], " .. ", offs[vocab]);
  for (int64_t i = 0; i < vocab; ++i)
    TORCH_CHECK(offs[i] <= offs[i + 1], op, ": piece_offsets must be non-decreasing, got piece_offsets[", i, "] = ",
                offs[i], " > piece_offsets[", i + 1, "] = ", offs[i + 1]);
  const int64_t n = idc.numel();
  // Fixed blocks of tokens: their decoded lengths, a prefix sum, then every block copies its pieces. The blocks
  // only fix where outputs start; a chunk of the parallel loops is a run of blocks (grain from the measured cost).
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<int64_t> start(static_cast<size_t>(blocks) + 1, 0), bad(static_cast<size_t>(blocks), -1);
  const double block_tokens = static_cast<double>(std::min(n, kBlock));
  par_for(0, blocks, kDecodeLengthNsPerToken * block_tokens, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = c * kBlock, b = std::min(n, a + kBlock);
      int64_t where = -1;
      const int64_t len = decoded_length(id + a, b - a, offs, vocab, &where);
      if (len < 0)
        bad[static_cast<size_t>(c)] = a + where;
      else
        start[static_cast<size_t>(c) + 1] = len;
    }
  });
  for (int64_t c = 0; c < blocks; ++c) {
    const int64_t i = bad[static_cast<size_t>(c)];
    TORCH_CHECK(i < 0, op, ": ids[", i, "] = ", id[i], " is out of range for a vocabulary of ", vocab, " ids");
    start[static_cast<size_t>(c) + 1] += start[static_cast<size_t>(c)];
  }
  at::Tensor out = at::empty({start[static_cast<size_t>(blocks)]}, pieces.options());
  uint8_t* o = out.data_ptr<uint8_t>();
  const uint8_t* p = pc.data_ptr<uint8_t>();
  par_for(0, blocks, kDecodeCopyNsPerToken * block_tokens, [&](int64_t c0, int64_t c1) {
    // Consecutive blocks write consecutive output: one decode call over the whole stretch.
    const int64_t a = c0 * kBlock, b = std::min(n, c1 * kBlock);
    decode(id + a, b - a, p, pc.numel(), offs, o + start[static_cast<size_t>(c0)], o + start[static_cast<size_t>(c1)]);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> kmer_count_cpu(const at::Tensor& bases, const at::Tensor& offsets,
                                                              int64_t k, int64_t stride, bool fold_case) {
  const char* op = "kmer_count";
  check_k_stride(k, stride, op);
  TORCH_CHECK(k <= kMaxDenseK, op, ": k must be <= ", kMaxDenseK, " for dense counting, got ", k);
  check_bases(bases, op);
  check_offsets(bases, offsets, op);
  const int64_t size = dense_table_size(static_cast<int>(k));
  at::Tensor counts = at::zeros({size}, at::TensorOptions().dtype(at::kLong));
  at::Tensor first = at::full({size}, -1, at::TensorOptions().dtype(at::kLong));
  at::Tensor other = at::zeros({}, at::TensorOptions().dtype(at::kLong));
  const BaseLut lut = make_base_lut(fold_case);
  const uint8_t* s = bases.data_ptr<uint8_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  int64_t* fst = first.data_ptr<int64_t>();
  int64_t* oth = other.data_ptr<int64_t>();
  // Window w of sequence b has ordinal base_b + w; one ordinal per sequence is left for its tail.
  int64_t base = 0;
  for (int64_t b = 0; b + 1 < offsets.size(0); ++b) {
    const int64_t n = off[b + 1] - off[b];
    const int64_t nw = num_windows(n, k, stride);
    for (int64_t w = 0; w < nw; ++w) {
      const int64_t code = code_of(s + off[b] + w * stride, k, lut);
      if (code < 0) {
        ++*oth;
        continue;
      }
      if (cnt[code]++ == 0) fst[code] = base + w;
    }
    base += nw + 1;
  }
  return {counts, first, other};
}

}  // namespace
}  // namespace kmer
}  // namespace enigma_fast

TORCH_LIBRARY_IMPL(enigma_fast, CPU, m) {
  m.impl("kmer_encode", &enigma_fast::kmer::kmer_encode_cpu);
  m.impl("kmer_encode_batch", &enigma_fast::kmer::kmer_encode_batch_cpu);
  m.impl("kmer_decode", &enigma_fast::kmer::kmer_decode_cpu);
  m.impl("kmer_count", &enigma_fast::kmer::kmer_count_cpu);
}
