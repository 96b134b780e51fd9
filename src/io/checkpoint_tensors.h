// Helpers shared by the format loaders and writers: canonical tensor names, the shapes a config
// implies, RoPE row permutations between the interleaved (GGUF / llama2.c / Meta) and the
// rotate-half (HF) q/k layouts, owned buffers and float type conversion.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"

namespace llmopt::io {

// Canonical names and shapes every checkpoint of `cfg` must hold (lm_head only when untied,
// q/k/v biases when attention_bias): io/architecture.h's tensor list.
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& cfg);
// The same list, one at a time (stops early if `fn` throws).
void for_each_expected_tensor(const ModelConfig& cfg,
                              const std::function<void(const ExpectedTensor&)>& fn);

// Checks that every expected tensor is present with the expected shape and that its byte size
// matches its dtype; InputError "[component] FILE: ..." naming the tensor otherwise.
void validate_checkpoint_tensors(const Checkpoint& ckpt, const char* component);

// Scans F32/F16/BF16 tensors; InputError naming the file, tensor and element index of the first
// NaN or Inf.
void check_tensors_finite(const Checkpoint& ckpt);

// A buffer owned by the checkpoint (kept alive in ckpt.storage); returns its data pointer.
uint8_t* own_buffer(Checkpoint& ckpt, size_t nbytes);

// Row permutation of a q/k projection ([n_head * head_dim, in] rows, any dtype whose rows are
// whole blocks) or of a q/k bias. Within each head of head_dim rows, the rotate-half layout holds
// row s * head_dim/2 + i where the interleaved layout holds row 2 * i + s (s in {0,1}).
// `to_rotate_half` = true un-permutes GGUF/llama2.c rows into HF order (inverse of llama.cpp's
// convert_hf_to_gguf.py permute); false permutes HF rows into GGUF order.
void permute_rope_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes,
                       int64_t n_head, bool to_rotate_half);
// Replaces `view` by a permuted copy owned by `ckpt`.
void permute_view_in_checkpoint(Checkpoint& ckpt, TensorView& view, int64_t n_head,
                                bool to_rotate_half);

// Converts a tensor's elements to F32 (from F32/F16/BF16, or block formats dequantized by
// src/kernels); InputError naming the tensor otherwise.
std::vector<float> tensor_to_f32(const TensorView& t);
// The same into `out` (t.numel() floats).
void tensor_to_f32_into(const TensorView& t, float* out);
// Bytes of `t` in `out` dtype: a copy when dtypes match, otherwise through F32. Targets: F32, F16,
// BF16, and block formats with a ggml reference quantizer (rows must be whole blocks).
std::vector<uint8_t> convert_tensor_bytes(const TensorView& t, DType out);

}  // namespace llmopt::io
