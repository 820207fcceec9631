// Definitions of the input checks declared in kmer/kmer.h. They live in a C++ translation unit of their own, so
// the CUDA sources (compiled through nvcc) only call them: every message that formats numbers or shapes is
// built by the host compiler's C++ code, never inside an nvcc-compiled file (tests/test_cuda_sources.py).
#include "kmer/kmer.h"

namespace enigma_fast {
namespace kmer {

void check_k_stride(int64_t k, int64_t stride, const char* op) {
  TORCH_CHECK(k >= 1 && k <= kMaxK, op, ": k must be in 1..", kMaxK, ", got ", k);
  TORCH_CHECK(stride >= 1, op, ": stride must be >= 1, got ", stride);
  TORCH_CHECK(stride <= (int64_t(1) << 30), op, ": stride must be <= 2^30, got ", stride);
}

void check_bases(const at::Tensor& bases, const char* op) {
  TORCH_CHECK(bases.scalar_type() == at::kByte, op, ": bases must be uint8, got ", dtype_name(bases.scalar_type()));
  TORCH_CHECK(bases.dim() == 1, op, ": bases must be 1-D (n,), got shape ", bases.sizes());
  TORCH_CHECK(bases.numel() <= 1 || bases.stride(0) == 1, op, ": bases must be contiguous, got stride ",
              bases.stride(0));
}

void check_vocab(const at::Tensor& bases, const at::Tensor& table, const at::Tensor& tail_table,
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
    TORCH_CHECK(table.scalar_type() == at::kLong && table.dim() == 2 && table.size(1) == 2, op,
                ": table must be an int64 (C, 2) hash table of (code, id) slots for k = ", k, " > ", kMaxDenseK,
                ", got ", dtype_name(table.scalar_type()), " ", table.sizes());
    const int64_t cap = table.size(0);
    TORCH_CHECK(cap >= 1 && (cap & (cap - 1)) == 0 && cap <= (int64_t(1) << 40), op,
                ": the hash table size C must be a power of two in 1..2^40, got ", cap);
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

void fail_no_token(const char* op, uint8_t byte, int64_t pos, int64_t seq) {
  if (seq >= 0)
    TORCH_CHECK(false, op, ": sequence ", seq, " has byte ", byte_repr(byte), " at position ", pos,
                " that has no token (not a vocabulary piece and no fallback id); use the 'unk' policy to map it to UNK");
  TORCH_CHECK(false, op, ": byte ", byte_repr(byte), " at position ", pos,
              " has no token (not a vocabulary piece and no fallback id); use the 'unk' policy to map it to UNK");
}

}  // namespace kmer
}  // namespace enigma_fast
