#include "apps/llmopt/model_io.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "io/gptq.h"
#include "model/device.h"
#include "model/lora_adapter.h"
#include "model/prompt_adapter.h"

namespace llmopt::cli {
namespace fs = std::filesystem;

model::LoadedModel load_for_inference(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                                      const std::string& device, const std::string& adapter) {
  const torch::Device dev = model::parse_device(device);  // before loading: a bad --device fails fast
  model::ModelLoadOptions mo;
  mo.tokenizer_path = tokenizer;
  auto lm = model::load_model(path, mo);
  if (!adapter.empty()) model::load_any_adapter(*lm.model, adapter);  // LoRA family or prompt learning
  lm.model->eval();
  if (!dev.is_cpu()) lm.model->to(dev);
  if (need_tokenizer && !lm.tokenizer)
    throw_input("[model] {}: no tokenizer found with the model (give --tokenizer FILE)", path);
  return lm;
}

void add_adapter_option(CLI::App* cmd, std::string& adapter) {
  cmd->add_option("--adapter", adapter, "PEFT adapter directory (LoRA / DoRA, prompt / prefix / P-tuning) applied to the model (runs on the torch engine)");
}

void check_adapter_engine(const std::string& adapter, const std::string& engine) {
  LLMOPT_CHECK_INPUT(adapter.empty() || engine != "native",
                     "[adapter] --adapter runs on the torch engine; drop --engine native (or merge the adapter with "
                     "llmopt finetune --merge)");
}

bool native_engine_reads(const std::string& /*model*/, const std::string& /*engine*/) {
  // Every format io::load_checkpoint reads, GPTQ's HF layout included (held packed as int-N,
  // infer/packed_layers.h).
  return true;
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
                const std::string& format, DType type, const std::string& out, bool keep_packed) {
  model::save_model(m, tk, tokenizer_file, model::parse_export_format(format), type, out,
                    keep_packed ? model::CheckpointWeights::AsStored : model::CheckpointWeights::Dense);
}

}  // namespace llmopt::cli
