// Minimal test helpers for the torch-free C++ unit tests (no framework needed; ctest reads the exit code).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ef_test {
inline int& failures() {
  static int n = 0;
  return n;
}
}  // namespace ef_test

#define EF_EXPECT(cond)                                                        \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++ef_test::failures();                                                   \
    }                                                                          \
  } while (0)

#define EF_EXPECT_NEAR(a, b, tol)                                                                              \
  do {                                                                                                         \
    const double ef_a = (a), ef_b = (b);                                                                       \
    if (!(std::fabs(ef_a - ef_b) <= (tol))) {                                                                  \
      std::fprintf(stderr, "%s:%d: %s = %.10g, %s = %.10g, tol %g\n", __FILE__, __LINE__, #a, ef_a, #b, ef_b, \
                   static_cast<double>(tol));                                                                  \
      ++ef_test::failures();                                                                                   \
    }                                                                                                          \
  } while (0)

#define EF_TEST_MAIN(...)                                       \
  int main() {                                                  \
    __VA_ARGS__;                                                \
    if (ef_test::failures() == 0) std::printf("all passed\n");  \
    return ef_test::failures() == 0 ? EXIT_SUCCESS : EXIT_FAILURE; \
  }
