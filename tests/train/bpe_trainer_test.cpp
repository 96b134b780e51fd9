#include "train/bpe_trainer.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "train/bpe_vocabulary.h"
#include "train/story_grammar.h"

namespace llmopt::train {
namespace {

// Hand-worked example. Text "ab ab ab abc" becomes, with the dummy-prefix space, the words
// " ab" x3 and " abc". Character counts: ' ' 4, 'a' 4, 'b' 4, 'c' 1. Pair counts: (' ','a') 4,
// ('a','b') 4, ('b','c') 1; the tie goes to the smaller left piece, so " a" merges first, then
// (" a",'b') 4 -> " ab", then (" ab",'c') 1 -> " abc". Characters follow by frequency.
TEST(BpeTrainer, HandWorkedMerges) {
  const BpeVocabulary v = train_bpe("ab ab ab abc", {.vocab_size = 259 + 3 + 4});
  ASSERT_EQ(v.size(), 266);
  const std::vector<std::string> expected = {" a", " ab", " abc", " ", "a", "b", "c"};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(v.pieces[259 + i], expected[i]) << i;
    EXPECT_EQ(v.scores[259 + i], -static_cast<float>(i)) << i;
    EXPECT_EQ(v.types[259 + i], PieceType::Normal);
  }
  const BpeEncoder enc(v);
  EXPECT_EQ(enc.encode("ab abc", /*add_bos=*/true), (std::vector<int32_t>{1, 260, 261}));
  EXPECT_EQ(enc.encode("ab", false), (std::vector<int32_t>{260}));
  EXPECT_EQ(enc.encode("a", false), (std::vector<int32_t>{259}));
  // 'x' is not a piece: UTF-8 byte 0x78 falls back to token 3 + 0x78.
  EXPECT_EQ(enc.encode("x", false), (std::vector<int32_t>{262, 3 + 0x78}));
}

TEST(BpeTrainer, LayoutMatchesLlama2cTok512) {
  const std::string text = generate_stories(5, 60000);
  const BpeVocabulary v = train_bpe(text, {.vocab_size = 512});
  ASSERT_EQ(v.size(), 512);
  EXPECT_EQ(v.pieces[0], "<unk>");
  EXPECT_EQ(v.types[0], PieceType::Unknown);
  EXPECT_EQ(v.pieces[1], "<s>");
  EXPECT_EQ(v.pieces[2], "</s>");
  EXPECT_EQ(v.types[1], PieceType::Control);
  EXPECT_EQ(v.pieces[3], "<0x00>");
  EXPECT_EQ(v.pieces[3 + 0x0A], "<0x0A>");
  EXPECT_EQ(v.pieces[258], "<0xFF>");
  EXPECT_EQ(v.types[258], PieceType::Byte);
  EXPECT_EQ(v.scores[259], 0.0f);
  for (int64_t id = 260; id < v.size(); ++id) EXPECT_EQ(v.scores[id], v.scores[id - 1] - 1.0f);
  // Space only ever leads a piece; newlines never mix with other characters.
  for (int64_t id = 259; id < v.size(); ++id) {
    const std::string& p = v.pieces[id];
    EXPECT_EQ(p.find(' ', 1), std::string::npos) << p;
    if (p.find('\n') != std::string::npos) {
      EXPECT_EQ(p.find_first_not_of('\n'), std::string::npos);
    }
  }
  EXPECT_EQ(train_bpe(text, {.vocab_size = 512}).pieces, v.pieces);  // deterministic
}

TEST(BpeTrainer, RoundTripsTextIncludingUnseenCharacters) {
  const std::string text = generate_stories(9, 80000);
  const BpeVocabulary v = train_bpe(text, {.vocab_size = 512});
  const BpeEncoder enc(v);
  const std::string held_out = generate_stories(10, 20000);
  const std::vector<int32_t> ids = enc.encode(held_out, true);
  EXPECT_EQ(enc.decode(ids), held_out);
  // Characters alone would give about one token per byte; ~180 merges of frequent words and
  // fragments must at least halve that.
  EXPECT_LT(static_cast<double>(ids.size()) / held_out.size(), 0.5);
  for (const std::string& s : std::vector<std::string>{"", " ", "x", "  two  spaces ", "caf\xC3\xA9 \xE2\x9C\x93!\n\n\nend",
                              std::string("nul\0byte", 8), "\xFF\xFE broken utf8 \xE2\x9C"}) {
    EXPECT_EQ(enc.decode(enc.encode(s, true)), s) << s;
  }
}

TEST(BpeTrainer, RejectsTooSmallVocabulary) {
  EXPECT_THROW(train_bpe("abc", {.vocab_size = 100}), InputError);
}

// More distinct characters than room: the rarest are left out and fall back to bytes.
TEST(BpeTrainer, CharactersBeyondRoomFallBackToBytes) {
  // Counts with the dummy-prefix space: ' ' 4, 'a' 4, 'b' 3, 'c' 2, 'd' 1; room for three.
  const BpeVocabulary v = train_bpe("aaaa bbb cc d", {.vocab_size = 259 + 3});
  ASSERT_EQ(v.size(), 262);
  EXPECT_EQ(v.pieces[259], " ");
  EXPECT_EQ(v.pieces[260], "a");
  EXPECT_EQ(v.pieces[261], "b");
  const BpeEncoder enc(v);
  EXPECT_EQ(enc.encode("dab", false), (std::vector<int32_t>{259, 3 + 'd', 260, 261}));
  EXPECT_EQ(enc.decode(enc.encode("dab", false)), "dab");
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// tokenizer.bin bytes checked against llama2.c's format by hand: int32 max length, then
// (f32 score, i32 length, bytes) per token, BOS/EOS spelled "\n<s>\n" / "\n</s>\n".
TEST(BpeTrainer, WritesLlama2cTokenizerBin) {
  const BpeVocabulary v = train_bpe("ab ab ab abc", {.vocab_size = 266});
  const auto dir = std::filesystem::temp_directory_path() / "llmopt_bpe_writer_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "tokenizer.bin";
  write_llama2c_tokenizer(v, path.string());
  const std::string bytes = read_file(path);
  int32_t max_len = 0;
  std::memcpy(&max_len, bytes.data(), 4);
  EXPECT_EQ(max_len, 6);  // "\n</s>\n" and "<0x00>" are the longest pieces
  size_t pos = 4;
  std::vector<std::string> pieces;
  std::vector<float> scores;
  while (pos < bytes.size()) {
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    pieces.push_back(bytes.substr(pos + 8, len));
    scores.push_back(score);
    pos += 8 + len;
  }
  ASSERT_EQ(pieces.size(), 266u);
  EXPECT_EQ(pieces[1], "\n<s>\n");
  EXPECT_EQ(pieces[2], "\n</s>\n");
  EXPECT_EQ(pieces[261], " abc");
  EXPECT_EQ(scores[261], -2.0f);
  std::filesystem::remove_all(dir);
}

// Independent cross-check: the tokenizer layer, reading our tokenizer.bin, encodes held-out text
// exactly like the reference encoder here.
TEST(BpeTrainer, TokenizerLayerAgreesOnWrittenVocabulary) {
  const BpeVocabulary v = train_bpe(generate_stories(21, 60000), {.vocab_size = 512});
  const auto dir = std::filesystem::temp_directory_path() / "llmopt_bpe_agree_test";
  std::filesystem::create_directories(dir);
  const auto path = dir / "tokenizer.bin";
  write_llama2c_tokenizer(v, path.string());
  const auto tokenizer = tok::load_tokenizer_file(path.string());
  ASSERT_EQ(tokenizer->vocab_size(), 512);
  const std::string text = generate_stories(22, 20000);
  const BpeEncoder enc(v);
  const std::vector<int32_t> ours = enc.encode(text, true);
  const std::vector<int32_t> theirs = tokenizer->encode(text, {.add_bos = true});
  EXPECT_EQ(ours, theirs);
  EXPECT_EQ(tokenizer->decode(theirs), text);
  const auto direct = tok::make_tokenizer(to_tokenizer_vocab(v), "trained");
  EXPECT_EQ(direct->encode(text, {.add_bos = true}), ours);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmopt::train
