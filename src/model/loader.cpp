#include "model/loader.h"

#include <malloc.h>

#include <filesystem>
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "io/checkpoint_tensors.h"

namespace llmopt::model {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

std::shared_ptr<LlamaModel> model_from_checkpoint(const io::Checkpoint& ckpt) {
  torch::NoGradGuard no_grad;
  auto m = std::make_shared<LlamaModel>(ckpt.config);
  std::unordered_map<std::string, torch::Tensor> params;
  for (auto& p : m->named_parameters()) params.emplace(p.key(), p.value());
  size_t assigned = 0;
  for (const auto& t : ckpt.tensors) {
    auto it = params.find(t.name);
    if (it == params.end()) {
      log::debug("[model] {}: ignoring tensor '{}'", ckpt.path, t.name);
      continue;
    }
    std::vector<int64_t> want = it->second.sizes().vec();
    LLMOPT_CHECK_INPUT(want == t.shape, "[model] {}: tensor '{}' has shape {}, config expects {}", ckpt.path, t.name,
                       shape_str(t.shape), shape_str(want));
    // io::tensor_to_f32 converts F16/BF16 and dequantizes block formats (src/kernels).
    std::vector<float> values = io::tensor_to_f32(t);
    it->second.copy_(torch::from_blob(values.data(), it->second.sizes(), torch::kFloat32));
    ++assigned;
    params.erase(it);
  }
  if (!params.empty()) {
    std::string missing;
    for (auto& [k, v] : params) missing += (missing.empty() ? "" : ", ") + k;
    throw_input("[model] {}: missing tensors: {}", ckpt.path, missing);
  }
  return m;
}

LoadedModel load_model(const std::string& path, const ModelLoadOptions& opts) {
  io::LoadOptions lo;
  lo.tokenizer_path = opts.tokenizer_path;
  lo.check_finite = opts.check_finite;
  LoadedModel out;
  {
    io::Checkpoint ckpt = io::load_checkpoint(path, lo);
    out.model = model_from_checkpoint(ckpt);
    out.format = ckpt.format;
    out.path = path;
    out.file_bytes = ckpt.total_bytes();
    out.tokenizer_path = ckpt.tokenizer.path;
    nlohmann::json tensors = nlohmann::json::array();
    for (const auto& t : ckpt.tensors)
      tensors.push_back({{"name", t.name}, {"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape},
                         {"bytes", t.nbytes}});
    out.source_info = {{"format", std::string(io::model_format_name(ckpt.format))},
                       {"tensors", tensors},
                       {"metadata", ckpt.metadata}};
    if (ckpt.tokenizer.kind != io::TokenizerSource::Kind::None) {
      out.tokenizer = tok::load_tokenizer(
          ckpt.tokenizer, static_cast<int32_t>(ckpt.config.vocab_size));
    }
  }  // the checkpoint (and its file mappings) is released here
  // Conversion temporaries (f16/bf16 -> f32, permutations) are freed by now but stay in malloc's
  // heap; hand those pages back so that they do not count in the model's resident memory.
  malloc_trim(0);
  return out;
}

io::Checkpoint model_to_checkpoint(LlamaModel& model) {
  torch::NoGradGuard no_grad;
  io::Checkpoint ck;
  ck.config = model.config();
  auto add = [&](const std::string& name, torch::Tensor t) {
    auto holder = std::make_shared<torch::Tensor>(t.detach().to(torch::kCPU, torch::kFloat32).contiguous());
    io::TensorView v;
    v.name = name;
    v.dtype = DType::F32;
    v.shape = holder->sizes().vec();
    v.data = static_cast<const uint8_t*>(holder->data_ptr());
    v.nbytes = holder->numel() * 4;
    ck.tensors.push_back(v);
    ck.storage.push_back(std::static_pointer_cast<const void>(holder));
  };
  // Order as HF writes them: embeddings, layers (norms, attention, mlp), final norm, head.
  std::unordered_map<std::string, torch::Tensor> params;
  for (auto& p : model.named_parameters()) params.emplace(p.key(), p.value());
  add("model.embed_tokens.weight", model.embed_tokens());
  std::unordered_map<std::string, std::shared_ptr<LinearLayer>> linears;
  for (auto& [n, l] : model.linear_layers()) linears.emplace(n, l);
  for (int64_t i = 0; i < model.config().num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i);
    add(p + ".input_layernorm.weight", params.at(p + ".input_layernorm.weight"));
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}) {
      auto& l = linears.at(p + "." + n);
      add(p + "." + n + ".weight", l->dense_weight());
      if (l->bias().defined()) add(p + "." + n + ".bias", l->bias());
    }
    add(p + ".post_attention_layernorm.weight", params.at(p + ".post_attention_layernorm.weight"));
    for (const char* n : {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"})
      add(p + "." + n + ".weight", linears.at(p + "." + n)->dense_weight());
  }
  add("model.norm.weight", model.final_norm());
  if (auto it = linears.find("lm_head"); it != linears.end()) add("lm_head.weight", it->second->dense_weight());
  return ck;
}

}  // namespace llmopt::model
