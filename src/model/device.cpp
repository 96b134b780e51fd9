#include "model/device.h"

#include <ATen/Context.h>

#include "core/error.h"

namespace llmopt::model {

torch::Device parse_device(const std::string& name) {
  if (name.empty() || name == "cpu") return torch::Device(torch::kCPU);
  LLMOPT_CHECK_INPUT(name.rfind("cuda", 0) == 0, "[device] unknown device '{}' (valid: cpu, cuda, cuda:N)", name);
  int index = -1;
  if (name.size() > 4) {
    LLMOPT_CHECK_INPUT(name[4] == ':' && name.size() > 5 &&
                           name.find_first_not_of("0123456789", 5) == std::string::npos && name.size() < 9,
                       "[device] malformed device '{}' (expected cuda or cuda:N)", name);
    index = std::stoi(name.substr(5));
  }
  LLMOPT_CHECK_INPUT(at::hasCUDA(),
                     "[device] '{}' requested, but this libtorch was built without CUDA (rebuild llmopt with "
                     "-DLLMOPT_CUDA=ON against a CUDA-enabled libtorch)",
                     name);
  const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
  LLMOPT_CHECK_INPUT(n > 0, "[device] '{}' requested, but no CUDA device is visible", name);
  LLMOPT_CHECK_INPUT(index < n, "[device] '{}' requested, but only {} CUDA device(s) are visible", name, n);
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index < 0 ? 0 : index));
}

}  // namespace llmopt::model
