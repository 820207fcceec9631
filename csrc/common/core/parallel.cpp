// The thread pool behind parallel_for (common/core/parallel.h).
//
// One word of state says everything a worker needs to claim a chunk: the job's generation, how many workers may
// join it, the next unclaimed chunk and the chunk count. Claiming is one compare-and-swap on that word, so a
// worker can never take a chunk of a job other than the one it saw, and the job's other fields (the function,
// the range) are read only after a successful claim, when the caller is certain to wait for that chunk.
#include "common/core/parallel.h"

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EF_PAUSE() _mm_pause()
#elif defined(__aarch64__)
#define EF_PAUSE() __asm__ __volatile__("yield")
#else
#define EF_PAUSE() ((void)0)
#endif

namespace enigma_fast {
namespace {

// state = generation (32 bits) | workers allowed (8) | next chunk (12) | chunks (12)
constexpr int kMaxWorkers = 255;
constexpr int64_t kMaxChunks = 4095;
// Pause loops the caller spins before it yields while it waits for a worker's last chunk: ~50 us.
constexpr int kSpinIters = 2000;
// How long a worker spins for the next job before it sleeps. Back-to-back calls then find it awake on its own CPU
// (a sleeping vCPU can take milliseconds to come back on a shared host); idle, it takes no CPU after this.
constexpr double kWorkerSpinNs = 250e3;

constexpr uint64_t pack(uint32_t gen, uint32_t workers, uint32_t next, uint32_t chunks) {
  return (uint64_t(gen) << 32) | (uint64_t(workers) << 24) | (uint64_t(next) << 12) | uint64_t(chunks);
}
constexpr uint32_t gen_of(uint64_t s) { return uint32_t(s >> 32); }
constexpr uint32_t workers_of(uint64_t s) { return uint32_t(s >> 24) & 0xffu; }
constexpr uint32_t next_of(uint64_t s) { return uint32_t(s >> 12) & 0xfffu; }
constexpr uint32_t chunks_of(uint64_t s) { return uint32_t(s) & 0xfffu; }

thread_local bool t_in_chunk = false;

int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

// A worker the caller just woke may be queued on the caller's own CPU, time-sharing it while another CPU idles:
// seen on a 2-vCPU KVM guest (Linux 6.18), where no balancing moved it for tens of milliseconds. Leave that CPU:
// exclude it from the thread's affinity for one call (the kernel migrates the thread at once), then restore the
// mask so the scheduler is free again.
void leave_cpu(int cpu) {
#if defined(__linux__)
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) < 2 || !CPU_ISSET(cpu, &allowed))
    return;
  cpu_set_t others = allowed;
  CPU_CLR(cpu, &others);
  if (sched_setaffinity(0, sizeof(others), &others) == 0) sched_setaffinity(0, sizeof(allowed), &allowed);
#else
  (void)cpu;
#endif
}

struct Pool {
  std::atomic<uint64_t> state{0};
  // The job: written by the caller before it publishes the generation, read by others only after a claim.
  detail::ChunkFn fn = nullptr;
  const void* ctx = nullptr;
  int64_t begin = 0, q = 1, r = 0;  // chunk c: begin + c * q + min(c, r), q + (c < r) items
  std::atomic<uint32_t> done{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_m;
  std::mutex caller_m;  // one job at a time
  std::mutex sleep_m;
  std::condition_variable wake;
  std::atomic<int> sleepers{0};
  std::atomic<int> nworkers{0};
  std::atomic<int> caller_cpu{-1};
  uint32_t gen = 0;

  void run_chunk(uint32_t c) {
    const int64_t b = begin + int64_t(c) * q + std::min<int64_t>(c, r);
    const int64_t e = b + q + (int64_t(c) < r ? 1 : 0);
    t_in_chunk = true;
    try {
      fn(ctx, b, e);
    } catch (...) {
      std::lock_guard<std::mutex> lk(error_m);
      if (!failed.exchange(true)) error = std::current_exception();
    }
    t_in_chunk = false;
    done.fetch_add(1, std::memory_order_acq_rel);
  }

  // Claims and runs chunks of generation g while any are left. index: the worker's number, -1 for the caller.
  void work(uint32_t g, int index) {
    uint64_t s = state.load(std::memory_order_acquire);
    while (gen_of(s) == g && index < int(workers_of(s)) && next_of(s) < chunks_of(s)) {
      if (state.compare_exchange_weak(s, s + (uint64_t(1) << 12), std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        run_chunk(next_of(s));
        s = state.load(std::memory_order_acquire);
      }
    }
  }

  [[noreturn]] void worker_loop(int index) {
    uint32_t seen = gen_of(state.load(std::memory_order_acquire));
    for (;;) {
      uint64_t s;
      int spins = 0;
      auto spin_start = std::chrono::steady_clock::now();
      while (gen_of(s = state.load(std::memory_order_acquire)) == seen) {
        EF_PAUSE();
        if (++spins % 64 != 0 ||
            std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - spin_start).count() <
                kWorkerSpinNs)
          continue;
        std::unique_lock<std::mutex> lk(sleep_m);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        wake.wait(lk, [&] { return gen_of(state.load(std::memory_order_seq_cst)) != seen; });
        sleepers.fetch_sub(1, std::memory_order_seq_cst);
        lk.unlock();
        const int c = current_cpu();
        if (c >= 0 && c == caller_cpu.load(std::memory_order_relaxed)) leave_cpu(c);
        spins = 0;
        spin_start = std::chrono::steady_clock::now();
      }
      seen = gen_of(s);
      work(seen, index);
    }
  }

  void ensure_workers(int want) {
    for (int i = nworkers.load(std::memory_order_relaxed); i < want; ++i) {
      std::thread([this, i] { worker_loop(i); }).detach();
      nworkers.store(i + 1, std::memory_order_relaxed);
    }
  }
};

Pool*& pool_slot() {
  static Pool* p = nullptr;
  return p;
}

// A forked child has none of the parent's workers and maybe a mutex a vanished thread held: start afresh.
void reset_in_child() { pool_slot() = new Pool(); }

Pool& pool() {
  static const bool registered = [] {
    pool_slot() = new Pool();  // never deleted: detached workers use it until the process ends
    pthread_atfork(nullptr, nullptr, reset_in_child);
    return true;
  }();
  (void)registered;
  return *pool_slot();
}

}  // namespace

int pool_workers() { return pool().nworkers.load(std::memory_order_relaxed); }

namespace detail {

void parallel_run(int64_t begin, int64_t end, int64_t grain, int threads, ChunkFn fn, const void* ctx) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = n / grain;  // every chunk at least `grain` items
  if (threads <= 1 || chunks <= 1 || t_in_chunk) {
    fn(ctx, begin, end);
    return;
  }
  Pool& p = pool();
  std::unique_lock<std::mutex> job(p.caller_m, std::try_to_lock);
  if (!job.owns_lock()) {  // another thread's job is running: do not queue behind it
    fn(ctx, begin, end);
    return;
  }
  threads = std::min(threads, kMaxWorkers + 1);
  // Up to 8 chunks a thread so that claiming balances uneven chunks; sizes differ by at most one item.
  chunks = std::min<int64_t>({chunks, kMaxChunks, int64_t(8) * threads});
  const int workers = static_cast<int>(std::min<int64_t>(threads - 1, chunks - 1));
  p.ensure_workers(workers);
  p.fn = fn;
  p.ctx = ctx;
  p.begin = begin;
  p.q = n / chunks;
  p.r = n % chunks;
  p.done.store(0, std::memory_order_relaxed);
  p.failed.store(false, std::memory_order_relaxed);
  p.error = nullptr;
  p.caller_cpu.store(current_cpu(), std::memory_order_relaxed);
  const uint32_t g = ++p.gen;
  p.state.store(pack(g, uint32_t(workers), 0, uint32_t(chunks)), std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lk(p.sleep_m); }
    p.wake.notify_all();
  }
  p.work(g, -1);
  // Chunks claimed by workers may still run; none is left to claim, so no late worker can delay us further.
  for (int spins = 0; p.done.load(std::memory_order_acquire) < uint32_t(chunks);) {
    if (++spins < kSpinIters)
      EF_PAUSE();
    else
      std::this_thread::yield();
  }
  if (p.failed.load(std::memory_order_acquire)) std::rethrow_exception(p.error);
}

}  // namespace detail
}  // namespace enigma_fast
