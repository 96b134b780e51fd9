#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <unordered_map>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {

const char* const kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

namespace {

// The regex families of llama.cpp's llm_tokenizer_bpe (llama-vocab.cpp). llama.cpp rewrote a few
// case-insensitive groups for std::regex; PCRE2 runs the originals, which are kept here.
const char* const kGpt2Family =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2 =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kPoro =
    " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{ff0c}\\x{3001}\\x{964}\\x{6d4}\\x{60c})]+";
const char* const kTekken =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kGpt4o =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kCjk = "[\\x{4e00}-\\x{9fa5}\\x{800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+";

enum class Family {
  Default,
  Gpt2,
  Llama3,
  DeepseekLlm,
  DeepseekCoder,
  Falcon,
  Starcoder,
  Qwen2,
  Poro,
  Viking,
  Tekken,
  Chameleon,
  Gpt4o,
};

const std::unordered_map<std::string_view, Family>& family_table() {
  // GGUF tokenizer.ggml.pre names as llama.cpp's llama_vocab::load maps them.
  static const std::unordered_map<std::string_view, Family> table = {
      {"default", Family::Default},
      {"llama3", Family::Llama3},
      {"llama-v3", Family::Llama3},
      {"llama-bpe", Family::Llama3},
      {"falcon3", Family::Llama3},
      {"falcon-h1", Family::Llama3},
      {"pixtral", Family::Tekken},
      {"llama4", Family::Llama3},
      {"dbrx", Family::Llama3},
      {"smaug-bpe", Family::Llama3},
      {"deepseek-llm", Family::DeepseekLlm},
      {"deepseek-coder", Family::DeepseekCoder},
      {"falcon", Family::Falcon},
      {"mpt", Family::Gpt2},
      {"gpt-2", Family::Gpt2},
      {"gpt2", Family::Gpt2},
      {"phi-2", Family::Gpt2},
      {"jina-es", Family::Gpt2},
      {"jina-de", Family::Gpt2},
      {"jina-v1-en", Family::Gpt2},
      {"jina-v2-es", Family::Gpt2},
      {"jina-v2-de", Family::Gpt2},
      {"jina-v2-code", Family::Gpt2},
      {"roberta-bpe", Family::Gpt2},
      {"olmo", Family::Gpt2},
      {"jais", Family::Gpt2},
      {"trillion", Family::Gpt2},
      {"gigachat", Family::Gpt2},
      {"starcoder", Family::Starcoder},
      {"refact", Family::Starcoder},
      {"command-r", Family::Starcoder},
      {"smollm", Family::Starcoder},
      {"codeshell", Family::Starcoder},
      {"exaone", Family::Starcoder},
      {"minerva-7b", Family::Starcoder},
      {"qwen2", Family::Qwen2},
      {"deepseek-r1-qwen", Family::Qwen2},
      {"stablelm2", Family::Qwen2},
      {"megrez", Family::Qwen2},
      {"hunyuan", Family::Qwen2},
      {"poro-chat", Family::Poro},
      {"bloom", Family::Poro},
      {"gpt3-finnish", Family::Poro},
      {"chatglm-bpe", Family::Llama3},
      {"viking", Family::Viking},
      {"tekken", Family::Tekken},
      {"chameleon", Family::Chameleon},
      {"gpt-4o", Family::Gpt4o},
  };
  return table;
}

}  // namespace

std::vector<std::string> pretokenizer_regexes(std::string_view pre_name, bool* known) {
  const auto& table = family_table();
  const auto it = table.find(pre_name);
  if (known) *known = it != table.end();
  const Family family = it == table.end() ? Family::Default : it->second;
  switch (family) {
    case Family::Gpt2:
      return {kGpt2Family};
    case Family::Llama3:
      return {kLlama3};
    case Family::Qwen2:
      return {kQwen2};
    case Family::DeepseekLlm:
      return {
          "[\\r\\n]",
          "\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}"
          "\\x{1c4}-\\x{293}\\x{295}-\\x{2af}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}"
          "\\x{37f}\\x{386}\\x{388}-\\x{38a}\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-"
          "\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}"
          "\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}\\x{1d00}-\\x{1d2b}\\x{1d6b}-"
          "\\x{1d77}\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}\\x{1f20}-\\x{1f45}"
          "\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}\\x{1f5d}\\x{1f5f}-\\x{1f7d}"
          "\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}\\x{1fc6}-\\x{1fcc}"
          "\\x{1fd0}-\\x{1fd3}\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}\\x{1ff6}-"
          "\\x{1ffc}\\x{2102}\\x{2107}\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}"
          "\\x{2126}\\x{2128}\\x{212a}-\\x{212d}\\x{212f}-\\x{2134}\\x{2139}\\x{213c}-\\x{213f}"
          "\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}"
          "\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}\\x{a680}-\\x{a69b}\\x{a722}-"
          "\\x{a76f}\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}\\x{fb00}-\\x{fb06}"
          "\\x{fb13}-\\x{fb17}\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}"
          "\\x{104b0}-\\x{104d3}\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}"
          "\\x{118a0}-\\x{118df}\\x{1e900}-\\x{1e943}]+",
          "\\s?[!-/"
          ":-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+",
          "\\s+$",
          kCjk,
          "\\p{N}+",
      };
    case Family::DeepseekCoder:
      return {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"};
    case Family::Falcon:
      return {"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2Family, "[0-9][0-9][0-9]"};
    case Family::Starcoder:
      return {"\\p{N}", kGpt2Family};
    case Family::Poro:
      return {kPoro};
    case Family::Viking:
      return {kPoro, "\\p{N}"};
    case Family::Tekken:
      return {kTekken};
    case Family::Gpt4o:
      return {kGpt4o};
    case Family::Chameleon:
      return {"<sentinel:[0-9]+>",      "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
              "([\\t\\n]|    |  )",     "\\p{N}",
              "[\\p{P}!-/:-@\\[-`{-~]", kGpt2Family};
    case Family::Default:
      break;
  }
  return {"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2Family, "\\p{N}+", "[0-9][0-9][0-9]"};
}

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<std::string>& regexes, const std::string& source) {
  for (const std::string& pattern : regexes) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    // DOLLAR_ENDONLY: "$" means the end of the piece, not "before a final newline" (HF/onig and
    // llama.cpp's std::regex agree on that for these patterns).
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error_code,
                                     &error_offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error_code, message, sizeof(message));
      throw_input("[tokenizer] {}: bad pre-tokenizer regex '{}' at offset {}: {}", source, pattern,
                  error_offset, reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
    auto compiled = std::make_unique<Compiled>();
    compiled->code = code;
    compiled_.push_back(std::move(compiled));
  }
}

PreTokenizer::~PreTokenizer() = default;

std::vector<std::string_view> PreTokenizer::split(std::string_view text) const {
  // Start from maximal valid-UTF-8 stretches; an invalid byte is a piece on its own.
  std::vector<std::string_view> pieces;
  std::vector<bool> splittable;
  size_t run_start = 0;
  for (size_t pos = 0; pos < text.size();) {
    const size_t len = utf8_sequence_length(text, pos);
    if (len > 0) {
      pos += len;
      continue;
    }
    if (pos > run_start) {
      pieces.push_back(text.substr(run_start, pos - run_start));
      splittable.push_back(true);
    }
    pieces.push_back(text.substr(pos, 1));
    splittable.push_back(false);
    run_start = ++pos;
  }
  if (text.size() > run_start) {
    pieces.push_back(text.substr(run_start));
    splittable.push_back(true);
  }

  std::vector<std::string_view> next;
  std::vector<bool> next_splittable;
  pcre2_match_data* match = nullptr;
  for (const auto& compiled : compiled_) {
    if (match == nullptr) match = pcre2_match_data_create(4, nullptr);
    next.clear();
    next_splittable.clear();
    for (size_t p = 0; p < pieces.size(); ++p) {
      const std::string_view piece = pieces[p];
      if (!splittable[p]) {
        next.push_back(piece);
        next_splittable.push_back(false);
        continue;
      }
      size_t emitted = 0;  // bytes of `piece` already emitted
      size_t search = 0;
      while (search < piece.size()) {
        const int rc = pcre2_match(compiled->code, reinterpret_cast<PCRE2_SPTR>(piece.data()),
                                   piece.size(), search, PCRE2_NO_UTF_CHECK, match, nullptr);
        if (rc < 0) break;  // no further match (or a match-limit error: keep the rest whole)
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match);
        const size_t begin = ovector[0];
        const size_t end = ovector[1];
        if (end == begin) {
          // Empty match: move on by one character without cutting.
          search = begin + std::max<size_t>(1, utf8_sequence_length(piece, begin));
          continue;
        }
        if (begin > emitted) {
          next.push_back(piece.substr(emitted, begin - emitted));
          next_splittable.push_back(true);
        }
        next.push_back(piece.substr(begin, end - begin));
        next_splittable.push_back(true);
        emitted = search = end;
      }
      if (emitted < piece.size()) {
        next.push_back(piece.substr(emitted));
        next_splittable.push_back(true);
      }
    }
    pieces.swap(next);
    splittable.swap(next_splittable);
  }
  if (match != nullptr) pcre2_match_data_free(match);
  return pieces;
}

}  // namespace llmopt::tok
