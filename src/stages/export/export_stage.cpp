#include "stages/export/export_stage.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <fstream>
#include <random>

#include "model/loader.h"
#include "model/lora_adapter.h"
#include "model/prompt_adapter.h"
#include "model/save.h"
#include "model/state_io.h"
#include "model/verify.h"
#include "core/log.h"

namespace fs = std::filesystem;

namespace llmopt::stages {

void ExportStage::validate(const ModelState& state) const {
  LLMOPT_CHECK_INPUT(state.has_model(), "[export] no model to export");
  for (const auto& f : o_.formats) {
    // llama2.c checkpoints hold float32 weights only (its int8 v2 format comes with quantization).
    if (f == "llama2c")
      LLMOPT_CHECK_INPUT(o_.dtype == "f32", "[export] formats: llama2c is written as f32 only, but "
                         "dtype is {}; export llama2c in a stage of its own with dtype: f32", o_.dtype);
    if (f == "gguf")
      LLMOPT_CHECK_INPUT(state.tokenizer != nullptr,
                         "[export] gguf needs a tokenizer; set model.tokenizer in the recipe");
    // llama.cpp reads F32 and F16 adapter tensors (io/gguf_lora.h); a PEFT adapter is always F32.
    if (f == "gguf_lora")
      LLMOPT_CHECK_INPUT(o_.dtype == "f32" || o_.dtype == "f16",
                         "[export] formats: gguf_lora is written as f32 or f16, but dtype is {}; export gguf_lora in "
                         "a stage of its own with dtype: f16",
                         o_.dtype);
    if (f == "onnx") {
      LLMOPT_CHECK_INPUT(o_.dtype == "f32" || o_.dtype == "f16",
                         "[export] formats: onnx is written as f32 or f16, but dtype is {}; export onnx in a "
                         "stage of its own with dtype: f16",
                         o_.dtype);
      io::validate_onnx_options(onnx_options(), state.config());
    }
  }
}

io::OnnxExportOptions ExportStage::onnx_options() const {
  io::OnnxExportOptions o;
  o.opset = o_.opset;
  o.dtype = model::parse_float_type(o_.dtype);
  o.external_data_threshold = o_.external_data;
  o.optimize = o_.optimize;
  o.require_packed = !o_.onnx_dequantize;
  return o;
}

// Every regular file under `dir`, as paths relative to it, sorted (deterministic artifact lists).
static std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

bool is_adapter_format(const std::string& f) { return f == "gguf_lora" || f == "peft"; }

// The file or directory a format is written to inside artifacts/.
std::string output_name(const std::string& format_name, const std::string& basename) {
  if (format_name == "gguf_lora") return basename + "-lora.gguf";
  if (format_name == "peft") return basename + "-peft";
  switch (model::parse_export_format(format_name)) {
    case model::ExportFormat::Hf: return basename + "-hf";
    case model::ExportFormat::Gguf: return basename + ".gguf";
    case model::ExportFormat::Llama2c: return basename + ".bin";
    case model::ExportFormat::Onnx: return basename + "-onnx";
  }
  return basename;
}

// Sequences to replay: consecutive windows of the evaluation text when the recipe has one (and a
// tokenizer), else seeded random token ids.
std::vector<std::vector<int64_t>> replay_sequences(const ModelState& state, const StageContext& ctx, int64_t n,
                                                   int64_t len) {
  const int64_t vocab = state.config().vocab_size;
  len = std::min<int64_t>(len, state.config().max_position_embeddings);
  std::vector<int64_t> ids;
  if (ctx.data && !ctx.data->eval.path.empty() && state.tokenizer) {
    std::ifstream in(ctx.data->eval.path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    text.resize(std::min<size_t>(text.size(), static_cast<size_t>(n * len * 16)));
    for (int32_t id : state.tokenizer->encode(text)) ids.push_back(id);
  }
  std::vector<std::vector<int64_t>> out;
  if (static_cast<int64_t>(ids.size()) >= n * len) {
    for (int64_t i = 0; i < n; ++i) out.emplace_back(ids.begin() + i * len, ids.begin() + (i + 1) * len);
    return out;
  }
  return model::random_sequences(n, len, vocab, ctx.seed);
}

}  // namespace

void ExportStage::write_adapter(ModelState& state, const std::string& format_name, const std::string& out,
                                const std::vector<std::vector<int64_t>>& replay, StageResult& result) const {
  model::LlamaModel& m = *state.model;
  const bool lora = !model::lora_layers(m).empty();
  const bool prompt = m.prompt_adapter() != nullptr;
  LLMOPT_CHECK_INPUT(lora || prompt,
                     "[export] formats: {} writes the model's adapter, but the model has none (a finetune stage "
                     "with method lora, qlora, prompt, prefix or ptuning comes first; for the model itself use "
                     "formats: [hf] or [gguf])",
                     format_name);
  DType written_type = DType::F32;
  if (format_name == "gguf_lora") {
    LLMOPT_CHECK_INPUT(lora,
                       "[export] formats: gguf_lora: the model's {} adapter has no llama.cpp --lora form (llama.cpp "
                       "adapters are LoRA pairs only); use formats: [peft] for the adapter",
                       m.prompt_adapter()->method());
    const std::string why = model::gguf_lora_unsupported(m);
    LLMOPT_CHECK_INPUT(why.empty(),
                       "[export] formats: gguf_lora: {}; use formats: [peft] for the adapter as PEFT saves it, or "
                       "formats: [gguf] (or hf) for the model with the adapter merged in",
                       why);
    written_type = model::parse_float_type(o_.dtype);
    model::save_gguf_lora_adapter(m, out, model::gguf_lora_architecture(state.provenance.source_path), written_type);
  } else if (lora) {
    model::AdapterSaveOptions so;
    so.base_model_name_or_path = state.provenance.source_path;
    model::save_peft_adapter(m, out, so);
  } else {
    model::PromptAdapterSaveOptions so;
    so.base_model_name_or_path = state.provenance.source_path;
    model::save_prompt_adapter(m, out, so);
  }
  if (!o_.verify) return;
  // The base alone (a copy of the model with its adapters taken off), the written adapter loaded
  // onto it as `--adapter` loads it, replayed against the model.
  auto back = model::clone_model(m);
  for (const auto& [path, layer] : model::lora_layers(*back)) back->set_linear(path, layer->base());
  if (back->prompt_adapter() != nullptr) back->set_prompt_adapter(nullptr);
  model::load_any_adapter(*back, out);
  back->to(m.device());
  back->eval();
  const model::ReplayStats r = model::replay(m, *back, replay);
  const model::ReplayLimits limits = model::replay_limits(written_type, o_.verify_max_kld, o_.verify_min_top1);
  if (!(r.kld_mean <= limits.max_kld) || !(r.top1 >= limits.min_top1))
    throw RunError(fmt::format(
        "[export] {}: the written adapter on the base does not reproduce the model: mean KLD {:.3g} (limit {:.3g}), "
        "top-1 agreement {:.4f} (limit {:.4f}) over {} positions",
        out, r.kld_mean, limits.max_kld, r.top1, limits.min_top1, r.positions));
  result.metrics["verify_" + format_name + "_kld_mean"] = r.kld_mean;
  result.metrics["verify_" + format_name + "_top1"] = r.top1;
}

StageResult ExportStage::run(ModelState& state, StageContext& ctx) {
  torch::NoGradGuard no_grad;
  StageResult result;
  const DType type = model::parse_float_type(o_.dtype);
  const fs::path artifacts(ctx.artifacts_dir);
  // The sequences every written format is replayed on (read and tokenized once).
  const std::vector<std::vector<int64_t>> replay =
      o_.verify ? replay_sequences(state, ctx, o_.verify_sequences, o_.verify_tokens)
                : std::vector<std::vector<int64_t>>{};
  int64_t done = 0;
  for (const auto& format_name : o_.formats) {
    ctx.check_interrupted();
    if (ctx.note) ctx.note("writing " + format_name);
    // Each format is written into a private temporary directory and then moved into artifacts/
    // (a rename per file, or per directory for hf), so artifacts/ only ever holds complete files.
    const fs::path tmp = artifacts / fmt::format(".export-{}-{}.tmp", format_name, ::getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const bool adapter = is_adapter_format(format_name);
    // (Adapter formats are not model formats: `format` is only read for the others.)
    const model::ExportFormat format = adapter ? model::ExportFormat::Hf : model::parse_export_format(format_name);
    const std::string out_name = output_name(format_name, o_.basename);
    try {
      if (adapter) {
        if (ctx.note && o_.verify) ctx.note("writing and verifying " + format_name);
        write_adapter(state, format_name, (tmp / out_name).string(), replay, result);
      } else if (format == model::ExportFormat::Onnx) {
        const auto r = model::save_onnx(*state.model, state.tokenizer.get(), state.provenance.tokenizer_path,
                                        onnx_options(), model::parse_onnx_variants(o_.onnx_variant),
                                        (tmp / out_name).string());
        result.metrics["onnx_checked"] = r.check_note.find("passed") != std::string::npos ? 1 : 0;
        // No C++ ONNX Runtime here: the written graph cannot be replayed in-process. The peer
        // tests (tests/peer/test_onnx.py) run exports in ONNX Runtime against llmopt's logits.
        if (o_.verify)
          log::info("[export] onnx: not replayed in-process (no ONNX Runtime in llmopt; {}); "
                    "tests/peer/test_onnx.py checks exports in ONNX Runtime",
                    r.check_note);
      }
      if (!adapter && format != model::ExportFormat::Onnx)
        model::save_model(*state.model, state.tokenizer.get(), state.provenance.tokenizer_path, format,
                          type, (tmp / out_name).string());
      if (o_.verify && !adapter && format != model::ExportFormat::Onnx) {
        // Declared done only after the written artifact, loaded back as a user would load it,
        // computes what the in-memory model computes (optimum only warns, optimum#1755).
        if (ctx.note) ctx.note("verifying " + format_name);
        // A llama2.c file is read with the tokenizer.bin written next to it (or the model's own).
        std::string tokenizer_path;
        if (format == model::ExportFormat::Llama2c)
          tokenizer_path = fs::exists(tmp / "tokenizer.bin") ? (tmp / "tokenizer.bin").string()
                                                              : state.provenance.tokenizer_path;
        const model::ReplayStats r = model::verify_written_model(
            *state.model, (tmp / out_name).string(),
            replay,
            model::replay_limits(type, o_.verify_max_kld, o_.verify_min_top1), tokenizer_path);
        result.metrics["verify_" + format_name + "_kld_mean"] = r.kld_mean;
        result.metrics["verify_" + format_name + "_top1"] = r.top1;
      }
      for (const auto& rel : files_under(tmp)) {
        const std::string artifact_rel = (fs::path("artifacts") / rel).string();
        result.artifacts.push_back(artifact_rel);
        state.artifacts[format_name + ":" + rel] = artifact_rel;
      }
      for (const auto& entry : fs::directory_iterator(tmp)) {
        const fs::path dest = artifacts / entry.path().filename();
        if (entry.is_directory() && fs::exists(dest)) fs::remove_all(dest);
        fs::rename(entry.path(), dest);
      }
      fs::remove_all(tmp);
    } catch (...) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
      throw;
    }
    ctx.report(++done, static_cast<int64_t>(o_.formats.size()), "files");
  }
  int64_t bytes = 0;
  for (const auto& a : result.artifacts) bytes += static_cast<int64_t>(fs::file_size(fs::path(ctx.run_dir) / a));
  result.metrics["export_bytes"] = bytes;
  return result;
}

}  // namespace llmopt::stages
