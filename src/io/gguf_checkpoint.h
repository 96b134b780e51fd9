// GGUF <-> Checkpoint: llama.cpp's tensor names and hyper-parameter keys mapped to the canonical
// HF names of checkpoint.h, q/k rows permuted between GGUF's interleaved RoPE layout and HF's
// rotate-half layout (architecture `llama`).
#pragma once
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/gguf_value.h"

namespace llmopt::io {

// Architectures `llama`, `mistral`, `qwen2`. Block-quantized tensors are passed through as-is.
Checkpoint load_gguf_checkpoint(const std::string& path);
Checkpoint gguf_to_checkpoint(const GgufFile& gguf);

// Writes a llama.cpp-loadable GGUF (architecture `llama`, the keys convert_hf_to_gguf.py writes
// for a Llama model). 2-D tensors are stored as `out_type` (F32, F16, BF16, a block format with a
// reference quantizer in src/kernels, or the source's own block type, copied as-is); rows that are
// not whole blocks fall back to F16; 1-D tensors (norms, biases) stay F32.
// `extra_kvs` are appended after the model keys: the tokenizer's `tokenizer.ggml.*` entries
// (see gguf_tokenizer_kvs for copying them from another GGUF file).
void write_gguf(const std::string& path, const Checkpoint& ckpt, DType out_type,
                const std::vector<GgufKeyValue>& extra_kvs = {});

// Every `tokenizer.*` key/value of a GGUF file, in file order.
std::vector<GgufKeyValue> gguf_tokenizer_kvs(const GgufFile& gguf);

// llama.cpp's general.file_type (enum llama_ftype) for files whose 2-D tensors are `t`.
uint32_t gguf_file_type_for(DType t);

// GGUF tensor name -> canonical HF name (io/architecture.h); empty when the name has no
// canonical counterpart (e.g. rope_freqs.weight).
std::string gguf_to_hf_name(const std::string& gguf_name);
std::string hf_to_gguf_name(const std::string& hf_name);

}  // namespace llmopt::io
