#include "apps/llmopt/model_io.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "core/log.h"
#include "model/device.h"

namespace llmopt::cli {
namespace fs = std::filesystem;

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

bool resolve_add_bos(bool force_bos, bool no_bos, const tok::Tokenizer& tk) {
  LLMOPT_CHECK_INPUT(!(force_bos && no_bos), "[cli] --bos and --no-bos exclude each other");
  return force_bos ? true : (no_bos ? false : tk.add_bos_default());
}

std::unique_ptr<tok::Tokenizer> load_tokenizer_for(const std::string& model, const std::string& tokenizer) {
  if (!tokenizer.empty()) return tok::load_tokenizer_file(tokenizer);
  LLMOPT_CHECK_INPUT(fs::exists(model), "[tokenize] {}: no such file or directory", model);
  if (fs::is_directory(model)) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const auto p = fs::path(model) / name;
      if (fs::exists(p)) return tok::load_tokenizer_file(p.string());
    }
    throw_input("[tokenize] {}: directory has no tokenizer.json or tokenizer.model", model);
  }
  // A file: GGUF (model or vocab-only), tokenizer.json, tokenizer.model, llama2.c tokenizer.bin.
  return tok::load_tokenizer_file(model);
}

model::LoadedModel load_for_inference(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                                      const std::string& device) {
  const torch::Device dev = model::parse_device(device);  // before loading: a bad --device fails fast
  model::ModelLoadOptions mo;
  mo.tokenizer_path = tokenizer;
  auto lm = model::load_model(path, mo);
  lm.model->eval();
  if (!dev.is_cpu()) lm.model->to(dev);
  if (need_tokenizer && !lm.tokenizer)
    throw_input("[model] {}: no tokenizer found with the model (give --tokenizer FILE)", path);
  return lm;
}

void add_device_option(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "Where the model runs: cpu (default), cuda, cuda:N (CUDA builds)");
}

ModelConfig synth_config(const std::string& preset, const ModelConfig& e) {
  ModelConfig c;
  if (preset == "tiny") {
    c.hidden_size = 64, c.num_hidden_layers = 2, c.num_attention_heads = 4, c.num_key_value_heads = 2,
    c.intermediate_size = 172, c.vocab_size = 0;
  } else if (preset == "small") {
    c.hidden_size = 256, c.num_hidden_layers = 4, c.num_attention_heads = 8, c.num_key_value_heads = 4,
    c.intermediate_size = 704, c.vocab_size = 0;
  } else if (preset == "bench134m") {
    c.hidden_size = 768, c.num_hidden_layers = 12, c.num_attention_heads = 12, c.num_key_value_heads = 12,
    c.intermediate_size = 2048, c.vocab_size = 32000;
  } else {
    LLMOPT_CHECK_INPUT(preset.empty(), "[synth] unknown --preset '{}' (valid: tiny, small, bench134m)", preset);
  }
  if (e.hidden_size) c.hidden_size = e.hidden_size;
  if (e.num_hidden_layers) c.num_hidden_layers = e.num_hidden_layers;
  if (e.num_attention_heads) c.num_attention_heads = e.num_attention_heads;
  if (e.num_key_value_heads) c.num_key_value_heads = e.num_key_value_heads;
  if (e.intermediate_size) c.intermediate_size = e.intermediate_size;
  if (e.vocab_size) c.vocab_size = e.vocab_size;
  c.max_position_embeddings = e.max_position_embeddings;
  LLMOPT_CHECK_INPUT(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 && c.intermediate_size > 0,
                     "[synth] give --preset or all of --dim --layers --heads --ffn");
  if (!c.num_key_value_heads) c.num_key_value_heads = c.num_attention_heads;
  LLMOPT_CHECK_INPUT(c.hidden_size % c.num_attention_heads == 0, "[synth] --dim {} is not a multiple of --heads {}",
                     c.hidden_size, c.num_attention_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  return c;
}

void save_model(model::LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file,
                const std::string& format, DType type, const std::string& out) {
  model::save_model(m, tk, tokenizer_file, model::parse_export_format(format), type, out);
}

Progress::Progress(std::string label, bool quiet)
    : label_(std::move(label)), quiet_(quiet), tty_(isatty(2) != 0), start_(now_s()) {}

void Progress::update(int64_t done, int64_t total, const std::string& unit) {
  if (quiet_) return;
  const double t = now_s();
  if (!tty_ && t - last_ < 5.0 && done < total) return;
  if (tty_ && t - last_ < 0.1 && done < total) return;
  last_ = t;
  const double frac = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 0.0;
  const double el = t - start_;
  const double eta = frac > 0 ? el * (1 - frac) / frac : 0;
  if (tty_) {
    const int width = 30;
    const int fill = static_cast<int>(frac * width);
    std::fprintf(stderr, "\r%s [%.*s%*s] %3.0f%% %lld/%lld %s  %.1fs ETA %.0fs   ", label_.c_str(), fill,
                 "##############################", width - fill, "", frac * 100, (long long)done, (long long)total,
                 unit.c_str(), el, eta);
    drawn_ = true;
  } else {
    std::fprintf(stderr, "%s: %lld/%lld %s (%.0f%%, %.1fs elapsed, ETA %.0fs)\n", label_.c_str(), (long long)done,
                 (long long)total, unit.c_str(), frac * 100, el, eta);
  }
  std::fflush(stderr);
}

void Progress::finish() {
  if (drawn_) std::fputs("\n", stderr);
  drawn_ = false;
}

}  // namespace llmopt::cli
