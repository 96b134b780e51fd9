// Tokenizer files in ../shared other than llama.cpp's vectors: the 17M model's tokenizer.json,
// llama2.c tokenizer.bin files and the Llama-2 SentencePiece model, plus export round trips on
// real vocabularies and an encoding-speed figure.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "test_data_util.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {
namespace {

using testing::read_file;
using testing::read_vocab_tests;
using testing::shared_path;
using testing::shared_text_files;
using testing::utf8_head;

constexpr size_t kTextHeadBytes = 20000;
const EncodeOptions kNoSpecial{.add_bos = false, .parse_special = false};

std::vector<std::string> vector_inputs(const std::string& name) {
  const std::string base = shared_path("tokenizers/llamacpp-vocab/ggml-vocab-" + name + ".gguf");
  std::vector<std::string> inputs;
  for (const auto& c : read_vocab_tests(base + ".inp", base + ".out")) inputs.push_back(c.input);
  return inputs;
}

// The 17M model's tokenizer.json was built from the gpt-2 GGUF vocabulary (MODEL_CARD.md): both
// must give identical ids on llama.cpp's inputs and on every shared text.
TEST(VocabFiles, TinyLlamaTokenizerJsonMatchesGpt2Gguf) {
  const auto json_tok = load_tokenizer_file(shared_path("models/tinyllama-bpe-17m/tokenizer.json"));
  const auto gguf_tok =
      load_tokenizer_file(shared_path("tokenizers/llamacpp-vocab/ggml-vocab-gpt-2.gguf"));
  EXPECT_EQ(json_tok->vocab().kind, VocabKind::ByteLevelBpe);
  EXPECT_EQ(json_tok->vocab_size(), 50257);
  EXPECT_EQ(json_tok->bos_id(), 50256);  // tokenizer_config.json: bos = eos = <|endoftext|>
  EXPECT_EQ(json_tok->eos_id(), 50256);
  EXPECT_FALSE(json_tok->add_bos_default());
  EXPECT_EQ(json_tok->vocab().pre, "gpt-2");
  const auto inputs = vector_inputs("gpt-2");
  ASSERT_EQ(inputs.size(), 46u);
  for (const std::string& text : inputs) {
    EXPECT_EQ(json_tok->encode(text, kNoSpecial), gguf_tok->encode(text, kNoSpecial)) << text;
  }
  for (const std::string& file : shared_text_files()) {
    const std::string text = utf8_head(read_file(shared_path(file)), kTextHeadBytes);
    EXPECT_EQ(json_tok->encode(text, kNoSpecial), gguf_tok->encode(text, kNoSpecial)) << file;
  }
}

// MODEL_CARD.md: tinyshakespeare is 338,025 GPT-2 tokens (the well-known count for that file).
TEST(VocabFiles, TinyShakespeareGpt2TokenCount) {
  const auto tok = load_tokenizer_file(shared_path("models/tinyllama-bpe-17m/tokenizer.json"));
  const std::string text = read_file(shared_path("text/tinyshakespeare.txt"));
  const auto ids = tok->encode(text, kNoSpecial);
  EXPECT_EQ(ids.size(), 338025u);
  EXPECT_EQ(tok->decode(ids), text);
}

TEST(VocabFiles, Tok512BinLoadsAndReexportsByteIdentical) {
  const std::string path = shared_path("models/stories260K/tok512.bin");
  const Vocab v = load_llama2c_tokenizer(path, 512);
  EXPECT_EQ(v.size(), 512);
  EXPECT_EQ(v.tokens[1], "<s>");
  EXPECT_EQ(v.types[1], TokenType::Control);
  EXPECT_EQ(v.types[3], TokenType::Byte);  // <0x00>
  EXPECT_EQ(export_llama2c_tokenizer(v), read_file(path));
  const auto tok = load_tokenizer_file(path);  // detected by content, read to the end
  EXPECT_EQ(tok->vocab_size(), 512);
  const std::string story = "Once upon a time, there was a little girl named Lily.";
  const auto ids = tok->encode(story);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(tok->decode(ids), story);
}

// llama2.c's tokenizer.bin is an export of the same SentencePiece model: both loaders must
// give the same encodings on every shared text (first 20 kB).
TEST(VocabFiles, Llama2BinAndModelEncodeIdentically) {
  const auto bin =
      load_tokenizer_file(shared_path("tokenizers/llama2-32000/tokenizer_llama32000.bin"));
  const auto model =
      load_tokenizer_file(shared_path("tokenizers/llama2-32000/tokenizer_llama32000.model"));
  const auto gguf =
      load_tokenizer_file(shared_path("tokenizers/llamacpp-vocab/ggml-vocab-llama-spm.gguf"));
  ASSERT_EQ(bin->vocab_size(), 32000);
  ASSERT_EQ(model->vocab_size(), 32000);
  EXPECT_EQ(export_llama2c_tokenizer(bin->vocab()),
            read_file(shared_path("tokenizers/llama2-32000/tokenizer_llama32000.bin")));
  for (const std::string& file : shared_text_files()) {
    const std::string text = utf8_head(read_file(shared_path(file)), kTextHeadBytes);
    const auto ids = model->encode(text);
    EXPECT_EQ(bin->encode(text), ids) << file;
    // llama.cpp's llama-spm vocabulary is the same model converted to GGUF.
    EXPECT_EQ(gguf->encode(text), ids) << file;
    EXPECT_EQ(model->decode(ids), text) << file;
  }
}

// Export -> reload must encode identically: GGUF key/values and tokenizer.json for SPM and
// byte-level vocabularies, on llama.cpp's inputs and shared text.
void expect_same_encodings(const Tokenizer& a, const Tokenizer& b, const std::string& what) {
  std::vector<std::string> texts = vector_inputs("gpt-2");
  for (const std::string& file : shared_text_files()) {
    texts.push_back(utf8_head(read_file(shared_path(file)), 5000));
  }
  int mismatches = 0;
  for (const std::string& text : texts) {
    for (bool parse_special : {false, true}) {
      const EncodeOptions o{.add_bos = true, .parse_special = parse_special};
      if (a.encode(text, o) != b.encode(text, o) && ++mismatches <= 3) {
        ADD_FAILURE() << what << ": encodings differ on '" << text.substr(0, 60) << "'";
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

TEST(VocabFiles, ExportRoundTrips) {
  for (const char* name : {"llama-spm", "phi-3", "gpt-2", "mpt", "deepseek-llm", "falcon"}) {
    const std::string path =
        shared_path(std::string("tokenizers/llamacpp-vocab/ggml-vocab-") + name + ".gguf");
    const auto original = load_tokenizer_file(path);
    const Vocab& v = original->vocab();
    const auto from_gguf = make_tokenizer(vocab_from_gguf_kvs(export_gguf_kvs(v), "kvs"), "kvs");
    expect_same_encodings(*original, *from_gguf, std::string(name) + " GGUF kvs");
    EXPECT_EQ(from_gguf->vocab().tokens, v.tokens);
    EXPECT_EQ(from_gguf->vocab().types, v.types);
    const auto from_json =
        make_tokenizer(parse_hf_tokenizer_json(export_hf_tokenizer_json(v), "json"), "json");
    expect_same_encodings(*original, *from_json, std::string(name) + " tokenizer.json");
  }
}

// The GGUF exporter's key/values must survive the io layer's GGUF reader.
TEST(VocabFiles, ExportedKvsMatchLlamaCppKeys) {
  const std::string path = shared_path("tokenizers/llamacpp-vocab/ggml-vocab-gpt-2.gguf");
  const auto file = io::GgufFile::open(path);
  const auto kvs = export_gguf_kvs(vocab_from_gguf(file));
  for (const auto& [key, value] : kvs) {
    if (key == "tokenizer.ggml.add_bos_token" || key == "tokenizer.ggml.add_eos_token" ||
        key == "tokenizer.ggml.scores" || key == "tokenizer.ggml.padding_token_id" ||
        key == "tokenizer.ggml.unknown_token_id") {
      continue;  // written by us even where llama.cpp's converter leaves them out
    }
    const io::GgufValue* original = file.find(key);
    ASSERT_NE(original, nullptr) << key;
    EXPECT_EQ(value.to_string(1u << 30), original->to_string(1u << 30)) << key;
  }
}

// llama.cpp's own llama2.c converter turned tok512.bin into the stories260K GGUF (DATA.md): our
// llama2.c loader must produce exactly the vocabulary it wrote (pieces with U+2581, scores, types,
// special ids), and our GGUF export of it must carry the same values.
TEST(VocabFiles, Tok512MatchesLlamaCppConversion) {
  const Vocab ours = load_llama2c_tokenizer(shared_path("models/stories260K/tok512.bin"), 512);
  const auto file =
      io::GgufFile::open(shared_path("models/stories260K/stories260K.llamacpp-f32.gguf"));
  const Vocab theirs = vocab_from_gguf(file);
  EXPECT_EQ(ours.tokens, theirs.tokens);
  EXPECT_EQ(ours.scores, theirs.scores);
  EXPECT_EQ(ours.types, theirs.types);
  EXPECT_EQ(ours.bos_id, theirs.bos_id);
  EXPECT_EQ(ours.eos_id, theirs.eos_id);
  EXPECT_EQ(ours.unk_id, theirs.unk_id);
  for (const auto& [key, value] : export_gguf_kvs(ours)) {
    if (key == "tokenizer.ggml.tokens" || key == "tokenizer.ggml.scores" ||
        key == "tokenizer.ggml.token_type" || key == "tokenizer.ggml.model") {
      const io::GgufValue* original = file.find(key);
      ASSERT_NE(original, nullptr) << key;
      EXPECT_EQ(value.to_string(1u << 30), original->to_string(1u << 30)) << key;
    }
  }
}

// The path `convert` takes: our kvs written into a GGUF file by the io writer, read back by
// content detection, must tokenize like the source vocabulary.
TEST(VocabFiles, VocabOnlyGgufFileRoundTrip) {
  for (const char* source : {"tokenizers/llama2-32000/tokenizer_llama32000.model",
                             "tokenizers/llamacpp-vocab/ggml-vocab-deepseek-coder.gguf"}) {
    const auto original = load_tokenizer_file(shared_path(source));
    auto kvs = export_gguf_kvs(original->vocab());
    kvs.insert(kvs.begin(), {"general.architecture", io::GgufValue::make_string("llama")});
    const std::string path = std::string(LLMOPT_BINARY_DIR) + "/tokenizer-roundtrip.gguf";
    io::write_gguf_file(path, kvs, {});
    const auto reloaded = load_tokenizer_file(path);
    expect_same_encodings(*original, *reloaded, std::string(source) + " -> GGUF file");
    std::remove(path.c_str());
  }
}

TEST(VocabFiles, BaichuanLoadsAndRoundTrips) {
  const auto tok =
      load_tokenizer_file(shared_path("tokenizers/llamacpp-vocab/ggml-vocab-baichuan.gguf"));
  EXPECT_EQ(tok->vocab_size(), 64000);
  EXPECT_EQ(tok->vocab().kind, VocabKind::Spm);
  for (const std::string& text : vector_inputs("gpt-2")) {
    EXPECT_EQ(tok->decode(tok->encode(text)), text);
  }
}

// Speed figure (printed, never asserted): the 1.2 MB WikiText-2 test file with Llama-2 SPM and
// GPT-2 byte-level BPE.
TEST(VocabFiles, EncodingSpeedFigure) {
  const std::string text = read_file(shared_path("text/wikitext2.test.raw"));
  for (const char* file : {"tokenizers/llama2-32000/tokenizer_llama32000.model",
                           "tokenizers/llamacpp-vocab/ggml-vocab-gpt-2.gguf",
                           "tokenizers/llamacpp-vocab/ggml-vocab-deepseek-llm.gguf"}) {
    const auto tok = load_tokenizer_file(shared_path(file));
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(text);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("encode wikitext2.test.raw (%zu bytes) with %s: %zu tokens in %.1f ms\n",
                text.size(), file, ids.size(), ms);
    EXPECT_EQ(tok->decode(ids), text);
  }
}

}  // namespace
}  // namespace llmopt::tok
