// k-mer tokenization op family: the schemas, declared once. Implementations: kmer_cpu.cpp (CPU), kmer_cuda.cu
// (CUDA, encode only). Semantics in kmer/core/kmer_core.h; the Python side is enigma_fast/ops/kmer.py.
//
//   kmer_encode(bases uint8 (n,), table, tail_table, char_ids, k, stride, missing_id, fold_case, dtype) -> ids (T,)
//       table: int32 (4^k,) code -> id (-1 = absent) for k <= 12; int64 (2, V) ascending codes and their ids for
//       k > 12. tail_table: int32 ((4^k - 4) / 3,) ids of pieces shorter than k, or (0,) for none.
//       char_ids: int32 (256,) fallback id of each byte (-1 = the byte cannot be encoded: an error).
//       missing_id >= 0 maps windows missing from the vocabulary to that id instead of falling back.
//   kmer_encode_batch(bases (N,), offsets int64 (B+1,), ..., pad_id, left_pad) -> (ids (B, T), lengths int64 (B,))
//       sequence b is bases[offsets[b]:offsets[b+1]]; rows padded with pad_id on the right (or the left).
//   kmer_decode(ids int64 (T,), pieces uint8 (P,), piece_offsets int64 (V+1,)) -> bases uint8
//       concatenation of pieces[piece_offsets[id]:piece_offsets[id+1]] over ids.
//   kmer_count(bases, offsets, k, stride, fold_case) -> (counts int64 (4^k,), first int64 (4^k,), other int64 ())
//       k <= 12; windows of every sequence counted by code; first = smallest ordinal of the code, where window w
//       of sequence b has ordinal sum_{j<b} (W_j + 1) + w (one slot per sequence left for its tail), -1 when
//       unseen; other = windows holding a byte that is not a base (not counted).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(enigma_fast, m) {
  m.def("kmer_encode(Tensor bases, Tensor table, Tensor tail_table, Tensor char_ids, int k, int stride, "
        "int missing_id, bool fold_case, ScalarType dtype) -> Tensor");
  m.def("kmer_encode_batch(Tensor bases, Tensor offsets, Tensor table, Tensor tail_table, Tensor char_ids, int k, "
        "int stride, int missing_id, bool fold_case, ScalarType dtype, int pad_id, bool left_pad) -> (Tensor, Tensor)");
  m.def("kmer_decode(Tensor ids, Tensor pieces, Tensor piece_offsets) -> Tensor");
  m.def("kmer_count(Tensor bases, Tensor offsets, int k, int stride, bool fold_case) -> (Tensor, Tensor, Tensor)");
}
