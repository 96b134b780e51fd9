#include "model/save.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <fstream>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"
#include "io/checkpoint.h"
#include "io/gguf_checkpoint.h"
#include "io/gptq.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "model/intn_linear.h"
#include "model/loader.h"

namespace llmopt::model {
namespace fs = std::filesystem;

namespace {

// HF export of int-N projections in GPTQ's layout (io/gptq.h): each "intn" layer's dense
// `.weight` view is replaced by qweight/qzeros/scales/g_idx, and quantization_config is recorded
// in the checkpoint's metadata for write_hf. GPTQ's config holds one bits/group size for the
// whole model and one list of quantized projection names shared by every block, so a model that
// does not fit is refused (exit 2) naming the tensor and the way out, never written half-dense.
// lm_head and NF4 layers are written dequantized (transformers' GPTQ loader never quantizes
// lm_head; bitsandbytes' serialization is not written here), with a warning.
void add_gptq_layout(LlamaModel& m, io::Checkpoint& ck) {
  const std::string way_out =
      "re-quantize with bits 2/4/8 and a group size that divides every row (or -1; bits 8 when a dimension "
      "is a multiple of 4 but not of 8), or write dequantized weights with `llmopt convert MODEL OUT --to hf --type f16`";
  std::optional<io::GptqConfig> cfg;
  std::string first;
  std::set<std::string> quantized_children, dense_children;
  bool all_sym = true, all_static = true;
  for (auto& [name, layer] : m.linear_layers()) {
    const auto info = io::arch::find_linear(m.config(), name);
    const std::string child = info && info->layer >= 0 ? name.substr(name.find('.', std::string("model.layers.").size()) + 1) : name;
    if (layer->kind() == "nf4")
      log::warn("[export] {}: NF4 layers are written to Hugging Face safetensors dequantized (f32/f16)", name);
    if (layer->kind() != "intn" || name == "lm_head") {
      if (layer->kind() == "intn")
        log::warn("[export] {}: the GPTQ layout leaves lm_head unquantized; written dequantized", name);
      if (info && info->layer >= 0) dense_children.insert(child);
      continue;
    }
    const auto& l = static_cast<const IntNLinear&>(*layer);
    const kernels::IntNMatrix w = l.matrix();
    const std::string tensor = name + ".weight";
    const std::string why = io::gptq_cannot_hold(w);
    LLMOPT_CHECK_INPUT(why.empty(), "[export] {}: the Hugging Face GPTQ layout cannot hold this layer: {}; {}", tensor,
                       why, way_out);
    const int64_t group = w.group_size() == w.cols ? -1 : w.group_size();
    if (!cfg) {
      cfg = io::GptqConfig{w.bits, group, false, true};
      first = tensor;
    }
    LLMOPT_CHECK_INPUT(cfg->bits == w.bits && cfg->group_size == group,
                       "[export] {}: {} bits, group size {}, but {} has {} bits, group size {}: the GPTQ "
                       "quantization_config holds one of each; {}",
                       tensor, w.bits, group, first, cfg->bits, cfg->group_size, way_out);
    // desc_act: a permuted g_idx, or GPTQ's act-order with static groups (contiguous g_idx, as
    // auto-gptq writes desc_act + static_groups); static_groups only when every layer's GPTQ
    // fitted its grids up front (auto-gptq's meaning; RTN/AWQ layers and loaded ones: false).
    const auto& process = l.gptq_process();
    cfg->desc_act = cfg->desc_act || l.act_order() || (process && process->desc_act);
    all_static = all_static && process && process->static_groups;
    all_sym = all_sym && w.sym;
    quantized_children.insert(child);
    auto packed = std::make_shared<io::GptqTensors>(io::gptq_pack(w, tensor));
    auto it = std::find_if(ck.tensors.begin(), ck.tensors.end(), [&](const io::TensorView& t) { return t.name == tensor; });
    LLMOPT_ASSERT(it != ck.tensors.end(), "{} missing from the checkpoint", tensor);
    const int64_t per_word = 32 / w.bits;
    auto view = [&](const std::string& suffix, DType dt, std::vector<int64_t> shape, const void* data, size_t bytes) {
      io::TensorView v;
      v.name = name + suffix;
      v.dtype = dt;
      v.shape = std::move(shape);
      v.data = static_cast<const uint8_t*>(data);
      v.nbytes = static_cast<int64_t>(bytes);
      return v;
    };
    std::vector<io::TensorView> views = {
        view(".qweight", DType::I32, {packed->in / per_word, packed->out}, packed->qweight.data(), 4 * packed->qweight.size()),
        view(".qzeros", DType::I32, {packed->groups, packed->out / per_word}, packed->qzeros.data(), 4 * packed->qzeros.size()),
        packed->scales_f32.empty()
            ? view(".scales", DType::F16, {packed->groups, packed->out}, packed->scales.data(), 2 * packed->scales.size())
            : view(".scales", DType::F32, {packed->groups, packed->out}, packed->scales_f32.data(),
                   4 * packed->scales_f32.size()),
        view(".g_idx", DType::I32, {packed->in}, packed->g_idx.data(), 4 * packed->g_idx.size())};
    it = ck.tensors.erase(it);
    ck.tensors.insert(it, views.begin(), views.end());
    ck.storage.push_back(std::static_pointer_cast<const void>(packed));
  }
  if (!cfg) return;
  for (const auto& c : quantized_children)
    LLMOPT_CHECK_INPUT(!dense_children.count(c),
                       "[export] {}: int-N in some decoder layers and not in others; the GPTQ layout quantizes a "
                       "projection in every layer or in none; {}",
                       c, way_out);
  cfg->sym = all_sym;
  cfg->static_groups = all_static;
  nlohmann::json q = io::gptq_config_json(*cfg);
  if (!dense_children.empty()) {
    // transformers/optimum replace only these projections of each block by GPTQ layers.
    q["modules_in_block_to_quantize"] = nlohmann::json::array({nlohmann::json(quantized_children)});
  }
  ck.metadata["quantization_config"] = q;
}

}  // namespace

ExportFormat parse_export_format(const std::string& name) {
  if (name == "hf") return ExportFormat::Hf;
  if (name == "gguf") return ExportFormat::Gguf;
  if (name == "llama2c") return ExportFormat::Llama2c;
  if (name == "onnx") return ExportFormat::Onnx;
  throw_input("[export] unknown format '{}' (valid: hf, gguf, llama2c, onnx)", name);
}

DType parse_float_type(const std::string& name) {
  if (name == "f32" || name == "F32") return DType::F32;
  if (name == "f16" || name == "F16") return DType::F16;
  if (name == "bf16" || name == "BF16") return DType::BF16;
  throw_input("[export] unknown --type '{}' (valid: f32, f16, bf16)", name);
}

void write_hf_tokenizer(const tok::Tokenizer& tk, const std::string& tokenizer_file, const std::string& dir) {
  const fs::path dst = fs::path(dir) / "tokenizer.json";
  if (!tokenizer_file.empty() && fs::path(tokenizer_file).filename() == "tokenizer.json") {
    std::ifstream in(tokenizer_file, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    tok::write_file_atomic(dst.string(), bytes);
  } else {
    tok::write_file_atomic(dst.string(), tok::export_hf_tokenizer_json(tk.vocab()));
  }
}

void save_model(LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file, ExportFormat fmt,
                DType type, const std::string& out, CheckpointWeights weights) {
  if (fmt == ExportFormat::Onnx) {
    io::OnnxExportOptions o;
    o.dtype = type;
    o.require_packed = false;
    save_onnx(m, tk, tokenizer_file, o, OnnxVariants::Kv, out);
    return;
  }
  // Projections keep their storage where the format can hold it (GGUF writes packed ggml blocks
  // as they are); HF and llama2.c convert to their float types.
  io::Checkpoint ck = model_to_checkpoint(m, weights);
  if (weights == CheckpointWeights::AsStored && fmt == ExportFormat::Gguf) {
    // Never silently: layers GGUF cannot hold as they are (int-N, NF4, LoRA ...) go out dense.
    for (auto& [path, l] : m.linear_layers())
      if (!l->file_weight())
        log::warn("[export] {}: layer kind '{}' has no GGUF type: written as dense {}", path, l->kind(),
                  dtype_name(type));
  }
  switch (fmt) {
    case ExportFormat::Hf: {
      if (weights == CheckpointWeights::AsStored) add_gptq_layout(m, ck);
      fs::create_directories(out);
      io::write_hf(ck, out, type);
      if (tk) write_hf_tokenizer(*tk, tokenizer_file, out);
      break;
    }
    case ExportFormat::Gguf: {
      LLMOPT_CHECK_INPUT(tk != nullptr, "[export] GGUF export needs a tokenizer (give --tokenizer)");
      io::write_gguf(out, ck, type, tok::export_gguf_kvs(tk->vocab()));
      break;
    }
    case ExportFormat::Onnx:
      break;  // handled above
    case ExportFormat::Llama2c: {
      // llama2.c holds fp32 (legacy) or int8 groups (v2, export.py's version 2): q8_0 writes v2 with
      // ggml's block of 32 values per scale.
      LLMOPT_CHECK_INPUT(type == DType::F32 || type == DType::Q8_0,
                         "[export] llama2c export is f32 or q8_0 (v2 int8, groups of 32), got {}", dtype_name(type));
      if (type == DType::Q8_0) {
        io::write_llama2c_v2(out, ck, 32);
      } else {
        io::write_llama2c_legacy(out, ck);
      }
      if (tk) {
        const std::string tok_path = (fs::path(out).parent_path() / "tokenizer.bin").string();
        tok::write_file_atomic(tok_path, tok::export_llama2c_tokenizer(tk->vocab()));
      }
      break;
    }
  }
}

}  // namespace llmopt::model
