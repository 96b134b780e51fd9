// llama.cpp's tokenizer test vectors (../shared/tokenizers/llamacpp-vocab, DATA.md): for every
// vocabulary shipped as a .gguf (except bert-bge, a WordPiece vocabulary llmopt does not
// implement) our encoder must reproduce every expected id sequence. The expected ids come from
// Hugging Face tokenizers (`tokenizer.encode(text, add_special_tokens=False)`, llama.cpp's
// convert_hf_to_gguf_update.py); llama.cpp's test-tokenizer-0 checks them with add_special=false,
// parse_special=false, and so do we.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>

#include "test_data_util.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {
namespace {

using testing::read_vocab_tests;
using testing::shared_path;

struct VectorPair {
  const char* vocab;    // ggml-vocab-<vocab>.gguf
  const char* vectors;  // ggml-vocab-<vectors>.gguf.{inp,out}
  const char* why;
  const char* pre_override = nullptr;  // replaces the vocabulary's tokenizer.ggml.pre
};

// Which test vectors each shipped vocabulary can be checked against (see docs/tokenizers.md):
const VectorPair kPairs[] = {
    {"gpt-2", "gpt-2", "own vectors"},
    {"mpt", "mpt", "own vectors"},
    {"falcon", "falcon", "own vectors"},
    {"starcoder", "starcoder", "own vectors"},
    {"refact", "refact", "own vectors"},
    {"deepseek-coder", "deepseek-coder", "own vectors"},
    {"deepseek-llm", "deepseek-llm", "own vectors"},
    {"phi-3", "phi-3", "own vectors"},
    // DATA.md: llama-spm's .out is a copy of phi-3's. Phi-3's vocabulary is Llama-2's 32000 pieces
    // plus added chat tokens (ids >= 32000) that never occur in these inputs, so the Llama SPM
    // vocabulary must give the same ids.
    {"llama-spm", "phi-3", "phi-3's vectors (same first 32000 pieces)"},
    // No vectors of its own, and no tokenizer.ggml.pre key (llama.cpp then uses its "default"
    // regexes, which split digits and punctuation differently from GPT-NeoX). Its tokens, types
    // and merges are MPT's (MPT uses the GPT-NeoX-20B tokenizer), so with MPT's pre-tokenizer it
    // must reproduce MPT's vectors: that checks the vocabulary, not the missing pre name.
    {"gpt-neox", "mpt", "mpt's vectors with pre=mpt", "mpt"},
};

TEST(LlamaCppVectors, EveryShippedVocabularyMatches) {
  std::map<std::string, std::pair<int, int>> table;
  bool all = true;
  for (const VectorPair& p : kPairs) {
    const std::string dir = shared_path("tokenizers/llamacpp-vocab/");
    const std::string gguf = dir + "ggml-vocab-" + p.vocab + ".gguf";
    const std::string base = dir + "ggml-vocab-" + p.vectors + ".gguf";
    const auto cases = read_vocab_tests(base + ".inp", base + ".out");
    ASSERT_FALSE(cases.empty()) << base << ": unreadable or mismatched .inp/.out";
    Vocab vocab = load_gguf_vocab(gguf);
    if (p.pre_override) vocab.pre = p.pre_override;
    const auto tok = make_tokenizer(std::move(vocab), gguf);
    int pass = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      const auto got = tok->encode(cases[i].input, {.add_bos = false, .parse_special = false});
      if (got == cases[i].expected) {
        ++pass;
        continue;
      }
      all = false;
      std::string g, e;
      for (int32_t id : got) g.append(1, ' ').append(std::to_string(id));
      for (int32_t id : cases[i].expected) e.append(1, ' ').append(std::to_string(id));
      ADD_FAILURE() << p.vocab << " case " << i << " '" << cases[i].input.substr(0, 60)
                    << "'\n  expected:" << e << "\n  got:     " << g;
    }
    table[std::string(p.vocab) + " <- " + p.vectors] = {pass, static_cast<int>(cases.size())};
  }
  std::printf("\n%-36s %s\n", "vocabulary <- vectors", "pass/total");
  for (const auto& [name, counts] : table) {
    std::printf("%-36s %d/%d\n", name.c_str(), counts.first, counts.second);
  }
  EXPECT_TRUE(all);
}

}  // namespace
}  // namespace llmopt::tok
