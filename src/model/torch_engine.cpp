#include "model/torch_engine.h"

#include <cstring>

#include "core/error.h"
#include "infer/llama_cpu.h"
#include "infer/packed_layers.h"
#include "model/loader.h"

namespace llmopt::model {
namespace {

TorchEngine::Cache& torch_cache(infer::EngineCache& c) {
  auto* p = dynamic_cast<TorchEngine::Cache*>(&c);
  LLMOPT_ASSERT(p != nullptr, "a KV cache made by another engine was given to the torch engine");
  return *p;
}

// logits [rows, vocab] of any device/dtype -> host float32 at `out`.
void copy_out(const torch::Tensor& logits, float* out) {
  const auto host = logits.to(torch::kCPU, torch::kFloat32).contiguous();
  std::memcpy(out, host.data_ptr<float>(), static_cast<size_t>(host.numel()) * sizeof(float));
}

}  // namespace

TorchEngine::TorchEngine(std::shared_ptr<LlamaModel> model) : model_(std::move(model)) {
  LLMOPT_ASSERT(model_ != nullptr, "TorchEngine needs a model");
}

void TorchEngine::Cache::truncate(int64_t n) {
  LLMOPT_CHECK_INPUT(n >= 0 && n <= length(), "[model] cannot truncate a KV cache of {} positions to {}", length(),
                     n);
  kv.length = n + (kv.primed ? kv.reserved : 0);  // a prompt adapter's virtual tokens stay
}

std::unique_ptr<infer::EngineCache> TorchEngine::make_cache(int64_t capacity) const {
  LLMOPT_CHECK_INPUT(capacity > 0, "[model] KV cache capacity must be positive, got {}", capacity);
  auto c = std::make_unique<Cache>();
  c->kv = model_->make_cache(1, capacity);
  return c;
}

void TorchEngine::prefill(const int64_t* tokens, int64_t n, infer::EngineCache& ec, float* logits,
                          bool all_positions) const {
  torch::NoGradGuard no_grad;
  LLMOPT_CHECK_INPUT(n >= 1, "[model] prefill needs at least one token");
  Cache& c = torch_cache(ec);
  const int64_t V = model_->config().vocab_size;
  for (int64_t t = 0; t < n; ++t)
    LLMOPT_CHECK_INPUT(tokens[t] >= 0 && tokens[t] < V, "[model] token id {} out of range for vocab size {}",
                       tokens[t], V);
  LLMOPT_CHECK_INPUT(c.length() + n <= c.capacity(),
                     "[model] {} tokens do not fit the KV cache ({} of {} positions used)", n, c.length(),
                     c.capacity());
  const auto dev = model_->device();
  auto ids = torch::from_blob(const_cast<int64_t*>(tokens), {1, n}, torch::kLong).to(dev);
  if (n == 1) return copy_out(model_->forward(ids, &c.kv)[0], logits);  // the fused CPU decode step
  auto hidden = model_->forward_hidden(ids, &c.kv);                      // [1, n, dim]
  if (!all_positions) hidden = hidden.narrow(1, n - 1, 1);  // a generator needs the last row only
  copy_out(model_->logits_from_hidden(hidden)[0], logits);
}

void TorchEngine::decode(int64_t token, infer::EngineCache& cache, float* logits) const {
  prefill(&token, 1, cache, logits, false);
}

bool native_equivalent(LlamaModel& m) {
  if (!m.device().is_cpu() || m.prompt_adapter() != nullptr) return false;
  for (auto& [name, layer] : m.linear_layers()) {
    // int-N and NF4 layers: the native engine binds their stored codes, scales and zeros
    // (infer/packed_layers.h) and runs the same per-group formula (kernels/gemv_intn.h).
    if (infer::native_stored_kind(layer->kind())) continue;
    // Plain and packed (ggml blocks, f16, bf16) matrices: the native engine holds them as stored.
    if (layer->kind() != "dense" && layer->kind() != "packed") return false;
    DType type = DType::BF16;
    if (layer->gemv_weights(&type) == nullptr || !layer->file_weight()) return false;
    if (layer->file_weight()->dtype != type) return false;
  }
  return true;
}

std::unique_ptr<infer::Engine> make_engine(const std::shared_ptr<LlamaModel>& m, const std::string& choice) {
  LLMOPT_CHECK_INPUT(choice == "auto" || choice == "native" || choice == "torch",
                     "[engine] unknown engine '{}' (valid: auto, native, torch)", choice);
  if (choice == "torch") return std::make_unique<TorchEngine>(m);
  const bool native = native_equivalent(*m);
  if (choice == "auto" && !native) return std::make_unique<TorchEngine>(m);
  LLMOPT_CHECK_INPUT(native,
                     "[engine] the native engine runs CPU models of dense, packed, int-N or NF4 layers only; this model has "
                     "other layers or lives on {} (use engine torch)",
                     m->device().str());
  // Borrowed: the engine reads the model's own f32 and packed tensors, int-N / NF4 codes included
  // (no second copy, no dense one).
  return std::make_unique<infer::CpuLlama>(model_to_checkpoint(*m, CheckpointWeights::Packed),
                                           infer::CpuLlama::Storage::Borrow);
}

}  // namespace llmopt::model
