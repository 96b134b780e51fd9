#include "io/gguf_checkpoint.h"

#include <charconv>
#include <cmath>
#include <map>

#include "core/error.h"
#include "io/architecture.h"
#include "io/checkpoint_tensors.h"
#include "io/gguf_writer.h"

namespace llmopt::io {
namespace {

nlohmann::json value_to_json(const GgufValue& v) {
  switch (v.type) {
    case GgufType::F32:
    case GgufType::F64:
      return v.f;
    case GgufType::Bool:
      return v.b;
    case GgufType::String:
      return v.str;
    case GgufType::Array: {
      // Tokenizer vocabularies and merges run to 100k+ entries: summarize, don't copy.
      if (v.items.size() > 64)
        return fmt::format("[{} x {}]", v.items.size(), gguf_type_name(v.elem_type));
      nlohmann::json a = nlohmann::json::array();
      for (const auto& it : v.items) a.push_back(value_to_json(it));
      return a;
    }
    default:
      return gguf_type_is_signed(v.type) ? nlohmann::json(v.i) : nlohmann::json(v.u);
  }
}

// The double whose shortest decimal form is the float's (f32 1e-5 -> 1e-5, not 9.99999974e-06),
// so configs read from GGUF print and compare like the HF values they came from.
// from_chars, unlike stod, never throws (hostile files hold subnormals, inf, nan).
double f32_as_decimal(float f) {
  if (!std::isfinite(f)) return f;
  const std::string text = fmt::format("{}", f);
  double d = f;
  std::from_chars(text.data(), text.data() + text.size(), d);
  return d;
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

std::string gguf_to_hf_name(const std::string& g) {
  const auto t = arch::parse_gguf_name(g);
  return t ? arch::hf_name(t->role, t->layer, t->bias) : std::string();
}

std::string hf_to_gguf_name(const std::string& h) {
  const auto t = arch::parse_hf_name(h);
  return t ? arch::gguf_name(t->role, t->layer, t->bias) : std::string();
}

uint32_t gguf_file_type_for(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q4_1:
      return 3;
    case DType::Q8_0:
      return 7;
    case DType::Q5_0:
      return 8;
    case DType::Q5_1:
      return 9;
    case DType::Q2_K:
      return 10;
    case DType::Q3_K:
      return 12;  // Q3_K_M
    case DType::Q4_K:
      return 15;  // Q4_K_M
    case DType::Q5_K:
      return 17;  // Q5_K_M
    case DType::Q6_K:
      return 18;
    case DType::BF16:
      return 32;
    default:
      throw_input("[gguf] no llama.cpp file type for {}", dtype_name(t));
  }
}

Checkpoint load_gguf_checkpoint(const std::string& path) {
  return gguf_to_checkpoint(GgufFile::open(path));
}

Checkpoint gguf_to_checkpoint(const GgufFile& g) {
  Checkpoint ckpt;
  ckpt.format = ModelFormat::Gguf;
  ckpt.path = g.path();
  ckpt.storage.push_back(std::static_pointer_cast<const void>(g.mapping()));
  const std::string arch = g.get_string("general.architecture");
  ModelConfig& c = ckpt.config;
  if (arch == "llama") {
    c.architecture = "LlamaForCausalLM";
  } else if (arch == "mistral") {
    c.architecture = "MistralForCausalLM";
  } else if (arch == "qwen2") {
    c.architecture = "Qwen2ForCausalLM";
  } else {
    throw_input(
        "[gguf] {}: unsupported general.architecture '{}' (supported: llama, mistral, qwen2)",
        g.path(), arch);
  }
  const std::string p = arch + ".";
  c.max_position_embeddings = g.has(p + "context_length") ? g.get_i64(p + "context_length") : 2048;
  c.hidden_size = g.get_i64(p + "embedding_length");
  c.num_hidden_layers = g.get_i64(p + "block_count");
  c.intermediate_size = g.get_i64(p + "feed_forward_length");
  c.num_attention_heads = g.get_i64(p + "attention.head_count");
  LLMOPT_CHECK_INPUT(c.num_attention_heads > 0,
                     "[gguf] {}: {}attention.head_count must be positive, found {}", g.path(), p,
                     c.num_attention_heads);
  c.num_key_value_heads = g.has(p + "attention.head_count_kv")
                              ? g.get_i64(p + "attention.head_count_kv")
                              : c.num_attention_heads;
  c.head_dim = g.has(p + "attention.key_length") ? g.get_i64(p + "attention.key_length")
                                                 : c.hidden_size / c.num_attention_heads;
  if (g.has(p + "rope.dimension_count")) {
    const int64_t rot = g.get_i64(p + "rope.dimension_count");
    LLMOPT_CHECK_INPUT(
        rot == c.head_dim,
        "[gguf] {}: {}rope.dimension_count is {} but head_dim is {} (partial rotary embeddings "
        "are not supported)",
        g.path(), p, rot, c.head_dim);
  }
  c.rms_norm_eps = g.has(p + "attention.layer_norm_rms_epsilon")
                       ? f32_as_decimal(g.get_f32(p + "attention.layer_norm_rms_epsilon"))
                       : 1e-5;
  c.rope_theta =
      g.has(p + "rope.freq_base") ? f32_as_decimal(g.get_f32(p + "rope.freq_base")) : 10000.0;
  if (g.has(p + "vocab_size")) {
    c.vocab_size = g.get_i64(p + "vocab_size");
  } else if (g.has("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(g.get_array_size("tokenizer.ggml.tokens"));
  } else if (const auto* emb = g.find_tensor(io::arch::gguf_name(io::arch::Role::TokenEmbd)); emb && emb->shape.size() == 2) {
    c.vocab_size = emb->shape[0];
  }
  if (g.has("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = g.get_i64("tokenizer.ggml.bos_token_id");
  if (g.has("tokenizer.ggml.eos_token_id"))
    c.eos_token_id = g.get_i64("tokenizer.ggml.eos_token_id");
  c.tie_word_embeddings = g.find_tensor(io::arch::gguf_name(io::arch::Role::Output)) == nullptr;
  c.attention_bias = arch == "qwen2" || g.find_tensor(io::arch::gguf_name(io::arch::Role::AttnQ, 0, true)) != nullptr;
  c.validate(g.path());

  nlohmann::json unmapped = nlohmann::json::array();
  for (const auto& t : g.tensors()) {
    const std::string name = gguf_to_hf_name(t.name);
    if (name.empty()) {
      unmapped.push_back(t.name);
      continue;
    }
    if (!t.dtype) {
      const GgmlTypeInfo* info = ggml_type_info(t.ggml_type);
      throw_input("[gguf] {}: tensor '{}' has ggml type {} ({}), which llmopt cannot compute with",
                  g.path(), t.name, info ? info->name : "?", t.ggml_type);
    }
    TensorView v;
    v.name = name;
    v.dtype = *t.dtype;
    v.shape = t.shape;
    v.data = t.data;
    v.nbytes = t.nbytes;
    ckpt.tensors.push_back(std::move(v));
  }
  validate_checkpoint_tensors(ckpt, "gguf");
  // llama.cpp's converter permuted HF q/k rows into the interleaved layout for `llama`; undo it.
  if (arch == "llama") {
    for (auto& v : ckpt.tensors) {
      const auto t = io::arch::parse_hf_name(v.name);
      if (const int64_t heads = t ? io::arch::permute_heads(t->role, c) : 0; heads > 0)
        permute_view_in_checkpoint(ckpt, v, heads, true);
    }
  }
  ckpt.tokenizer = {TokenizerSource::Kind::Gguf, g.path()};
  nlohmann::json kv = nlohmann::json::object();
  for (const auto& [k, v] : g.kvs()) kv[k] = value_to_json(v);
  ckpt.metadata["gguf_version"] = g.version();
  ckpt.metadata["gguf_kv"] = kv;
  ckpt.metadata["gguf_alignment"] = g.alignment();
  if (!unmapped.empty()) ckpt.metadata["gguf_unmapped_tensors"] = unmapped;
  return ckpt;
}

std::vector<GgufKeyValue> gguf_tokenizer_kvs(const GgufFile& gguf) {
  std::vector<GgufKeyValue> out;
  for (const auto& kv : gguf.kvs())
    if (starts_with(kv.first, "tokenizer.")) out.push_back(kv);
  return out;
}

void write_gguf(const std::string& path, const Checkpoint& ckpt, DType out_type,
                const std::vector<GgufKeyValue>& extra_kvs) {
  const ModelConfig& c = ckpt.config;
  LLMOPT_CHECK_INPUT(
      c.architecture == "LlamaForCausalLM" || c.architecture == "MistralForCausalLM",
      "[gguf] {}: writing {} is not supported (expected LlamaForCausalLM or MistralForCausalLM)",
      path, c.architecture);
  LLMOPT_CHECK_INPUT(!c.attention_bias,
                     "[gguf] {}: attention biases are not supported by the llama architecture",
                     path);
  // 1-D tensors stay F32 (llama.cpp's rule); rows that are not whole blocks of a block format
  // fall back to F16, as llama-quantize does for such shapes. A 2-D tensor already in a block
  // format is written as stored: never re-rounded (a quantization stage placed those values).
  auto target_type = [&](const TensorView& t) {
    if (t.shape.size() == 1) return DType::F32;
    if (dtype_is_block_quantized(t.dtype)) return t.dtype;
    // A 16-bit tensor (a quantization fallback) is not widened to f32 either.
    if ((t.dtype == DType::F16 || t.dtype == DType::BF16) && out_type == DType::F32) return t.dtype;
    if (dtype_is_block_quantized(out_type) && t.shape.back() % dtype_block_elems(out_type) != 0) return DType::F16;
    return out_type;
  };
  // general.file_type: the type most projection weights are stored in (llama-quantize's
  // convention: a Q4_0 file may keep its embedding in f32).
  std::map<DType, int64_t> bytes_by_type;
  for (const auto& t : ckpt.tensors) {
    const auto named = io::arch::parse_hf_name(t.name);
    if (t.shape.size() > 1 && named && io::arch::describe(named->role).linear && named->role != io::arch::Role::Output)
      bytes_by_type[target_type(t)] += t.numel();
  }
  DType file_type = out_type;
  int64_t best = -1;
  for (const auto& [ty, n] : bytes_by_type)
    if (n > best) best = n, file_type = ty;
  std::vector<GgufKeyValue> kvs;
  auto u32 = [](int64_t v) { return GgufValue::make_u32(static_cast<uint32_t>(v)); };
  kvs.emplace_back("general.architecture", GgufValue::make_string("llama"));
  kvs.emplace_back("general.type", GgufValue::make_string("model"));
  kvs.emplace_back("general.name", GgufValue::make_string("llmopt"));
  kvs.emplace_back("llama.block_count", u32(c.num_hidden_layers));
  kvs.emplace_back("llama.context_length", u32(c.max_position_embeddings));
  kvs.emplace_back("llama.embedding_length", u32(c.hidden_size));
  kvs.emplace_back("llama.feed_forward_length", u32(c.intermediate_size));
  kvs.emplace_back("llama.attention.head_count", u32(c.num_attention_heads));
  kvs.emplace_back("llama.attention.head_count_kv", u32(c.num_key_value_heads));
  kvs.emplace_back("llama.rope.freq_base", GgufValue::make_f32(static_cast<float>(c.rope_theta)));
  kvs.emplace_back("llama.attention.layer_norm_rms_epsilon",
                   GgufValue::make_f32(static_cast<float>(c.rms_norm_eps)));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    kvs.emplace_back("llama.attention.key_length", u32(c.head_dim));
    kvs.emplace_back("llama.attention.value_length", u32(c.head_dim));
  }
  kvs.emplace_back("general.file_type", u32(gguf_file_type_for(file_type)));
  kvs.emplace_back("llama.vocab_size", u32(c.vocab_size));
  kvs.emplace_back("llama.rope.dimension_count", u32(c.head_dim));
  if (dtype_is_block_quantized(file_type)) kvs.emplace_back("general.quantization_version", u32(2));
  for (const auto& kv : extra_kvs) kvs.push_back(kv);

  std::vector<std::vector<uint8_t>> buffers;
  buffers.reserve(ckpt.tensors.size() + 1);
  std::vector<GgufOutTensor> tensors;
  for (const auto& t : ckpt.tensors) {
    if (c.tie_word_embeddings && t.name == arch::hf_name(arch::Role::Output)) continue;
    const std::string name = hf_to_gguf_name(t.name);
    LLMOPT_CHECK_INPUT(!name.empty(), "[gguf] {}: tensor '{}' has no GGUF name", path, t.name);
    const DType target = target_type(t);
    std::vector<uint8_t> bytes = convert_tensor_bytes(t, target);
    const auto named = arch::parse_hf_name(t.name);
    if (const int64_t heads = named && !named->bias ? arch::permute_heads(named->role, c) : 0; heads > 0) {
      std::vector<uint8_t> permuted(bytes.size());
      const int64_t rows = t.shape[0];
      permute_rope_rows(bytes.data(), permuted.data(), rows,
                        static_cast<int64_t>(bytes.size()) / rows, heads, false);
      bytes = std::move(permuted);
    }
    buffers.push_back(std::move(bytes));
    tensors.push_back({name, ggml_type_for(target), t.shape, buffers.back().data(),
                       static_cast<int64_t>(buffers.back().size())});
  }
  // Llama 3.1 frequency scaling travels as a tensor of per-frequency factors
  // (convert_hf_to_gguf.py).
  if (c.rope_scaling.type == "llama3") {
    const auto& rs = c.rope_scaling;
    std::vector<float> factors;
    const double low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor;
    const double high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor;
    for (int64_t i = 0; i < c.head_dim; i += 2) {
      const double freq =
          1.0 / std::pow(c.rope_theta, static_cast<double>(i) / static_cast<double>(c.head_dim));
      const double wavelen = 2 * M_PI / freq;
      if (wavelen < high_wavelen) {
        factors.push_back(1.0f);
      } else if (wavelen > low_wavelen) {
        factors.push_back(static_cast<float>(rs.factor));
      } else {
        const double smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) /
                              (rs.high_freq_factor - rs.low_freq_factor);
        factors.push_back(static_cast<float>(1.0 / ((1 - smooth) / rs.factor + smooth)));
      }
    }
    buffers.emplace_back(reinterpret_cast<const uint8_t*>(factors.data()),
                         reinterpret_cast<const uint8_t*>(factors.data() + factors.size()));
    tensors.push_back({"rope_freqs.weight",
                       0,
                       {static_cast<int64_t>(factors.size())},
                       buffers.back().data(),
                       static_cast<int64_t>(buffers.back().size())});
  }
  write_gguf_file(path, kvs, tensors, kGgufDefaultAlignment);
}

}  // namespace llmopt::io
