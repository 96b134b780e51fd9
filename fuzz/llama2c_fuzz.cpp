// libFuzzer harness: arbitrary bytes through the llama2.c model loader (legacy, v1, v2).
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/llama2c.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmopt::io;
  auto file = MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.bin");
  try {
    (void)looks_like_llama2c(*file);
    (void)llama2c_to_checkpoint(file);
  } catch (const llmopt::InputError&) {
  }
  return 0;
}
