// k-mer op family: argument checks shared by the CPU and CUDA implementations, and the torch -> core view.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"
#include "kmer/core/kmer_core.h"

namespace enigma_fast {
namespace kmer {

void check_k_stride(int64_t k, int64_t stride, const char* op);

void check_bases(const at::Tensor& bases, const char* op);

void check_vocab(const at::Tensor& bases, const at::Tensor& table, const at::Tensor& tail_table,
                        const at::Tensor& char_ids, int64_t k, at::ScalarType dtype, const char* op);

// The core's view of the vocabulary tensors (host or device pointers, as the tensors live). `lut` is borrowed.
inline Lookup make_lookup(const at::Tensor& table, const at::Tensor& tail_table, const at::Tensor& char_ids,
                          int64_t k, int64_t stride, int64_t missing_id, const uint8_t* lut) {
  Lookup v;
  v.k = static_cast<int>(k);
  v.stride = static_cast<int>(stride);
  v.lut = lut;
  if (k <= kMaxDenseK) {
    v.dense = table.data_ptr<int32_t>();
  } else {
    const int64_t cap = table.size(0);
    int bits = 0;
    while ((int64_t(1) << bits) < cap) ++bits;
    v.hash_bits = bits;
    v.hash_slots = table.data_ptr<int64_t>();
  }
  v.tail = tail_table.numel() > 0 ? tail_table.data_ptr<int32_t>() : nullptr;
  v.char_ids = char_ids.data_ptr<int32_t>();
  v.missing_id = missing_id;
  return v;
}

// Raises the error for a byte at `pos` (of sequence `seq` of a batch, or of the one sequence when seq < 0) that
// has no token: neither a vocabulary piece nor a fallback id.
[[noreturn]] void fail_no_token(const char* op, uint8_t byte, int64_t pos, int64_t seq = -1);

inline std::string byte_repr(uint8_t b) {
  if (b >= 32 && b < 127) return std::string("'") + static_cast<char>(b) + "'";
  static const char* hex = "0123456789abcdef";
  return std::string("0x") + hex[b >> 4] + hex[b & 15];
}

}  // namespace kmer
}  // namespace enigma_fast
