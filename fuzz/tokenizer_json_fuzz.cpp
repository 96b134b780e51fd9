// libFuzzer harness for the Hugging Face tokenizer.json parser (tokenizer layer): any bytes must
// either parse into a vocabulary that then encodes and decodes without memory errors, or throw
// llmopt::InputError. Anything else (a crash, an ASan report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto tokenizer = llmopt::tok::make_tokenizer(
        llmopt::tok::parse_hf_tokenizer_json(text, "fuzz-tokenizer.json"), "fuzz-tokenizer.json");
    for (bool parse_special : {false, true}) {
      const auto ids = tokenizer->encode("Hello, world! 123 \xC3\xA9\xF0\x9F\xA6\x99 <s>\n\n",
                                         {.add_bos = true, .parse_special = parse_special});
      (void)tokenizer->decode(ids);
      for (int32_t id : ids) (void)tokenizer->decode_token(id);
    }
  } catch (const llmopt::InputError&) {
    // Malformed input, reported as such: fine.
  }
  return 0;
}
