// Torch-free per-thread scratch memory, reused across calls and across the chunks of a parallel loop.
//
// A kernel's work buffers sized O(T) (transposed keys, score tiles, accumulators) would otherwise be allocated
// and page-faulted in for every chunk a thread runs. Scratch<A> hands out one 64-byte-aligned block from the
// calling thread's arena for A; the arena grows to the largest request and is kept, unless it passes
// kKeepBytes, in which case it is released when the Scratch goes out of scope. One Scratch per type and thread
// at a time (not reentrant). The memory is not initialised.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace enigma_fast {

template <typename A>
class Scratch {
 public:
  static constexpr size_t kKeepBytes = size_t(32) << 20;

  explicit Scratch(size_t n) {
    Arena& a = arena();
    const size_t want = n + 64 / sizeof(A);
    if (a.size < want) {
      a.buf.reset(new A[want]);
      a.size = want;
    }
    const uintptr_t p = reinterpret_cast<uintptr_t>(a.buf.get());
    data_ = reinterpret_cast<A*>((p + 63) & ~uintptr_t(63));
  }
  ~Scratch() {
    Arena& a = arena();
    if (a.size * sizeof(A) > kKeepBytes) {
      a.buf.reset();
      a.size = 0;
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  A* data() const { return data_; }

 private:
  struct Arena {
    std::unique_ptr<A[]> buf;
    size_t size = 0;
  };
  static Arena& arena() {
    thread_local Arena a;
    return a;
  }
  A* data_;
};

}  // namespace enigma_fast
