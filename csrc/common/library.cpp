// The enigma_fast operator library and the Python module that loads it.
//
// Each op family adds its schemas with TORCH_LIBRARY_FRAGMENT(enigma_fast, m) in its own folder; this file owns
// the library itself and the small build-information functions the Python side reads.
#include <torch/extension.h>
#include <torch/library.h>
#include <torch/version.h>

#include <string>

namespace {

std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

bool with_cuda() {
#ifdef ENIGMA_FAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

TORCH_LIBRARY(enigma_fast, m) {}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "enigma_fast compiled kernels; the ops live in torch.ops.enigma_fast";
  m.def("torch_version", &torch_version, "torch version (major.minor.patch) the extension was compiled against");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
}
