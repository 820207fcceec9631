// The Python module enigma_fast._C: importing it loads the operator library (torch.ops.enigma_fast) and gives the
// build facts the Python side checks against the running torch.
#include <torch/extension.h>
#include <torch/version.h>

#include <string>
#include <vector>

#include "common/cpu_isa.h"

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

namespace cpu = enigma_fast::cpu;

std::string cpu_capability() { return cpu::isa_name(cpu::active_isa()); }

// Levels this CPU runs, lowest first.
std::vector<std::string> cpu_capabilities() {
  std::vector<std::string> out;
  for (int l = 0; l <= static_cast<int>(cpu::best_isa()); ++l) out.push_back(cpu::isa_name(static_cast<cpu::Isa>(l)));
  return out;
}

// Caps the level (an empty name drops the cap: the environment decides again); returns the level now active.
std::string set_cpu_capability(const std::string& name) {
  if (name.empty()) return cpu::isa_name(cpu::reset_isa_cap());
  cpu::Isa l;
  TORCH_CHECK_VALUE(cpu::parse_isa(name.c_str(), &l), "level must be one of 'default', 'avx2', 'avx512', got '",
                    name, "'");
  return cpu::isa_name(cpu::set_isa_cap(l));
}

std::string bad_cpu_capability_env() {
  const char* bad = cpu::bad_env_cap();
  return bad ? bad : "";
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "enigma_fast compiled kernels; the ops live in torch.ops.enigma_fast";
  m.def("torch_version", &torch_version, "torch version (major.minor.patch) the extension was compiled against");
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
  m.def("cpu_capability", &cpu_capability, "instruction-set level the CPU kernels run at now");
  m.def("cpu_capabilities", &cpu_capabilities, "levels this CPU runs, lowest first");
  m.def("set_cpu_capability", &set_cpu_capability, "cap the CPU kernels' level ('' drops the cap); returns the level");
  m.def("bad_cpu_capability_env", &bad_cpu_capability_env,
        "ENIGMA_FAST_CPU_CAPABILITY when it names no level, else ''");
}
