// k-mer tokenization on the CPU: windows split across threads with at::parallel_for, each chunk writing its ids
// straight into the output tensor through the torch-free core. When some window is missing from the vocabulary
// (rare with a vocabulary built from the data) one extra serial pass expands it into fallback tokens.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <vector>

#include "kmer/kmer.h"

namespace enigma_fast {
namespace kmer {
namespace {

constexpr int64_t kGrainWindows = 1 << 16;

[[noreturn]] void fail_byte(const char* op, const Status& st, int64_t seq) {
  if (seq >= 0)
    TORCH_CHECK(false, op, ": sequence ", seq, " has byte ", byte_repr(st.byte), " at position ", st.position,
                " that has no token (not a vocabulary piece and no fallback id); use the 'unk' policy to map it to UNK");
  TORCH_CHECK(false, op, ": byte ", byte_repr(st.byte), " at position ", st.position,
              " has no token (not a vocabulary piece and no fallback id); use the 'unk' policy to map it to UNK");
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
  at::parallel_for(0, nw, kGrainWindows, [&](int64_t w0, int64_t w1) {
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
  const Lookup v = make_lookup(table, tail_table, char_ids, k, stride, missing_id, lut.code);
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

template <typename Out>
std::tuple<at::Tensor, at::Tensor> batch_impl(const uint8_t* s, const int64_t* off, int64_t nb, const Lookup& v,
                                              at::ScalarType dtype, int64_t pad_id, bool left_pad) {
  std::vector<std::vector<Out>> rows(static_cast<size_t>(nb));
  std::vector<Status> status(static_cast<size_t>(nb));
  at::parallel_for(0, nb, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      status[static_cast<size_t>(b)] = encode<Out>(s + off[b], off[b + 1] - off[b], v, rows[static_cast<size_t>(b)]);
  });
  int64_t t = 0;
  for (int64_t b = 0; b < nb; ++b) {
    if (!status[static_cast<size_t>(b)].ok) fail_byte("kmer_encode_batch", status[static_cast<size_t>(b)], b);
    t = std::max<int64_t>(t, static_cast<int64_t>(rows[static_cast<size_t>(b)].size()));
  }
  at::Tensor ids = at::empty({nb, t}, at::TensorOptions().dtype(dtype));
  at::Tensor lengths = at::empty({nb}, at::TensorOptions().dtype(at::kLong));
  Out* o = ids.data_ptr<Out>();
  int64_t* len = lengths.data_ptr<int64_t>();
  at::parallel_for(0, nb, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const auto& r = rows[static_cast<size_t>(b)];
      const int64_t l = static_cast<int64_t>(r.size());
      Out* row = o + b * t;
      const int64_t start = left_pad ? t - l : 0;
      std::fill(row, row + start, static_cast<Out>(pad_id));
      std::copy(r.begin(), r.end(), row + start);
      std::fill(row + start + l, row + t, static_cast<Out>(pad_id));
      len[b] = l;
    }
  });
  return {ids, lengths};
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
  const Lookup v = make_lookup(table, tail_table, char_ids, k, stride, missing_id, lut.code);
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
  TORCH_CHECK(offs[0] == 0 && offs[vocab] == pc.numel(), op, ": piece_offsets must run from 0 to len(pieces) = ",
              pc.numel(), ", got ", offs[0], " .. ", offs[vocab]);
  const int64_t n = idc.numel();
  // Fixed chunks: lengths per chunk, a prefix sum, then every chunk copies its pieces in parallel.
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads() * 4, n / 4096 + 1));
  std::vector<int64_t> start(static_cast<size_t>(chunks) + 1, 0), bad(static_cast<size_t>(chunks), -1);
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = n * c / chunks, b = n * (c + 1) / chunks;
      int64_t where = -1;
      const int64_t len = decoded_length(id + a, b - a, offs, vocab, &where);
      if (len < 0)
        bad[static_cast<size_t>(c)] = a + where;
      else
        start[static_cast<size_t>(c) + 1] = len;
    }
  });
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t i = bad[static_cast<size_t>(c)];
    TORCH_CHECK(i < 0, op, ": ids[", i, "] = ", id[i], " is out of range for a vocabulary of ", vocab, " ids");
    start[static_cast<size_t>(c) + 1] += start[static_cast<size_t>(c)];
  }
  at::Tensor out = at::empty({start[static_cast<size_t>(chunks)]}, pieces.options());
  uint8_t* o = out.data_ptr<uint8_t>();
  const uint8_t* p = pc.data_ptr<uint8_t>();
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t a = n * c / chunks, b = n * (c + 1) / chunks;
      decode(id + a, b - a, p, offs, o + start[static_cast<size_t>(c)]);
    }
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
