// A model as read from disk, format-independent and torch-free: configuration, tensors as views
// into memory-mapped files (or owned buffers), and where its tokenizer lives.
//
// Tensor names are the canonical Hugging Face names of the architecture description
// (io/architecture.h, the one list of every tensor with its GGUF name, shape and layout).
// Shapes are row-major, slowest-varying dimension first (torch order; GGUF's ne[] reversed).
// q/k projection rows are in the HF "rotate-half" RoPE layout: loaders of GGUF and llama2.c files
// (interleaved-pair layout) permute them on load, writers permute back.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/model_config.h"

namespace llmopt::io {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // valid while the owning Checkpoint lives
  int64_t nbytes = 0;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Where a model's tokenizer comes from.
struct TokenizerSource {
  enum class Kind { None, HfJson, SentencePieceModel, Llama2cBin, Gguf };
  Kind kind = Kind::None;
  std::string path;  // file to read (for Gguf: the model file itself)
};

enum class ModelFormat { HfDir, Gguf, Llama2c };
std::string_view model_format_name(ModelFormat f);

struct Checkpoint {
  ModelFormat format = ModelFormat::HfDir;
  std::string path;  // what the user gave
  ModelConfig config;
  std::vector<TensorView> tensors;
  TokenizerSource tokenizer;
  // Format-specific facts for `info` (llama2.c version, GGUF key/values without the large
  // tokenizer arrays, safetensors __metadata__, file type ...).
  nlohmann::json metadata = nlohmann::json::object();
  // Keeps mapped files and owned buffers alive as long as the views above.
  std::vector<std::shared_ptr<const void>> storage;

  const TensorView* find(std::string_view name) const;
  const TensorView& get(std::string_view name) const;  // InputError naming the file if absent
  int64_t total_bytes() const;                         // sum of tensor nbytes
  int64_t total_params() const;                        // sum of numel
};

struct LoadOptions {
  std::string tokenizer_path;  // overrides the tokenizer found with the model (llama2.c needs one)
  bool check_finite = true;    // scan float tensors for NaN/Inf and report the first offender
};

// Detects the format by content (directory with config.json, GGUF magic, llama2.c header).
ModelFormat detect_model_format(const std::string& path);
// Loads any supported model; throws InputError naming the file and the problem.
Checkpoint load_checkpoint(const std::string& path, const LoadOptions& opts = {});

}  // namespace llmopt::io
