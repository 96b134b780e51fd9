#include "io/gguf_writer.h"

#include <unordered_set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"

namespace llmopt::io {
namespace {

void write_string(AtomicFile& f, const std::string& s) {
  f.write_pod<uint64_t>(s.size());
  f.write(s);
}

void write_value(AtomicFile& f, const GgufValue& v, const std::string& key) {
  switch (v.type) {
    case GgufType::U8:
      f.write_pod(static_cast<uint8_t>(v.u));
      break;
    case GgufType::I8:
      f.write_pod(static_cast<int8_t>(v.i));
      break;
    case GgufType::U16:
      f.write_pod(static_cast<uint16_t>(v.u));
      break;
    case GgufType::I16:
      f.write_pod(static_cast<int16_t>(v.i));
      break;
    case GgufType::U32:
      f.write_pod(static_cast<uint32_t>(v.u));
      break;
    case GgufType::I32:
      f.write_pod(static_cast<int32_t>(v.i));
      break;
    case GgufType::U64:
      f.write_pod(v.u);
      break;
    case GgufType::I64:
      f.write_pod(v.i);
      break;
    case GgufType::F32:
      f.write_pod(static_cast<float>(v.f));
      break;
    case GgufType::F64:
      f.write_pod(v.f);
      break;
    case GgufType::Bool:
      f.write_pod(static_cast<uint8_t>(v.b ? 1 : 0));
      break;
    case GgufType::String:
      write_string(f, v.str);
      break;
    case GgufType::Array:
      f.write_pod(static_cast<uint32_t>(v.elem_type));
      f.write_pod<uint64_t>(v.items.size());
      for (const auto& item : v.items) {
        LLMOPT_CHECK_INPUT(item.type == v.elem_type,
                           "[gguf] {}: key '{}': array of {} holds a {} element", f.path(), key,
                           gguf_type_name(v.elem_type), gguf_type_name(item.type));
        write_value(f, item, key);
      }
      break;
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

void write_gguf_file(const std::string& path, const std::vector<GgufKeyValue>& kvs,
                     const std::vector<GgufOutTensor>& tensors, uint32_t alignment) {
  LLMOPT_CHECK_INPUT(alignment > 0 && (alignment & (alignment - 1)) == 0,
                     "[gguf] {}: alignment {} is not a power of two", path, alignment);
  std::unordered_set<std::string> keys;
  for (const auto& [k, v] : kvs)
    LLMOPT_CHECK_INPUT(keys.insert(k).second, "[gguf] {}: duplicate metadata key '{}'", path, k);
  std::unordered_set<std::string> names;
  std::vector<uint64_t> offsets;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    LLMOPT_CHECK_INPUT(names.insert(t.name).second, "[gguf] {}: duplicate tensor name '{}'", path,
                       t.name);
    const GgmlTypeInfo* info = ggml_type_info(t.ggml_type);
    LLMOPT_CHECK_INPUT(info != nullptr, "[gguf] {}: tensor '{}' has unknown ggml type {}", path,
                       t.name, t.ggml_type);
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    const int64_t row = t.shape.empty() ? 1 : t.shape.back();
    LLMOPT_CHECK_INPUT(
        row % info->block_elems == 0 && t.nbytes == numel / info->block_elems * info->block_bytes,
        "[gguf] {}: tensor '{}' has {} bytes, which does not match its shape for type {}", path,
        t.name, t.nbytes, info->name);
    offsets.push_back(offset);
    offset = align_up(offset + static_cast<uint64_t>(t.nbytes), alignment);
  }
  AtomicFile f(path);
  f.write_pod<uint32_t>(kGgufMagic);
  f.write_pod<uint32_t>(3);
  f.write_pod<uint64_t>(tensors.size());
  f.write_pod<uint64_t>(kvs.size());
  for (const auto& [k, v] : kvs) {
    write_string(f, k);
    f.write_pod(static_cast<uint32_t>(v.type));
    write_value(f, v, k);
  }
  for (size_t k = 0; k < tensors.size(); ++k) {
    const auto& t = tensors[k];
    write_string(f, t.name);
    f.write_pod<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      f.write_pod<uint64_t>(static_cast<uint64_t>(*it));
    f.write_pod<uint32_t>(t.ggml_type);
    f.write_pod<uint64_t>(offsets[k]);
  }
  f.write_zeros(align_up(f.bytes_written(), alignment) - f.bytes_written());
  const uint64_t data_start = f.bytes_written();
  for (size_t k = 0; k < tensors.size(); ++k) {
    LLMOPT_ASSERT(f.bytes_written() == data_start + offsets[k]);
    f.write(tensors[k].data, static_cast<size_t>(tensors[k].nbytes));
    f.write_zeros(align_up(f.bytes_written(), alignment) - f.bytes_written());
  }
  f.commit();
}

}  // namespace llmopt::io
