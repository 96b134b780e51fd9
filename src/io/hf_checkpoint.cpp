#include "io/hf_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <unordered_set>

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
}  // namespace

Checkpoint load_hf_dir(const std::string& dir) {
  Checkpoint ckpt;
  ckpt.format = ModelFormat::HfDir;
  ckpt.path = dir;
  const fs::path root(dir);
  const std::string config_path = (root / "config.json").string();
  ckpt.config = read_hf_config(config_path);
  {
    // A GPTQ checkpoint (io/gptq.h): its quantization_config travels in the metadata, for the
    // tensor validation and for the loader that rebuilds int-N layers.
    std::ifstream f(config_path);
    const auto j = nlohmann::json::parse(f, nullptr, /*allow_exceptions=*/false);
    if (parse_gptq_config(j, config_path)) ckpt.metadata["quantization_config"] = j["quantization_config"];
  }
  const fs::path single = root / "model.safetensors";
  const fs::path index = root / "model.safetensors.index.json";
  std::unordered_set<std::string> seen;
  if (fs::exists(single)) {
    const auto st = SafetensorsFile::open(single.string());
    add_safetensors(ckpt, st, seen);
    if (!st.metadata().empty()) ckpt.metadata["safetensors_metadata"] = st.metadata();
    ckpt.metadata["files"] = {"model.safetensors"};
  } else if (fs::exists(index)) {
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
  } else {
    throw_input("[hf] {}: no model.safetensors or model.safetensors.index.json", dir);
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
    // GPTQ tensors (io/gptq.h) are written as they are: int32 packing and f16 scales.
    if (gptq && (t.dtype == DType::I32 || (t.dtype == DType::F16 && t.name.ends_with(".scales")))) {
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
