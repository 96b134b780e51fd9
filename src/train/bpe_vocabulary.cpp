#include "train/bpe_vocabulary.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace llmopt::train {

void BpeVocabulary::add(std::string piece, float score, PieceType type) {
  pieces.push_back(std::move(piece));
  scores.push_back(score);
  types.push_back(type);
}

BpeVocabulary special_and_byte_pieces() {
  BpeVocabulary vocab;
  vocab.add("<unk>", 0.0f, PieceType::Unknown);
  vocab.add("<s>", 0.0f, PieceType::Control);
  vocab.add("</s>", 0.0f, PieceType::Control);
  for (int b = 0; b < 256; ++b) vocab.add(fmt::format("<0x{:02X}>", b), 0.0f, PieceType::Byte);
  return vocab;
}

tok::Vocab to_tokenizer_vocab(const BpeVocabulary& vocab) {
  tok::Vocab out;
  out.kind = tok::VocabKind::Spm;
  for (int64_t id = 0; id < vocab.size(); ++id) {
    std::string piece = vocab.pieces[id];
    if (vocab.types[id] == PieceType::Normal) {
      std::string spelled;
      for (char c : piece) spelled += c == ' ' ? std::string("\xE2\x96\x81") : std::string(1, c);
      piece = std::move(spelled);
    }
    out.tokens.push_back(std::move(piece));
    out.scores.push_back(vocab.scores[id]);
    out.types.push_back(static_cast<tok::TokenType>(static_cast<int32_t>(vocab.types[id])));
  }
  out.unk_id = static_cast<int32_t>(BpeVocabulary::kUnkId);
  out.bos_id = static_cast<int32_t>(BpeVocabulary::kBosId);
  out.eos_id = static_cast<int32_t>(BpeVocabulary::kEosId);
  out.add_bos = true;
  out.add_space_prefix = true;
  out.byte_fallback = true;
  return out;
}

void write_llama2c_tokenizer(const BpeVocabulary& vocab, const std::string& path) {
  LLMOPT_CHECK_INPUT(vocab.size() > BpeVocabulary::kEosId,
                     "[bpe] {}: vocabulary needs at least <unk>, <s>, </s>, found {} pieces", path,
                     vocab.size());
  auto written_piece = [&](int64_t id) -> std::string {
    if (id == BpeVocabulary::kBosId) return "\n<s>\n";
    if (id == BpeVocabulary::kEosId) return "\n</s>\n";
    return vocab.pieces[id];
  };
  int32_t max_len = 0;
  for (int64_t id = 0; id < vocab.size(); ++id) {
    max_len = std::max<int32_t>(max_len, static_cast<int32_t>(written_piece(id).size()));
  }
  const std::filesystem::path target(path);
  const std::filesystem::path tmp =
      target.parent_path() / fmt::format(".{}.tmp{}", target.filename().string(), ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    LLMOPT_CHECK_INPUT(out.good(), "[bpe] {}: cannot open for writing", tmp.string());
    // llama2.c's format is little-endian; every supported host is too.
    out.write(reinterpret_cast<const char*>(&max_len), sizeof(max_len));
    for (int64_t id = 0; id < vocab.size(); ++id) {
      const std::string piece = written_piece(id);
      const float score = vocab.scores[id];
      const int32_t len = static_cast<int32_t>(piece.size());
      out.write(reinterpret_cast<const char*>(&score), sizeof(score));
      out.write(reinterpret_cast<const char*>(&len), sizeof(len));
      out.write(piece.data(), len);
    }
    out.flush();
    if (!out.good()) {
      std::filesystem::remove(tmp);
      throw_run("[bpe] {}: write failed", tmp.string());
    }
  }
  std::filesystem::rename(tmp, target);
}

size_t utf8_char_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

std::vector<std::string_view> split_bpe_words(std::string_view text) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < text.size()) {
    size_t end = i + 1;
    if (text[i] == '\n') {
      while (end < text.size() && text[end] == '\n') ++end;
    } else {
      while (end < text.size() && text[end] != ' ' && text[end] != '\n') ++end;
    }
    words.push_back(text.substr(i, end - i));
    i = end;
  }
  return words;
}

BpeEncoder::BpeEncoder(const BpeVocabulary& vocab) : vocab_(vocab) {
  for (int64_t id = 0; id < vocab.size(); ++id) {
    if (vocab.types[id] == PieceType::Normal || vocab.types[id] == PieceType::UserDefined) {
      piece_ids_.emplace(vocab.pieces[id], static_cast<int32_t>(id));
    }
  }
}

std::vector<int32_t> BpeEncoder::encode_word(std::string_view word) const {
  if (auto it = word_cache_.find(std::string(word)); it != word_cache_.end()) return it->second;
  // Characters first; a character that is not a piece becomes its UTF-8 bytes.
  std::vector<int32_t> ids;
  for (size_t i = 0; i < word.size();) {
    const size_t len = std::min(utf8_char_length(static_cast<unsigned char>(word[i])), word.size() - i);
    if (auto it = piece_ids_.find(std::string(word.substr(i, len))); it != piece_ids_.end()) {
      ids.push_back(it->second);
    } else {
      for (size_t k = 0; k < len; ++k) {
        ids.push_back(static_cast<int32_t>(BpeVocabulary::kFirstByteId +
                                           static_cast<unsigned char>(word[i + k])));
      }
    }
    i += len;
  }
  // Greedy merges: the best-scoring pair whose concatenation is a piece, leftmost on ties.
  while (true) {
    float best_score = -1e30f;
    int64_t best_index = -1;
    int32_t best_id = -1;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      if (vocab_.types[ids[i]] == PieceType::Byte || vocab_.types[ids[i + 1]] == PieceType::Byte) {
        continue;
      }
      auto it = piece_ids_.find(vocab_.pieces[ids[i]] + vocab_.pieces[ids[i + 1]]);
      if (it != piece_ids_.end() && vocab_.scores[it->second] > best_score) {
        best_score = vocab_.scores[it->second];
        best_index = static_cast<int64_t>(i);
        best_id = it->second;
      }
    }
    if (best_index < 0) break;
    ids[best_index] = best_id;
    ids.erase(ids.begin() + best_index + 1);
  }
  word_cache_.emplace(std::string(word), ids);
  return ids;
}

std::vector<int32_t> BpeEncoder::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos) ids.push_back(static_cast<int32_t>(BpeVocabulary::kBosId));
  if (text.empty()) return ids;
  const std::string with_prefix = " " + std::string(text);
  for (std::string_view word : split_bpe_words(with_prefix)) {
    const std::vector<int32_t> word_ids = encode_word(word);
    ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  }
  return ids;
}

std::string BpeEncoder::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    LLMOPT_CHECK_INPUT(id >= 0 && id < vocab_.size(), "[bpe] decode: token id {} outside [0, {})", id,
                       vocab_.size());
    switch (vocab_.types[id]) {
      case PieceType::Byte:
        text += static_cast<char>(id - BpeVocabulary::kFirstByteId);
        break;
      case PieceType::Normal:
      case PieceType::UserDefined:
        text += vocab_.pieces[id];
        break;
      default:
        break;  // <unk>, <s>, </s> have no text
    }
  }
  if (!text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace llmopt::train
