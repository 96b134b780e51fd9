// libFuzzer harness: arbitrary bytes through the safetensors header parser.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmopt::io;
  auto file = MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
  try {
    const SafetensorsFile f = SafetensorsFile::parse(file);
    for (const auto& t : f.tensors()) {
      if (t.nbytes > 0) {
        volatile uint8_t first = t.data[0], last = t.data[t.nbytes - 1];
        (void)first;
        (void)last;
      }
    }
  } catch (const llmopt::InputError&) {
  }
  return 0;
}
