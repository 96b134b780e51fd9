#include "io/safetensors.h"

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"
#include "io/atomic_file.h"

namespace llmopt::io {
namespace {

struct StDtype {
  const char* name;
  int64_t bytes;
  std::optional<DType> dtype;
};
// Every dtype of the reference implementation (safetensors/src/tensor.rs Dtype).
constexpr std::array<StDtype, 15> kStDtypes = {{
    {"BOOL", 1, DType::BOOL},
    {"U8", 1, DType::U8},
    {"I8", 1, DType::I8},
    {"F8_E5M2", 1, std::nullopt},
    {"F8_E4M3", 1, std::nullopt},
    {"I16", 2, DType::I16},
    {"U16", 2, std::nullopt},
    {"F16", 2, DType::F16},
    {"BF16", 2, DType::BF16},
    {"I32", 4, DType::I32},
    {"U32", 4, std::nullopt},
    {"F32", 4, DType::F32},
    {"F64", 8, DType::F64},
    {"I64", 8, DType::I64},
    {"U64", 8, std::nullopt},
}};

const StDtype* find_st_dtype(std::string_view name) {
  for (const auto& d : kStDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// The reference implementation refuses headers above 100 MB; so do we, before parsing.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

}  // namespace

bool safetensors_can_hold(DType t) {
  for (const auto& d : kStDtypes)
    if (d.dtype == t) return true;
  return false;
}

std::string_view safetensors_dtype_name(DType t) {
  for (const auto& d : kStDtypes)
    if (d.dtype == t) return d.name;
  throw_input("[safetensors] dtype {} cannot be stored in safetensors", dtype_name(t));
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  return parse(MappedFile::open(path));
}

SafetensorsFile SafetensorsFile::parse(std::shared_ptr<const MappedFile> file) {
  SafetensorsFile f;
  f.file_ = std::move(file);
  f.parse_all();
  return f;
}

void SafetensorsFile::parse_all() {
  const std::string& path = file_->path();
  const uint64_t size = file_->size();
  LLMOPT_CHECK_INPUT(size >= 8,
                     "[safetensors] {}: file too small ({} bytes) for the 8-byte header length",
                     path, size);
  std::memcpy(&header_size_, file_->data(), 8);
  LLMOPT_CHECK_INPUT(header_size_ <= kMaxHeaderBytes,
                     "[safetensors] {}: header length {} exceeds the {} byte limit", path,
                     header_size_, kMaxHeaderBytes);
  LLMOPT_CHECK_INPUT(header_size_ <= size - 8,
                     "[safetensors] {}: header length {} runs past end of file ({} bytes)", path,
                     header_size_, size);
  const char* hdr = reinterpret_cast<const char*>(file_->data() + 8);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(hdr, hdr + header_size_);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[safetensors] {}: header is not valid JSON: {}", path, e.what());
  }
  LLMOPT_CHECK_INPUT(j.is_object(), "[safetensors] {}: header must be a JSON object, found {}",
                     path, j.type_name());
  const uint64_t data_start = 8 + header_size_;
  const uint64_t data_size = size - data_start;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const auto& v = it.value();
    if (name == "__metadata__") {
      LLMOPT_CHECK_INPUT(v.is_object(),
                         "[safetensors] {}: __metadata__ must be an object, found {}", path,
                         v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        LLMOPT_CHECK_INPUT(m.value().is_string(),
                           "[safetensors] {}: __metadata__ value '{}' must be a string, found {}",
                           path, m.key(), m.value().type_name());
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    LLMOPT_CHECK_INPUT(v.is_object(),
                       "[safetensors] {}: tensor '{}' entry must be an object, found {}", path,
                       name, v.type_name());
    SafetensorsTensor t;
    t.name = name;
    const auto dt = v.find("dtype");
    LLMOPT_CHECK_INPUT(dt != v.end() && dt->is_string(),
                       "[safetensors] {}: tensor '{}' has no dtype string", path, name);
    t.dtype_name = dt->get<std::string>();
    const StDtype* info = find_st_dtype(t.dtype_name);
    LLMOPT_CHECK_INPUT(info != nullptr, "[safetensors] {}: tensor '{}' has unknown dtype '{}'",
                       path, name, t.dtype_name);
    t.dtype = info->dtype;
    const auto sh = v.find("shape");
    LLMOPT_CHECK_INPUT(sh != v.end() && sh->is_array(),
                       "[safetensors] {}: tensor '{}' has no shape array", path, name);
    LLMOPT_CHECK_INPUT(sh->size() <= 8, "[safetensors] {}: tensor '{}' has {} dims (at most 8)",
                       path, name, sh->size());
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      LLMOPT_CHECK_INPUT(
          d.is_number_unsigned() || (d.is_number_integer() && d.get<int64_t>() >= 0),
          "[safetensors] {}: tensor '{}' shape entries must be non-negative integers, found {}",
          path, name, d.dump());
      const uint64_t n = d.get<uint64_t>();
      LLMOPT_CHECK_INPUT(n == 0 || numel <= (uint64_t{1} << 52) / n,
                         "[safetensors] {}: tensor '{}' shape {} has too many elements", path, name,
                         sh->dump());
      numel *= n;
      t.shape.push_back(static_cast<int64_t>(n));
    }
    const auto off = v.find("data_offsets");
    LLMOPT_CHECK_INPUT(
        off != v.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
            (*off)[1].is_number_unsigned(),
        "[safetensors] {}: tensor '{}' data_offsets must be two non-negative integers", path, name);
    t.begin = (*off)[0].get<uint64_t>();
    t.end = (*off)[1].get<uint64_t>();
    LLMOPT_CHECK_INPUT(t.begin <= t.end,
                       "[safetensors] {}: tensor '{}' data_offsets [{}, {}] are reversed", path,
                       name, t.begin, t.end);
    LLMOPT_CHECK_INPUT(
        t.end <= data_size,
        "[safetensors] {}: tensor '{}' data_offsets end {} past end of file (data section is {} "
        "bytes)",
        path, name, t.end, data_size);
    const uint64_t expected = numel * static_cast<uint64_t>(info->bytes);
    LLMOPT_CHECK_INPUT(
        t.end - t.begin == expected,
        "[safetensors] {}: tensor '{}' size mismatch: shape {} of {} needs {} bytes, "
        "data_offsets span {}",
        path, name, sh->dump(), t.dtype_name, expected, t.end - t.begin);
    t.nbytes = static_cast<int64_t>(expected);
    t.data = file_->data() + data_start + t.begin;
    tensors_.push_back(std::move(t));
  }
  // Ordered, non-overlapping byte ranges.
  std::vector<const SafetensorsTensor*> order;
  for (const auto& t : tensors_) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t k = 1; k < order.size(); ++k)
    LLMOPT_CHECK_INPUT(order[k - 1]->end <= order[k]->begin,
                       "[safetensors] {}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", path,
                       order[k - 1]->name, order[k - 1]->begin, order[k - 1]->end, order[k]->name,
                       order[k]->begin, order[k]->end);
}

const SafetensorsTensor* SafetensorsFile::find(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

SafetensorsIndex read_safetensors_index(const std::string& path) {
  const std::string text = read_text_file(path, "safetensors");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw_input("[safetensors] {}: not valid JSON: {}", path, e.what());
  }
  LLMOPT_CHECK_INPUT(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                     "[safetensors] {}: missing 'weight_map' object", path);
  SafetensorsIndex idx;
  std::unordered_set<std::string> seen;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    LLMOPT_CHECK_INPUT(it.value().is_string(),
                       "[safetensors] {}: weight_map['{}'] must be a file name", path, it.key());
    const auto shard = it.value().get<std::string>();
    LLMOPT_CHECK_INPUT(
        !shard.empty() && shard.find('/') == std::string::npos && shard != "." && shard != "..",
        "[safetensors] {}: weight_map['{}'] = '{}' is not a plain file name", path, it.key(),
        shard);
    idx.weight_map[it.key()] = shard;
    if (seen.insert(shard).second) idx.shard_files.push_back(shard);
  }
  return idx;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsOutTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const SafetensorsOutTensor*> order;
  std::unordered_set<std::string> names;
  for (const auto& t : tensors) {
    LLMOPT_CHECK_INPUT(names.insert(t.name).second, "[safetensors] {}: duplicate tensor name '{}'",
                       path, t.name);
    LLMOPT_CHECK_INPUT(t.name != "__metadata__",
                       "[safetensors] {}: '__metadata__' is not a tensor name", path);
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    safetensors_dtype_name(t.dtype);  // rejects block formats
    const int64_t expected = numel * dtype_block_bytes(t.dtype);
    LLMOPT_CHECK_INPUT(t.nbytes == expected,
                       "[safetensors] {}: tensor '{}' has {} bytes, shape needs {}", path, t.name,
                       t.nbytes, expected);
    order.push_back(&t);
  }
  // Largest element size first keeps every tensor aligned to its element size; then by name.
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) {
    const auto sa = dtype_block_bytes(a->dtype), sb = dtype_block_bytes(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const auto* t : order) {
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = std::string(safetensors_dtype_name(t->dtype));
    e["shape"] = t->shape;
    e["data_offsets"] = {offset, offset + static_cast<uint64_t>(t->nbytes)};
    header[t->name] = e;
    offset += static_cast<uint64_t>(t->nbytes);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  AtomicFile out(path);
  out.write_pod<uint64_t>(text.size());
  out.write(text);
  for (const auto* t : order) out.write(t->data, static_cast<size_t>(t->nbytes));
  out.commit();
}

}  // namespace llmopt::io
