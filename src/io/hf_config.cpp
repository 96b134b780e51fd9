#include "io/hf_config.h"

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/mapped_file.h"

namespace llmopt::io {
namespace {

struct Arch {
  const char* architecture;
  const char* model_type;
};
constexpr Arch kArchs[] = {{"LlamaForCausalLM", "llama"},
                           {"MistralForCausalLM", "mistral"},
                           {"Qwen2ForCausalLM", "qwen2"}};

class Fields {
 public:
  Fields(const nlohmann::json& j, const std::string& source) : j_(j), source_(source) {}

  bool present(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t required_int(const char* key) const {
    LLMOPT_CHECK_INPUT(present(key), "[config] {}: missing required field '{}'", source_, key);
    return as_int(key);
  }
  int64_t optional_int(const char* key, int64_t fallback) const {
    return present(key) ? as_int(key) : fallback;
  }
  double optional_double(const char* key, double fallback) const {
    if (!present(key)) return fallback;
    LLMOPT_CHECK_INPUT(j_[key].is_number(), "[config] {}: field '{}' must be a number, found {}",
                       source_, key, j_[key].dump());
    return j_[key].get<double>();
  }
  bool optional_bool(const char* key, bool fallback) const {
    if (!present(key)) return fallback;
    LLMOPT_CHECK_INPUT(j_[key].is_boolean(),
                       "[config] {}: field '{}' must be true or false, found {}", source_, key,
                       j_[key].dump());
    return j_[key].get<bool>();
  }
  // A token id that may be given as a list (generation configs list several EOS ids): the first.
  int64_t token_id(const char* key, int64_t fallback) const {
    if (!present(key)) return fallback;
    const auto& v = j_[key];
    if (v.is_array()) {
      LLMOPT_CHECK_INPUT(
          !v.empty() && v[0].is_number_integer(),
          "[config] {}: field '{}' must be an integer or a list of integers, found {}", source_,
          key, v.dump());
      return v[0].get<int64_t>();
    }
    return as_int(key);
  }

 private:
  int64_t as_int(const char* key) const {
    const auto& v = j_[key];
    LLMOPT_CHECK_INPUT(v.is_number_integer(),
                       "[config] {}: field '{}' must be an integer, found {}", source_, key,
                       v.dump());
    return v.get<int64_t>();
  }
  const nlohmann::json& j_;
  const std::string& source_;
};

}  // namespace

std::string hf_model_type(const std::string& architecture) {
  for (const auto& a : kArchs)
    if (architecture == a.architecture) return a.model_type;
  throw_input(
      "[config] unsupported architecture '{}' (supported: LlamaForCausalLM, MistralForCausalLM, "
      "Qwen2ForCausalLM)",
      architecture);
}

ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source) {
  LLMOPT_CHECK_INPUT(j.is_object(), "[config] {}: expected a JSON object, found {}", source,
                     j.type_name());
  Fields f(j, source);
  ModelConfig c;
  std::string arch;
  if (f.present("architectures")) {
    const auto& a = j["architectures"];
    LLMOPT_CHECK_INPUT(a.is_array() && !a.empty() && a[0].is_string(),
                       "[config] {}: 'architectures' must be a non-empty list of strings, found {}",
                       source, a.dump());
    arch = a[0].get<std::string>();
  } else if (f.present("model_type") && j["model_type"].is_string()) {
    const auto mt = j["model_type"].get<std::string>();
    for (const auto& a : kArchs)
      if (mt == a.model_type) arch = a.architecture;
    LLMOPT_CHECK_INPUT(
        !arch.empty(),
        "[config] {}: unsupported model_type '{}' (supported: llama, mistral, qwen2)", source, mt);
  } else {
    throw_input("[config] {}: missing required field 'architectures'", source);
  }
  bool known = false;
  for (const auto& a : kArchs) known |= arch == a.architecture;
  LLMOPT_CHECK_INPUT(known,
                     "[config] {}: unsupported architecture '{}' (supported: LlamaForCausalLM, "
                     "MistralForCausalLM, Qwen2ForCausalLM)",
                     source, arch);
  c.architecture = arch;
  c.hidden_size = f.required_int("hidden_size");
  c.intermediate_size = f.required_int("intermediate_size");
  c.num_hidden_layers = f.required_int("num_hidden_layers");
  c.num_attention_heads = f.required_int("num_attention_heads");
  c.vocab_size = f.required_int("vocab_size");
  LLMOPT_CHECK_INPUT(c.num_attention_heads > 0,
                     "[config] {}: num_attention_heads must be positive, found {}", source,
                     c.num_attention_heads);
  c.num_key_value_heads = f.optional_int("num_key_value_heads", c.num_attention_heads);
  c.head_dim = f.optional_int("head_dim", c.hidden_size / c.num_attention_heads);
  c.max_position_embeddings = f.optional_int("max_position_embeddings", 2048);
  c.rms_norm_eps = f.optional_double("rms_norm_eps", 1e-6);
  c.rope_theta = f.optional_double("rope_theta", 10000.0);
  c.tie_word_embeddings = f.optional_bool("tie_word_embeddings", false);
  c.attention_bias = arch == "Qwen2ForCausalLM" ? true : f.optional_bool("attention_bias", false);
  if (arch == "MistralForCausalLM") {
    c.sliding_window = f.optional_int("sliding_window", 0);
  } else if (arch == "Qwen2ForCausalLM" && f.optional_bool("use_sliding_window", false)) {
    c.sliding_window = f.optional_int("sliding_window", 0);
  }
  c.bos_token_id = f.token_id("bos_token_id", c.bos_token_id);
  c.eos_token_id = f.token_id("eos_token_id", c.eos_token_id);
  if (f.present("rope_scaling")) {
    const auto& rs = j["rope_scaling"];
    LLMOPT_CHECK_INPUT(rs.is_object(),
                       "[config] {}: rope_scaling must be an object or null, found {}", source,
                       rs.dump());
    std::string type;
    if (rs.contains("rope_type") && rs["rope_type"].is_string()) {
      type = rs["rope_type"].get<std::string>();
    } else if (rs.contains("type") && rs["type"].is_string()) {
      type = rs["type"].get<std::string>();
    }
    if (type == "llama3") {
      Fields r(rs, source);
      c.rope_scaling.type = "llama3";
      c.rope_scaling.factor = r.optional_double("factor", 8.0);
      c.rope_scaling.low_freq_factor = r.optional_double("low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = r.optional_double("high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings =
          r.optional_int("original_max_position_embeddings", 8192);
    } else if (type != "default") {
      throw_input(
          "[config] {}: rope_scaling type '{}' is not supported (expected llama3 or default)",
          source, type);
    }
  }
  c.validate(source);
  LLMOPT_CHECK_INPUT(c.max_position_embeddings > 0,
                     "[config] {}: max_position_embeddings must be positive, found {}", source,
                     c.max_position_embeddings);
  return c;
}

ModelConfig read_hf_config(const std::string& path) {
  const std::string text = read_text_file(path, "config");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[config] {}: not valid JSON: {}", path, e.what());
  }
  return parse_hf_config(j, path);
}

nlohmann::ordered_json hf_config_json(const ModelConfig& c, DType torch_dtype) {
  const std::string model_type = hf_model_type(c.architecture);
  const char* dtype = torch_dtype == DType::BF16  ? "bfloat16"
                      : torch_dtype == DType::F16 ? "float16"
                                                  : "float32";
  nlohmann::ordered_json j;
  j["architectures"] = {c.architecture};
  j["model_type"] = model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "llama3") {
    j["rope_scaling"] = {
        {"rope_type", "llama3"},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (model_type == "llama") {
    j["attention_bias"] = c.attention_bias;
    j["mlp_bias"] = false;
  }
  if (model_type == "mistral")
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window) : nullptr;
  if (model_type == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    if (c.sliding_window > 0) j["sliding_window"] = c.sliding_window;
  }
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = dtype;
  j["use_cache"] = true;
  return j;
}

void write_hf_config(const std::string& path, const ModelConfig& cfg, DType torch_dtype) {
  write_file_atomic(path, hf_config_json(cfg, torch_dtype).dump(2) + "\n");
}

}  // namespace llmopt::io
