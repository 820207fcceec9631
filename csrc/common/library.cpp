// The enigma_fast operator library. Each op family adds its schemas with TORCH_LIBRARY_FRAGMENT(enigma_fast, m)
// in its own folder; this file owns the library itself.
#include <torch/library.h>

TORCH_LIBRARY(enigma_fast, m) {}
