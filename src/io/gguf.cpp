#include "io/gguf.h"

#include <algorithm>
#include <array>
#include <limits>

#include "core/error.h"
#include "io/byte_reader.h"

namespace llmopt::io {
namespace {

// Block geometry of ggml_type (ggml.c type_traits). Codes 4 and 5 (Q4_2, Q4_3) and 31..33
// (Q4_0_4_4...) were removed from ggml and are rejected.
constexpr std::array<GgmlTypeInfo, 30> kGgmlTypes = {{
    {0, "F32", 1, 4, DType::F32},
    {1, "F16", 1, 2, DType::F16},
    {2, "Q4_0", 32, 18, DType::Q4_0},
    {3, "Q4_1", 32, 20, DType::Q4_1},
    {6, "Q5_0", 32, 22, DType::Q5_0},
    {7, "Q5_1", 32, 24, DType::Q5_1},
    {8, "Q8_0", 32, 34, DType::Q8_0},
    {9, "Q8_1", 32, 36, DType::Q8_1},
    {10, "Q2_K", 256, 84, DType::Q2_K},
    {11, "Q3_K", 256, 110, DType::Q3_K},
    {12, "Q4_K", 256, 144, DType::Q4_K},
    {13, "Q5_K", 256, 176, DType::Q5_K},
    {14, "Q6_K", 256, 210, DType::Q6_K},
    {15, "Q8_K", 256, 292, DType::Q8_K},
    {16, "IQ2_XXS", 256, 66, std::nullopt},
    {17, "IQ2_XS", 256, 74, std::nullopt},
    {18, "IQ3_XXS", 256, 98, std::nullopt},
    {19, "IQ1_S", 256, 50, std::nullopt},
    {20, "IQ4_NL", 32, 18, std::nullopt},
    {21, "IQ3_S", 256, 110, std::nullopt},
    {22, "IQ2_S", 256, 82, std::nullopt},
    {23, "IQ4_XS", 256, 136, std::nullopt},
    {24, "I8", 1, 1, DType::I8},
    {25, "I16", 1, 2, DType::I16},
    {26, "I32", 1, 4, DType::I32},
    {27, "I64", 1, 8, DType::I64},
    {28, "F64", 1, 8, DType::F64},
    {29, "IQ1_M", 256, 56, std::nullopt},
    {30, "BF16", 1, 2, DType::BF16},
    {35, "TQ2_0", 256, 66, std::nullopt},
}};

constexpr uint32_t kMaxDims = 4;      // GGML_MAX_DIMS
constexpr int kMaxArrayNesting = 16;  // deeper nesting is never legitimate; bounds recursion
// Each parsed array element costs ~100 bytes of memory however small its encoding; the largest
// real vocabularies (256k tokens + merges + scores) hold about 1M elements in total.
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 26;

// Smallest encoding of one element of type t, used to reject absurd counts before allocating.
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool:
      return 1;
    case GgufType::U16:
    case GgufType::I16:
      return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
      return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64:
      return 8;
    case GgufType::String:
      return 8;  // u64 length
    case GgufType::Array:
      return 12;  // u32 type + u64 count
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::F64); }

class Parser {
 public:
  Parser(const MappedFile& f) : f_(f), r_(f.data(), f.size(), "gguf", f.path()) {}

  std::string read_string(std::string_view what) {
    const auto len = r_.read<uint64_t>(what);
    r_.need(len, what);
    return std::string(r_.read_bytes(len, what));
  }

  GgufType read_type(std::string_view key) {
    const auto t = r_.read<uint32_t>("value type");
    if (!valid_type(t))
      throw_input("[gguf] {}: key '{}': unknown value type {} (expected 0..12)", f_.path(), key, t);
    return static_cast<GgufType>(t);
  }

  GgufValue read_value(GgufType t, std::string_view key, int depth) {
    GgufValue v;
    v.type = t;
    switch (t) {
      case GgufType::U8:
        v.u = r_.read<uint8_t>(key);
        break;
      case GgufType::I8:
        v.i = r_.read<int8_t>(key);
        break;
      case GgufType::U16:
        v.u = r_.read<uint16_t>(key);
        break;
      case GgufType::I16:
        v.i = r_.read<int16_t>(key);
        break;
      case GgufType::U32:
        v.u = r_.read<uint32_t>(key);
        break;
      case GgufType::I32:
        v.i = r_.read<int32_t>(key);
        break;
      case GgufType::U64:
        v.u = r_.read<uint64_t>(key);
        break;
      case GgufType::I64:
        v.i = r_.read<int64_t>(key);
        break;
      case GgufType::F32:
        v.f = r_.read<float>(key);
        break;
      case GgufType::F64:
        v.f = r_.read<double>(key);
        break;
      case GgufType::Bool: {
        const auto b = r_.read<uint8_t>(key);
        if (b > 1)
          throw_input("[gguf] {}: key '{}': bool must be 0 or 1, found {}", f_.path(), key, b);
        v.b = b != 0;
        break;
      }
      case GgufType::String:
        v.str = read_string(key);
        break;
      case GgufType::Array: {
        if (depth >= kMaxArrayNesting)
          throw_input("[gguf] {}: key '{}': arrays nested deeper than {}", f_.path(), key,
                      kMaxArrayNesting);
        v.elem_type = read_type(key);
        const auto count = r_.read<uint64_t>("array length");
        const uint64_t min_size = min_encoded_size(v.elem_type);
        if (count > r_.remaining() / min_size)
          throw_input(
              "[gguf] {}: key '{}': array of {} {} elements needs at least {} bytes, only {} "
              "left in the file",
              f_.path(), key, count, gguf_type_name(v.elem_type),
              count > std::numeric_limits<uint64_t>::max() / min_size ? 0 : count * min_size,
              r_.remaining());
        total_elements_ += count;
        if (total_elements_ > kMaxArrayElements)
          throw_input("[gguf] {}: key '{}': metadata arrays hold more than {} elements in total",
                      f_.path(), key, kMaxArrayElements);
        v.items.reserve(count);
        for (uint64_t k = 0; k < count; ++k)
          v.items.push_back(read_value(v.elem_type, key, depth + 1));
        break;
      }
    }
    return v;
  }

  const MappedFile& f_;
  ByteReader r_;
  uint64_t total_elements_ = 0;
};

}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t code) {
  for (const auto& t : kGgmlTypes)
    if (t.code == code) return &t;
  return nullptr;
}

uint32_t ggml_type_for(DType d) {
  for (const auto& t : kGgmlTypes)
    if (t.dtype == d) return t.code;
  throw_input("[gguf] dtype {} cannot be stored in GGUF", dtype_name(d));
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

GgufFile GgufFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

GgufFile GgufFile::parse(std::shared_ptr<const MappedFile> file) {
  GgufFile g;
  g.file_ = std::move(file);
  g.parse_all();
  return g;
}

void GgufFile::parse_all() {
  const std::string& path = file_->path();
  Parser p(*file_);
  ByteReader& r = p.r_;
  if (file_->size() < 4)
    throw_input("[gguf] {}: file too small ({} bytes) for a GGUF header", path, file_->size());
  const auto magic = r.read<uint32_t>("magic");
  if (magic != kGgufMagic)
    throw_input("[gguf] {}: bad magic 0x{:08x} (expected 0x{:08x}, \"GGUF\")", path, magic,
                kGgufMagic);
  version_ = r.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3)
    throw_input("[gguf] {}: unsupported version {} (expected 2 or 3)", path, version_);
  const auto tensor_count = r.read<uint64_t>("tensor count");
  const auto kv_count = r.read<uint64_t>("metadata count");
  // Minimal encodings: a kv is key length (8) + type (4) + 1 byte; a tensor info is name length
  // (8) + n_dims (4) + type (4) + offset (8).
  if (kv_count > r.remaining() / 13)
    throw_input("[gguf] {}: metadata count {} is impossible for a file of {} bytes", path, kv_count,
                file_->size());
  if (tensor_count > r.remaining() / 24)
    throw_input("[gguf] {}: tensor count {} is impossible for a file of {} bytes", path,
                tensor_count, file_->size());

  kvs_.reserve(kv_count);
  for (uint64_t k = 0; k < kv_count; ++k) {
    std::string key = p.read_string("metadata key");
    const GgufType t = p.read_type(key);
    GgufValue v = p.read_value(t, key, 0);
    if (kv_index_.count(key)) throw_input("[gguf] {}: duplicate metadata key '{}'", path, key);
    kv_index_.emplace(key, kvs_.size());
    kvs_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (!a->is_integer() || a->as_int64() <= 0 || a->as_int64() > (1 << 30) ||
        (a->as_int64() & (a->as_int64() - 1)) != 0)
      throw_input("[gguf] {}: general.alignment must be a positive power of two, found {} ({})",
                  path, a->to_string(), gguf_type_name(a->type));
    alignment_ = static_cast<uint32_t>(a->as_int64());
  }

  tensors_.reserve(tensor_count);
  for (uint64_t k = 0; k < tensor_count; ++k) {
    GgufTensorInfo t;
    t.name = p.read_string("tensor name");
    const auto n_dims = r.read<uint32_t>("tensor n_dims");
    if (n_dims > kMaxDims)
      throw_input("[gguf] {}: tensor '{}' has {} dims (at most {})", path, t.name, n_dims,
                  kMaxDims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto n = r.read<uint64_t>("tensor dim");
      if (n == 0 || n > (uint64_t{1} << 40))
        throw_input("[gguf] {}: tensor '{}' dim {} = {} out of range (1..2^40)", path, t.name, d,
                    n);
      if (static_cast<uint64_t>(numel) > (uint64_t{1} << 50) / n)
        throw_input("[gguf] {}: tensor '{}' has more than 2^50 elements", path, t.name);
      numel *= static_cast<int64_t>(n);
      t.ne.push_back(static_cast<int64_t>(n));
    }
    t.shape.assign(t.ne.rbegin(), t.ne.rend());
    t.ggml_type = r.read<uint32_t>("tensor type");
    const GgmlTypeInfo* info = ggml_type_info(t.ggml_type);
    if (!info)
      throw_input("[gguf] {}: tensor '{}' has unknown ggml type {}", path, t.name, t.ggml_type);
    t.dtype = info->dtype;
    const int64_t row = t.ne.empty() ? 1 : t.ne[0];
    if (row % info->block_elems != 0)
      throw_input("[gguf] {}: tensor '{}' row length {} is not a multiple of the {} block size {}",
                  path, t.name, row, info->name, info->block_elems);
    t.nbytes = numel / info->block_elems * info->block_bytes;
    t.offset = r.read<uint64_t>("tensor offset");
    if (t.offset % alignment_ != 0)
      throw_input("[gguf] {}: tensor '{}' offset {} is not a multiple of the alignment {}", path,
                  t.name, t.offset, alignment_);
    if (tensor_index_.count(t.name))
      throw_input("[gguf] {}: duplicate tensor name '{}'", path, t.name);
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment (may equal the file end when
  // there are no tensors).
  const uint64_t end_of_infos = r.pos();
  data_offset_ = (end_of_infos + alignment_ - 1) / alignment_ * alignment_;
  const uint64_t size = file_->size();
  if (!tensors_.empty() && data_offset_ > size)
    throw_input("[gguf] {}: data section starts at {}, past end of file ({} bytes)", path,
                data_offset_, size);
  std::vector<size_t> order(tensors_.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  for (auto& t : tensors_) {
    const uint64_t avail = size - data_offset_;
    if (t.offset > avail || static_cast<uint64_t>(t.nbytes) > avail - t.offset)
      throw_input("[gguf] {}: tensor '{}' data [{}, {}) ends past end of file ({} bytes)", path,
                  t.name, data_offset_ + t.offset, data_offset_ + t.offset + t.nbytes, size);
    t.data = file_->data() + data_offset_ + t.offset;
  }
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return tensors_[a].offset < tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = tensors_[order[k - 1]];
    const auto& cur = tensors_[order[k]];
    if (prev.offset + static_cast<uint64_t>(prev.nbytes) > cur.offset)
      throw_input("[gguf] {}: tensors '{}' and '{}' overlap (offsets {} + {} bytes > {})", path,
                  prev.name, cur.name, prev.offset, prev.nbytes, cur.offset);
  }
}

bool GgufFile::has(std::string_view key) const { return find(key) != nullptr; }

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(std::string(key));
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].second;
}

const GgufValue& GgufFile::get(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw_input("[gguf] {}: missing metadata key '{}'", path(), key);
  return *v;
}

void GgufFile::type_error(std::string_view key, std::string_view expected,
                          const GgufValue& found) const {
  std::string found_name(gguf_type_name(found.type));
  if (found.type == GgufType::Array)
    found_name += fmt::format(" of {}", gguf_type_name(found.elem_type));
  throw_input("[gguf] {}: key '{}': expected {}, found {}", path(), key, expected, found_name);
}

std::string GgufFile::get_string(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::String) type_error(key, "string", v);
  return v.str;
}

uint32_t GgufFile::get_u32(std::string_view key) const {
  const auto& v = get(key);
  if (!v.is_integer()) type_error(key, "u32", v);
  const bool fits =
      gguf_type_is_signed(v.type) ? (v.i >= 0 && v.i <= 0xffffffffll) : v.u <= 0xffffffffull;
  if (!fits)
    throw_input("[gguf] {}: key '{}': value {} does not fit in u32", path(), key, v.to_string());
  return gguf_type_is_signed(v.type) ? static_cast<uint32_t>(v.i) : static_cast<uint32_t>(v.u);
}

int64_t GgufFile::get_i64(std::string_view key) const {
  const auto& v = get(key);
  if (!v.is_integer()) type_error(key, "i64", v);
  if (!gguf_type_is_signed(v.type) &&
      v.u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw_input("[gguf] {}: key '{}': value {} does not fit in i64", path(), key, v.u);
  return v.as_int64();
}

float GgufFile::get_f32(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::F32 && v.type != GgufType::F64) type_error(key, "f32", v);
  return static_cast<float>(v.f);
}

bool GgufFile::get_bool(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::Bool) type_error(key, "bool", v);
  return v.b;
}

std::vector<std::string> GgufFile::get_string_array(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::Array || v.elem_type != GgufType::String)
    type_error(key, "array of string", v);
  std::vector<std::string> out;
  out.reserve(v.items.size());
  for (const auto& it : v.items) out.push_back(it.str);
  return out;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::Array || (v.elem_type != GgufType::F32 && v.elem_type != GgufType::F64))
    type_error(key, "array of f32", v);
  std::vector<float> out;
  out.reserve(v.items.size());
  for (const auto& it : v.items) out.push_back(static_cast<float>(it.f));
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::Array || !gguf_type_is_integer(v.elem_type))
    type_error(key, "array of i32", v);
  std::vector<int32_t> out;
  out.reserve(v.items.size());
  for (size_t k = 0; k < v.items.size(); ++k) {
    const auto& it = v.items[k];
    const bool fits = gguf_type_is_signed(it.type)
                          ? (it.i >= std::numeric_limits<int32_t>::min() &&
                             it.i <= std::numeric_limits<int32_t>::max())
                          : it.u <= static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
    if (!fits)
      throw_input("[gguf] {}: key '{}': element {} = {} does not fit in i32", path(), key, k,
                  it.to_string());
    out.push_back(
        static_cast<int32_t>(gguf_type_is_signed(it.type) ? it.i : static_cast<int64_t>(it.u)));
  }
  return out;
}

size_t GgufFile::get_array_size(std::string_view key) const {
  const auto& v = get(key);
  if (v.type != GgufType::Array) type_error(key, "array", v);
  return v.items.size();
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace llmopt::io
