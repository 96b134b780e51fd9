// The encoder/decoder behind every loaded vocabulary (tokenizer.h: make_tokenizer).
//
// Encoding, as llama.cpp's llama_tokenize_impl does it:
//  1. Special-token partition: control/unknown tokens (only with parse_special) and user-defined
//     tokens (always) are cut out of the text, longest token first, and emitted as their ids.
//  2. Each remaining stretch of text is normalized (SPM: a dummy-prefix space at the start or after
//     a special token, ' ' -> U+2581; byte-level: regex pre-tokenization, bytes -> GPT-2 code
//     points) and BPE-merged.
//  3. BPE merge: the stretch (SPM) or each pre-token (byte-level) starts as one symbol per UTF-8
//     character in a doubly linked list; a max-heap holds adjacent pairs keyed by the merged
//     piece's score (SPM) or by the pair's merge rank (merges list), ties to the leftmost pair.
//     Popping a pair whose symbols have changed since it was pushed is skipped. O(n log n).
//  4. Symbols that are not vocab pieces fall back to <0xXX> byte pieces (SPM) or to their single
//     characters (byte-level).
#include <algorithm>
#include <array>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {
namespace {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using IdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct MergeInfo {
  int32_t rank;
  int32_t merged_id;
};
using WordCache =
    std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>>;
using MergeMap = std::unordered_map<std::string, MergeInfo, StringHash, std::equal_to<>>;

// One side-by-side pair separator for merge keys: 0xFF never occurs in valid UTF-8 pieces.
constexpr char kMergeSeparator = '\xFF';

struct Symbol {
  int32_t prev;
  int32_t next;
  uint32_t start;  // byte offset in the word
  uint32_t len;    // 0 once merged into its left neighbour
};

struct Bigram {
  double priority;  // higher merges first: score of the merged piece, or -rank
  int32_t left;
  uint32_t left_len;
  uint32_t right_len;
  bool operator<(const Bigram& o) const {
    if (priority != o.priority) return priority < o.priority;
    return left > o.left;  // equal priority: the leftmost pair first
  }
};

struct Fragment {
  int32_t token;  // -1: raw text
  size_t start;
  size_t len;
};

class VocabTokenizer final : public Tokenizer {
 public:
  VocabTokenizer(Vocab vocab, const std::string& source) : vocab_(std::move(vocab)) {
    vocab_.validate(source);
    byte_ids_.fill(-1);
    for (int32_t id = 0; id < vocab_.size(); ++id) {
      const std::string& piece = vocab_.tokens[static_cast<size_t>(id)];
      const TokenType type = vocab_.type(id);
      token_to_id_.emplace(piece, id);  // first occurrence wins for duplicates
      if (type == TokenType::Control || type == TokenType::UserDefined ||
          type == TokenType::Unknown) {
        if (!piece.empty()) special_ids_.push_back(id);
      }
      if (vocab_.kind == VocabKind::Spm) {
        const int b = parse_byte_piece(piece);
        if (b >= 0 && byte_ids_[static_cast<size_t>(b)] < 0) byte_ids_[static_cast<size_t>(b)] = id;
      }
    }
    if (vocab_.kind == VocabKind::ByteLevelBpe) {
      for (int b = 0; b < 256; ++b) {
        const auto it = token_to_id_.find(byte_to_unicode(static_cast<uint8_t>(b)));
        if (it != token_to_id_.end()) byte_ids_[static_cast<size_t>(b)] = it->second;
      }
    }
    // Longest first, so that "<|im_start|>" is cut before "<|"; ties by id for determinism.
    std::stable_sort(special_ids_.begin(), special_ids_.end(), [&](int32_t a, int32_t b) {
      return vocab_.tokens[static_cast<size_t>(a)].size() >
             vocab_.tokens[static_cast<size_t>(b)].size();
    });
    std::string key;
    for (size_t rank = 0; rank < vocab_.merges.size(); ++rank) {
      const auto& [left, right] = vocab_.merges[rank];
      const auto merged = token_to_id_.find(left + right);
      if (merged == token_to_id_.end()) continue;  // a merge whose result is not in the vocab
      key.assign(left).append(1, kMergeSeparator).append(right);
      merges_.emplace(key, MergeInfo{static_cast<int32_t>(rank), merged->second});
    }
    if (vocab_.kind == VocabKind::Spm) {
      // SentencePiece trained with split_by_whitespace (Llama and most SPM models) has U+2581
      // only as a leading run of a piece. Then no merge can join a character to a following
      // U+2581, so the text can be cut before every U+2581 run that follows another character
      // and each word merged (and cached) on its own with the same result.
      spm_word_split_ = true;
      for (int32_t id = 0; id < vocab_.size() && spm_word_split_; ++id) {
        const TokenType type = vocab_.type(id);
        if (type != TokenType::Normal && type != TokenType::UserDefined) continue;
        const std::string_view piece = vocab_.tokens[static_cast<size_t>(id)];
        size_t pos = 0;
        while (piece.compare(pos, kSpmSpace.size(), kSpmSpace) == 0) pos += kSpmSpace.size();
        if (piece.find(kSpmSpace, pos) != std::string_view::npos) spm_word_split_ = false;
      }
    }
    if (vocab_.kind == VocabKind::ByteLevelBpe) {
      std::vector<std::string> regexes = vocab_.pre_regexes;
      if (regexes.empty()) regexes = pretokenizer_regexes(vocab_.pre);
      pre_ = std::make_unique<PreTokenizer>(regexes, source);
    }
  }

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& o) const override {
    std::vector<int32_t> out;
    if (o.add_bos && vocab_.bos_id >= 0) out.push_back(vocab_.bos_id);
    if (text.empty()) return out;
    // Symbol offsets are 32-bit (half the memory of the merge state).
    LLMOPT_CHECK_INPUT(text.size() < (size_t{1} << 32),
                       "[tokenizer] text of {} bytes is too long to encode at once (< 4 GiB)",
                       text.size());
    const std::vector<Fragment> fragments = partition_special(text, o.parse_special);
    bool previous_was_special = true;  // the start of the text counts as "after a special"
    std::string buffer;
    WordCache cache;  // words repeat: encode each distinct one once per call
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        out.push_back(f.token);
        previous_was_special = true;
        continue;
      }
      std::string_view raw = text.substr(f.start, f.len);
      std::string collapsed;
      if (vocab_.kind == VocabKind::Spm && vocab_.remove_extra_whitespaces) {
        for (char c : raw) {
          if (c == ' ' && (collapsed.empty() || collapsed.back() == ' ')) continue;
          collapsed += c;
        }
        if (!collapsed.empty() && collapsed.back() == ' ') collapsed.pop_back();
        if (collapsed.empty()) continue;  // only spaces: SentencePiece encodes nothing
        raw = collapsed;
      }
      if (vocab_.kind == VocabKind::Spm) {
        buffer.clear();
        if (vocab_.add_space_prefix && previous_was_special) buffer += kSpmSpace;
        for (char c : raw) {
          if (c == ' ')
            buffer += kSpmSpace;
          else
            buffer += c;
        }
        if (spm_word_split_) {
          // Cut before every U+2581 run that follows another character; see spm_word_split_.
          size_t word_start = 0;
          bool previous_is_space = false;
          for (size_t pos = 0; pos < buffer.size();) {
            const bool is_space = buffer.compare(pos, kSpmSpace.size(), kSpmSpace) == 0;
            if (is_space && !previous_is_space && pos > word_start) {
              encode_cached(std::string_view(buffer).substr(word_start, pos - word_start), cache,
                            out);
              word_start = pos;
            }
            previous_is_space = is_space;
            pos += is_space ? kSpmSpace.size() : 1;
          }
          encode_cached(std::string_view(buffer).substr(word_start), cache, out);
        } else {
          merge_word(buffer, out);
        }
      } else {
        std::string prefixed;
        std::string_view source_text = raw;
        if (vocab_.add_prefix_space && raw.front() != ' ') {
          prefixed = " ";
          prefixed += raw;
          source_text = prefixed;
        }
        for (std::string_view piece : pre_->split(source_text)) {
          const auto cached = cache.find(piece);
          if (cached != cache.end()) {
            out.insert(out.end(), cached->second.begin(), cached->second.end());
            continue;
          }
          std::vector<int32_t>& ids = cache[std::string(piece)];
          buffer = bytes_to_unicode(piece);
          const auto whole = vocab_.ignore_merges ? token_to_id_.find(buffer) : token_to_id_.end();
          if (whole != token_to_id_.end())
            ids.push_back(whole->second);
          else
            merge_word(buffer, ids);
          out.insert(out.end(), ids.begin(), ids.end());
        }
      }
      previous_was_special = false;
    }
    return out;
  }

  std::string decode(std::span<const int32_t> ids) const override {
    std::string text;
    bool first_text_token = true;
    for (int32_t id : ids) {
      std::string piece = decode_token(id);
      if (!vocab_.valid_id(id) || vocab_.type(id) == TokenType::Control) continue;
      if (first_text_token && vocab_.kind == VocabKind::Spm && vocab_.add_space_prefix &&
          vocab_.type(id) == TokenType::Normal && !piece.empty() && piece.front() == ' ') {
        piece.erase(0, 1);  // the dummy prefix added by encode
      }
      first_text_token = false;
      text += piece;
    }
    return text;
  }

  std::string token_piece(int32_t id) const override {
    LLMOPT_CHECK_INPUT(vocab_.valid_id(id), "[tokenizer] token id {} out of range [0, {})", id,
                       vocab_.size());
    return vocab_.tokens[static_cast<size_t>(id)];
  }

  std::string decode_token(int32_t id) const override {
    LLMOPT_CHECK_INPUT(vocab_.valid_id(id), "[tokenizer] token id {} out of range [0, {})", id,
                       vocab_.size());
    const std::string& piece = vocab_.tokens[static_cast<size_t>(id)];
    switch (vocab_.type(id)) {
      case TokenType::Control:
        return {};
      case TokenType::Byte: {
        const int b = parse_byte_piece(piece);
        if (b >= 0) return std::string(1, static_cast<char>(b));
        break;
      }
      case TokenType::Unknown:
        if (vocab_.kind == VocabKind::Spm) return " \xE2\x81\x87 ";  // SentencePiece's " ⁇ "
        return piece;
      case TokenType::UserDefined:
        if (vocab_.kind == VocabKind::ByteLevelBpe) return piece;
        break;
      default:
        break;
    }
    if (vocab_.kind == VocabKind::Spm) {
      std::string text;
      for (size_t pos = 0; pos < piece.size();) {
        if (piece.compare(pos, kSpmSpace.size(), kSpmSpace) == 0) {
          text += ' ';
          pos += kSpmSpace.size();
        } else {
          text += piece[pos++];
        }
      }
      return text;
    }
    std::string bytes;
    if (unicode_to_bytes(piece, bytes)) return bytes;
    return piece;  // not byte-level text (an added token stored raw)
  }

  int32_t vocab_size() const override { return vocab_.size(); }
  int32_t bos_id() const override { return vocab_.bos_id; }
  int32_t eos_id() const override { return vocab_.eos_id; }
  bool add_bos_default() const override { return vocab_.add_bos; }
  const Vocab& vocab() const override { return vocab_; }

 private:
  std::vector<Fragment> partition_special(std::string_view text, bool parse_special) const {
    std::vector<Fragment> fragments{{-1, 0, text.size()}};
    std::vector<Fragment> next;
    for (int32_t id : special_ids_) {
      const TokenType type = vocab_.type(id);
      if (!parse_special && type != TokenType::UserDefined) continue;
      const std::string& special = vocab_.tokens[static_cast<size_t>(id)];
      next.clear();
      for (const Fragment& f : fragments) {
        if (f.token >= 0 || f.len < special.size()) {
          next.push_back(f);
          continue;
        }
        const std::string_view raw = text.substr(f.start, f.len);
        size_t done = 0;
        for (size_t hit = raw.find(special); hit != std::string_view::npos;
             hit = raw.find(special, done)) {
          if (hit > done) next.push_back({-1, f.start + done, hit - done});
          next.push_back({id, f.start + hit, special.size()});
          done = hit + special.size();
        }
        if (done < raw.size()) next.push_back({-1, f.start + done, raw.size() - done});
      }
      fragments.swap(next);
    }
    return fragments;
  }

  // Merge priority of the adjacent symbols `left_text`+`right_text`, or false if they never merge.
  bool pair_priority(std::string_view word, const Symbol& a, const Symbol& b, std::string& key,
                     double& priority) const {
    const std::string_view left = word.substr(a.start, a.len);
    const std::string_view right = word.substr(b.start, b.len);
    if (!merges_.empty()) {
      key.assign(left).append(1, kMergeSeparator).append(right);
      const auto it = merges_.find(std::string_view(key));
      if (it == merges_.end()) return false;
      priority = -static_cast<double>(it->second.rank);
      return true;
    }
    const std::string_view merged = word.substr(a.start, a.len + b.len);
    const auto it = token_to_id_.find(merged);
    if (it == token_to_id_.end()) return false;
    const TokenType type = vocab_.type(it->second);
    if (type != TokenType::Normal && type != TokenType::UserDefined) return false;
    priority = vocab_.scores[static_cast<size_t>(it->second)];
    return true;
  }

  void encode_cached(std::string_view word, WordCache& cache, std::vector<int32_t>& out) const {
    if (word.empty()) return;
    auto it = cache.find(word);
    if (it == cache.end()) {
      it = cache.emplace(std::string(word), std::vector<int32_t>()).first;
      merge_word(word, it->second);
    }
    out.insert(out.end(), it->second.begin(), it->second.end());
  }

  void merge_word(std::string_view word, std::vector<int32_t>& out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    for (size_t pos = 0; pos < word.size();) {
      size_t len = utf8_sequence_length(word, pos);
      if (len == 0) len = 1;  // an invalid byte is a symbol of its own
      const auto index = static_cast<int32_t>(symbols.size());
      symbols.push_back({index - 1, pos + len < word.size() ? index + 1 : -1,
                         static_cast<uint32_t>(pos), static_cast<uint32_t>(len)});
      pos += len;
    }
    std::priority_queue<Bigram> queue;
    std::string key;
    const auto push_pair = [&](int32_t left) {
      if (left < 0) return;
      const int32_t right = symbols[static_cast<size_t>(left)].next;
      if (right < 0) return;
      const Symbol& a = symbols[static_cast<size_t>(left)];
      const Symbol& b = symbols[static_cast<size_t>(right)];
      double priority = 0;
      if (pair_priority(word, a, b, key, priority)) queue.push({priority, left, a.len, b.len});
    };
    for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);
    while (!queue.empty()) {
      const Bigram top = queue.top();
      queue.pop();
      Symbol& left = symbols[static_cast<size_t>(top.left)];
      if (left.len != top.left_len || left.next < 0) continue;
      Symbol& right = symbols[static_cast<size_t>(left.next)];
      // Only the left symbol can absorb its right neighbour, and lengths only grow, so unchanged
      // lengths mean the pair is unchanged since it was pushed.
      if (right.len != top.right_len) continue;
      left.len += right.len;
      right.len = 0;
      left.next = right.next;
      if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.left;
      push_pair(left.prev);
      push_pair(top.left);
    }
    for (int32_t i = 0; i >= 0 && !symbols.empty(); i = symbols[static_cast<size_t>(i)].next) {
      const Symbol& s = symbols[static_cast<size_t>(i)];
      emit_symbol(word.substr(s.start, s.len), out);
    }
  }

  void emit_symbol(std::string_view text, std::vector<int32_t>& out) const {
    const auto it = token_to_id_.find(text);
    if (it != token_to_id_.end()) {
      out.push_back(it->second);
      return;
    }
    if (vocab_.kind == VocabKind::Spm) {
      if (vocab_.byte_fallback) {
        for (char c : text) {
          const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
          if (id >= 0)
            out.push_back(id);
          else if (vocab_.unk_id >= 0)
            out.push_back(vocab_.unk_id);
        }
      } else if (vocab_.unk_id >= 0) {
        out.push_back(vocab_.unk_id);
      }
      return;
    }
    // Byte-level: a symbol is one code point of the byte mapping, normally always in the vocab.
    std::string bytes;
    if (unicode_to_bytes(text, bytes)) {
      for (char c : bytes) {
        const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
        if (id >= 0)
          out.push_back(id);
        else if (vocab_.unk_id >= 0)
          out.push_back(vocab_.unk_id);
      }
    } else if (vocab_.unk_id >= 0) {
      out.push_back(vocab_.unk_id);
    }
  }

  Vocab vocab_;
  IdMap token_to_id_;
  MergeMap merges_;
  std::vector<int32_t> special_ids_;
  std::array<int32_t, 256> byte_ids_{};
  std::unique_ptr<PreTokenizer> pre_;
  bool spm_word_split_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(Vocab vocab, const std::string& source) {
  return std::make_unique<VocabTokenizer>(std::move(vocab), source);
}

}  // namespace llmopt::tok
