// The Python module enigma_fast._C: importing it loads the operator library (torch.ops.enigma_fast) and gives the
// build facts the Python side checks against the running torch.
#include <torch/extension.h>
#include <torch/version.h>

#include <string>
#include <vector>

#include "common/cpu_isa.h"
#include "decode/decode.h"

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

namespace decode = enigma_fast::decode;

decode::Geometry decode_geometry(const std::vector<int64_t>& geometry) {
  decode::Geometry g;
  const std::string err = decode::parse_geometry(geometry.data(), static_cast<int64_t>(geometry.size()), &g);
  TORCH_CHECK_VALUE(err.empty(), err);
  return g;
}

int64_t panel(bool cuda) { return cuda ? decode::kCudaPanel : decode::kCpuPanel; }

// Elements of decode_pack's output for this geometry on the CPU (cuda false) or CUDA.
int64_t decode_packed_numel(const std::vector<int64_t>& geometry, bool cuda) {
  return decode::make_layout(decode_geometry(geometry), panel(cuda)).total;
}

// Elements of decode_step's work buffer for a batch, cache length and memory length (0 for EnBERT).
int64_t decode_workspace_numel(const std::vector<int64_t>& geometry, int64_t batch, int64_t max_len,
                               int64_t memory_len, bool cuda) {
  TORCH_CHECK_VALUE(batch >= 1 && max_len >= 1 && memory_len >= 0, "decode workspace: batch and max_len must be >= 1",
                    " and memory_len >= 0, got ", batch, ", ", max_len, ", ", memory_len);
  return decode::make_work(decode_geometry(geometry), batch, max_len, memory_len, panel(cuda)).total;
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
  m.def("decode_packed_numel", &decode_packed_numel, "elements of decode_pack's output (geometry, cuda)");
  m.def("decode_workspace_numel", &decode_workspace_numel,
        "elements of decode_step's work buffer (geometry, batch, max_len, memory_len, cuda)");
}
