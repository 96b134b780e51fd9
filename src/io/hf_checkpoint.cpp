#include "io/hf_checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/checkpoint_tensors.h"
#include "io/gptq.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

namespace llmopt::io {
namespace fs = std::filesystem;

namespace {
void add_safetensors(Checkpoint& ckpt, const SafetensorsFile& st,
                     std::unordered_set<std::string>& seen) {
  ckpt.storage.push_back(std::static_pointer_cast<const void>(st.mapping()));
  for (const auto& t : st.tensors()) {
    LLMOPT_CHECK_INPUT(t.dtype.has_value(),
                       "[safetensors] {}: tensor '{}' has dtype {}, which llmopt cannot use",
                       st.path(), t.name, t.dtype_name);
    LLMOPT_CHECK_INPUT(seen.insert(t.name).second,
                       "[safetensors] {}: tensor '{}' appears in more than one shard", st.path(),
                       t.name);
    TensorView v;
    v.name = t.name;
    v.dtype = *t.dtype;
    v.shape = t.shape;
    v.data = t.data;
    v.nbytes = t.nbytes;
    ckpt.tensors.push_back(std::move(v));
  }
}

nlohmann::json read_json_or_null(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
}

// A GPTQ checkpoint (io/gptq.h): its quantization_config travels in the metadata, for the tensor
// validation and for the loader that rebuilds int-N layers. It comes from config.json, or from
// auto-gptq's quantize_config.json (auto-gptq writes both; older versions only the latter, without
// quant_method). When both hold one, they must agree on what the tensors mean. Returns the
// quantize_config.json object (null when absent), whose model_file_base_name names the weights.
nlohmann::json read_gptq_quantization_config(const fs::path& root, const std::string& config_path,
                                             nlohmann::json& metadata) {
  const auto j = read_json_or_null(config_path);
  const auto from_config = parse_gptq_config(j, config_path);
  if (from_config) metadata["quantization_config"] = j["quantization_config"];
  const fs::path qc_path = root / "quantize_config.json";
  if (!fs::exists(qc_path)) return nullptr;
  nlohmann::json qc = read_json_or_null(qc_path);
  LLMOPT_CHECK_INPUT(qc.is_object(), "[gptq] {}: not a JSON object", qc_path.string());
  if (!qc.contains("quant_method")) qc["quant_method"] = "gptq";
  const auto from_qc = parse_gptq_config(nlohmann::json{{"quantization_config", qc}}, qc_path.string());
  if (!from_qc) return qc;  // another method's file: not ours to read
  if (!from_config) {
    LLMOPT_CHECK_INPUT(!(j.is_object() && j.contains("quantization_config")),
                       "[gptq] {}: quantization_config is not GPTQ but {} is: which one holds is ambiguous",
                       config_path, qc_path.string());
    metadata["quantization_config"] = qc;
    return qc;
  }
  const auto& a = *from_config;
  const auto& b = *from_qc;
  LLMOPT_CHECK_INPUT(a.bits == b.bits && a.group_size == b.group_size && a.desc_act == b.desc_act && a.sym == b.sym,
                     "[gptq] {} and {} disagree: quantization_config has bits {}, group_size {}, desc_act {}, sym {}; "
                     "quantize_config.json has bits {}, group_size {}, desc_act {}, sym {} (remove the stale one)",
                     config_path, qc_path.string(), a.bits, a.group_size, a.desc_act, a.sym, b.bits, b.group_size,
                     b.desc_act, b.sym);
  return qc;
}

// The weights: model.safetensors or model.safetensors.index.json (transformers' names); else
// quantize_config.json's model_file_base_name (.safetensors or .safetensors.index.json); else the
// only *.safetensors.index.json, or the only *.safetensors, of the directory (auto-gptq's default
// gptq_model-4bit-128g.safetensors). Exit 2 when none is found or several could be meant.
std::pair<fs::path, fs::path> find_weight_files(const fs::path& root, const nlohmann::json& quantize_config) {
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  if (fs::exists(single)) return {single, {}};
  if (fs::exists(index)) return {{}, index};
  if (quantize_config.is_object() && quantize_config.contains("model_file_base_name") &&
      quantize_config["model_file_base_name"].is_string()) {
    const std::string base = quantize_config["model_file_base_name"].get<std::string>();
    if (fs::exists(root / (base + ".safetensors"))) return {root / (base + ".safetensors"), {}};
    if (fs::exists(root / (base + ".safetensors.index.json"))) return {{}, root / (base + ".safetensors.index.json")};
  }
  std::vector<std::string> singles, indexes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_regular_file()) continue;
    const std::string name = e.path().filename().string();
    if (name.ends_with(".safetensors.index.json")) indexes.push_back(name);
    if (name.ends_with(".safetensors")) singles.push_back(name);
  }
  if (ec) throw_input("[hf] {}: cannot list the directory: {}", root.string(), ec.message());
  std::sort(singles.begin(), singles.end());
  std::sort(indexes.begin(), indexes.end());
  auto list = [](const std::vector<std::string>& v) {
    std::string r;
    for (const auto& n : v) r += (r.empty() ? "" : ", ") + n;
    return r;
  };
  LLMOPT_CHECK_INPUT(indexes.size() <= 1,
                     "[hf] {}: no model.safetensors(.index.json) and {} index files ({}): which one holds the model "
                     "is ambiguous; keep one, or name it in quantize_config.json's model_file_base_name",
                     root.string(), indexes.size(), list(indexes));
  if (indexes.size() == 1) return {{}, root / indexes[0]};
  LLMOPT_CHECK_INPUT(!singles.empty(), "[hf] {}: no model.safetensors, model.safetensors.index.json or other *.safetensors",
                     root.string());
  LLMOPT_CHECK_INPUT(singles.size() == 1,
                     "[hf] {}: no model.safetensors(.index.json) and {} *.safetensors files ({}) without an index: "
                     "which one holds the model is ambiguous; keep one, add an index, or name it in "
                     "quantize_config.json's model_file_base_name",
                     root.string(), singles.size(), list(singles));
  return {root / singles[0], {}};
}

}  // namespace

Checkpoint load_hf_dir(const std::string& dir) {
  Checkpoint ckpt;
  ckpt.format = ModelFormat::HfDir;
  ckpt.path = dir;
  const fs::path root(dir);
  const std::string config_path = (root / "config.json").string();
  ckpt.config = read_hf_config(config_path);
  const nlohmann::json quantize_config = read_gptq_quantization_config(root, config_path, ckpt.metadata);
  const auto [single, index] = find_weight_files(root, quantize_config);
  std::unordered_set<std::string> seen;
  if (!single.empty()) {
    const auto st = SafetensorsFile::open(single.string());
    add_safetensors(ckpt, st, seen);
    if (!st.metadata().empty()) ckpt.metadata["safetensors_metadata"] = st.metadata();
    ckpt.metadata["files"] = {single.filename().string()};
  } else if (!index.empty()) {
    const auto idx = read_safetensors_index(index.string());
    for (const auto& shard : idx.shard_files) {
      const auto st = SafetensorsFile::open((root / shard).string());
      add_safetensors(ckpt, st, seen);
    }
    for (const auto& [name, shard] : idx.weight_map) {
      LLMOPT_CHECK_INPUT(seen.count(name),
                         "[safetensors] {}: weight_map names '{}' but {} does not hold it",
                         index.string(), name, shard);
    }
    ckpt.metadata["files"] = idx.shard_files;
  }
  // Checkpoints saved with tied embeddings sometimes still carry lm_head, and older ones carry
  // the RoPE buffer rotary_emb.inv_freq; both are derived, not weights.
  std::erase_if(ckpt.tensors, [&](const TensorView& t) {
    return (ckpt.config.tie_word_embeddings && t.name == "lm_head.weight") ||
           t.name.ends_with(".rotary_emb.inv_freq");
  });
  if (fs::exists(root / "tokenizer.json")) {
    ckpt.tokenizer = {TokenizerSource::Kind::HfJson, (root / "tokenizer.json").string()};
  } else if (fs::exists(root / "tokenizer.model")) {
    ckpt.tokenizer = {TokenizerSource::Kind::SentencePieceModel,
                      (root / "tokenizer.model").string()};
  }
  ckpt.metadata["architecture"] = ckpt.config.architecture;
  return ckpt;
}

void write_hf(const Checkpoint& ckpt, const std::string& dir, DType out_type) {
  LLMOPT_CHECK_INPUT(out_type == DType::F32 || out_type == DType::F16 || out_type == DType::BF16,
                     "[hf] {}: output type {} is not supported (expected f32, f16 or bf16)", dir,
                     dtype_name(out_type));
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw_run("[hf] {}: cannot create directory: {}", dir, ec.message());
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<SafetensorsOutTensor> out;
  buffers.reserve(ckpt.tensors.size());
  const bool gptq = ckpt.metadata.contains("quantization_config");
  for (const auto& t : ckpt.tensors) {
    if (ckpt.config.tie_word_embeddings && t.name == "lm_head.weight") continue;
    // GPTQ tensors (io/gptq.h) are written as they are: int32 packing and f16 (or f32) scales.
    if (gptq && (t.dtype == DType::I32 ||
                 ((t.dtype == DType::F16 || t.dtype == DType::F32) && t.name.ends_with(".scales")))) {
      out.push_back({t.name, t.dtype, t.shape, t.data, t.nbytes});
      continue;
    }
    buffers.push_back(convert_tensor_bytes(t, out_type));
    out.push_back({t.name, out_type, t.shape, buffers.back().data(),
                   static_cast<int64_t>(buffers.back().size())});
  }
  write_safetensors((fs::path(dir) / "model.safetensors").string(), out, {{"format", "pt"}});
  auto config = hf_config_json(ckpt.config, out_type);
  if (gptq) config["quantization_config"] = ckpt.metadata["quantization_config"];
  write_file_atomic((fs::path(dir) / "config.json").string(), config.dump(2) + "\n");
}

}  // namespace llmopt::io
