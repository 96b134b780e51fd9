#include "core/dtype.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "core/error.h"

namespace llmopt {
namespace {
struct Info {
  DType t;
  const char* name;
  int64_t block_elems;
  int64_t block_bytes;
};
// Sizes of ggml blocks: QK=32 formats and QK_K=256 super-blocks.
constexpr std::array<Info, 22> kInfo = {{
    {DType::F32, "F32", 1, 4},     {DType::F16, "F16", 1, 2},      {DType::BF16, "BF16", 1, 2},
    {DType::F64, "F64", 1, 8},     {DType::I8, "I8", 1, 1},        {DType::I16, "I16", 1, 2},
    {DType::I32, "I32", 1, 4},     {DType::I64, "I64", 1, 8},      {DType::U8, "U8", 1, 1},
    {DType::BOOL, "BOOL", 1, 1},   {DType::Q4_0, "Q4_0", 32, 18},  {DType::Q4_1, "Q4_1", 32, 20},
    {DType::Q5_0, "Q5_0", 32, 22}, {DType::Q5_1, "Q5_1", 32, 24},  {DType::Q8_0, "Q8_0", 32, 34},
    {DType::Q8_1, "Q8_1", 32, 36}, {DType::Q2_K, "Q2_K", 256, 84}, {DType::Q3_K, "Q3_K", 256, 110},
    {DType::Q4_K, "Q4_K", 256, 144}, {DType::Q5_K, "Q5_K", 256, 176}, {DType::Q6_K, "Q6_K", 256, 210},
    {DType::Q8_K, "Q8_K", 256, 292},
}};
const Info& info(DType t) {
  for (const auto& i : kInfo)
    if (i.t == t) return i;
  LLMOPT_ASSERT(false, "unknown dtype {}", static_cast<int>(t));
}
}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }

std::optional<DType> dtype_from_name(std::string_view name) {
  std::string up(name);
  std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return std::toupper(c); });
  for (const auto& i : kInfo)
    if (up == i.name) return i.t;
  return std::nullopt;
}

bool dtype_is_block_quantized(DType t) { return info(t).block_elems > 1; }
int64_t dtype_block_elems(DType t) { return info(t).block_elems; }
int64_t dtype_block_bytes(DType t) { return info(t).block_bytes; }

int64_t dtype_bytes_for(DType t, int64_t n) {
  const auto& i = info(t);
  LLMOPT_CHECK_INPUT(n >= 0 && n % i.block_elems == 0,
                     "[dtype] {} elements is not a multiple of the {} block size {}", n, i.name,
                     i.block_elems);
  return n / i.block_elems * i.block_bytes;
}

}  // namespace llmopt
