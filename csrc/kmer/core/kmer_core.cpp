// Torch-free k-mer tokenization core: the loops behind kmer_core.h. Hot loops are specialised on whether the
// table is dense and, for the common k, on k itself so the per-window byte loop unrolls.
#include "kmer/core/kmer_core.h"

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
int64_t windows_jump(const uint8_t* s, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  const int k = K > 0 ? K : v.k;
  const int64_t stride = v.stride;
  const uint8_t* lut = v.lut;
  int64_t missing = 0;
  for (int64_t w = w0; w < w1; ++w) {
    const uint8_t* p = s + w * stride;
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
        id = v.dense[code];
      else
        id = find_sorted(v.sorted_codes, v.sorted_ids, v.n_sorted, static_cast<int64_t>(code));
    }
    if (id < 0) id = v.missing_id;
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
        id = find_sorted(v.sorted_codes, v.sorted_ids, v.n_sorted, static_cast<int64_t>(code));
    }
    if (id < 0) id = v.missing_id;
    missing += id < 0;
    out[w - w0] = static_cast<Out>(id);
  }
  return missing;
}

template <typename Out, bool Dense>
int64_t windows_dispatch(const uint8_t* s, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  if (v.stride < v.k) return windows_roll<Out, Dense>(s, v, w0, w1, out);
  switch (v.k) {
    case 1: return windows_jump<Out, Dense, 1>(s, v, w0, w1, out);
    case 2: return windows_jump<Out, Dense, 2>(s, v, w0, w1, out);
    case 3: return windows_jump<Out, Dense, 3>(s, v, w0, w1, out);
    case 4: return windows_jump<Out, Dense, 4>(s, v, w0, w1, out);
    case 5: return windows_jump<Out, Dense, 5>(s, v, w0, w1, out);
    case 6: return windows_jump<Out, Dense, 6>(s, v, w0, w1, out);
    case 7: return windows_jump<Out, Dense, 7>(s, v, w0, w1, out);
    case 8: return windows_jump<Out, Dense, 8>(s, v, w0, w1, out);
    default: return windows_jump<Out, Dense, 0>(s, v, w0, w1, out);
  }
}

}  // namespace

template <typename Out>
int64_t encode_windows(const uint8_t* s, int64_t n, const Lookup& v, int64_t w0, int64_t w1, Out* out) {
  (void)n;
  if (w1 <= w0) return 0;
  return v.dense != nullptr ? windows_dispatch<Out, true>(s, v, w0, w1, out)
                            : windows_dispatch<Out, false>(s, v, w0, w1, out);
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

void decode(const int64_t* ids, int64_t n, const uint8_t* pieces, const int64_t* offsets, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = offsets[ids[i]], len = offsets[ids[i] + 1] - a;
    if (len == 1) {
      *out++ = pieces[a];
    } else {
      std::memcpy(out, pieces + a, static_cast<size_t>(len));
      out += len;
    }
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
