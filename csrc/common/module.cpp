// The Python module enigma_fast._C: importing it loads the operator library (torch.ops.enigma_fast) and gives the
// build facts the Python side checks against the running torch.
#include <torch/extension.h>
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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "enigma_fast compiled kernels; the ops live in torch.ops.enigma_fast";
  m.def("torch_version", &torch_version, "torch version (major.minor.patch) the extension was compiled against");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
}
