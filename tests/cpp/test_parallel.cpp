// Unit tests of the torch-free thread pool (common/core/parallel.h): every item is visited exactly once in chunks
// of at least the grain, on up to the requested threads; nested and concurrent calls run inline; the first
// exception reaches the caller; thousands of small jobs in a row neither lose nor repeat work.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "check.h"
#include "common/core/parallel.h"

using namespace enigma_fast;

namespace {

void test_cover(int64_t n, int64_t grain, int threads) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  for (auto& h : hits) h.store(0);
  std::mutex m;
  std::set<std::thread::id> ids;
  std::atomic<int64_t> short_chunks{0};
  parallel_for(10, 10 + n, grain, threads, [&](int64_t b, int64_t e) {
    EF_EXPECT(10 <= b && b < e && e <= 10 + n);
    if (e - b < grain && !(b == 10 && e == 10 + n)) short_chunks.fetch_add(1);
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i - 10)].fetch_add(1);
    std::lock_guard<std::mutex> lk(m);
    ids.insert(std::this_thread::get_id());
  });
  for (auto& h : hits) EF_EXPECT(h.load() == 1);
  EF_EXPECT(short_chunks.load() == 0);  // chunks hold at least the grain, unless one chunk holds everything
  EF_EXPECT(static_cast<int>(ids.size()) <= threads);
  if (n < 2 * grain || threads <= 1) EF_EXPECT(ids.size() == 1 && *ids.begin() == std::this_thread::get_id());
}

void test_nested_runs_inline() {
  std::atomic<int64_t> sum{0};
  parallel_for(0, 64, 1, 2, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const auto outer = std::this_thread::get_id();
      parallel_for(0, 100, 1, 2, [&](int64_t b2, int64_t e2) {
        EF_EXPECT(std::this_thread::get_id() == outer);
        sum.fetch_add(e2 - b2);
      });
    }
  });
  EF_EXPECT(sum.load() == 64 * 100);
}

void test_exception_reaches_caller() {
  std::atomic<int64_t> ran{0};
  bool caught = false;
  try {
    parallel_for(0, 100, 1, 2, [&](int64_t b, int64_t e) {
      ran.fetch_add(e - b);
      if (b <= 50 && 50 < e) throw std::runtime_error("chunk 50");
    });
  } catch (const std::runtime_error& err) {
    caught = std::string(err.what()) == "chunk 50";
  }
  EF_EXPECT(caught);
  EF_EXPECT(ran.load() == 100);  // the other chunks still ran
  int64_t after = 0;             // and the pool still works
  parallel_for(0, 1000, 10, 2, [&](int64_t b, int64_t e) { (void)b, (void)e; });
  parallel_for(0, 1000, 1000, 2, [&](int64_t b, int64_t e) { after += e - b; });
  EF_EXPECT(after == 1000);
}

void test_many_small_jobs_and_concurrent_callers() {
  // Two threads issue jobs at once (one runs inline while the other's job runs); every job sums exactly.
  std::atomic<int> bad{0};
  auto issue = [&](int seed) {
    for (int j = 0; j < 3000; ++j) {
      const int64_t n = 1 + (j * 37 + seed) % 500;
      std::atomic<int64_t> s{0};
      parallel_for(0, n, 1 + j % 7, 2 + j % 3, [&](int64_t b, int64_t e) {
        int64_t t = 0;
        for (int64_t i = b; i < e; ++i) t += i;
        s.fetch_add(t);
      });
      if (s.load() != n * (n - 1) / 2) bad.fetch_add(1);
    }
  };
  std::thread other(issue, 1);
  issue(2);
  other.join();
  EF_EXPECT(bad.load() == 0);
}

}  // namespace

EF_TEST_MAIN({
  EF_EXPECT(grain_for(0) == 1);
  EF_EXPECT(grain_for(kMinChunkNs) == 1);
  EF_EXPECT(grain_for(kMinChunkNs / 10) == 10);
  EF_EXPECT(grain_for(1e-30) > int64_t(1) << 40);
  for (int threads : {1, 2, 3, 8})
    for (int64_t n : {1, 2, 7, 100, 4097, 100000})
      for (int64_t grain : {1, 3, 64, 100000}) test_cover(n, grain, threads);
  test_nested_runs_inline();
  test_exception_reaches_caller();
  test_many_small_jobs_and_concurrent_callers();
  EF_EXPECT(pool_workers() >= 1 && pool_workers() <= 7);
  std::printf("pool workers: %d\n", pool_workers());
})
