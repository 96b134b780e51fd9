#include "model/lora_adapter.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <regex>
#include <cstring>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/gguf_lora.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace llmopt::model {
namespace fs = std::filesystem;
namespace {

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";
constexpr const char* kPrefix = "base_model.model.";
constexpr const char* kA = ".lora_A.weight";
constexpr const char* kB = ".lora_B.weight";
constexpr const char* kMag = ".lora_magnitude_vector";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), std::string::npos, suffix) == 0;
}

bool is_plain_name(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::string regex_escape(const std::string& s) {
  static const std::string special = R"(\^$.|?*+()[]{})";
  std::string out;
  for (char c : s) {
    if (special.find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

// A float32 CPU copy of a safetensors tensor (F32, F16, BF16 accepted).
torch::Tensor tensor_from_safetensors(const io::SafetensorsTensor& t, const std::string& file) {
  LLMOPT_CHECK_INPUT(t.dtype && (*t.dtype == DType::F32 || *t.dtype == DType::F16 || *t.dtype == DType::BF16),
                     "[adapter] {}: tensor '{}' has dtype {}, expected F32, F16 or BF16", file, t.name, t.dtype_name);
  const auto st = *t.dtype == DType::F32 ? torch::kFloat32 : *t.dtype == DType::F16 ? torch::kFloat16 : torch::kBFloat16;
  return torch::from_blob(const_cast<uint8_t*>(t.data), t.shape, st).to(torch::kFloat32).clone();
}

}  // namespace

std::string peft_key(const std::string& module_path, const std::string& suffix) {
  return kPrefix + module_path + suffix;
}

void save_peft_adapter(LlamaModel& model, const std::string& dir, const AdapterSaveOptions& opts) {
  const auto layers = lora_layers(model);
  LLMOPT_CHECK_INPUT(!layers.empty(), "[adapter] the model has no LoRA layer to save");
  const LoraConfig cfg = layers.front().second->config();
  for (const auto& [p, l] : layers) {
    const LoraConfig& c = l->config();
    LLMOPT_CHECK_INPUT(c.r == cfg.r && c.alpha == cfg.alpha && c.rslora == cfg.rslora && c.dora == cfg.dora &&
                           c.bias == cfg.bias,
                       "[adapter] {}: LoRA settings differ from {} (PEFT keeps one r/alpha/rslora/dora per adapter)", p,
                       layers.front().first);
  }
  fs::create_directories(dir);
  std::vector<torch::Tensor> keep;
  std::vector<io::SafetensorsOutTensor> out;
  auto add = [&](const std::string& name, const torch::Tensor& t) {
    keep.push_back(t.detach().to(torch::kCPU, torch::kFloat32).contiguous());
    const torch::Tensor& k = keep.back();
    out.push_back({name, DType::F32, k.sizes().vec(), k.data_ptr(), static_cast<int64_t>(k.numel() * 4)});
  };
  for (const auto& [p, l] : layers) {
    add(peft_key(p, kA), l->lora_A());
    add(peft_key(p, kB), l->lora_B());
    if (cfg.dora) add(peft_key(p, kMag), l->magnitude());
    // bias lora_only / all: the trained biases of the adapted projections (PEFT keeps "<path>.bias").
    if (cfg.bias != "none")
      if (const torch::Tensor b = l->base()->bias(); b.defined()) add(peft_key(p, ".bias"), b);
  }
  // target_modules: plain names as a list; otherwise one regex that matches exactly the paths.
  nlohmann::json targets;
  bool plain = !opts.target_modules.empty();
  for (const auto& t : opts.target_modules) plain = plain && is_plain_name(t);
  if (plain) {
    std::set<std::string> sorted(opts.target_modules.begin(), opts.target_modules.end());
    targets = std::vector<std::string>(sorted.begin(), sorted.end());
  } else {
    std::string re;
    for (const auto& [p, l] : layers) re += (re.empty() ? "" : "|") + regex_escape(p);
    targets = "^(" + re + ")$";
  }
  const double alpha = cfg.alpha;
  nlohmann::json config = {
      {"alpha_pattern", nlohmann::json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", opts.base_model_name_or_path},
      {"bias", cfg.bias},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", nlohmann::json::object()},
      {"lora_alpha", alpha == std::floor(alpha) ? nlohmann::json(static_cast<int64_t>(alpha)) : nlohmann::json(alpha)},
      {"lora_dropout", cfg.dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", cfg.r},
      {"rank_pattern", nlohmann::json::object()},
      {"revision", nullptr},
      {"target_modules", targets},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", cfg.dora},
      {"use_rslora", cfg.rslora},
  };
  io::write_safetensors((fs::path(dir) / kWeightsFile).string(), out, {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / kConfigFile).string(), config.dump(2) + "\n");
}

std::string gguf_lora_unsupported(LlamaModel& model) {
  for (const auto& [p, l] : lora_layers(model)) {
    const LoraConfig& c = l->config();
    if (c.dora) return "DoRA has no llama.cpp adapter form (merge instead)";
    if (c.bias != "none" && l->base()->bias().defined())
      return fmt::format("{}: trained biases have no place in a llama.cpp adapter (merge instead)", p);
    if (p == "lm_head" && model.config().tie_word_embeddings)
      return "lm_head over tied embeddings: llama.cpp's GGUF has no output.weight to adapt (merge instead)";
  }
  return "";
}

std::string gguf_lora_architecture(const std::string& source_path) {
  if (fs::is_regular_file(source_path) && ends_with(source_path, ".gguf")) {
    const io::GgufFile g = io::GgufFile::open(source_path);
    if (g.find("general.architecture")) return g.get_string("general.architecture");
  }
  return "llama";
}

void save_gguf_lora_adapter(LlamaModel& model, const std::string& path, const std::string& architecture, DType type) {
  const auto layers = lora_layers(model);
  LLMOPT_CHECK_INPUT(!layers.empty(), "[gguf-lora] the model has no LoRA layer to save");
  io::GgufLoraAdapter a;
  a.architecture = architecture;
  const LoraConfig& first = layers.front().second->config();
  // llama.cpp scales a pair by alpha / r with r its rank: alpha = scaling · r reproduces the
  // scaling of every layer that shares the first one's scaling·r (all of them for plain LoRA, and
  // for rsLoRA of one rank); any other layer has the ratio folded into its B.
  const double alpha = first.scaling() * static_cast<double>(first.r);
  a.alpha = static_cast<float>(alpha);
  for (const auto& [p, l] : layers) {
    const LoraConfig& c = l->config();
    LLMOPT_CHECK_INPUT(!c.dora,
                       "[gguf-lora] {}: DoRA has no llama.cpp adapter form (llama.cpp adds s*B*A*x only, without "
                       "DoRA's magnitude vector); merge instead (llmopt finetune --merge writes OUT/model, then "
                       "llmopt convert OUT/model model.gguf --to gguf), or train without --dora",
                       p);
    LLMOPT_CHECK_INPUT(c.bias == "none" || !l->base()->bias().defined(),
                       "[gguf-lora] {}: trained biases (bias {}) have no place in a llama.cpp LoRA adapter; merge "
                       "instead (llmopt finetune --merge), or train with bias none",
                       p, c.bias);
    LLMOPT_CHECK_INPUT(!l->merged(), "[gguf-lora] {}: the adapter is merged into the base; unmerge it first", p);
    torch::NoGradGuard no_grad;
    const torch::Tensor A = l->lora_A().detach().to(torch::kCPU, torch::kFloat32).contiguous();
    torch::Tensor B = l->lora_B().detach().to(torch::kCPU, torch::kFloat64);
    const double ratio = c.scaling() * static_cast<double>(c.r) / alpha;
    if (std::abs(ratio - 1) > 1e-12) B = B * ratio;
    B = B.to(torch::kFloat32).contiguous();
    io::GgufLoraPair pair;
    pair.module_path = p;
    pair.r = c.r;
    pair.A.assign(A.data_ptr<float>(), A.data_ptr<float>() + A.numel());
    pair.B.assign(B.data_ptr<float>(), B.data_ptr<float>() + B.numel());
    a.pairs.push_back(std::move(pair));
  }
  if (const auto parent = fs::path(path).parent_path(); !parent.empty()) fs::create_directories(parent);
  io::write_gguf_lora(path, model.config(), a, type);
}

namespace {

// A llama.cpp GGUF LoRA adapter applied as LoRA layers: scaling alpha / r per pair (1 when the
// file has no alpha, as llama.cpp does).
AdapterLoadResult load_gguf_lora_adapter(LlamaModel& model, const std::string& path) {
  const io::GgufLoraAdapter a = io::read_gguf_lora(path, model.config());
  AdapterLoadResult res;
  std::map<std::string, std::shared_ptr<LinearLayer>> by_path;
  for (auto& [p, l] : model.linear_layers()) by_path[p] = l;
  for (auto& p : model.parameters(/*recurse=*/true)) p.set_requires_grad(false);
  for (const auto& pair : a.pairs) {
    LLMOPT_CHECK_INPUT(by_path.count(pair.module_path), "[adapter] {}: module '{}' is not in the base model", path,
                       pair.module_path);
    auto base = by_path.at(pair.module_path);
    LLMOPT_CHECK_INPUT(!std::dynamic_pointer_cast<LoraLinear>(base), "[adapter] {}: module '{}' already holds an "
                       "adapter", path, pair.module_path);
    LoraConfig c;
    c.r = pair.r;
    c.alpha = a.alpha != 0 ? a.alpha : static_cast<double>(pair.r);
    const int64_t in = static_cast<int64_t>(pair.A.size()) / pair.r, out = static_cast<int64_t>(pair.B.size()) / pair.r;
    const torch::Tensor A = torch::from_blob(const_cast<float*>(pair.A.data()), {pair.r, in}, torch::kFloat32);
    const torch::Tensor B = torch::from_blob(const_cast<float*>(pair.B.data()), {out, pair.r}, torch::kFloat32);
    model.set_linear(pair.module_path,
                     std::make_shared<LoraLinear>(base, c, A, B, torch::Tensor(), path + " (" + pair.module_path + ")"));
    res.paths.push_back(pair.module_path);
    if (res.paths.size() == 1) res.config = c;
  }
  log::info("[adapter] {}: llama.cpp LoRA alpha={} on {} projections", path, a.alpha, res.paths.size());
  return res;
}

}  // namespace

AdapterLoadResult load_peft_adapter(LlamaModel& model, const std::string& dir) {
  if (fs::is_regular_file(dir) && ends_with(dir, ".gguf")) return load_gguf_lora_adapter(model, dir);
  const std::string config_path = (fs::path(dir) / kConfigFile).string();
  const std::string weights_path = (fs::path(dir) / kWeightsFile).string();
  LLMOPT_CHECK_INPUT(fs::is_directory(dir), "[adapter] {}: not a directory (expected a PEFT adapter with {} and {})",
                     dir, kConfigFile, kWeightsFile);
  LLMOPT_CHECK_INPUT(fs::exists(config_path), "[adapter] {}: missing {}", dir, kConfigFile);
  LLMOPT_CHECK_INPUT(fs::exists(weights_path), "[adapter] {}: missing {} (adapter_model.bin is not read)", dir,
                     kWeightsFile);
  AdapterLoadResult res;
  LoraConfig& cfg = res.config;
  try {
    const auto j = nlohmann::json::parse(io::read_text_file(config_path, "adapter"));
    const std::string type = j.value("peft_type", std::string());
    LLMOPT_CHECK_INPUT(type == "LORA", "[adapter] {}: peft_type is '{}', only LORA adapters are read", config_path,
                       type);
    cfg.r = j.at("r").get<int64_t>();
    cfg.alpha = j.at("lora_alpha").get<double>();
    cfg.dropout = j.value("lora_dropout", 0.0);
    cfg.rslora = j.value("use_rslora", false);
    cfg.dora = j.value("use_dora", false);
    cfg.bias = j.value("bias", std::string("none"));
    LLMOPT_CHECK_INPUT(j.value("alpha_pattern", nlohmann::json::object()).empty(),
                       "[adapter] {}: alpha_pattern is not supported", config_path);
    LLMOPT_CHECK_INPUT(!j.contains("modules_to_save") || j["modules_to_save"].is_null(),
                       "[adapter] {}: modules_to_save is not supported", config_path);
    LLMOPT_CHECK_INPUT(!j.value("fan_in_fan_out", false), "[adapter] {}: fan_in_fan_out is not supported",
                       config_path);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[adapter] {}: malformed adapter config: {}", config_path, e.what());
  }
  cfg.validate();
  const auto st = io::SafetensorsFile::open(weights_path);
  struct Parts {
    torch::Tensor A, B, m, bias;
  };
  std::map<std::string, Parts> parts;
  std::map<std::string, std::shared_ptr<LinearLayer>> by_path;
  for (auto& [p, l] : model.linear_layers()) by_path[p] = l;
  for (const auto& t : st.tensors()) {
    std::string name = t.name;
    LLMOPT_CHECK_INPUT(name.rfind(kPrefix, 0) == 0, "[adapter] {}: tensor '{}' does not start with '{}'", weights_path,
                       name, kPrefix);
    name = name.substr(std::strlen(kPrefix));
    std::string path, what;
    for (const char* suffix : {kA, kB, kMag, ".lora_magnitude_vector.weight", ".bias"}) {
      if (ends_with(name, suffix)) {
        path = name.substr(0, name.size() - std::strlen(suffix));
        what = suffix;
        break;
      }
    }
    LLMOPT_CHECK_INPUT(!path.empty(), "[adapter] {}: tensor '{}' is not a LoRA tensor llmopt reads", weights_path,
                       t.name);
    LLMOPT_CHECK_INPUT(by_path.count(path), "[adapter] {}: tensor '{}' names module '{}', which the base model has not",
                       weights_path, t.name, path);
    torch::Tensor v = tensor_from_safetensors(t, weights_path);
    Parts& pp = parts[path];
    if (what == kA) pp.A = v;
    else if (what == kB) pp.B = v;
    else if (what == ".bias") pp.bias = v;
    else pp.m = v;
  }
  LLMOPT_CHECK_INPUT(!parts.empty(), "[adapter] {}: no LoRA tensors", weights_path);
  for (auto& p : model.parameters(/*recurse=*/true)) p.set_requires_grad(false);
  for (auto& [path, pp] : parts) {
    const std::string where = fmt::format("{} ({})", weights_path, peft_key(path, ""));
    LLMOPT_CHECK_INPUT(pp.A.defined() && pp.B.defined(), "[adapter] {}: module '{}' lacks {}", weights_path, path,
                       pp.A.defined() ? peft_key(path, kB) : peft_key(path, kA));
    LLMOPT_CHECK_INPUT(!cfg.dora || pp.m.defined(), "[adapter] {}: use_dora but '{}' is missing", weights_path,
                       peft_key(path, kMag));
    // The rank of each module from its tensors (PEFT's rank_pattern), its scaling from lora_alpha.
    LoraConfig c = cfg;
    LLMOPT_CHECK_INPUT(pp.A.dim() == 2, "[adapter] {}: {} must be [r, in], found {}", weights_path,
                       peft_key(path, kA), c10::str(pp.A.sizes()));
    c.r = pp.A.size(0);
    auto base = by_path.at(path);
    LLMOPT_CHECK_INPUT(!std::dynamic_pointer_cast<LoraLinear>(base), "[adapter] {}: module '{}' already holds an adapter",
                       weights_path, path);
    if (pp.bias.defined()) {
      const torch::Tensor b = base->bias();
      LLMOPT_CHECK_INPUT(b.defined() && b.numel() == pp.bias.numel(),
                         "[adapter] {}: '{}' has {} values but the base projection {}", weights_path,
                         peft_key(path, ".bias"), pp.bias.numel(),
                         b.defined() ? fmt::format("has {}", b.numel()) : std::string("has no bias"));
      torch::NoGradGuard no_grad;
      torch::Tensor(b).copy_(pp.bias);
    }
    model.set_linear(path, std::make_shared<LoraLinear>(base, c, pp.A, pp.B, pp.m, where));
    res.paths.push_back(path);
  }
  log::info("[adapter] {}: LoRA r={} alpha={}{}{} on {} projections", dir, cfg.r, cfg.alpha,
            cfg.rslora ? " rslora" : "", cfg.dora ? " dora" : "", res.paths.size());
  return res;
}

}  // namespace llmopt::model
