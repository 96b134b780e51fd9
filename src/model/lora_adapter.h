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
// Reads a PEFT LoRA adapter directory (or a llama.cpp GGUF LoRA adapter file, *.gguf) and wraps the named projections of `model` in LoraLinear
// layers holding its tensors. InputError (exit 2) naming the file/tensor for a missing file, a
// non-LORA peft_type, unsupported settings, an unknown module or a shape that does not fit.
AdapterLoadResult load_peft_adapter(LlamaModel& model, const std::string& dir);

// The LoRA layers of `model` as a llama.cpp adapter (io/gguf_lora.h: general.type adapter,
// blk.N.<proj>.weight.lora_a / .lora_b, q/k rows of B permuted as the base GGUF's W) for a base
// GGUF of `architecture` ("llama": llmopt's own GGUF exports). llama.cpp scales each pair by
// alpha / r: alpha is written so that this equals each layer's scaling (rsLoRA: alpha·sqrt(r));
// a layer whose scaling differs from the others' gets it folded into its B. InputError (exit 2,
// naming the way out: merge) for DoRA (llama.cpp has no magnitude vector), trained biases, and an
// lm_head adapter over tied embeddings. `type`: F32 or F16.
void save_gguf_lora_adapter(LlamaModel& model, const std::string& path, const std::string& architecture = "llama",
                            DType type = DType::F32);
// Why `model`'s adapters have no llama.cpp form ("" when they have one): DoRA, trained biases.
std::string gguf_lora_unsupported(LlamaModel& model);
// general.architecture of the GGUF an adapter for the model loaded from `source_path` applies to:
// that file's own when it is a GGUF, else "llama" (what llmopt convert --to gguf writes).
std::string gguf_lora_architecture(const std::string& source_path);
// The file name save_gguf_lora_adapter gets inside an adapter directory.
inline constexpr const char* kGgufAdapterFile = "adapter.gguf";

// PEFT's key prefix of a module path and the tensor suffixes.
std::string peft_key(const std::string& module_path, const std::string& suffix);

}  // namespace llmopt::model
