// Relative-position attention on CUDA: the launchers each kernel source defines, declared for the dispatcher
// (attention_cuda.cu). One .cu per head dim for the tensor-core kernels, so that they compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "attention/cuda/common.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {

// Arguments of the tensor-core kernels (bfloat16 / float16). Element strides; every last dimension is contiguous
// and every row 16-byte aligned (the dispatcher copies views that are not).
struct MmaParams {
  Geom g;
  const void* q;
  const void* k;
  const void* v;
  const void* rel;  // (H, 2P-1, D) contiguous or null
  int64_t q_sb, q_sh, q_st, k_sb, k_sh, k_st, v_sb, v_sh, v_st;
  int64_t P;
  float scale;
  void* out;   // (B, H, Tq, D) contiguous
  float* lse;  // (B, H, Tq)
  // Backward only.
  const void* dout;  // (B, H, Tq, D), strides do_*
  int64_t do_sb, do_sh, do_st;
  const float* delta;  // (B, H, Tq): rowsum(dout * out)
  void* dq;            // (B, H, Tq, D) contiguous
  void* dk;            // (B, H, Tk, D) contiguous
  void* dv;
  float* drel_part;  // (bsplit, H, nbands, 128, D): per-band partial sums of d(rel_emb) (see bwd.cuh)
  void* drel;        // (H, 2P-1, D) contiguous
  int64_t nbands;    // query tiles + key tiles - 1
  int bsplit;        // batch rows are split into this many groups for the band kernel
};

template <int D>
void launch_mma_fwd(const MmaParams& p, bool bf16, cudaStream_t stream);
// out: the forward's output (B, H, Tq, D) with element strides o_sb, o_sh, o_st (for delta = rowsum(dout * out)).
template <int D>
void launch_mma_bwd(const MmaParams& p, bool bf16, const void* out, int64_t o_sb, int64_t o_sh, int64_t o_st,
                    cudaStream_t stream);

}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
