#include "model/prompt_adapter.h"

#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"
#include "model/llama.h"
#include "model/llama_layers.h"
#include "model/lora_adapter.h"

namespace llmopt::model {
namespace fs = std::filesystem;
namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kTensor = "prompt_embeddings";
constexpr const char* kKind = "prompt_adapter";

std::string peft_type_of(const std::string& method) {
  if (method == "prompt") return "PROMPT_TUNING";
  if (method == "prefix") return "PREFIX_TUNING";
  return "P_TUNING";
}

std::string method_of(const std::string& peft_type) {
  if (peft_type == "PROMPT_TUNING") return "prompt";
  if (peft_type == "PREFIX_TUNING") return "prefix";
  if (peft_type == "P_TUNING") return "ptuning";
  return "";
}

// PEFT's embedding width: the virtual token's (prompt, ptuning) or every layer's key and value
// prefix side by side (prefix).
int64_t embedding_width(const std::string& method, const ModelConfig& mc) {
  const int64_t d = prompt_token_dim(method, mc);
  return method == "prefix" ? mc.num_hidden_layers * 2 * d : d;
}

std::string shape_str(c10::IntArrayRef s) { return fmt::format("[{}]", fmt::join(s.vec(), ", ")); }

}  // namespace

void PromptAdapterConfig::validate() const {
  LLMOPT_CHECK_INPUT(method == "prompt" || method == "prefix" || method == "ptuning",
                     "[prompt] method must be prompt, prefix or ptuning, found '{}'", method);
  LLMOPT_CHECK_INPUT(num_virtual_tokens > 0, "[prompt] num_virtual_tokens (--num-virtual-tokens) must be > 0, found {}",
                     num_virtual_tokens);
  LLMOPT_CHECK_INPUT(encoder_hidden >= 0, "[prompt] encoder_hidden (--encoder-hidden) must be >= 0 (0 = token_dim), found {}",
                     encoder_hidden);
  LLMOPT_CHECK_INPUT(init == "random" || init == "text", "[prompt] prompt_init must be random or text, found '{}'",
                     init);
  // (init applies to method prompt only, as PEFT's prompt_tuning_init; the others ignore it.)
  LLMOPT_CHECK_INPUT(init != "text" || method != "prompt" || !init_text.empty(),
                     "[prompt] prompt init text needs the text (init_text, --prompt-init-text)");
}

int64_t prompt_token_dim(const std::string& method, const ModelConfig& cfg) {
  // PEFT 0.12 (_prepare_prompt_learning_config, "for grouped-query attention, see #1901"): for
  // prefix tuning token_dim becomes token_dim / num_attention_heads * num_key_value_heads.
  if (method == "prefix") return cfg.num_key_value_heads * cfg.head_dim;
  return cfg.hidden_size;
}

PromptAdapter::PromptAdapter(const PromptAdapterConfig& cfg, const ModelConfig& mc, uint64_t seed)
    : cfg_(cfg), mc_(mc) {
  cfg_.validate();
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const int64_t n = cfg_.num_virtual_tokens;
  // torch.nn.Embedding's init: N(0, 1).
  embedding_ = register_module("embedding", std::make_shared<WeightModule>(torch::randn(
                                                {n, embedding_width(cfg_.method, mc_)}, gen, torch::kFloat32)))
                   ->weight;
  if (cfg_.method == "ptuning") {
    const int64_t d = mc_.hidden_size;
    if (cfg_.encoder_hidden == 0) cfg_.encoder_hidden = d;
    const int64_t h = cfg_.encoder_hidden;
    // PEFT's PromptEncoder, MLP reparameterization (encoder_num_layers is ignored there too):
    // Linear(d, h), ReLU, Linear(h, h), ReLU, Linear(h, d). torch.nn.Linear's init: weight
    // kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias U(-1/sqrt(in), 1/sqrt(in)).
    auto lin = [&](int64_t in, int64_t out) {
      torch::nn::Linear l(torch::nn::LinearOptions(in, out).bias(true));
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      l->weight.uniform_(-bound, bound, gen);
      l->bias.uniform_(-bound, bound, gen);
      return l;
    };
    mlp_ = register_module("mlp_head", torch::nn::Sequential(lin(d, h), torch::nn::ReLU(), lin(h, h),
                                                              torch::nn::ReLU(), lin(h, d)));
  }
}

PromptAdapter::PromptAdapter(const PromptAdapterConfig& cfg, const ModelConfig& mc,
                             const torch::Tensor& prompt_embeddings, const std::string& where)
    : cfg_(cfg), mc_(mc) {
  cfg_.validate();
  const int64_t n = cfg_.num_virtual_tokens, w = embedding_width(cfg_.method, mc_);
  LLMOPT_CHECK_INPUT(prompt_embeddings.dim() == 2 && prompt_embeddings.size(0) == n && prompt_embeddings.size(1) == w,
                     "[adapter] {}: tensor '{}' has shape {}, expected [{}, {}] (num_virtual_tokens {}, {} of the "
                     "base model)",
                     where, kTensor, shape_str(prompt_embeddings.sizes()), n, w, n,
                     cfg_.method == "prefix" ? fmt::format("num_layers {} x 2 x kv_heads*head_dim {}",
                                                           mc_.num_hidden_layers, prompt_token_dim("prefix", mc_))
                                             : fmt::format("hidden_size {}", mc_.hidden_size));
  embedding_ = register_module("embedding", std::make_shared<WeightModule>(
                                                prompt_embeddings.detach().to(torch::kCPU, torch::kFloat32).clone()))
                   ->weight;
}

torch::Tensor PromptAdapter::virtual_embeddings() {
  LLMOPT_ASSERT(!is_prefix(), "virtual_embeddings() of a prefix adapter");
  return mlp_ ? mlp_->forward(embedding_) : embedding_;
}

std::pair<torch::Tensor, torch::Tensor> PromptAdapter::prefix_kv(int64_t li) {
  LLMOPT_ASSERT(is_prefix(), "prefix_kv() of a {} adapter", cfg_.method);
  const int64_t n = cfg_.num_virtual_tokens, KV = mc_.num_key_value_heads, hd = mc_.head_dim;
  // PEFT's get_prompt: view [B, n, layers*2, heads, hd], permute to [layers*2, B, heads, n, hd],
  // split in pairs: layer l's keys are row 2l, its values 2l+1.
  const auto all = embedding_.view({n, mc_.num_hidden_layers * 2, KV, hd});
  return {all.select(1, 2 * li).permute({1, 0, 2}), all.select(1, 2 * li + 1).permute({1, 0, 2})};
}

torch::Tensor PromptAdapter::prompt_embeddings() {
  torch::NoGradGuard no_grad;
  const torch::Tensor t = is_prefix() ? embedding_ : virtual_embeddings();
  return t.detach().to(torch::kCPU, torch::kFloat32).contiguous().clone();
}

void PromptAdapter::init_from_tokens(const torch::Tensor& token_embeddings, const std::vector<int64_t>& ids) {
  LLMOPT_ASSERT(cfg_.method == "prompt", "text init of a {} adapter", cfg_.method);
  LLMOPT_CHECK_INPUT(!ids.empty(), "[prompt] prompt_init_text gives no tokens");
  // PEFT's PromptEmbedding (prompt_tuning_init TEXT): the ids cut to n, or repeated and cut.
  std::vector<int64_t> use;
  while (static_cast<int64_t>(use.size()) < cfg_.num_virtual_tokens) use.insert(use.end(), ids.begin(), ids.end());
  use.resize(static_cast<size_t>(cfg_.num_virtual_tokens));
  for (int64_t id : use)
    LLMOPT_CHECK_INPUT(id >= 0 && id < token_embeddings.size(0), "[prompt] init token id {} out of range", id);
  torch::NoGradGuard no_grad;
  embedding_.copy_(token_embeddings.index_select(0, torch::tensor(use, torch::kLong).to(token_embeddings.device()))
                       .to(embedding_.dtype()));
}

std::vector<torch::Tensor> PromptAdapter::trainable() { return parameters(/*recurse=*/true); }

LayerState PromptAdapter::stored_state() const {
  LayerState s;
  s.kind = kKind;
  s.meta = {{"method", cfg_.method},     {"num_virtual_tokens", cfg_.num_virtual_tokens},
            {"encoder_hidden", cfg_.encoder_hidden}, {"init", cfg_.init}, {"init_text", cfg_.init_text}};
  torch::NoGradGuard no_grad;
  for (const auto& p : named_parameters(/*recurse=*/true))
    s.tensors.push_back(stored_from_tensor(p.key(), p.value().detach().to(torch::kCPU, torch::kFloat32).contiguous()));
  return s;
}

std::shared_ptr<PromptAdapter> PromptAdapter::from_state(const LayerState& s, const ModelConfig& mc,
                                                         const std::string& where) {
  LLMOPT_CHECK_INPUT(s.kind == kKind, "[state] {}: kind '{}', expected '{}'", where, s.kind, kKind);
  PromptAdapterConfig c;
  try {
    c.method = s.meta.at("method").get<std::string>();
    c.num_virtual_tokens = s.meta.at("num_virtual_tokens").get<int64_t>();
    c.encoder_hidden = s.meta.value("encoder_hidden", int64_t{0});
    c.init = s.meta.value("init", std::string("random"));
    c.init_text = s.meta.value("init_text", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw_input("[state] {}: malformed prompt adapter settings: {}", where, e.what());
  }
  const torch::Tensor emb = f32_tensor_from_stored(s.get("embedding.weight", where), where);
  if (!s.find("mlp_head.0.weight")) return std::make_shared<PromptAdapter>(c, mc, emb, where);
  auto a = std::make_shared<PromptAdapter>(c, mc, 0);
  torch::NoGradGuard no_grad;
  for (auto& p : a->named_parameters(/*recurse=*/true)) {
    const torch::Tensor t = f32_tensor_from_stored(s.get(p.key(), where), where);
    LLMOPT_CHECK_INPUT(t.sizes() == p.value().sizes(), "[state] {}: tensor '{}' has shape {}, expected {}", where,
                       p.key(), shape_str(t.sizes()), shape_str(p.value().sizes()));
    p.value().copy_(t);
  }
  return a;
}

std::shared_ptr<PromptAdapter> apply_prompt_adapter(LlamaModel& model, const PromptAdapterConfig& cfg, uint64_t seed,
                                                    const std::vector<int64_t>& text_ids) {
  cfg.validate();
  auto a = std::make_shared<PromptAdapter>(cfg, model.config(), seed);
  a->to(model.device(), model.embed_tokens().scalar_type());
  if (cfg.method == "prompt" && cfg.init == "text") a->init_from_tokens(model.embed_tokens().detach(), text_ids);
  for (auto& p : model.parameters(/*recurse=*/true)) p.set_requires_grad(false);
  model.set_prompt_adapter(a);
  for (auto& p : a->parameters(/*recurse=*/true)) p.set_requires_grad(true);
  return a;
}

void save_prompt_adapter(LlamaModel& model, const std::string& dir, const PromptAdapterSaveOptions& opts) {
  PromptAdapter* a = model.prompt_adapter();
  LLMOPT_CHECK_INPUT(a != nullptr, "[adapter] the model has no prompt adapter to save");
  const ModelConfig& mc = model.config();
  const PromptAdapterConfig& c = a->config();
  const bool prefix = a->is_prefix();
  const torch::Tensor emb = a->prompt_embeddings();
  const int64_t token_dim = prompt_token_dim(c.method, mc);
  // The fields PEFT 0.12's save_pretrained writes for each config class (inference_mode true).
  nlohmann::json j = {
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", opts.base_model_name_or_path},
      {"inference_mode", true},
      {"num_attention_heads", prefix ? mc.num_key_value_heads : mc.num_attention_heads},
      {"num_layers", mc.num_hidden_layers},
      {"num_transformer_submodules", 1},
      {"num_virtual_tokens", c.num_virtual_tokens},
      {"peft_type", peft_type_of(c.method)},
      {"revision", nullptr},
      {"task_type", "CAUSAL_LM"},
      {"token_dim", token_dim},
  };
  if (c.method == "prompt") {
    const bool text = c.init == "text";
    j["prompt_tuning_init"] = text ? "TEXT" : "RANDOM";
    j["prompt_tuning_init_text"] = text ? nlohmann::json(c.init_text) : nlohmann::json(nullptr);
    // PEFT requires a tokenizer name with TEXT (read only when re-initializing for training).
    j["tokenizer_name_or_path"] = text ? nlohmann::json(opts.base_model_name_or_path) : nlohmann::json(nullptr);
    j["tokenizer_kwargs"] = nullptr;
  } else if (prefix) {
    j["encoder_hidden_size"] = token_dim;
    j["prefix_projection"] = false;
  } else {
    j["encoder_dropout"] = 0.0;
    j["encoder_hidden_size"] = c.encoder_hidden > 0 ? c.encoder_hidden : mc.hidden_size;
    j["encoder_num_layers"] = 2;
    j["encoder_reparameterization_type"] = "MLP";
  }
  fs::create_directories(dir);
  io::write_safetensors((fs::path(dir) / kWeightsFile).string(),
                        {{kTensor, DType::F32, emb.sizes().vec(), emb.data_ptr(), static_cast<int64_t>(emb.numel() * 4)}},
                        {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / kConfigFile).string(), j.dump(2) + "\n");
}

std::string peft_adapter_type(const std::string& dir) {
  const std::string path = (fs::path(dir) / kConfigFile).string();
  LLMOPT_CHECK_INPUT(fs::exists(path), "[adapter] {}: missing {}", dir, kConfigFile);
  try {
    return nlohmann::json::parse(io::read_text_file(path, "adapter")).value("peft_type", std::string());
  } catch (const nlohmann::json::exception& e) {
    throw_input("[adapter] {}: malformed adapter config: {}", path, e.what());
  }
}

std::shared_ptr<PromptAdapter> load_prompt_adapter(LlamaModel& model, const std::string& dir) {
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kWeightsFile).string();
  LLMOPT_CHECK_INPUT(fs::is_directory(dir), "[adapter] {}: not a directory (expected a PEFT adapter with {} and {})",
                     dir, kConfigFile, kWeightsFile);
  LLMOPT_CHECK_INPUT(fs::exists(config_path), "[adapter] {}: missing {}", dir, kConfigFile);
  LLMOPT_CHECK_INPUT(fs::exists(weights_path), "[adapter] {}: missing {} (adapter_model.bin is not read)", dir,
                     kWeightsFile);
  LLMOPT_CHECK_INPUT(model.prompt_adapter() == nullptr, "[adapter] {}: the model already holds a prompt adapter", dir);
  const ModelConfig& mc = model.config();
  PromptAdapterConfig c;
  try {
    const auto j = nlohmann::json::parse(io::read_text_file(config_path, "adapter"));
    const std::string type = j.value("peft_type", std::string());
    c.method = method_of(type);
    LLMOPT_CHECK_INPUT(!c.method.empty(), "[adapter] {}: peft_type '{}' is not a prompt-learning type", config_path,
                       type);
    LLMOPT_CHECK_INPUT(j.value("task_type", std::string("CAUSAL_LM")) == "CAUSAL_LM",
                       "[adapter] {}: task_type is '{}', only CAUSAL_LM adapters are read", config_path,
                       j.value("task_type", std::string()));
    LLMOPT_CHECK_INPUT(j.contains("num_virtual_tokens") && j["num_virtual_tokens"].is_number_integer(),
                       "[adapter] {}: num_virtual_tokens missing or not an integer", config_path);
    c.num_virtual_tokens = j["num_virtual_tokens"].get<int64_t>();
    LLMOPT_CHECK_INPUT(c.num_virtual_tokens > 0, "[adapter] {}: num_virtual_tokens must be > 0, found {}", config_path,
                       c.num_virtual_tokens);
    const int64_t subs = j.value("num_transformer_submodules", int64_t{1});
    LLMOPT_CHECK_INPUT(subs == 1, "[adapter] {}: num_transformer_submodules is {}, expected 1 (decoder-only)",
                       config_path, subs);
    // The base-model fields PEFT filled in from the model it was made for must fit this base.
    auto expect = [&](const char* field, int64_t want, const char* what) {
      if (!j.contains(field) || j[field].is_null()) return;
      const int64_t got = j[field].get<int64_t>();
      LLMOPT_CHECK_INPUT(got == want, "[adapter] {}: {} is {}, the base model has {} {}", config_path, field, got, what,
                         want);
    };
    const bool prefix = c.method == "prefix";
    expect("token_dim", prompt_token_dim(c.method, mc), prefix ? "kv_heads*head_dim" : "hidden_size");
    expect("num_layers", mc.num_hidden_layers, "num_hidden_layers");
    expect("num_attention_heads", prefix ? mc.num_key_value_heads : mc.num_attention_heads,
           prefix ? "num_key_value_heads" : "num_attention_heads");
    if (c.method == "ptuning" && j.contains("encoder_hidden_size") && j["encoder_hidden_size"].is_number_integer())
      c.encoder_hidden = j["encoder_hidden_size"].get<int64_t>();
    if (c.method == "prompt" && j.value("prompt_tuning_init", std::string()) == "TEXT" &&
        j.contains("prompt_tuning_init_text") && j["prompt_tuning_init_text"].is_string()) {
      c.init = "text";
      c.init_text = j["prompt_tuning_init_text"].get<std::string>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw_input("[adapter] {}: malformed adapter config: {}", config_path, e.what());
  }
  const auto st = io::SafetensorsFile::open(weights_path);
  const io::SafetensorsTensor* t = st.find(kTensor);
  LLMOPT_CHECK_INPUT(t != nullptr, "[adapter] {}: no tensor '{}'", weights_path, kTensor);
  LLMOPT_CHECK_INPUT(t->dtype && (*t->dtype == DType::F32 || *t->dtype == DType::F16 || *t->dtype == DType::BF16),
                     "[adapter] {}: tensor '{}' has dtype {}, expected F32, F16 or BF16", weights_path, kTensor,
                     t->dtype_name);
  for (const auto& other : st.tensors())
    LLMOPT_CHECK_INPUT(other.name == kTensor, "[adapter] {}: unexpected tensor '{}' (a prompt-learning adapter holds "
                       "only '{}')", weights_path, other.name, kTensor);
  const auto dt = *t->dtype == DType::F32 ? torch::kFloat32 : *t->dtype == DType::F16 ? torch::kFloat16 : torch::kBFloat16;
  const torch::Tensor emb = torch::from_blob(const_cast<uint8_t*>(t->data), t->shape, dt).to(torch::kFloat32).clone();
  auto a = std::make_shared<PromptAdapter>(c, mc, emb, weights_path);
  a->to(model.device());
  for (auto& p : a->parameters()) p.set_requires_grad(false);
  model.set_prompt_adapter(a);
  log::info("[adapter] {}: {} with {} virtual tokens", dir, peft_type_of(c.method), c.num_virtual_tokens);
  return a;
}

void load_any_adapter(LlamaModel& model, const std::string& dir) {
  if (fs::is_directory(dir) && fs::exists(fs::path(dir) / kConfigFile) && !method_of(peft_adapter_type(dir)).empty()) {
    load_prompt_adapter(model, dir);
    return;
  }
  load_peft_adapter(model, dir);
}

}  // namespace llmopt::model
