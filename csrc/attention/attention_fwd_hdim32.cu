// Tensor-core forward of relative-position attention, head dim 32 (bfloat16 and float16; one source per head
// dim so that the instantiations compile in parallel).
#include "attention/cuda/fwd.cuh"

namespace enigma_fast {
namespace attention {
namespace cuda {
template void launch_mma_fwd<32>(const MmaParams& p, bool bf16, cudaStream_t stream);
}  // namespace cuda
}  // namespace attention
}  // namespace enigma_fast
