// libFuzzer harness: arbitrary bytes through the llama2.c model loader (legacy, v1, v2).
// Most mutations break the exact-size rule and stop at the header; to reach the weight walk and
// the v2 dequantization too, a second pass resizes the input to the size its header implies
// (when that is under 4 MB), filling with the input's own bytes.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmopt::io;
  std::vector<uint8_t> bytes(data, data + size);
  auto file = MappedFile::from_bytes(bytes, "fuzz.bin");
  try {
    (void)looks_like_llama2c(*file);
    (void)llama2c_to_checkpoint(file);
  } catch (const llmopt::InputError&) {
  }
  try {
    const Llama2cHeader h = parse_llama2c_header(*file);
    const uint64_t want = llama2c_file_size(h);
    if (want <= (uint64_t{4} << 20) && want != size && size > 0) {
      std::vector<uint8_t> resized(want);
      for (uint64_t k = 0; k < want; ++k) resized[k] = data[k % size];
      (void)llama2c_to_checkpoint(MappedFile::from_bytes(std::move(resized), "fuzz-resized.bin"));
    }
  } catch (const llmopt::InputError&) {
  }
  return 0;
}
