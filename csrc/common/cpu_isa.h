// Torch-free CPU instruction-set levels: what the CPU has, the level kernels dispatch to, and how a kernel is
// compiled once per level inside one translation unit.
//
// Levels, as PyTorch's ATEN_CPU_CAPABILITY names them:
//   default  the architecture's baseline: x86-64 SSE2 (16-byte vectors, 16 registers, no FMA); NEON on aarch64
//   avx2     x86-64-v3: AVX2 + FMA (32-byte vectors, 16 registers)
//   avx512   x86-64-v4: AVX-512 F/BW/DQ/VL/CD (64-byte vectors, 32 registers)
// Only x86-64 built by GCC or clang has more than the default level. The active level is the best the CPU has,
// capped by ENIGMA_FAST_CPU_CAPABILITY (else ATEN_CPU_CAPABILITY) read at first use, or by set_isa_cap().
//
// A kernel family is a template over Isa whose inner functions are all always_inline; EF_DEFINE_ISA_ENTRIES
// instantiates one entry point per level, each carrying its level's target attribute, so the whole inlined body
// is compiled for that level (generic GCC vectors then map to xmm / ymm / zmm / NEON registers). Templates
// instantiated per level have distinct symbols, so no code of a higher level can leak into a lower one.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace enigma_fast {
namespace cpu {

enum class Isa : int { kDefault = 0, kAVX2 = 1, kAVX512 = 2 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(ENIGMA_FAST_NO_ISA_LEVELS)
#define EF_X86_ISA_LEVELS 1
#define EF_TARGET_AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")))
#define EF_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512cd,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")))
#else
#define EF_X86_ISA_LEVELS 0
#endif

#if defined(__GNUC__)
#define EF_INLINE inline __attribute__((always_inline))
#else
#define EF_INLINE inline
#endif

inline const char* isa_name(Isa l) {
  switch (l) {
    case Isa::kAVX2: return "avx2";
    case Isa::kAVX512: return "avx512";
    default: return "default";
  }
}

// Parses a level name (case-insensitive: default, avx2, avx512); false for anything else.
inline bool parse_isa(const char* s, Isa* out) {
  if (s == nullptr) return false;
  char low[16] = {};
  size_t n = std::strlen(s);
  if (n == 0 || n >= sizeof(low)) return false;
  for (size_t i = 0; i < n; ++i) low[i] = static_cast<char>(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
  if (std::strcmp(low, "default") == 0) *out = Isa::kDefault;
  else if (std::strcmp(low, "avx2") == 0) *out = Isa::kAVX2;
  else if (std::strcmp(low, "avx512") == 0) *out = Isa::kAVX512;
  else return false;
  return true;
}

// The best level this CPU (and its OS: AVX state saving is part of the check) supports.
inline Isa detect_isa() {
#if EF_X86_ISA_LEVELS
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("popcnt");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                  __builtin_cpu_supports("avx512cd");
  return v4 ? Isa::kAVX512 : (v3 ? Isa::kAVX2 : Isa::kDefault);
#else
  return Isa::kDefault;
#endif
}

inline Isa best_isa() {
  static const Isa best = detect_isa();
  return best;
}

namespace detail {
// -1: not yet read from the environment; else the cap as an int.
inline std::atomic<int>& cap_state() {
  static std::atomic<int> cap{-1};
  return cap;
}
// The environment's cap, or the best level when unset; *bad set to the unparsable value, if any.
inline Isa env_cap(const char** bad) {
  *bad = nullptr;
  for (const char* var : {"ENIGMA_FAST_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"}) {
    const char* v = std::getenv(var);
    if (v == nullptr || *v == '\0') continue;
    Isa l;
    if (parse_isa(v, &l)) return l;
    if (std::strcmp(var, "ENIGMA_FAST_CPU_CAPABILITY") == 0) *bad = v;
    return best_isa();  // PyTorch also knows levels we do not have (zvector, sve, ...): no cap
  }
  return best_isa();
}
}  // namespace detail

// The level kernels run at now: min(cap, best_isa()).
inline Isa active_isa() {
  int c = detail::cap_state().load(std::memory_order_relaxed);
  if (c < 0) {
    const char* bad;
    c = static_cast<int>(detail::env_cap(&bad));
    int expected = -1;
    detail::cap_state().compare_exchange_strong(expected, c);
    c = detail::cap_state().load(std::memory_order_relaxed);
  }
  const int best = static_cast<int>(best_isa());
  return static_cast<Isa>(c < best ? c : best);
}

// Caps the level (never above best_isa()); returns the level now active.
inline Isa set_isa_cap(Isa cap) {
  detail::cap_state().store(static_cast<int>(cap), std::memory_order_relaxed);
  return active_isa();
}

// Drops a cap set by set_isa_cap: the environment decides again.
inline Isa reset_isa_cap() {
  const char* bad;
  detail::cap_state().store(static_cast<int>(detail::env_cap(&bad)), std::memory_order_relaxed);
  return active_isa();
}

// The value of ENIGMA_FAST_CPU_CAPABILITY when it names no level (nullptr otherwise), for a warning.
inline const char* bad_env_cap() {
  const char* bad;
  detail::env_cap(&bad);
  return bad;
}

}  // namespace cpu
}  // namespace enigma_fast

// Defines `RET NAME PARAMS` dispatching on active_isa() to IMPL<Isa::k...> ARGS, each level's instance compiled for
// that level. PARAMS and ARGS are parenthesised lists, IMPL a function template whose first template parameter is
// the Isa (the others deduced): EF_DEFINE_ISA_ENTRIES(void, fwd_f32, (const Problem<float>& p), (p), fwd_range).
#if EF_X86_ISA_LEVELS
#define EF_DEFINE_ISA_ENTRIES(RET, NAME, PARAMS, ARGS, IMPL)                                                    \
  static RET NAME##_isa_default PARAMS { return IMPL<::enigma_fast::cpu::Isa::kDefault> ARGS; }                \
  EF_TARGET_AVX2 static RET NAME##_isa_avx2 PARAMS { return IMPL<::enigma_fast::cpu::Isa::kAVX2> ARGS; }      \
  EF_TARGET_AVX512 static RET NAME##_isa_avx512 PARAMS { return IMPL<::enigma_fast::cpu::Isa::kAVX512> ARGS; } \
  RET NAME PARAMS {                                                                                             \
    switch (::enigma_fast::cpu::active_isa()) {                                                                 \
      case ::enigma_fast::cpu::Isa::kAVX512: return NAME##_isa_avx512 ARGS;                                     \
      case ::enigma_fast::cpu::Isa::kAVX2: return NAME##_isa_avx2 ARGS;                                         \
      default: return NAME##_isa_default ARGS;                                                                  \
    }                                                                                                           \
  }
#else
#define EF_DEFINE_ISA_ENTRIES(RET, NAME, PARAMS, ARGS, IMPL) \
  RET NAME PARAMS { return IMPL<::enigma_fast::cpu::Isa::kDefault> ARGS; }
#endif
