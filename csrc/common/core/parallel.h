// Torch-free parallel loops whose extra threads never make a call slower than running it on one thread.
//
// parallel_for(begin, end, grain, threads, f) calls f(b, e) over [begin, end) in chunks. The calling thread and
// up to threads - 1 pool workers claim chunks from one atomic counter; the call returns when every chunk is done.
// Unlike an OpenMP region, whose end waits for every thread of the team, the caller never waits for a worker that
// has not started: if the workers are descheduled (another process on the cores) the caller takes every chunk
// itself and the call costs what one thread costs. Workers spin briefly after a job, then sleep on a condition
// variable, so they take no CPU from other work between calls and, asleep, wake with the scheduler's priority.
//
// Chunks hold at least `grain` items: callers derive grain from the cost of an item (grain_for), so a chunk is
// worth far more than waking a thread. One job runs at a time; a call made while another thread's job runs, or
// from inside a chunk, runs on the calling thread. The first exception a chunk throws is rethrown to the caller
// (the remaining chunks still run).
#pragma once

#include <cstdint>

namespace enigma_fast {

// Estimated single-thread time a chunk must hold (nanoseconds). Measured on a 2-core AMD EPYC (Zen 4) VM: an
// OpenMP region around a ~8 us op took 5-9 us more on 2 threads than on 1, this pool's wake-up of a sleeping
// worker 10-30 us; a 50 us chunk keeps that overhead small, and work under one chunk never wakes a thread.
constexpr double kMinChunkNs = 50e3;

// Items per chunk so that a chunk holds at least kMinChunkNs, given the estimated time of one item in ns.
inline int64_t grain_for(double item_ns) {
  if (!(item_ns > 0)) return 1;
  const double g = kMinChunkNs / item_ns;
  return g >= 1e15 ? static_cast<int64_t>(1e15) : (g < 1 ? 1 : static_cast<int64_t>(g + 0.999));
}

namespace detail {
using ChunkFn = void (*)(const void* ctx, int64_t b, int64_t e);
void parallel_run(int64_t begin, int64_t end, int64_t grain, int threads, ChunkFn fn, const void* ctx);
}  // namespace detail

// Calls f(b, e) for consecutive chunks [b, e) covering [begin, end), each at least `grain` items (one chunk, on the
// calling thread, when there are fewer), on up to `threads` threads including the caller.
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int threads, const F& f) {
  if (end <= begin) return;
  detail::parallel_run(
      begin, end, grain, threads, [](const void* ctx, int64_t b, int64_t e) { (*static_cast<const F*>(ctx))(b, e); },
      &f);
}

// Worker threads the pool holds now (for tests and diagnostics).
int pool_workers();

}  // namespace enigma_fast
