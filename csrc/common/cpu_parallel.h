// parallel_for for the ATen glue of the CPU kernels: common/core/parallel.h's pool, as many threads as torch uses
// (torch.set_num_threads), one inside a torch parallel region.
#pragma once

#include <ATen/Parallel.h>

#include "common/core/parallel.h"

namespace enigma_fast {

template <typename F>
void cpu_parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  parallel_for(begin, end, grain, threads, f);
}

}  // namespace enigma_fast
