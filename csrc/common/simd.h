// Torch-free vectors sized to the instruction-set level a kernel is compiled for (common/cpu_isa.h).
//
// Vec<A, L>::type is a GCC/clang generic vector of A filling one register of level L: 4 floats at the default
// level (SSE2, NEON), 8 with AVX2, 16 with AVX-512. Kernels written on these types and inlined into an entry
// point carrying L's target attribute compile to that level's registers; the register count (kRegs) and FMA
// availability (kFma) let them size their register blocking. a * b + c contracts to one FMA where the level has
// it (built with -ffp-contract=fast). Helpers take and return vectors by value: every one is always_inline, so no
// vector ever crosses a real call (hence -Wno-psabi in the build).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cpu_isa.h"

namespace enigma_fast {
namespace cpu {

template <Isa L>
struct IsaTraits;
template <>
struct IsaTraits<Isa::kDefault> {
  static constexpr int kBytes = 16;
#if defined(__aarch64__)
  static constexpr int kRegs = 32;
  static constexpr bool kFma = true;
#else
  static constexpr int kRegs = 16;
  static constexpr bool kFma = false;
#endif
};
template <>
struct IsaTraits<Isa::kAVX2> {
  static constexpr int kBytes = 32;
  static constexpr int kRegs = 16;
  static constexpr bool kFma = true;
};
template <>
struct IsaTraits<Isa::kAVX512> {
  static constexpr int kBytes = 64;
  static constexpr int kRegs = 32;
  static constexpr bool kFma = true;
};

template <typename A, int Bytes>
struct VecBytes;
#define EF_DEFINE_VEC(A, I, BYTES)                          \
  template <>                                               \
  struct VecBytes<A, BYTES> {                               \
    typedef A type __attribute__((vector_size(BYTES)));     \
    typedef I itype __attribute__((vector_size(BYTES)));    \
  };
EF_DEFINE_VEC(float, int32_t, 16)
EF_DEFINE_VEC(float, int32_t, 32)
EF_DEFINE_VEC(float, int32_t, 64)
EF_DEFINE_VEC(double, int64_t, 16)
EF_DEFINE_VEC(double, int64_t, 32)
EF_DEFINE_VEC(double, int64_t, 64)
#undef EF_DEFINE_VEC

// One register of A at level L: W lanes.
template <typename A, Isa L>
struct Vec {
  static constexpr int W = IsaTraits<L>::kBytes / static_cast<int>(sizeof(A));
  using type = typename VecBytes<A, IsaTraits<L>::kBytes>::type;
  using itype = typename VecBytes<A, IsaTraits<L>::kBytes>::itype;
};

template <typename V, typename A>
EF_INLINE V vload(const A* p) {
  V v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename V, typename A>
EF_INLINE void vstore(A* p, V v) {
  std::memcpy(p, &v, sizeof(v));
}

// All lanes x. (In hot loops prefer vector * scalar, which GCC turns into one broadcast load: V{} + x costs an
// add, since +0.0 is not an identity for -0.0.)
template <typename V, typename A>
EF_INLINE V vset(A x) {
  return V{} + x;
}

// a > b ? a : b and a < b ? a : b lane by lane (so a NaN in a gives b). On 16-byte float vectors of x86 they are
// exactly MAXPS / MINPS, which GCC does not pick for the generic vector form (it emits a compare and three logic
// ops): named here.
template <typename V>
EF_INLINE V vmax(V a, V b) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same_v<V, VecBytes<float, 16>::type>) return __builtin_ia32_maxps(a, b);
#endif
  return a > b ? a : b;
}

template <typename V>
EF_INLINE V vmin(V a, V b) {
#if defined(__x86_64__) && defined(__GNUC__)
  if constexpr (std::is_same_v<V, VecBytes<float, 16>::type>) return __builtin_ia32_minps(a, b);
#endif
  return a < b ? a : b;
}

// Sum and max of the lanes (a fixed pairwise order).
template <typename A, typename V>
EF_INLINE A hsum(V v) {
  constexpr int W = sizeof(V) / sizeof(A);
  A t[W];
  std::memcpy(t, &v, sizeof(v));
  for (int w = W / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}

template <typename A, typename V>
EF_INLINE A hmax(V v) {
  constexpr int W = sizeof(V) / sizeof(A);
  A t[W];
  std::memcpy(t, &v, sizeof(v));
  for (int w = W / 2; w > 0; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] > t[l + w] ? t[l] : t[l + w];
  return t[0];
}

// exp(x) of float lanes, x <= ~88; exactly 0 below -87 (and for -inf). Cephes-style: x = n ln2 + r with
// |r| <= ln2/2, a degree-6 polynomial for e^r, 2^n from the exponent bits. Relative error ~2 ulp.
template <typename V>
EF_INLINE V vexp(V x) {
  using I = typename VecBytes<float, sizeof(V)>::itype;
  const V lo = V{} - 87.0f, hi = V{} + 88.0f;
  const V xc = vmin(hi, vmax(lo, x));  // x < lo ? lo : x, then > hi ? hi : (a NaN stays NaN)
  const V t = xc * 1.44269504088896341f;
  const V n = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I e = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof(scale));
  const V res = p * scale;
  return x < lo ? V{} : res;
}

// exp(x) for x <= 0 (softmax terms: a score minus its row's maximum), -inf giving exactly 0: vexp without the
// upper clamp, which such arguments never reach.
template <typename V>
EF_INLINE V vexp_nonpos(V x) {
  using I = typename VecBytes<float, sizeof(V)>::itype;
  const V lo = V{} - 87.0f;
  const auto under = x < lo;
  const V xc = vmax(lo, x);  // x < lo ? lo : x (a NaN stays NaN)
  const V t = xc * 1.44269504088896341f;
  const V n = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  V r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  V p = V{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const I e = (__builtin_convertvector(n, I) + 127) << 23;
  V scale;
  std::memcpy(&scale, &e, sizeof(scale));
  const V res = p * scale;
  return under ? V{} : res;
}

}  // namespace cpu
}  // namespace enigma_fast
