// llama2.c tokenizer.bin (DESIGN.md Formats): int32 max_token_length, then for each token
// f32 score, int32 byte length, bytes. llama2.c's tokenizer.py writes SentencePiece pieces with
// U+2581 replaced by ' ' and BOS/EOS as "\n<s>\n" / "\n</s>\n"; ids 0/1/2 are unk/BOS/EOS.
#include <cstring>

#include "core/error.h"
#include "io/mapped_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {
namespace {

constexpr int32_t kUnkId = 0;
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;
constexpr std::string_view kBinBos = "\n<s>\n";
constexpr std::string_view kBinEos = "\n</s>\n";

template <typename T>
T read_le(const char* p) {
  T value;
  std::memcpy(&value, p, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  return value;
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    if (text.compare(pos, from.size(), from) == 0) {
      out += to;
      pos += from.size();
    } else {
      out += text[pos++];
    }
  }
  return out;
}

}  // namespace

Vocab parse_llama2c_tokenizer(std::string_view bytes, const std::string& source,
                              int32_t vocab_size) {
  LLMOPT_CHECK_INPUT(bytes.size() >= 4,
                     "[tokenizer] {}: {} bytes, too short for a llama2.c tokenizer header (4)",
                     source, bytes.size());
  const auto max_token_length = read_le<int32_t>(bytes.data());
  LLMOPT_CHECK_INPUT(max_token_length > 0 && max_token_length < (1 << 20),
                     "[tokenizer] {}: max_token_length {} is not a plausible llama2.c header",
                     source, max_token_length);
  Vocab v;
  v.kind = VocabKind::Spm;
  size_t pos = 4;
  while (vocab_size < 0 ? pos < bytes.size() : v.size() < vocab_size) {
    const int32_t id = v.size();
    LLMOPT_CHECK_INPUT(bytes.size() - pos >= 8,
                       "[tokenizer] {}: token {} header at byte {} runs past the end of the file "
                       "({} bytes)",
                       source, id, pos, bytes.size());
    const auto score = read_le<float>(bytes.data() + pos);
    const auto len = read_le<int32_t>(bytes.data() + pos + 4);
    pos += 8;
    LLMOPT_CHECK_INPUT(len >= 0 && static_cast<size_t>(len) <= bytes.size() - pos,
                       "[tokenizer] {}: token {} has length {} at byte {}, but only {} bytes "
                       "remain",
                       source, id, len, pos - 4, bytes.size() - pos);
    const std::string_view raw = bytes.substr(pos, static_cast<size_t>(len));
    pos += static_cast<size_t>(len);
    TokenType type = TokenType::Normal;
    std::string piece;
    if (id == kBosId && raw == kBinBos) {
      piece = "<s>";
      type = TokenType::Control;
    } else if (id == kEosId && raw == kBinEos) {
      piece = "</s>";
      type = TokenType::Control;
    } else if (id == kUnkId && raw == "<unk>") {
      piece = "<unk>";
      type = TokenType::Unknown;
    } else if (parse_byte_piece(raw) >= 0) {
      piece = std::string(raw);
      type = TokenType::Byte;
    } else {
      piece = replace_all(raw, " ", kSpmSpace);
    }
    v.tokens.push_back(std::move(piece));
    v.scores.push_back(score);
    v.types.push_back(type);
  }
  v.unk_id = v.size() > kUnkId ? kUnkId : -1;
  v.bos_id = v.size() > kBosId ? kBosId : -1;
  v.eos_id = v.size() > kEosId ? kEosId : -1;
  v.add_bos = true;
  v.add_space_prefix = true;
  v.byte_fallback = true;
  v.validate(source);
  return v;
}

Vocab load_llama2c_tokenizer(const std::string& path, int32_t vocab_size) {
  const auto file = io::MappedFile::open(path);
  return parse_llama2c_tokenizer(
      std::string_view(reinterpret_cast<const char*>(file->data()), file->size()), path,
      vocab_size);
}

std::string export_llama2c_tokenizer(const Vocab& v) {
  LLMOPT_CHECK_INPUT(v.kind == VocabKind::Spm,
                     "[tokenizer] llama2.c tokenizer.bin holds SentencePiece vocabularies only; "
                     "this one is byte-level BPE");
  std::vector<std::string> pieces;
  pieces.reserve(v.tokens.size());
  int32_t max_len = 0;
  for (int32_t id = 0; id < v.size(); ++id) {
    std::string piece;
    if (id == v.bos_id)
      piece = kBinBos;
    else if (id == v.eos_id)
      piece = kBinEos;
    else
      piece = replace_all(v.tokens[static_cast<size_t>(id)], kSpmSpace, " ");
    max_len = std::max(max_len, static_cast<int32_t>(piece.size()));
    pieces.push_back(std::move(piece));
  }
  std::string out;
  const auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  put(&max_len, 4);
  for (size_t i = 0; i < pieces.size(); ++i) {
    const float score = v.scores[i];
    const auto len = static_cast<int32_t>(pieces[i].size());
    put(&score, 4);
    put(&len, 4);
    out += pieces[i];
  }
  return out;
}

}  // namespace llmopt::tok
