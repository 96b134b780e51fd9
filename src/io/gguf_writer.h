// Low-level GGUF v3 writer: metadata key/values and tensors (already in their storage type),
// laid out as gguf-py writes them: header, key/values, tensor infos, then each tensor's data
// padded to the alignment. Written atomically.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf_value.h"

namespace llmopt::io {

struct GgufOutTensor {
  std::string name;
  uint32_t ggml_type = 0;
  std::vector<int64_t> shape;  // torch order (slowest first); written reversed as ne[]
  const void* data = nullptr;
  int64_t nbytes = 0;
};

// InputError on duplicate keys or tensor names, or a tensor whose bytes do not match its shape.
void write_gguf_file(const std::string& path, const std::vector<GgufKeyValue>& kvs,
                     const std::vector<GgufOutTensor>& tensors, uint32_t alignment = 32);

}  // namespace llmopt::io
