// safetensors reader and writer (huggingface/safetensors format): u64 little-endian header length,
// a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data section. Every offset is checked against the file before any data is touched;
// tensor bytes stay in the memory-mapped file.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace llmopt::io {

struct SafetensorsTensor {
  std::string name;
  std::string dtype_name;      // as written in the header ("BF16", "F8_E4M3", ...)
  std::optional<DType> dtype;  // nullopt for valid safetensors dtypes llmopt has no DType for
  std::vector<int64_t> shape;  // torch order
  uint64_t begin = 0;          // data_offsets, relative to the data section
  uint64_t end = 0;
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
};

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  static SafetensorsFile parse(std::shared_ptr<const MappedFile> file);

  const std::string& path() const { return file_->path(); }
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }  // in header order
  const SafetensorsTensor* find(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t header_size() const { return header_size_; }
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }

 private:
  SafetensorsFile() = default;
  void parse_all();
  std::shared_ptr<const MappedFile> file_;
  uint64_t header_size_ = 0;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A sharded checkpoint's "model.safetensors.index.json": tensor name -> shard file name.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;
  std::vector<std::string> shard_files;  // distinct shard names, in first-use order
};
SafetensorsIndex read_safetensors_index(const std::string& path);

// One tensor to write: bytes already in the output dtype.
struct SafetensorsOutTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t nbytes = 0;
};

// Writes atomically. Layout as the reference implementation writes it: tensors ordered by
// element size (largest first) then name, header JSON padded with spaces to a multiple of 8
// bytes, "__metadata__" first when non-empty. InputError if a tensor's nbytes != numel × size.
void write_safetensors(const std::string& path, const std::vector<SafetensorsOutTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Name of a DType in safetensors headers ("F32", "BF16", "I8", "BOOL"...); InputError for
// block-quantized types, which safetensors cannot hold.
std::string_view safetensors_dtype_name(DType t);
// Whether safetensors has a dtype name for `t` (block-quantized types: no).
bool safetensors_can_hold(DType t);

}  // namespace llmopt::io
