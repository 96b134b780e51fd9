// LoRA adapters on disk, as PEFT (huggingface/peft) saves and loads them:
//   adapter_config.json        peft_type LORA, r, lora_alpha, target_modules, lora_dropout, bias,
//                              use_rslora, use_dora, base_model_name_or_path, task_type CAUSAL_LM ...
//   adapter_model.safetensors  base_model.model.<HF module path>.lora_A.weight [r, in]
//                              base_model.model.<HF module path>.lora_B.weight [out, r]
//                              base_model.model.<HF module path>.lora_magnitude_vector [out] (DoRA)
// Module paths are the Hugging Face ones of the architecture description (io/architecture.h)
// whatever format the base came from, so an adapter trained on a llama2.c or GGUF base applies to
// its HF export with peft.
#pragma once
#include <string>
#include <vector>

#include "model/llama.h"
#include "model/lora_linear.h"

namespace llmopt::model {

struct AdapterSaveOptions {
  std::string base_model_name_or_path;
  // target_modules as the user gave them (written as PEFT reads them: a list of names, or one
  // regular expression over module paths when any entry is a regex).
  std::vector<std::string> target_modules;
};

// Writes adapter_config.json and adapter_model.safetensors of every LoRA layer of `model` into
// `dir` (created; each file written to a temporary and renamed). InputError if the model has no
// LoRA layer or its layers disagree on the settings PEFT keeps once per adapter.
void save_peft_adapter(LlamaModel& model, const std::string& dir, const AdapterSaveOptions& opts);

struct AdapterLoadResult {
  LoraConfig config;
  std::vector<std::string> paths;  // projections that got an adapter
};
// Reads a PEFT LoRA adapter directory and wraps the named projections of `model` in LoraLinear
// layers holding its tensors. InputError (exit 2) naming the file/tensor for a missing file, a
// non-LORA peft_type, unsupported settings, an unknown module or a shape that does not fit.
AdapterLoadResult load_peft_adapter(LlamaModel& model, const std::string& dir);

// PEFT's key prefix of a module path and the tensor suffixes.
std::string peft_key(const std::string& module_path, const std::string& suffix);

}  // namespace llmopt::model
