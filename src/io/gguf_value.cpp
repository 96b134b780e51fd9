#include "io/gguf_value.h"

#include <fmt/format.h>

#include <limits>

namespace llmopt::io {

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8:
      return "u8";
    case GgufType::I8:
      return "i8";
    case GgufType::U16:
      return "u16";
    case GgufType::I16:
      return "i16";
    case GgufType::U32:
      return "u32";
    case GgufType::I32:
      return "i32";
    case GgufType::F32:
      return "f32";
    case GgufType::Bool:
      return "bool";
    case GgufType::String:
      return "string";
    case GgufType::Array:
      return "array";
    case GgufType::U64:
      return "u64";
    case GgufType::I64:
      return "i64";
    case GgufType::F64:
      return "f64";
  }
  return "unknown";
}

bool gguf_type_is_integer(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64:
      return true;
    default:
      return false;
  }
}

bool gguf_type_is_signed(GgufType t) {
  return t == GgufType::I8 || t == GgufType::I16 || t == GgufType::I32 || t == GgufType::I64;
}

GgufValue GgufValue::make_u32(uint32_t v) { return make_integer(GgufType::U32, v); }
GgufValue GgufValue::make_i32(int32_t v) { return make_integer(GgufType::I32, v); }
GgufValue GgufValue::make_u64(uint64_t v) {
  GgufValue x;
  x.type = GgufType::U64;
  x.u = v;
  return x;
}
GgufValue GgufValue::make_integer(GgufType t, int64_t v) {
  GgufValue x;
  x.type = t;
  if (gguf_type_is_signed(t)) {
    x.i = v;
  } else {
    x.u = static_cast<uint64_t>(v);
  }
  return x;
}
GgufValue GgufValue::make_f32(float v) {
  GgufValue x;
  x.type = GgufType::F32;
  x.f = v;
  return x;
}
GgufValue GgufValue::make_bool(bool v) {
  GgufValue x;
  x.type = GgufType::Bool;
  x.b = v;
  return x;
}
GgufValue GgufValue::make_string(std::string v) {
  GgufValue x;
  x.type = GgufType::String;
  x.str = std::move(v);
  return x;
}
GgufValue GgufValue::make_string_array(const std::vector<std::string>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.elem_type = GgufType::String;
  x.items.reserve(v.size());
  for (const auto& s : v) x.items.push_back(make_string(s));
  return x;
}
GgufValue GgufValue::make_f32_array(const std::vector<float>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.elem_type = GgufType::F32;
  x.items.reserve(v.size());
  for (float s : v) x.items.push_back(make_f32(s));
  return x;
}
GgufValue GgufValue::make_i32_array(const std::vector<int32_t>& v) {
  GgufValue x;
  x.type = GgufType::Array;
  x.elem_type = GgufType::I32;
  x.items.reserve(v.size());
  for (int32_t s : v) x.items.push_back(make_i32(s));
  return x;
}

int64_t GgufValue::as_int64() const {
  if (gguf_type_is_signed(type)) return i;
  if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(u);
}

std::string GgufValue::to_string(size_t max_items) const {
  switch (type) {
    case GgufType::F32:
    case GgufType::F64:
      return fmt::format("{}", f);
    case GgufType::Bool:
      return b ? "true" : "false";
    case GgufType::String:
      return str;
    case GgufType::Array: {
      if (items.size() > max_items)
        return fmt::format("[{} x {}]", items.size(), gguf_type_name(elem_type));
      std::string s = "[";
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) s += ", ";
        s += items[k].to_string(max_items);
      }
      return s + "]";
    }
    default:
      return gguf_type_is_signed(type) ? fmt::format("{}", i) : fmt::format("{}", u);
  }
}

}  // namespace llmopt::io
