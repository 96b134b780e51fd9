// Tokenizer unit tests on hand-made vocabularies (no ../shared data): merge order, byte
// fallback, special tokens, decoding, pre-tokenizer regexes, malformed inputs and export round
// trips.
#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {
namespace {

using Ids = std::vector<int32_t>;
const EncodeOptions kPlain{.add_bos = false, .parse_special = false};
const std::string kSp(kSpmSpace);

// <unk>, <s>, </s>, 256 byte pieces, then `normal` pieces with their scores.
Vocab tiny_spm(const std::vector<std::pair<std::string, float>>& normal) {
  Vocab v;
  v.kind = VocabKind::Spm;
  const auto add = [&](std::string piece, float score, TokenType type) {
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  };
  add("<unk>", 0, TokenType::Unknown);
  add("<s>", 0, TokenType::Control);
  add("</s>", 0, TokenType::Control);
  for (int b = 0; b < 256; ++b) add(byte_piece(static_cast<uint8_t>(b)), 0, TokenType::Byte);
  for (const auto& [piece, score] : normal) add(piece, score, TokenType::Normal);
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  return v;
}
constexpr int32_t kFirstNormal = 3 + 256;

int32_t id_of(const Tokenizer& t, const std::string& piece) {
  for (int32_t id = 0; id < t.vocab_size(); ++id) {
    if (t.token_piece(id) == piece) return id;
  }
  return -1;
}

TEST(Spm, MergesHighestScoreFirst) {
  // "abc": ab (score 5) beats bc (score 1), and no "abc" piece exists.
  auto t = make_tokenizer(tiny_spm({{kSp, 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"ab", 5}, {"bc", 1}}),
                          "tiny");
  EXPECT_EQ(t->encode("abc", {.add_bos = false}),
            (Ids{id_of(*t, kSp), id_of(*t, "ab"), id_of(*t, "c")}));
  auto u = make_tokenizer(tiny_spm({{kSp, 0}, {"a", 0}, {"b", 0}, {"c", 0}, {"ab", 1}, {"bc", 5}}),
                          "tiny");
  EXPECT_EQ(u->encode("abc", kPlain), (Ids{id_of(*u, kSp), id_of(*u, "a"), id_of(*u, "bc")}));
}

TEST(Spm, EqualScoresMergeLeftmostFirst) {
  auto t = make_tokenizer(tiny_spm({{kSp, 0}, {"a", 0}, {"aa", 1}}), "tiny");
  EXPECT_EQ(t->encode("aaa", kPlain), (Ids{id_of(*t, kSp), id_of(*t, "aa"), id_of(*t, "a")}));
}

TEST(Spm, MergesChainThroughIntermediatePieces) {
  auto t = make_tokenizer(
      tiny_spm({{kSp, 0}, {"h", 0}, {"i", 0}, {"hi", 2}, {kSp + "hi", 3}, {kSp + "h", 1}}), "tiny");
  EXPECT_EQ(t->encode("hi hi", kPlain), (Ids{id_of(*t, kSp + "hi"), id_of(*t, kSp + "hi")}));
  EXPECT_EQ(t->encode("hi", {.add_bos = true}), (Ids{1, id_of(*t, kSp + "hi")}));
}

TEST(Spm, ByteFallbackForUnknownCharacters) {
  auto t = make_tokenizer(tiny_spm({{kSp, 0}, {"a", 0}}), "tiny");
  // "é" is U+00E9 = C3 A9 in UTF-8; byte piece <0xXX> has id 3 + XX.
  EXPECT_EQ(t->encode("a\xC3\xA9", kPlain),
            (Ids{id_of(*t, kSp), id_of(*t, "a"), 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t->decode(t->encode("a\xC3\xA9", kPlain)), "a\xC3\xA9");
  Vocab no_fallback = tiny_spm({{kSp, 0}, {"a", 0}});
  no_fallback.byte_fallback = false;
  auto u = make_tokenizer(no_fallback, "tiny");
  EXPECT_EQ(u->encode("a\xC3\xA9", kPlain), (Ids{id_of(*u, kSp), id_of(*u, "a"), 0}));
}

TEST(Spm, DecodeStripsDummyPrefixAndSkipsControls) {
  auto t = make_tokenizer(tiny_spm({{kSp, 0}, {"a", 0}, {kSp + "a", 1}}), "tiny");
  const Ids ids = t->encode(" a a");  // BOS, "▁", "▁a", "▁a"
  EXPECT_EQ(ids, (Ids{1, id_of(*t, kSp), id_of(*t, kSp + "a"), id_of(*t, kSp + "a")}));
  EXPECT_EQ(t->decode(ids), " a a");
  EXPECT_EQ(t->decode(Ids{1, id_of(*t, kSp + "a"), 2}), "a");
  EXPECT_EQ(t->decode_token(id_of(*t, kSp + "a")), " a");  // streaming: raw contribution
  EXPECT_EQ(t->decode_token(1), "");
  EXPECT_EQ(t->token_piece(1), "<s>");
  EXPECT_THROW(t->decode(Ids{99999}), InputError);
}

TEST(Spm, SpecialTokensOnlyWithParseSpecial) {
  Vocab v = tiny_spm({{kSp, 0}, {"a", 0}, {"<", 0}, {"s", 0}, {">", 0}, {"<|u|>", 0}});
  v.types.back() = TokenType::UserDefined;
  auto t = make_tokenizer(v, "tiny");
  const int32_t a = id_of(*t, "a"), sp = id_of(*t, kSp), user = id_of(*t, "<|u|>");
  EXPECT_EQ(t->encode("a<s>a", {.add_bos = false, .parse_special = true}),
            (Ids{sp, a, 1, sp, a}));  // a dummy prefix follows a special token, as in llama.cpp
  EXPECT_EQ(t->encode("a<s>", kPlain),
            (Ids{sp, a, id_of(*t, "<"), id_of(*t, "s"), id_of(*t, ">")}));
  // User-defined tokens are matched even without parse_special.
  EXPECT_EQ(t->encode("<|u|>a", kPlain), (Ids{user, sp, a}));
}

TEST(Spm, RemoveExtraWhitespaces) {
  Vocab v = tiny_spm({{kSp, 0}, {"a", 0}, {kSp + "a", 1}});
  v.remove_extra_whitespaces = true;
  auto t = make_tokenizer(v, "tiny");
  EXPECT_EQ(t->encode("  a   a  ", kPlain), t->encode("a a", kPlain));
  EXPECT_EQ(t->encode("   ", kPlain), Ids{});
  // Survives the tokenizer.json export (Strip + Replace(" {2,}") normalizers).
  const auto json = make_tokenizer(parse_hf_tokenizer_json(export_hf_tokenizer_json(v), "j"), "j");
  EXPECT_TRUE(json->vocab().remove_extra_whitespaces);
  EXPECT_EQ(json->encode("  a   a  ", kPlain), t->encode("a a", kPlain));
}

TEST(Spm, LongestSpecialTokenWins) {
  Vocab v = tiny_spm({{kSp, 0}, {"<|a|>", 0}, {"<|a|><|b|>", 0}});
  v.types[kFirstNormal + 1] = TokenType::Control;
  v.types[kFirstNormal + 2] = TokenType::Control;
  auto t = make_tokenizer(v, "tiny");
  EXPECT_EQ(t->encode("<|a|><|b|><|a|>", {.add_bos = false, .parse_special = true}),
            (Ids{kFirstNormal + 2, kFirstNormal + 1}));
}

// Byte-level vocabulary: the 256 byte code points, then merged pieces; merges ranked by order.
Vocab tiny_byte_level(const std::vector<std::pair<std::string, std::string>>& merges) {
  Vocab v;
  v.kind = VocabKind::ByteLevelBpe;
  for (int b = 0; b < 256; ++b) v.tokens.push_back(byte_to_unicode(static_cast<uint8_t>(b)));
  for (const auto& [l, r] : merges) v.tokens.push_back(l + r);
  v.tokens.push_back("<|endoftext|>");
  v.scores.assign(v.tokens.size(), 0.0f);
  v.types.assign(v.tokens.size(), TokenType::Normal);
  v.types.back() = TokenType::Control;
  v.merges = merges;
  v.pre = "gpt-2";
  v.bos_id = v.eos_id = v.size() - 1;
  return v;
}

TEST(ByteLevel, GptTwoByteMapping) {
  // Known GPT-2 values: space -> U+0120 'Ġ', newline -> U+010A 'Ċ', soft hyphen -> U+0143 'Ń'.
  EXPECT_EQ(byte_to_unicode(' '), "\xC4\xA0");
  EXPECT_EQ(byte_to_unicode('\n'), "\xC4\x8A");
  EXPECT_EQ(byte_to_unicode(0xAD), "\xC5\x83");
  EXPECT_EQ(byte_to_unicode('A'), "A");
  std::string back;
  ASSERT_TRUE(unicode_to_bytes(bytes_to_unicode(std::string("\x00\xff a\n", 5)), back));
  EXPECT_EQ(back, std::string("\x00\xff a\n", 5));
}

TEST(ByteLevel, MergesByRank) {
  const std::string g = byte_to_unicode(' ');
  auto t = make_tokenizer(tiny_byte_level({{"b", "c"}, {"a", "b"}, {g, "a"}}), "tiny");
  // Byte b has id b. Rank 0 "b c" wins over rank 1 "a b": "abc" -> a, bc.
  EXPECT_EQ(t->encode("abc", kPlain), (Ids{'a', 256}));
  // " ab" = Ġ a b: "a b" (rank 1) beats "Ġ a" (rank 2), and "Ġ ab" is no merge.
  EXPECT_EQ(t->encode(" ab", kPlain), (Ids{' ', 257}));
  EXPECT_EQ(t->encode(" a", kPlain), (Ids{258}));
  EXPECT_EQ(t->decode(t->encode(" abc d\n\xC3\xA9", kPlain)), " abc d\n\xC3\xA9");
  EXPECT_EQ(t->encode("<|endoftext|>", {.add_bos = false, .parse_special = true}), (Ids{259}));
  EXPECT_EQ(t->decode(Ids{259}), "");  // control tokens do not decode to text
}

TEST(ByteLevel, IgnoreMergesTakesWholeVocabEntries) {
  // "abc" is a vocab entry reachable only through a merge that is not listed.
  Vocab v = tiny_byte_level({{"a", "b"}});
  v.tokens.insert(v.tokens.end() - 1, "abc");
  v.scores.push_back(0);
  v.types.insert(v.types.end() - 1, TokenType::Normal);
  v.bos_id = v.eos_id = v.size() - 1;
  EXPECT_EQ(make_tokenizer(v, "tiny")->encode("abc", kPlain), (Ids{256, 'c'}));
  v.ignore_merges = true;
  EXPECT_EQ(make_tokenizer(v, "tiny")->encode("abc", kPlain), (Ids{257}));
  // llama.cpp turns it on for the llama3 family of GGUF pre-tokenizers.
  v.ignore_merges = false;
  v.pre = "llama-bpe";
  EXPECT_TRUE(vocab_from_gguf_kvs(export_gguf_kvs(v), "g").ignore_merges);
}

TEST(ByteLevel, StreamingDecodeConcatenatesToFullDecode) {
  const std::string g = byte_to_unicode(' ');
  auto t = make_tokenizer(tiny_byte_level({{"a", "b"}, {g, "ab"}}), "tiny");
  const std::string text = " ab \xF0\x9F\xA6\x99 ab\n";
  std::string streamed;
  for (int32_t id : t->encode(text, kPlain)) streamed += t->decode_token(id);
  EXPECT_EQ(streamed, text);
}

TEST(Load, MissingSourceIsInputError) {
  EXPECT_THROW(load_tokenizer(io::TokenizerSource{}), InputError);
  EXPECT_THROW(load_tokenizer_file("/nonexistent/tokenizer.json"), InputError);
}

TEST(PreTokenizer, Gpt2RegexSplits) {
  PreTokenizer pre({kGpt2Regex}, "test");
  const auto pieces = pre.split("I'm  here, 1234 ok\n");
  const std::vector<std::string_view> expected = {"I", "'m",    " ",   " here",
                                                  ",", " 1234", " ok", "\n"};
  EXPECT_EQ(pieces, expected);
}

TEST(PreTokenizer, SequentialRegexesAndInvalidUtf8) {
  // llama.cpp's starcoder family: digits first, then the GPT-2 regex on what is left.
  PreTokenizer pre(pretokenizer_regexes("starcoder"), "test");
  EXPECT_EQ(pre.split("ab12"), (std::vector<std::string_view>{"ab", "1", "2"}));
  // An invalid byte is a piece of its own and never reaches PCRE2.
  EXPECT_EQ(pre.split("a\xFF"
                      "b"),
            (std::vector<std::string_view>{"a", "\xFF", "b"}));
  bool known = true;
  pretokenizer_regexes("no-such-family", &known);
  EXPECT_FALSE(known);
  EXPECT_THROW(PreTokenizer({"(unclosed"}, "test"), InputError);
}

// InputError whose message names the source and contains `fragment`.
template <typename F>
void expect_input_error(F&& f, const std::string& source, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no InputError; expected one mentioning '" << fragment << "'";
  } catch (const InputError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("[tokenizer]"), std::string::npos) << message;
    EXPECT_NE(message.find(source), std::string::npos) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

TEST(HfJson, MalformedFilesAreInputErrors) {
  const auto parse = [](const std::string& text) {
    return [text] { parse_hf_tokenizer_json(text, "bad.json"); };
  };
  expect_input_error(parse("{not json"), "bad.json", "not valid JSON");
  expect_input_error(parse("[1, 2]"), "bad.json", "not a JSON object");
  expect_input_error(parse(R"({"version": "1.0"})"), "bad.json", "no \"model\"");
  expect_input_error(parse(R"({"model": {"type": "WordPiece", "vocab": {}}})"), "bad.json",
                     "WordPiece");
  // {"model": MODEL, "pre_tokenizer": ByteLevel}
  const auto doc = [](const std::string& model) {
    return R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": )" + model + "}";
  };
  const std::string ab = R"("type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2})";
  expect_input_error(parse(doc("{" + ab + R"(, "merges": ["ab"]})")), "bad.json", "merges[0]");
  expect_input_error(parse(doc("{" + ab + R"(, "merges": [[1, 2]]})")), "bad.json", "merges[0]");
  expect_input_error(parse(doc("{" + ab + R"(, "merges": ["a c"]})")), "bad.json",
                     "not in the vocab");
  expect_input_error(parse(doc(R"({"type": "BPE", "vocab": {"a": 0, "b": -4}})")), "bad.json",
                     "out of range");
  expect_input_error(parse(doc(R"({"type": "BPE", "vocab": {"a": 0, "b": 5}})")), "bad.json",
                     "not contiguous");
  expect_input_error(parse(R"({"pre_tokenizer": {"type": "ByteLevel"},
                               "added_tokens": [{"id": 99999999, "content": "x"}],
                               "model": {"type": "BPE", "vocab": {"a": 0}}})"),
                     "bad.json", "out of range");
  expect_input_error(parse(R"({"model": {"type": "BPE", "vocab": {"a": 0}},
                               "pre_tokenizer": {"type": "Whitespace"}})"),
                     "bad.json", "Whitespace");
}

TEST(HfJson, BothMergeFormatsAndAddedTokens) {
  const std::string g = byte_to_unicode(' ');
  std::string vocab;
  for (int b = 0; b < 256; ++b) {
    nlohmann::json key = byte_to_unicode(static_cast<uint8_t>(b));
    vocab += key.dump() + ": " + std::to_string(b) + ", ";
  }
  const std::string head = R"({"added_tokens": [{"id": 258, "content": "<eot>", "special": true}],
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
      "decoder": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocab": {)" +
                           vocab + R"("ab": 256, "abc": 257, "<eot>": 258}, "merges": )";
  const auto strings =
      make_tokenizer(parse_hf_tokenizer_json(head + R"(["a b", "ab c"]}})", "s"), "s");
  const auto pairs =
      make_tokenizer(parse_hf_tokenizer_json(head + R"([["a","b"],["ab","c"]]}})", "p"), "p");
  for (const Tokenizer* t : {strings.get(), pairs.get()}) {
    EXPECT_EQ(t->encode("abc<eot>", {.add_bos = false, .parse_special = true}), (Ids{257, 258}));
    EXPECT_EQ(t->vocab().types[258], TokenType::Control);
    EXPECT_EQ(t->vocab().pre, "gpt-2");
  }
}

TEST(Llama2c, TruncatedAndCorruptFiles) {
  const std::string good = export_llama2c_tokenizer(tiny_spm({{kSp, -1}, {"a", -2}}));
  EXPECT_EQ(parse_llama2c_tokenizer(good, "tok.bin").size(), kFirstNormal + 2);
  EXPECT_EQ(export_llama2c_tokenizer(parse_llama2c_tokenizer(good, "tok.bin")), good);
  expect_input_error([&] { parse_llama2c_tokenizer(good.substr(0, good.size() - 1), "tok.bin"); },
                     "tok.bin", "remain");
  expect_input_error([&] { parse_llama2c_tokenizer(good.substr(0, 2), "tok.bin"); }, "tok.bin",
                     "too short");
  expect_input_error([&] { parse_llama2c_tokenizer(good, "tok.bin", 9999); }, "tok.bin",
                     "past the end");
  std::string negative = good;
  negative[8] = '\xFF';  // length of token 0 becomes negative
  negative[9] = negative[10] = negative[11] = '\xFF';
  expect_input_error([&] { parse_llama2c_tokenizer(negative, "tok.bin"); }, "tok.bin", "length -1");
}

TEST(Gguf, BadKeyValuesAreInputErrors) {
  auto kvs = export_gguf_kvs(tiny_spm({{kSp, 0}}));
  EXPECT_EQ(vocab_from_gguf_kvs(kvs, "m.gguf").size(), kFirstNormal + 1);
  auto wrong_model = kvs;
  wrong_model[0].second = io::GgufValue::make_string("bert");
  expect_input_error([&] { vocab_from_gguf_kvs(wrong_model, "m.gguf"); }, "m.gguf", "bert");
  auto bad_type = kvs;
  for (auto& [key, value] : bad_type) {
    if (key == "tokenizer.ggml.token_type") value.items[5] = io::GgufValue::make_i32(42);
  }
  expect_input_error([&] { vocab_from_gguf_kvs(bad_type, "m.gguf"); }, "m.gguf", "token_type[5]");
  auto short_scores = kvs;
  for (auto& [key, value] : short_scores) {
    if (key == "tokenizer.ggml.scores") value.items.pop_back();
  }
  expect_input_error([&] { vocab_from_gguf_kvs(short_scores, "m.gguf"); }, "m.gguf", "scores");
  auto no_tokens = kvs;
  std::erase_if(no_tokens, [](const auto& kv) { return kv.first == "tokenizer.ggml.tokens"; });
  expect_input_error([&] { vocab_from_gguf_kvs(no_tokens, "m.gguf"); }, "m.gguf", "missing");
}

TEST(Export, RoundTripsEncodeIdentically) {
  const std::vector<std::string> texts = {"abc aab", " hi  there\n", "\xC3\xA9t\xC3\xA9 <s>"};
  const Vocab spm = tiny_spm({{kSp, 0},
                              {"a", -1},
                              {"b", -2},
                              {"ab", -0.5f},
                              {kSp + "a", -0.1f},
                              {"h", -3},
                              {"i", -3},
                              {"hi", -1},
                              {kSp + "hi", -0.2f}});
  const std::string g = byte_to_unicode(' ');
  const Vocab bpe = tiny_byte_level({{"a", "b"}, {g, "ab"}, {"h", "i"}, {g, "hi"}});
  for (const Vocab& v : {spm, bpe}) {
    const auto original = make_tokenizer(v, "v");
    const auto json =
        make_tokenizer(parse_hf_tokenizer_json(export_hf_tokenizer_json(v), "j"), "j");
    const auto gguf = make_tokenizer(vocab_from_gguf_kvs(export_gguf_kvs(v), "g"), "g");
    for (const std::string& text : texts) {
      for (bool special : {false, true}) {
        const EncodeOptions o{.add_bos = true, .parse_special = special};
        EXPECT_EQ(json->encode(text, o), original->encode(text, o)) << text;
        EXPECT_EQ(gguf->encode(text, o), original->encode(text, o)) << text;
        EXPECT_EQ(json->decode(original->encode(text, o)),
                  original->decode(original->encode(text, o)));
      }
    }
    if (v.kind == VocabKind::Spm) {
      const auto bin =
          make_tokenizer(parse_llama2c_tokenizer(export_llama2c_tokenizer(v), "b"), "b");
      for (const std::string& text : texts) EXPECT_EQ(bin->encode(text), original->encode(text));
    } else {
      EXPECT_THROW(export_llama2c_tokenizer(v), InputError);
    }
  }
}

// The vocabulary `llmopt synth` ships without --tokenizer: bytes only, text round trips, and its
// exports (tokenizer.json, GGUF, llama2.c) encode the same.
TEST(ByteFallbackVocab, EncodesBytesAndRoundTripsThroughExports) {
  EXPECT_THROW(byte_fallback_vocab(kByteVocabSize - 1), InputError);
  const Vocab v = byte_fallback_vocab(300);
  ASSERT_EQ(v.size(), 300);
  const auto tk = make_tokenizer(v, "bytes");
  EXPECT_EQ(tk->encode("hi yo"), (Ids{1, 259, 3 + 'h', 3 + 'i', 259, 3 + 'y', 3 + 'o'}));
  const std::vector<std::string> texts = {"Once upon a time", " two  spaces\n", "\xC3\xA9t\xC3\xA9"};
  const auto json = make_tokenizer(parse_hf_tokenizer_json(export_hf_tokenizer_json(v), "j"), "j");
  const auto gguf = make_tokenizer(vocab_from_gguf_kvs(export_gguf_kvs(v), "g"), "g");
  const auto bin = make_tokenizer(parse_llama2c_tokenizer(export_llama2c_tokenizer(v), "b"), "b");
  for (const std::string& text : texts) {
    const Ids ids = tk->encode(text);
    EXPECT_EQ(tk->decode(ids), text);
    EXPECT_EQ(json->encode(text), ids) << text;
    EXPECT_EQ(gguf->encode(text), ids) << text;
    EXPECT_EQ(bin->encode(text), ids) << text;
  }
  EXPECT_EQ(json->bos_id(), 1);
  EXPECT_EQ(gguf->eos_id(), 2);
}

}  // namespace
}  // namespace llmopt::tok
