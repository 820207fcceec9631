// Tensor-core backward of relative-position attention, head dim 64 (bfloat16 and float16; one source per head
// dim so that the instantiations compile in parallel).
#include "attention/cuda/bwd_drel.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {
template void launch_mma_bwd<64>(const MmaParams& p, bool bf16, const void* out, int64_t o_sb, int64_t o_sh,
                                 int64_t o_st, cudaStream_t stream);
}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
