// Helpers shared by the model subcommands: loading with good errors, presets, saving.
#pragma once
#include <CLI/CLI.hpp>

#include <memory>
#include <string>

#include "core/dtype.h"
#include "core/model_config.h"
#include "io/checkpoint.h"
#include "model/loader.h"
#include "model/save.h"
#include "apps/common/cli_common.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::cli {

// Model + tokenizer, in inference mode, moved to `device` ("cpu", "cuda", "cuda:N"); with
// `adapter`, a PEFT LoRA adapter directory applied to it (model/lora_adapter.h).
model::LoadedModel load_for_inference(const std::string& path, const std::string& tokenizer,
                                      bool need_tokenizer = true, const std::string& device = "cpu",
                                      const std::string& adapter = "");
// Adds --adapter DIR (a PEFT LoRA adapter; the model then runs on the torch engine).
void add_adapter_option(CLI::App* cmd, std::string& adapter);
// InputError for --adapter with --engine native (adapters run on the torch engine).
void check_adapter_engine(const std::string& adapter, const std::string& engine);
// Whether the torch-free engine reads `model` as stored: false for a Hugging Face directory whose
// config.json declares GPTQ quantization (its int-N layers run on the torch engine). `engine` "auto"
// then takes the torch engine; "native" is an InputError naming the way out.
bool native_engine_reads(const std::string& model, const std::string& engine);
// Adds --device to a subcommand that runs a model.
void add_device_option(CLI::App* cmd, std::string& device);
// Named shapes for `synth`; explicit options override the preset.
ModelConfig synth_config(const std::string& preset, const ModelConfig& explicit_opts);

inline DType parse_float_type(const std::string& s) { return model::parse_float_type(s); }
// keep_packed = false: every weight written at `type` (convert --type); true: packed projections
// keep their blocks where the format holds them (quantize).
void save_model(model::LlamaModel& m, const tok::Tokenizer* tk, const std::string& tokenizer_file,
                const std::string& format, DType type, const std::string& out, bool keep_packed = false);

}  // namespace llmopt::cli
