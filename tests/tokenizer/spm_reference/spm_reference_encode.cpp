// Helper for test_tokenizer_spm_reference: encodes files with libsentencepiece.
//   spm_reference_encode MODEL FILE...   -> one line of space-separated ids per FILE (no BOS)
// Links nothing of llmopt (libsentencepiece's bundled protobuf must not meet the system one).
#include <sentencepiece_processor.h>

#include <cstdio>
#include <fstream>
#include <sstream>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL FILE...\n", argv[0]);
    return 2;
  }
  sentencepiece::SentencePieceProcessor processor;
  const auto status = processor.Load(argv[1]);
  if (!status.ok()) {
    std::fprintf(stderr, "%s: %s\n", argv[1], status.ToString().c_str());
    return 2;
  }
  for (int i = 2; i < argc; ++i) {
    std::ifstream in(argv[i], std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    std::vector<int> ids;
    if (!in || !processor.Encode(text.str(), &ids).ok()) {
      std::fprintf(stderr, "%s: cannot encode\n", argv[i]);
      return 1;
    }
    for (size_t k = 0; k < ids.size(); ++k) std::printf(k ? " %d" : "%d", ids[k]);
    std::printf("\n");
  }
  return 0;
}
