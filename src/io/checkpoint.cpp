#include "io/checkpoint.h"

#include <cctype>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/checkpoint_tensors.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/hf_checkpoint.h"
#include "io/llama2c.h"
#include "io/mapped_file.h"

namespace llmopt::io {
namespace fs = std::filesystem;

std::string_view model_format_name(ModelFormat f) {
  switch (f) {
    case ModelFormat::HfDir:
      return "hf";
    case ModelFormat::Gguf:
      return "gguf";
    case ModelFormat::Llama2c:
      return "llama2c";
  }
  return "unknown";
}

const TensorView* Checkpoint::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const TensorView& Checkpoint::get(std::string_view name) const {
  const TensorView* t = find(name);
  if (!t) throw_input("[io] {}: missing tensor '{}'", path, name);
  return *t;
}

int64_t Checkpoint::total_bytes() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes;
  return n;
}

int64_t Checkpoint::total_params() const {
  int64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

ModelFormat detect_model_format(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) throw_input("[io] {}: no such file or directory", path);
  if (fs::is_directory(status)) {
    LLMOPT_CHECK_INPUT(
        fs::exists(fs::path(path) / "config.json"),
        "[io] {}: directory has no config.json (expected a Hugging Face model directory)", path);
    return ModelFormat::HfDir;
  }
  const auto file = MappedFile::open(path);
  // A single .safetensors file of a Hugging Face directory stands for its directory.
  if (file->size() >= 9 && file->data()[8] == '{' &&
      fs::exists(fs::path(path).parent_path() / "config.json"))
    return ModelFormat::HfDir;
  if (file->size() >= 4) {
    uint32_t magic;
    std::memcpy(&magic, file->data(), 4);
    if (magic == kGgufMagic) return ModelFormat::Gguf;
  }
  if (looks_like_llama2c(*file)) return ModelFormat::Llama2c;
  throw_input(
      "[io] {}: unrecognized model format (expected a GGUF file, a llama2.c .bin, or a Hugging "
      "Face "
      "directory with config.json)",
      path);
}

namespace {

// Kind of tokenizer file, by content where it can tell: GGUF magic, JSON, else by extension
// (.model = SentencePiece protobuf), defaulting to llama2.c's tokenizer.bin.
TokenizerSource tokenizer_from_path(const std::string& path) {
  const auto file = MappedFile::open(path);
  TokenizerSource src;
  src.path = path;
  uint32_t magic = 0;
  if (file->size() >= 4) std::memcpy(&magic, file->data(), 4);
  size_t first = 0;
  while (first < file->size() && std::isspace(file->data()[first])) ++first;
  if (magic == kGgufMagic) {
    src.kind = TokenizerSource::Kind::Gguf;
  } else if (first < file->size() && file->data()[first] == '{') {
    src.kind = TokenizerSource::Kind::HfJson;
  } else if (fs::path(path).extension() == ".model") {
    src.kind = TokenizerSource::Kind::SentencePieceModel;
  } else {
    src.kind = TokenizerSource::Kind::Llama2cBin;
  }
  return src;
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path, const LoadOptions& opts) {
  Checkpoint ckpt;
  switch (detect_model_format(path)) {
    case ModelFormat::HfDir:
      ckpt = load_hf_dir(fs::is_directory(path) ? path : fs::path(path).parent_path().string());
      break;
    case ModelFormat::Gguf:
      ckpt = load_gguf_checkpoint(path);
      break;
    case ModelFormat::Llama2c:
      LLMOPT_CHECK_INPUT(
          !opts.tokenizer_path.empty(),
          "[llama2c] {}: a llama2.c model needs a tokenizer file (--tokenizer tokenizer.bin)",
          path);
      ckpt = load_llama2c(path);
      break;
  }
  ckpt.path = path;
  if (!opts.tokenizer_path.empty()) ckpt.tokenizer = tokenizer_from_path(opts.tokenizer_path);
  validate_checkpoint_tensors(ckpt, model_format_name(ckpt.format).data());
  if (opts.check_finite) check_tensors_finite(ckpt);
  return ckpt;
}

}  // namespace llmopt::io
