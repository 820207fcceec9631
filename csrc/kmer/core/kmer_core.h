// Torch-free k-mer tokenization core, shared by the CPU op, the C++ unit tests and (its inline parts) the CUDA
// kernel. No allocation on the hot path; callers own every buffer.
//
// Tokenization of a byte string s of length n with k-mer length k (1..32) and stride t (>= 1):
//   windows   w = 0 .. W-1 at i = w*t, W = n >= k ? (n - k) / t + 1 : 0, each the k bytes s[i, i+k)
//   tail      s[min(n, W*t), n)            (always shorter than k; bytes a stride > k skips are dropped)
//   cover     c = min(k, t)                 bytes of s a window token stands for when decoding
// Each window becomes one token: the id of its k-mer (2-bit code 0..4^k-1 looked up in a dense table for
// k <= 12, or in an open-addressing hash table of codes for longer k), or, when the k-mer is not in the vocabulary (or holds a byte
// other than A/C/G/T), either a fixed `missing_id` (lossy UNK policy) or its c covered bytes as single-byte
// fallback tokens. The tail becomes one token when it is itself a vocabulary piece (k <= 12), else one fallback
// token per byte. Decoding concatenates each token's piece (a k-mer token's first c bytes, a fallback token's
// byte), so encode -> decode is the identity for every stride t <= k under the fallback policy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#if defined(__CUDACC__)
#define EF_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define EF_HD inline __attribute__((always_inline))
#else
#define EF_HD inline
#endif

namespace enigma_fast {
namespace kmer {

constexpr int kMaxK = 32;       // a k-mer code fits in 64 bits
constexpr int kMaxDenseK = 12;  // 4^12 = 16.7M int32 entries (64 MiB) is the largest dense table
constexpr uint8_t kBad = 4;     // lookup-table value of a byte that is not a base

// Byte -> 2-bit base code (A=0, C=1, G=2, T=3) or kBad. Lowercase a/c/g/t count as bases only with fold_case:
// by default a soft-masked k-mer is not the upper-case one (case is kept), so it goes to the fallback path.
struct BaseLut {
  uint8_t code[256];
};
BaseLut make_base_lut(bool fold_case);

EF_HD int64_t num_windows(int64_t n, int64_t k, int64_t stride) { return n >= k ? (n - k) / stride + 1 : 0; }
EF_HD int64_t tail_begin(int64_t n, int64_t k, int64_t stride) {
  const int64_t b = num_windows(n, k, stride) * stride;
  return b < n ? b : n;
}
EF_HD int64_t cover(int64_t k, int64_t stride) { return stride < k ? stride : k; }
EF_HD uint64_t code_mask(int k) { return k >= 32 ? ~uint64_t(0) : ((uint64_t(1) << (2 * k)) - 1); }
// Offset of the length-l pieces (1 <= l < k) in a tail table: lengths 1, 2, .. stacked, 4^l entries each.
EF_HD int64_t tail_offset(int64_t l) { return ((int64_t(1) << (2 * l)) - 4) / 3; }
inline int64_t tail_table_size(int k) { return k <= kMaxDenseK ? tail_offset(k) : 0; }
inline int64_t dense_table_size(int k) { return k <= kMaxDenseK ? (int64_t(1) << (2 * k)) : 0; }

// Byte pair -> both codes at once: the pair of bytes (b0, b1), read as the little-endian uint16 b0 | b1 << 8,
// maps to code(b0) << 2 | code(b1) in bits 0..3 and kPairBad when either is not a base. 256 single-byte entries
// follow the 65536 pair entries: code(b), or kPairBad when b is not a base. Built once per fold_case and shared
// (64 KiB each; the entries of base pairs sit in a few cache lines).
constexpr uint8_t kPairBad = 16;
constexpr int64_t kPairLutSize = 65536 + 256;
const uint8_t* pair_lut(bool fold_case);

// 2-bit code of s[0, len) (len <= 31) or -1 when a byte is not a base (under `lut`).
int64_t code_of(const uint8_t* s, int64_t len, const BaseLut& lut);
// The k-mer string of a code (most significant pair first).
std::string string_of(uint64_t code, int k);

// The vocabulary as the encoder sees it. Every pointer is borrowed.
struct Lookup {
  int k = 1;
  int stride = 1;
  const uint8_t* lut = nullptr;         // 256 entries, see BaseLut
  const uint8_t* pair_lut = nullptr;    // optional kPairLutSize entries from pair_lut(): two bytes per lookup (CPU)
  const int32_t* dense = nullptr;       // k <= 12: 4^k ids by code, -1 = not in the vocabulary
  const int64_t* hash_slots = nullptr;  // k > 12: 2^hash_bits slots of (code, id), id -1 = empty (hash_slot,
  int hash_bits = 0;                    // linear probing); code and id share a cache line

  const int32_t* tail = nullptr;        // tail_table_size(k) ids of pieces shorter than k, -1 = none; may be null
  const int32_t* char_ids = nullptr;    // 256 fallback ids by byte, -1 = byte not representable
  int64_t missing_id = -1;              // >= 0: a window not in the vocabulary becomes this id (lossy)
};

// Home slot of a code in a table of 2^bits slots: the top bits of a Fibonacci hash.
EF_HD uint64_t hash_slot(uint64_t code, int bits) {
  return bits == 0 ? 0 : (code * 0x9E3779B97F4A7C15ull) >> (64 - bits);
}

// Id of `code` in the hash table of (code, id) slots, -1 when absent. Probes at most every slot, so any table
// terminates.
EF_HD int64_t find_hashed(const int64_t* slots, int bits, int64_t code) {
  const uint64_t mask = (uint64_t(1) << bits) - 1;
  uint64_t h = hash_slot(static_cast<uint64_t>(code), bits);
  for (uint64_t probe = 0; probe <= mask; ++probe, h = (h + 1) & mask) {
    const int64_t id = slots[2 * h + 1];
    if (id < 0) return -1;
    if (slots[2 * h] == code) return id;
  }
  return -1;
}

// Id of the window whose code is `code` (valid = all bytes were bases), -1 when the vocabulary lacks it, or
// the missing id under the UNK policy.
EF_HD int64_t window_id(const Lookup& v, uint64_t code, bool valid) {
  int64_t id = -1;
  if (valid)
    id = v.dense != nullptr ? v.dense[code]
                            : find_hashed(v.hash_slots, v.hash_bits, static_cast<int64_t>(code));
  return id >= 0 ? id : v.missing_id;
}

// Window ids for windows [w0, w1) of s (length n) into out[0, w1 - w0), -1 for windows that need the fallback
// expansion. Returns how many did. Any stride; strides below k roll the code instead of re-reading bytes.
template <typename Out>
int64_t encode_windows(const uint8_t* s, int64_t n, const Lookup& v, int64_t w0, int64_t w1, Out* out);

// Result of a pass that can meet a byte with no token (fallback id -1).
struct Status {
  bool ok = true;
  int64_t position = -1;  // offset in the sequence of the offending byte
  uint8_t byte = 0;
};

// Tokens of the tail of s: writes at most k - 1 ids into out (which must have room), returns the count,
// or -1 with `st` set when a byte has no fallback id.
template <typename Out>
int64_t encode_tail(const uint8_t* s, int64_t n, const Lookup& v, Out* out, Status& st);

// Expands window ids (windows [0, W), -1 = fallback) into final tokens: out receives W + missing*(c-1) ids.
template <typename Out>
Status expand_windows(const uint8_t* s, const Lookup& v, const Out* win, int64_t n_win, Out* out);

// The first byte of s, in sequence order, that encode() can give no token, when the tail's own pass reported
// `tail` (a failed status, or ok): a byte of a window that needs the fallback expansion comes before any byte of the
// tail. Callers that encode the tail first (to size their output) report this, not the tail's status.
Status first_error(const uint8_t* s, int64_t n, const Lookup& v, const Status& tail);

// Number of tokens encode() writes for s; -1 (and `st`) when a byte has no fallback id.
int64_t encoded_length(const uint8_t* s, int64_t n, const Lookup& v, Status& st);

// Whole-sequence encode into a vector (single thread): windows, expansion, tail.
template <typename Out>
Status encode(const uint8_t* s, int64_t n, const Lookup& v, std::vector<Out>& out);

// Decoding: piece bytes of every id, concatenated in `pieces` with `offsets` (n_ids + 1 entries).
// Returns the total length, or -1 with *bad_index = the index in ids of the first id out of range.
int64_t decoded_length(const int64_t* ids, int64_t n, const int64_t* offsets, int64_t vocab, int64_t* bad_index);
// Writes exactly the decoded bytes into [out, out_end); pieces of <= 8 bytes are copied as one 8-byte word
// where both the piece buffer (pieces_len bytes) and the output leave room, later pieces overwriting the excess.
void decode(const int64_t* ids, int64_t n, const uint8_t* pieces, int64_t pieces_len, const int64_t* offsets,
            uint8_t* out, uint8_t* out_end);

// Counting for vocabulary building (k <= 12): counts[code] += 1 and first[code] = the first window index of
// each all-base window; windows with other bytes are skipped and counted in *other.
void count_kmers(const uint8_t* s, int64_t n, int k, int stride, const BaseLut& lut, int64_t* counts,
                 int64_t* first, int64_t* other);

// The general vocabulary map, for pieces the dense path cannot hold (pieces with N or IUPAC letters,
// lowercase pieces, tail pieces when k > 12): exact byte strings -> id.
class PieceMap {
 public:
  void insert(const std::string& piece, int64_t id) { map_[piece] = id; }
  int64_t find(const uint8_t* s, int64_t len) const;
  size_t size() const { return map_.size(); }

 private:
  std::unordered_map<std::string, int64_t> map_;
};

// The same tokenization as encode(), with every piece (window or tail) looked up in a PieceMap by its bytes:
// the slow general path for vocabularies the tables cannot hold.
Status encode_general(const uint8_t* s, int64_t n, int k, int stride, const PieceMap& pieces,
                      const int32_t* char_ids, int64_t missing_id, std::vector<int64_t>& out);

}  // namespace kmer
}  // namespace enigma_fast
