// k-mer op family: argument checks shared by the CPU and CUDA implementations, and the torch -> core view.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/checks.h"
#include "kmer/core/kmer_core.h"

namespace enigma_fast {
namespace kmer {

inline void check_k_stride(int64_t k, int64_t stride, const char* op) {
  TORCH_CHECK(k >= 1 && k <= kMaxK, op, ": k must be in 1..", kMaxK, ", got ", k);
  TORCH_CHECK(stride >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(stride <= (int64_t(1) << 30), op, ": stride must be <= 2^30, got ", stride);
}

inline void check_bases(const at::Tensor& bases, const char* op) {
  TORCH_CHECK(bases.scalar_type() == at::kByte, op, ": bases must be uint8, got ", dtype_name(bases.scalar_type()));
  TORCH_CHECK(bases.dim() == 1, op, ": bases must be 1-D (n,), got shape ", bases.sizes());
  TORCH_CHECK(bases.numel() <= 1 || bases.stride(0) == 1, op, ": bases must be contiguous, got stride ",
              bases.stride(0));
}

inline void check_vocab(const at::Tensor& bases, const at::Tensor& table, const at::Tensor& tail_table,
                        const at::Tensor& char_ids, int64_t k, at::ScalarType dtype, const char* op) {
  check_same_device(bases, "bases", table, "table");
  check_same_device(bases, "bases", tail_table, "tail_table");
  check_same_device(bases, "bases", char_ids, "char_ids");
  if (k <= kMaxDenseK) {
    const int64_t want = dense_table_size(static_cast<int>(k));
    TORCH_CHECK(table.scalar_type() == at::kInt && table.dim() == 1 && table.size(0) == want, op,
                ": table must be int32 (4^k,) = (", want, ",) for k = ", k, ", got ", dtype_name(table.scalar_type()),
                " ", table.sizes());
    const int64_t tail = tail_table_size(static_cast<int>(k));
    TORCH_CHECK(tail_table.scalar_type() == at::kInt && tail_table.dim() == 1 &&
                    (tail_table.size(0) == tail || tail_table.size(0) == 0),
                op, ": tail_table must be int32 ((4^k - 4) / 3,) = (", tail, ",) or (0,) for k = ", k, ", got ",
                dtype_name(tail_table.scalar_type()), " ", tail_table.sizes());
  } else {
    TORCH_CHECK(table.scalar_type() == at::kLong && table.dim() == 2 && table.size(0) == 2, op,
                ": table must be int64 (2, V) (sorted codes; ids) for k = ", k, " > ", kMaxDenseK, ", got ",
                dtype_name(table.scalar_type()), " ", table.sizes());
    TORCH_CHECK(tail_table.numel() == 0, op, ": tail_table must be empty for k > ", kMaxDenseK, ", got ",
                tail_table.sizes());
  }
  TORCH_CHECK(table.is_contiguous() && tail_table.is_contiguous(), op, ": table and tail_table must be contiguous");
  TORCH_CHECK(char_ids.scalar_type() == at::kInt && char_ids.dim() == 1 && char_ids.size(0) == 256 &&
                  char_ids.is_contiguous(),
              op, ": char_ids must be contiguous int32 (256,), got ", dtype_name(char_ids.scalar_type()), " ",
              char_ids.sizes());
  TORCH_CHECK(dtype == at::kLong || dtype == at::kInt, op, ": dtype must be int64 or int32, got ", dtype_name(dtype));
}

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
    v.n_sorted = table.size(1);
    v.sorted_codes = table.data_ptr<int64_t>();
    v.sorted_ids = v.sorted_codes + v.n_sorted;
  }
  v.tail = tail_table.numel() > 0 ? tail_table.data_ptr<int32_t>() : nullptr;
  v.char_ids = char_ids.data_ptr<int32_t>();
  v.missing_id = missing_id;
  return v;
}

inline std::string byte_repr(uint8_t b) {
  if (b >= 32 && b < 127) return std::string("'") + static_cast<char>(b) + "'";
  static const char* hex = "0123456789abcdef";
  return std::string("0x") + hex[b >> 4] + hex[b & 15];
}

}  // namespace kmer
}  // namespace enigma_fast
