// libFuzzer harness: arbitrary bytes through the GGUF parser and the GGUF -> Checkpoint mapping.
// Any outcome but success or InputError (a crash, an ASan report, another exception) is a bug.
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace llmopt::io;
  auto file = MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
  try {
    const GgufFile g = GgufFile::parse(file);
    for (const auto& t : g.tensors()) {
      // Touch the first and last byte of every tensor: they must lie inside the buffer.
      if (t.nbytes > 0) {
        volatile uint8_t first = t.data[0], last = t.data[t.nbytes - 1];
        (void)first;
        (void)last;
      }
    }
    if (g.has("tokenizer.ggml.tokens")) {
      try {
        (void)g.get_string_array("tokenizer.ggml.tokens");
      } catch (const llmopt::InputError&) {
      }
    }
    (void)gguf_to_checkpoint(g);
  } catch (const llmopt::InputError&) {
  }
  return 0;
}
