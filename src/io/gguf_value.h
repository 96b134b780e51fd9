// One GGUF metadata value (ggml docs/gguf.md "gguf_metadata_value_t"): a scalar, a string or an
// array (arrays may nest). Used by the GGUF reader, the GGUF writer and the tokenizer layer, which
// reads and supplies the `tokenizer.ggml.*` entries.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmopt::io {

// Value type codes as stored in the file.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
std::string_view gguf_type_name(GgufType t);
bool gguf_type_is_integer(GgufType t);
bool gguf_type_is_signed(GgufType t);

struct GgufValue {
  GgufType type = GgufType::U32;
  // Scalars: unsigned integers in `u`, signed integers in `i`, F32/F64 in `f`, Bool in `b`.
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  bool b = false;
  std::string str;                    // String
  GgufType elem_type = GgufType::U8;  // Array: type of every element
  std::vector<GgufValue> items;       // Array elements

  static GgufValue make_u32(uint32_t v);
  static GgufValue make_i32(int32_t v);
  static GgufValue make_u64(uint64_t v);
  static GgufValue make_f32(float v);
  static GgufValue make_bool(bool v);
  static GgufValue make_string(std::string v);
  static GgufValue make_string_array(const std::vector<std::string>& v);
  static GgufValue make_f32_array(const std::vector<float>& v);
  static GgufValue make_i32_array(const std::vector<int32_t>& v);
  // A scalar of any integer type (value stored in `u` or `i` as the type's signedness says).
  static GgufValue make_integer(GgufType t, int64_t v);

  bool is_integer() const { return gguf_type_is_integer(type); }
  // Integer value as int64 (U64 above INT64_MAX is clamped; callers range-check).
  int64_t as_int64() const;
  // Readable rendering for `info` and error messages; arrays longer than `max_items` are
  // summarized.
  std::string to_string(size_t max_items = 8) const;
};

using GgufKeyValue = std::pair<std::string, GgufValue>;

}  // namespace llmopt::io
