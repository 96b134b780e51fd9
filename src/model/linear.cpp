#include "model/linear.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/error.h"
#include "infer/llama_cpu.h"
#include "model/fast_ops.h"
#include "model/lora_linear.h"
#include "model/intn_linear.h"
#include "model/nf4_linear.h"
#include "model/packed_linear.h"
#include "model/w8a8_linear.h"

namespace llmopt::model {
namespace {

// A float32 copy of `t` in memory that asks the kernel for transparent huge pages (2 MiB-aligned
// and madvise(MADV_HUGEPAGE), which matters where THP is in "madvise" mode): decode streams every
// weight once per token, and 4 KiB pages cost TLB misses and interrupt hardware prefetching.
// Zero-filled float32 [rows, cols] in huge-page-advised memory (no temporary copy).
constexpr size_t kHuge = size_t{2} << 20;

// infer::hugepage_alloc advises only whole 2 MiB pages: a partial last huge page would be backed
// by a full 2 MiB and waste up to 2 MiB of RSS per matrix (~140 MB on the 134M benchmark model).
using infer::hugepage_alloc;

torch::Tensor hugepage_zeros(int64_t rows, int64_t cols) {
  const size_t bytes = static_cast<size_t>(rows * cols) * sizeof(float);
  if (bytes < kHuge) return torch::zeros({rows, cols});
  void* p = hugepage_alloc(bytes);
  if (p == nullptr) return torch::zeros({rows, cols});
  std::memset(p, 0, bytes);
  return torch::from_blob(p, {rows, cols}, [](void* q) { std::free(q); }, torch::kFloat32);
}

torch::Tensor hugepage_copy(const torch::Tensor& t) {
  if (!t.device().is_cpu()) return t.to(torch::kFloat32).contiguous();
  auto src = t.to(torch::kFloat32).contiguous();
  const size_t bytes = static_cast<size_t>(src.numel()) * sizeof(float);
  if (bytes < kHuge) return src.clone();
  void* p = hugepage_alloc(bytes);
  if (p == nullptr) return src.clone();
  std::memcpy(p, src.data_ptr<float>(), bytes);
  return torch::from_blob(p, src.sizes(), [](void* q) { std::free(q); }, torch::kFloat32);
}

}  // namespace

DenseLinear::DenseLinear(torch::Tensor weight, torch::Tensor bias) {
  LLMOPT_ASSERT(weight.dim() == 2, "weight must be [out, in]");
  weight_ = register_parameter("weight", hugepage_copy(weight));
  if (bias.defined()) {
    LLMOPT_ASSERT(bias.dim() == 1 && bias.size(0) == weight.size(0), "bias must be [out]");
    bias_ = register_parameter("bias", bias.to(torch::kFloat32).contiguous());
  }
}

DenseLinear::DenseLinear(int64_t out_features, int64_t in_features, bool with_bias) {
  weight_ = register_parameter("weight", hugepage_zeros(out_features, in_features));
  if (with_bias) bias_ = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor DenseLinear::forward(const torch::Tensor& x) { return linear_f32(x, weight_, bias_); }

int64_t DenseLinear::storage_bytes() const {
  return weight_.numel() * 4 + (bias_.defined() ? bias_.numel() * 4 : 0);
}

const void* DenseLinear::gemv_weights(DType* type) const {
  if (!weight_.device().is_cpu() || weight_.scalar_type() != torch::kFloat32 || !weight_.is_contiguous()) return nullptr;
  if (bias_.defined() && (!bias_.device().is_cpu() || bias_.scalar_type() != torch::kFloat32 || !bias_.is_contiguous()))
    return nullptr;
  *type = DType::F32;
  return weight_.data_ptr<float>();
}

LayerState DenseLinear::stored_state() const {
  LayerState s;
  s.kind = "dense";
  s.tensors.push_back(stored_from_tensor("weight", weight_));
  if (bias_.defined()) s.tensors.push_back(stored_from_tensor("bias", bias_));
  return s;
}

std::optional<StoredTensor> DenseLinear::file_weight() const { return stored_from_tensor("weight", weight_); }

// --- stored tensors and the layer factory ---

const StoredTensor* LayerState::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const StoredTensor& LayerState::get(const std::string& name, const std::string& where) const {
  const StoredTensor* t = find(name);
  if (t == nullptr) {
    std::string have;
    for (const auto& x : tensors) have += (have.empty() ? "" : ", ") + x.name;
    throw_input("[model] {}: layer of kind '{}' has no stored tensor '{}' (found: {})", where, kind, name,
                have.empty() ? "none" : have);
  }
  return *t;
}

StoredTensor stored_from_tensor(const std::string& name, const torch::Tensor& t) {
  auto holder = std::make_shared<torch::Tensor>(t.detach().to(torch::kCPU).contiguous());
  StoredTensor s;
  s.name = name;
  switch (holder->scalar_type()) {
    case torch::kFloat32: s.dtype = DType::F32; break;
    case torch::kFloat16: s.dtype = DType::F16; break;
    case torch::kBFloat16: s.dtype = DType::BF16; break;
    case torch::kInt8: s.dtype = DType::I8; break;
    case torch::kUInt8: s.dtype = DType::U8; break;
    case torch::kInt32: s.dtype = DType::I32; break;
    case torch::kInt64: s.dtype = DType::I64; break;
    case torch::kBool: s.dtype = DType::BOOL; break;
    default: throw_input("[model] tensor '{}': dtype {} cannot be stored", name, c10::toString(holder->scalar_type()));
  }
  s.shape = holder->sizes().vec();
  s.data = static_cast<const uint8_t*>(holder->data_ptr());
  s.nbytes = static_cast<int64_t>(holder->numel() * holder->element_size());
  s.owner = std::static_pointer_cast<const void>(holder);
  return s;
}

torch::Tensor f32_tensor_from_stored(const StoredTensor& s, const std::string& where) {
  LLMOPT_CHECK_INPUT(s.dtype == DType::F32, "[model] {}: tensor '{}' is {}, expected f32", where, s.name,
                     dtype_name(s.dtype));
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  LLMOPT_CHECK_INPUT(s.nbytes == n * 4, "[model] {}: tensor '{}' holds {} bytes, its shape needs {}", where, s.name,
                     s.nbytes, n * 4);
  return torch::from_blob(const_cast<uint8_t*>(s.data), s.shape, torch::kFloat32).clone();
}

namespace {
std::mutex& factory_mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, LinearFactory>& factories() {
  static std::map<std::string, LinearFactory> f = [] {
    std::map<std::string, LinearFactory> init;
    init["dense"] = [](const LayerState& s, const std::string& where) -> std::shared_ptr<LinearLayer> {
      torch::Tensor w = f32_tensor_from_stored(s.get("weight", where), where);
      LLMOPT_CHECK_INPUT(w.dim() == 2, "[model] {}: dense weight must be [out, in], got {} dims", where, w.dim());
      torch::Tensor b;
      if (const StoredTensor* bt = s.find("bias")) {
        b = f32_tensor_from_stored(*bt, where);
        LLMOPT_CHECK_INPUT(b.dim() == 1 && b.size(0) == w.size(0), "[model] {}: bias must be [{}]", where, w.size(0));
      }
      return std::make_shared<DenseLinear>(w, b);
    };
    init["packed"] = packed_linear_factory();
    init["intn"] = intn_linear_factory();
    init["nf4"] = nf4_linear_factory();
    init["lora"] = lora_linear_factory();
    init["w8a8"] = w8a8_linear_factory();
    return init;
  }();
  return f;
}
}  // namespace

void register_linear_kind(const std::string& kind, LinearFactory factory) {
  std::lock_guard<std::mutex> lock(factory_mutex());
  factories()[kind] = std::move(factory);
}

std::vector<std::string> linear_kinds() {
  std::lock_guard<std::mutex> lock(factory_mutex());
  std::vector<std::string> out;
  for (const auto& [k, f] : factories()) out.push_back(k);
  return out;
}

std::shared_ptr<LinearLayer> make_linear(const LayerState& state, const std::string& where) {
  LinearFactory f;
  {
    std::lock_guard<std::mutex> lock(factory_mutex());
    const auto it = factories().find(state.kind);
    if (it != factories().end()) f = it->second;
  }
  if (!f) {
    std::string kinds;
    for (const auto& k : linear_kinds()) kinds += (kinds.empty() ? "" : ", ") + k;
    throw_input("[model] {}: unknown layer kind '{}' (registered: {})", where, state.kind, kinds);
  }
  return f(state, where);
}

}  // namespace llmopt::model
