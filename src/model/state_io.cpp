#include "model/state_io.h"

#include <fmt/ranges.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "io/architecture.h"
#include "io/atomic_file.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/prompt_adapter.h"

namespace llmopt::model {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateJson = "llmopt_state.json";
constexpr const char* kStateTensors = "state.safetensors";
constexpr const char* kFormat = "llmopt-state";
constexpr int kVersion = 1;

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The model's non-projection parameters (embedding, norms) by HF name.
std::unordered_map<std::string, torch::Tensor> plain_parameters(LlamaModel& m) {
  std::unordered_map<std::string, torch::Tensor> all, out;
  for (auto& p : m.named_parameters()) all.emplace(p.key(), p.value());
  io::arch::for_each_tensor(m.config(), [&](const io::arch::TensorInfo& t) {
    if (io::arch::describe(t.role).linear) return;
    const auto it = all.find(t.hf_name);
    LLMOPT_ASSERT(it != all.end(), "model has no parameter '{}'", t.hf_name);
    out.emplace(t.hf_name, it->second);
  });
  return out;
}

// Builds a model of `cfg` whose projections are `layers` (path -> state) and whose plain
// parameters are `plain` (HF name -> tensor view); `where` names the source in errors.
std::shared_ptr<LlamaModel> assemble(const ModelConfig& cfg, const std::map<std::string, LayerState>& layers,
                                     const std::map<std::string, StoredTensor>& plain, const std::string& where) {
  torch::NoGradGuard no_grad;
  auto m = std::make_shared<LlamaModel>(cfg);
  for (auto& [name, param] : plain_parameters(*m)) {
    const auto it = plain.find(name);
    LLMOPT_CHECK_INPUT(it != plain.end(), "[state] {}: missing tensor '{}'", where, name);
    torch::Tensor t = f32_tensor_from_stored(it->second, where);
    LLMOPT_CHECK_INPUT(t.sizes() == param.sizes(), "[state] {}: tensor '{}' has shape {}, config implies {}", where,
                       name, fmt::format("{}", fmt::join(t.sizes().vec(), "x")),
                       fmt::format("{}", fmt::join(param.sizes().vec(), "x")));
    param.copy_(t);
  }
  for (const auto& li : io::arch::linears(cfg)) {
    const auto it = layers.find(li.path);
    LLMOPT_CHECK_INPUT(it != layers.end(), "[state] {}: missing layer '{}'", where, li.path);
    m->set_linear(li.path, make_linear(it->second, where + ": " + li.path));
  }
  return m;
}

}  // namespace

bool is_model_state_dir(const std::string& dir) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(dir) / kStateJson, ec);
}

void save_model_state(LlamaModel& m, const std::string& dir) {
  torch::NoGradGuard no_grad;
  const fs::path final_dir(dir);
  const fs::path tmp = final_dir.parent_path() /
                       ("." + final_dir.filename().string() + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    std::vector<io::SafetensorsOutTensor> out;
    std::vector<StoredTensor> keep;  // owners of the bytes until written
    json layers = json::object(), plain = json::object();
    auto add = [&](const std::string& key, const StoredTensor& t) {
      io::SafetensorsOutTensor o;
      o.name = key;
      if (io::safetensors_can_hold(t.dtype)) {
        o.dtype = t.dtype;
        o.shape = t.shape;
      } else {
        o.dtype = DType::U8;
        o.shape = {t.nbytes};
      }
      o.data = t.data;
      o.nbytes = t.nbytes;
      out.push_back(o);
      keep.push_back(t);
      return json{{"dtype", std::string(dtype_name(t.dtype))}, {"shape", t.shape}, {"key", key}};
    };
    for (auto& [name, p] : plain_parameters(m)) plain[name] = add(name, stored_from_tensor(name, p));
    for (auto& [path, layer] : m.linear_layers()) {
      LayerState s = layer->stored_state();
      json tensors = json::object();
      for (const auto& t : s.tensors) tensors[t.name] = add(path + "#" + t.name, t);
      layers[path] = {{"kind", s.kind}, {"meta", s.meta}, {"tensors", tensors}};
    }
    json doc = {{"format", kFormat}, {"version", kVersion}, {"tensors", plain}, {"layers", layers}};
    // The optional prompt-learning adapter (model/prompt_adapter.h), stored like a layer.
    if (PromptAdapter* a = m.prompt_adapter()) {
      LayerState s = a->stored_state();
      json tensors = json::object();
      for (const auto& t : s.tensors) tensors[t.name] = add("prompt_encoder#" + t.name, t);
      doc["prompt_adapter"] = {{"kind", s.kind}, {"meta", s.meta}, {"tensors", tensors}};
    }
    io::write_safetensors((tmp / kStateTensors).string(), out);
    io::write_hf_config((tmp / "config.json").string(), m.config(), DType::F32);
    io::write_file_atomic((tmp / kStateJson).string(), doc.dump(1) + "\n");
    fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

std::shared_ptr<LlamaModel> load_model_state(const std::string& dir) {
  const fs::path d(dir);
  const std::string json_path = (d / kStateJson).string();
  std::ifstream in(json_path);
  LLMOPT_CHECK_INPUT(in.good(), "[state] {}: cannot read {}", dir, kStateJson);
  json doc;
  try {
    doc = json::parse(in);
  } catch (const std::exception& e) {
    throw_input("[state] {}: malformed JSON: {}", json_path, e.what());
  }
  LLMOPT_CHECK_INPUT(doc.value("format", "") == kFormat && doc.value("version", 0) == kVersion,
                     "[state] {}: expected format '{}' version {}, found '{}' version {}", json_path, kFormat,
                     kVersion, doc.value("format", ""), doc.value("version", 0));
  const ModelConfig cfg = io::read_hf_config((d / "config.json").string());
  const io::SafetensorsFile st = io::SafetensorsFile::open((d / kStateTensors).string());
  auto view = [&](const std::string& name, const json& e) {
    StoredTensor t;
    t.name = name;
    const std::string key = e.at("key").get<std::string>();
    const io::SafetensorsTensor* s = st.find(key);
    LLMOPT_CHECK_INPUT(s != nullptr, "[state] {}: tensor '{}' is missing from {}", json_path, key, kStateTensors);
    const auto dt = dtype_from_name(e.at("dtype").get<std::string>());
    LLMOPT_CHECK_INPUT(dt.has_value(), "[state] {}: tensor '{}' has unknown dtype '{}'", json_path, key,
                       e.at("dtype").get<std::string>());
    t.dtype = *dt;
    t.shape = e.at("shape").get<std::vector<int64_t>>();
    for (int64_t x : t.shape) LLMOPT_CHECK_INPUT(x >= 0, "[state] {}: tensor '{}' has a negative dimension", json_path, key);
    const int64_t block = dtype_block_elems(t.dtype);
    const int64_t n = numel_of(t.shape);
    LLMOPT_CHECK_INPUT(n % block == 0 && s->nbytes == n / block * dtype_block_bytes(t.dtype),
                       "[state] {}: tensor '{}' holds {} bytes, {} of shape [{}] needs {}", json_path, key, s->nbytes,
                       dtype_name(t.dtype), fmt::join(t.shape, ", "), n / block * dtype_block_bytes(t.dtype));
    t.data = s->data;
    t.nbytes = s->nbytes;
    t.owner = std::static_pointer_cast<const void>(st.mapping());
    return t;
  };
  try {
    std::map<std::string, StoredTensor> plain;
    for (const auto& [name, e] : doc.at("tensors").items()) plain.emplace(name, view(name, e));
    std::map<std::string, LayerState> layers;
    for (const auto& [path, e] : doc.at("layers").items()) {
      LayerState s;
      s.kind = e.at("kind").get<std::string>();
      s.meta = e.value("meta", json::object());
      for (const auto& [name, te] : e.at("tensors").items()) s.tensors.push_back(view(name, te));
      layers.emplace(path, std::move(s));
    }
    auto m = assemble(cfg, layers, plain, dir);
    if (doc.contains("prompt_adapter")) {
      const json& e = doc["prompt_adapter"];
      LayerState s;
      s.kind = e.at("kind").get<std::string>();
      s.meta = e.value("meta", json::object());
      for (const auto& [name, te] : e.at("tensors").items()) s.tensors.push_back(view(name, te));
      auto a = PromptAdapter::from_state(s, cfg, dir + ": prompt_adapter");
      for (auto& p : a->parameters()) p.set_requires_grad(false);
      m->set_prompt_adapter(a);
    }
    return m;
  } catch (const json::exception& e) {
    throw_input("[state] {}: malformed state description: {}", json_path, e.what());
  }
}

std::shared_ptr<LlamaModel> clone_model(LlamaModel& m) {
  torch::NoGradGuard no_grad;
  std::map<std::string, StoredTensor> plain;
  for (auto& [name, p] : plain_parameters(m)) plain.emplace(name, stored_from_tensor(name, p));
  std::map<std::string, LayerState> layers;
  for (auto& [path, layer] : m.linear_layers()) layers.emplace(path, layer->stored_state());
  auto copy = assemble(m.config(), layers, plain, "clone");
  if (PromptAdapter* a = m.prompt_adapter()) {
    auto c = PromptAdapter::from_state(a->stored_state(), m.config(), "clone: prompt_adapter");
    for (auto& p : c->parameters()) p.set_requires_grad(false);
    copy->set_prompt_adapter(c);
  }
  copy->to(m.device());
  return copy;
}

}  // namespace llmopt::model
