// Torch-free scalar conversions between float and the 16-bit bfloat16 storage format.
//
// bfloat16 keeps float32's sign and 8-bit exponent and the top 7 mantissa bits, so widening is a shift and
// narrowing is a round-to-nearest-even on the dropped 16 bits. Written branch-free so loops over arrays of
// them auto-vectorise. at::BFloat16 has the same layout (one uint16_t), so kernels reinterpret its pointers.
#pragma once

#include <cstdint>
#include <cstring>

namespace enigma_fast {

struct bf16_t {
  uint16_t bits;
};

inline float bf16_to_float(bf16_t v) {
  uint32_t u = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline bf16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  // NaN must stay NaN (rounding could carry it into infinity): keep the sign, force a quiet-NaN payload.
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return bf16_t{static_cast<uint16_t>(is_nan ? nan : rounded)};
}

// Load/store helpers so one kernel template serves float, double and bfloat16 storage.
template <typename T>
struct Storage {
  using acc_t = float;
  static inline acc_t load(T v) { return static_cast<acc_t>(v); }
  static inline T store(acc_t v) { return static_cast<T>(v); }
};

template <>
struct Storage<double> {
  using acc_t = double;
  static inline double load(double v) { return v; }
  static inline double store(double v) { return v; }
};

template <>
struct Storage<bf16_t> {
  using acc_t = float;
  static inline float load(bf16_t v) { return bf16_to_float(v); }
  static inline bf16_t store(float v) { return float_to_bf16(v); }
};

}  // namespace enigma_fast
