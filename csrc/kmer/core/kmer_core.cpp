// Torch-free k-mer tokenization core: the loops behind kmer_core.h. Hot loops are specialised on whether the
// table is dense and, for the common k, on k itself so the per-window byte loop unrolls.
#include "kmer/core/kmer_core.h"

#include <algorithm>
#include <cstring>

namespace enigma_fast {
namespace kmer {

BaseLut make_base_lut(bool fold_case) {
  BaseLut l;
  std::memset(l.code, kBad, sizeof(l.code));
  const char* bases = "ACGT";
  for (uint8_t c = 0; c < 4; ++c) {
    l.code[static_cast<uint8_t>(bases[c])] = c;
    if (fold_case) l.code[static_cast<uint8_t>(bases[c] - 'A' + 'a')] = c;
  }
  return l;
}

namespace {

std::vector<uint8_t> make_pair_lut(bool fold_case) {
  const BaseLut l = make_base_lut(fold_case);
  std::vector<uint8_t> t(kPairLutSize);
  for (unsigned x = 0; x < 65536; ++x) {
    const unsigned a = l.code[x & 255u], b = l.code[x >> 8];
    t[x] = static_cast<uint8_t>(((a | b) & kBad) ? kPairBad : ((a << 2) | b));
  }
  for (unsigned x = 0; x < 256; ++x) t[65536 + x] = (l.code[x] & kBad) ? kPairBad : l.code[x];
  return t;
}

}  // namespace

const uint8_t* pair_lut(bool fold_case) {
  // Function-local statics: built on first use, thread-safe.
  static const std::vector<uint8_t> tables[2] = {make_pair_lut(false), make_pair_lut(true)};
  return tables[fold_case ? 1 : 0].data();
}

int64_t code_of(const uint8_t* s, int64_t len, const BaseLut& lut) {
  uint64_t code = 0;
  unsigned bad = 0;
  for (int64_t j = 0; j < len; ++j) {
    const unsigned c = lut.code[s[j]];
    code = (code << 2) | (c & 3u);
    bad |= c;
  }
  return (bad & kBad) ? -1 : static_cast<int64_t>(code);
}

std::string string_of(uint64_t code, int k) {
  std::string out(static_cast<size_t>(k), 'A');
  for (int j = k - 1; j >= 0; --j) {
    out[static_cast<size_t>(j)] = "ACGT"[code & 3u];
    code >>= 2;
  }
  return out;
}

namespace {

// Windows that do not overlap (stride >= k): each window's k bytes are read once. K > 0 fixes k at compile time.
template <typename Out, bool Dense, int K>
int64_t windows_jump(const uint8_t* __restrict__ s, int64_t n_bytes, const Lookup& v, int64_t w0, int64_t w1,
                     Out* __restrict__ out) {
  // Everything the loop reads lives in locals: stores through `out` cannot then force reloads of `v`.
  const int k = K > 0 ? K : v.k;
  const int64_t stride = v.stride;
  const uint8_t* __restrict__ lut = v.lut;
  const int32_t* __restrict__ dense = v.dense;
  const int64_t missing_id = v.missing_id;
  int64_t missing = 0;
  const uint8_t* p = s + w0 * stride;
  int64_t w = w0;
  if constexpr (K > 0 && K <= 8) {
    // One 8-byte load per window and a pair table: half the table lookups. Windows whose 8-byte load would
    // run past the sequence end (the last few) take the byte loop below.
    const uint8_t* __restrict__ plut = v.pair_lut;
    if (Dense && plut != nullptr && n_bytes >= 8) {
      const int64_t w_fast = std::min<int64_t>(w1, (n_bytes - 8) / stride + 1);
      if (w < w_fast) {
        // Pointer-bounded loop: few live values, so that nothing of the loop is kept on the stack.
        Out* o = out + (w - w0);
        Out* const o_end = out + (w_fast - w0);
        int64_t any = 0;  // sign bit set when some window had no id
        do {
          uint64_t word;
          std::memcpy(&word, p, 8);
          uint64_t code = 0;
          unsigned bad = 0;
          for (int j = 0; j + 1 < K; j += 2) {
            const unsigned e = plut[(word >> (8 * j)) & 0xFFFFu];
            code = (code << 4) | (e & 15u);
            bad |= e;
          }
          if constexpr (K % 2 == 1) {
            const unsigned c = plut[65536 + ((word >> (8 * (K - 1))) & 0xFFu)];
            code = (code << 2) | (c & 3u);
            bad |= c;
          }
          // code < 4^K whatever the bytes, so the load is always in range; bad windows then read as -1.
          const int64_t id = (bad & kPairBad) ? -1 : dense[code];
          any |= id;
          *o = static_cast<Out>(id);
          p += stride;
        } while (++o != o_end);
        if (any < 0) {  // rare: count the misses of this stretch, or give them the missing id
          for (Out* q = out + (w - w0); q != o_end; ++q) {
            if (*q >= 0) continue;
            if (missing_id >= 0)
              *q = static_cast<Out>(missing_id);
            else
              ++missing;
          }
        }
        w = w_fast;
      }
    }
  }
  for (; w < w1; ++w, p += stride) {
    uint64_t code = 0;
    unsigned bad = 0;
    for (int j = 0; j < k; ++j) {
      const unsigned c = lut[p[j]];
      code = (code << 2) | (c & 3u);
      bad |= c;
    }
    int64_t id = -1;
    if (!(bad & kBad)) {
      if constexpr (Dense)
        id = dense[code];
      else
        id = find_hashed(v.hash_slots, v.hash_bits, static_cast<int64_t>(code));
    }
    if (id < 0) id = missing_id;
    missing += id < 0;
    out[w - w0] = static_cast<Out>(id);
  }
  return missing;
}

// Overlapping windows (stride < k): the code rolls forward `stride` bytes per window; a window is all bases
// when the last non-base byte seen lies before its start.
template <typename Out, bool Dense>
int64_t windows_roll(const uint8_t* s, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  const int k = v.k;
  const int64_t stride = v.stride;
  const uint64_t mask = code_mask(k);
  const uint8_t* lut = v.lut;
  uint64_t code = 0;
  int64_t pos = w0 * stride;
  int64_t last_bad = pos - 1;
  int64_t missing = 0;
  for (int64_t w = w0; w < w1; ++w) {
    const int64_t i = w * stride;
    for (; pos < i + k; ++pos) {
      const unsigned c = lut[s[pos]];
      code = ((code << 2) | (c & 3u)) & mask;
      if (c & kBad) last_bad = pos;
    }
    int64_t id = -1;
    if (last_bad < i) {
      if constexpr (Dense)
        id = v.dense[code];
      else
        id = find_hashed(v.hash_slots, v.hash_bits, static_cast<int64_t>(code));
    }
    if (id < 0) id = v.missing_id;
    missing += id < 0;
    out[w - w0] = static_cast<Out>(id);
  }
  return missing;
}

template <typename Out, bool Dense>
int64_t windows_dispatch(const uint8_t* s, int64_t n, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  if (v.stride < v.k) return windows_roll<Out, Dense>(s, v, w0, w1, out);
  switch (v.k) {
    case 1: return windows_jump<Out, Dense, 1>(s, n, v, w0, w1, out);
    case 2: return windows_jump<Out, Dense, 2>(s, n, v, w0, w1, out);
    case 3: return windows_jump<Out, Dense, 3>(s, n, v, w0, w1, out);
    case 4: return windows_jump<Out, Dense, 4>(s, n, v, w0, w1, out);
    case 5: return windows_jump<Out, Dense, 5>(s, n, v, w0, w1, out);
    case 6: return windows_jump<Out, Dense, 6>(s, n, v, w0, w1, out);
    case 7: return windows_jump<Out, Dense, 7>(s, n, v, w0, w1, out);
    case 8: return windows_jump<Out, Dense, 8>(s, n, v, w0, w1, out);
    default: return windows_jump<Out, Dense, 0>(s, n, v, w0, w1, out);
  }
}

}  // namespace

template <typename Out>
int64_t encode_windows(const uint8_t* s, int64_t n, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  if (w1 <= w0) return 0;
  return v.dense != nullptr ? windows_dispatch<Out, true>(s, n, v, w0, w1, out)
                            : windows_dispatch<Out, false>(s, n, v, w0, w1, out);
}

template <typename Out>
int64_t encode_tail(const uint8_t* s, int64_t n, const Lookup& v, Out* out, Status& st) {
  const int64_t b = tail_begin(n, v.k, v.stride);
  const int64_t len = n - b;
  if (len <= 0) return 0;
  if (v.tail != nullptr && v.k <= kMaxDenseK) {
    BaseLut lut;
    std::memcpy(lut.code, v.lut, sizeof(lut.code));
    const int64_t code = code_of(s + b, len, lut);
    if (code >= 0) {
      const int64_t id = v.tail[tail_offset(len) + code];
      if (id >= 0) {
        out[0] = static_cast<Out>(id);
        return 1;
      }
    }
  }
  for (int64_t j = 0; j < len; ++j) {
    const int32_t id = v.char_ids[s[b + j]];
    if (id < 0) {
      st = Status{false, b + j, s[b + j]};
      return -1;
    }
    out[j] = static_cast<Out>(id);
  }
  return len;
}

template <typename Out>
Status expand_windows(const uint8_t* s, const Lookup& v, const Out* win, int64_t n_win, Out* out) {
  const int64_t c = cover(v.k, v.stride);
  Out* o = out;
  for (int64_t w = 0; w < n_win; ++w) {
    if (win[w] >= 0) {
      *o++ = win[w];
      continue;
    }
    const int64_t i = w * v.stride;
    for (int64_t j = 0; j < c; ++j) {
      const int32_t id = v.char_ids[s[i + j]];
      if (id < 0) return Status{false, i + j, s[i + j]};
      *o++ = static_cast<Out>(id);
    }
  }
  return Status{};
}

Status first_error(const uint8_t* s, int64_t n, const Lookup& v, const Status& tail) {
  const int64_t nw = num_windows(n, v.k, v.stride), c = cover(v.k, v.stride);
  constexpr int64_t kBlock = 4096;  // windows looked up at a time: a small buffer whatever the length
  std::vector<int64_t> win(static_cast<size_t>(std::min(nw, kBlock)));
  for (int64_t w0 = 0; w0 < nw; w0 += kBlock) {
    const int64_t w1 = std::min(nw, w0 + kBlock);
    if (encode_windows<int64_t>(s, n, v, w0, w1, win.data()) == 0) continue;
    for (int64_t w = w0; w < w1; ++w) {
      if (win[static_cast<size_t>(w - w0)] >= 0) continue;
      for (int64_t j = 0; j < c; ++j) {
        const int64_t i = w * v.stride + j;
        if (v.char_ids[s[i]] < 0) return Status{false, i, s[i]};
      }
    }
  }
  return tail;
}

int64_t encoded_length(const uint8_t* s, int64_t n, const Lookup& v, Status& st) {
  std::vector<int64_t> out;
  st = encode<int64_t>(s, n, v, out);
  return st.ok ? static_cast<int64_t>(out.size()) : -1;
}

template <typename Out>
Status encode(const uint8_t* s, int64_t n, const Lookup& v, std::vector<Out>& out) {
  const int64_t nw = num_windows(n, v.k, v.stride);
  std::vector<Out> win(static_cast<size_t>(nw));
  const int64_t missing = encode_windows<Out>(s, n, v, 0, nw, win.data());
  const int64_t c = cover(v.k, v.stride);
  out.assign(static_cast<size_t>(nw + missing * (c - 1) + v.k), Out(0));
  Status st = expand_windows<Out>(s, v, win.data(), nw, out.data());
  if (!st.ok) {
    out.clear();
    return st;
  }
  const int64_t body = nw + missing * (c - 1);
  const int64_t nt = encode_tail<Out>(s, n, v, out.data() + body, st);
  if (nt < 0) {
    out.clear();
    return st;
  }
  out.resize(static_cast<size_t>(body + nt));
  return st;
}

int64_t decoded_length(const int64_t* ids, int64_t n, const int64_t* offsets, int64_t vocab, int64_t* bad_index) {
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = ids[i];
    if (id < 0 || id >= vocab) {
      *bad_index = i;
      return -1;
    }
    total += offsets[id + 1] - offsets[id];
  }
  return total;
}

void decode(const int64_t* ids, int64_t n, const uint8_t* pieces, int64_t pieces_len, const int64_t* offsets,
            uint8_t* out, uint8_t* out_end) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = offsets[ids[i]], len = offsets[ids[i] + 1] - a;
    if (len <= 8 && a + 8 <= pieces_len && out_end - out >= 8) {
      uint64_t word;
      std::memcpy(&word, pieces + a, 8);
      std::memcpy(out, &word, 8);
    } else {
      std::memcpy(out, pieces + a, static_cast<size_t>(len));
    }
    out += len;
  }
}

void count_kmers(const uint8_t* s, int64_t n, int k, int stride, const BaseLut& lut, int64_t* counts,
                 int64_t* first, int64_t* other) {
  const int64_t nw = num_windows(n, k, stride);
  for (int64_t w = 0; w < nw; ++w) {
    const int64_t code = code_of(s + w * stride, k, lut);
    if (code < 0) {
      ++*other;
      continue;
    }
    if (counts[code]++ == 0) first[code] = w;
  }
}

int64_t PieceMap::find(const uint8_t* s, int64_t len) const {
  const auto it = map_.find(std::string(reinterpret_cast<const char*>(s), static_cast<size_t>(len)));
  return it == map_.end() ? -1 : it->second;
}

Status encode_general(const uint8_t* s, int64_t n, int k, int stride, const PieceMap& pieces,
                      const int32_t* char_ids, int64_t missing_id, std::vector<int64_t>& out) {
  out.clear();
  const int64_t nw = num_windows(n, k, stride), c = cover(k, stride);
  auto push_chars = [&](int64_t i, int64_t len) {
    for (int64_t j = 0; j < len; ++j) {
      const int32_t id = char_ids[s[i + j]];
      if (id < 0) return Status{false, i + j, s[i + j]};
      out.push_back(id);
    }
    return Status{};
  };
  for (int64_t w = 0; w < nw; ++w) {
    int64_t id = pieces.find(s + w * stride, k);
    if (id < 0) id = missing_id;
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    const Status st = push_chars(w * stride, c);
    if (!st.ok) return st;
  }
  const int64_t b = tail_begin(n, k, stride);
  if (b < n) {
    const int64_t id = pieces.find(s + b, n - b);
    if (id >= 0) {
      out.push_back(id);
    } else {
      const Status st = push_chars(b, n - b);
      if (!st.ok) return st;
    }
  }
  return Status{};
}

#define EF_INSTANTIATE(Out)                                                                                  \
  template int64_t encode_windows<Out>(const uint8_t*, int64_t, const Lookup&, int64_t, int64_t, Out*);     \
  template int64_t encode_tail<Out>(const uint8_t*, int64_t, const Lookup&, Out*, Status&);                 \
  template Status expand_windows<Out>(const uint8_t*, const Lookup&, const Out*, int64_t, Out*);            \
  template Status encode<Out>(const uint8_t*, int64_t, const Lookup&, std::vector<Out>&);
EF_INSTANTIATE(int32_t)
EF_INSTANTIATE(int64_t)
#undef EF_INSTANTIATE

}  // namespace kmer
}  // namespace enigma_fast
