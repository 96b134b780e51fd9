// GGUF reader (ggml docs/gguf.md, versions 2 and 3): header, metadata key/values (all value types,
// nested arrays), tensor infos and the aligned data section, all bounds-checked against the file
// size before anything is read or allocated. Tensor data stays in the memory-mapped file.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"
#include "io/gguf_value.h"
#include "io/mapped_file.h"

namespace llmopt::io {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;

// ggml tensor type codes (ggml.h enum ggml_type) and their block geometry.
struct GgmlTypeInfo {
  uint32_t code;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
  std::optional<DType> dtype;  // nullopt: valid ggml type that llmopt cannot compute with (IQ*)
};
// nullptr for codes ggml does not define (or no longer defines).
const GgmlTypeInfo* ggml_type_info(uint32_t code);
// The ggml code of a DType (InputError for types GGUF cannot store, e.g. BOOL/U8).
uint32_t ggml_type_for(DType t);

struct GgufTensorInfo {
  std::string name;
  uint32_t ggml_type = 0;
  std::optional<DType> dtype;  // nullopt for ggml types without a DType
  std::vector<int64_t> ne;     // dims as stored: fastest-varying first (ggml ne[0] = row length)
  std::vector<int64_t> shape;  // torch order: ne reversed, slowest-varying first
  uint64_t offset = 0;         // relative to the start of the data section
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and parses the file; InputError "[gguf] PATH: ..." on any malformation.
  static GgufFile open(const std::string& path);
  // Parses bytes already mapped/owned (fuzzers, tests).
  static GgufFile parse(std::shared_ptr<const MappedFile> file);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute file offset of tensor data
  const std::shared_ptr<const MappedFile>& mapping() const { return file_; }

  // Metadata, in file order.
  const std::vector<GgufKeyValue>& kvs() const { return kvs_; }
  bool has(std::string_view key) const;
  const GgufValue* find(std::string_view key) const;  // nullptr if absent
  const GgufValue& get(std::string_view key) const;   // InputError if absent

  // Typed getters: InputError naming the file and key, expected vs found type, when the key is
  // absent or has the wrong type. Integer getters accept any integer type whose value fits.
  std::string get_string(std::string_view key) const;
  uint32_t get_u32(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;  // accepts f32 and f64
  bool get_bool(std::string_view key) const;
  std::vector<std::string> get_string_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;    // f32/f64 elements
  std::vector<int32_t> get_i32_array(std::string_view key) const;  // any integer elements that fit
  // Length of an array value (InputError if absent or not an array).
  size_t get_array_size(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;

 private:
  GgufFile() = default;
  void parse_all();
  [[noreturn]] void type_error(std::string_view key, std::string_view expected,
                               const GgufValue& found) const;

  std::shared_ptr<const MappedFile> file_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> kvs_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace llmopt::io
