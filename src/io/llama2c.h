// llama2.c model files (karpathy/llama2.c export.py):
//   legacy: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
//           seq_len; vocab_size < 0 means an unshared classifier), fp32 weights stacked per type
//           across layers, two unused freq_cis arrays before the classifier;
//   v1:     "ak42" magic, version 1, 256-byte header, fp32 weights (norms first);
//   v2:     "ak42", version 2, 256-byte header with group size, fp32 norms then int8 weights with
//           one fp32 scale per group ("Q8_0"), dequantized on load into owned F32 tensors.
// llama2.c q/k rows are in the interleaved (Meta) RoPE layout; loaders permute them to HF's
// rotate-half layout and writers permute back.
#pragma once
#include <cstdint>
#include <string>

#include "io/checkpoint.h"
#include "io/mapped_file.h"

namespace llmopt::io {

inline constexpr uint32_t kLlama2cMagic = 0x616b3432;  // "ak42" as export.py packs it ('I')

struct Llama2cHeader {
  int version = 0;  // 0 = legacy
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
          seq_len = 0;
  bool shared_classifier = true;
  int32_t group_size = 0;       // v2 only
  uint64_t weights_offset = 0;  // 28 (legacy) or 256
};

// Parses and checks the header and that the file size is exactly what the header implies.
Llama2cHeader read_llama2c_header(const MappedFile& file);
// Parses and checks the header fields only (no file size check).
Llama2cHeader parse_llama2c_header(const MappedFile& file);
// The exact file size a header implies (saturates at UINT64_MAX).
uint64_t llama2c_file_size(const Llama2cHeader& h);
// True if the bytes look like a llama2.c model (magic ak42, or a legacy header whose implied size
// equals the file size).
bool looks_like_llama2c(const MappedFile& file);

// Tokenizer source is left empty: load_checkpoint fills it from LoadOptions::tokenizer_path.
Checkpoint load_llama2c(const std::string& path);
Checkpoint llama2c_to_checkpoint(std::shared_ptr<const MappedFile> file);

// Writers (atomic). Tensors are converted to f32; q/k rows are permuted back to the interleaved
// layout. InputError if the config cannot be expressed (head_dim != dim / n_heads, biases).
void write_llama2c_legacy(const std::string& path, const Checkpoint& ckpt);
void write_llama2c_v1(const std::string& path, const Checkpoint& ckpt);
// export.py version2_export: group size halved until it divides dim; every quantized tensor's
// element count must be a multiple of it. scale = f32(max|w| / 127), q = round-half-even(w /
// scale).
void write_llama2c_v2(const std::string& path, const Checkpoint& ckpt, int32_t group_size = 64);

}  // namespace llmopt::io
