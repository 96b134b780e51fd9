// Storage types of tensors as they appear in model files. Block-quantized types are described
// by src/kernels/quant_formats.h (block size, bytes per block, dequantize).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace llmopt {

enum class DType : uint8_t {
  F32, F16, BF16, F64, I8, I16, I32, I64, U8, BOOL,
  // ggml block formats (see ggml's ggml-common.h for the layouts).
  Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K,
};

std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);  // "F32", "q4_0", case-insensitive
bool dtype_is_block_quantized(DType t);
// Elements per block (1 for plain types) and bytes per block.
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes for n elements; throws InputError if n is not a multiple of the block size.
int64_t dtype_bytes_for(DType t, int64_t n);

}  // namespace llmopt
