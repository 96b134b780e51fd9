// GGUF tokenizer.ggml.* metadata <-> Vocab (llama.cpp's llama_vocab::load and convert_hf_to_gguf).
#include <unordered_map>

#include "core/error.h"
#include "core/log.h"
#include "io/gguf.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::tok {
namespace {

class KvLookup {
 public:
  KvLookup(const std::vector<io::GgufKeyValue>& kvs, const std::string& source) : source_(source) {
    for (const auto& [key, value] : kvs) index_.emplace(key, &value);
  }
  const io::GgufValue* find(const std::string& key) const {
    const auto it = index_.find(key);
    return it == index_.end() ? nullptr : it->second;
  }
  [[noreturn]] void type_error(const std::string& key, const char* expected,
                               const io::GgufValue& v) const {
    throw_input("[tokenizer] {}: GGUF key '{}' should be {}, found {}", source_, key, expected,
                io::gguf_type_name(v.type));
  }
  std::string string_or(const std::string& key, std::string fallback) const {
    const io::GgufValue* v = find(key);
    if (!v) return fallback;
    if (v->type != io::GgufType::String) type_error(key, "a string", *v);
    return v->str;
  }
  int32_t id_or(const std::string& key, int32_t fallback) const {
    const io::GgufValue* v = find(key);
    if (!v) return fallback;
    if (!v->is_integer()) type_error(key, "an integer", *v);
    const int64_t id = v->as_int64();
    // llama.cpp writes -1 (or UINT32_MAX) for "none".
    if (id < 0 || id == 0xFFFFFFFFll) return -1;
    LLMOPT_CHECK_INPUT(id <= INT32_MAX, "[tokenizer] {}: GGUF key '{}' = {} is not a token id",
                       source_, key, id);
    return static_cast<int32_t>(id);
  }
  bool bool_or(const std::string& key, bool fallback) const {
    const io::GgufValue* v = find(key);
    if (!v) return fallback;
    if (v->type != io::GgufType::Bool) type_error(key, "a bool", *v);
    return v->b;
  }
  const io::GgufValue* array(const std::string& key, bool required) const {
    const io::GgufValue* v = find(key);
    if (!v) {
      LLMOPT_CHECK_INPUT(!required, "[tokenizer] {}: GGUF key '{}' is missing", source_, key);
      return nullptr;
    }
    if (v->type != io::GgufType::Array) type_error(key, "an array", *v);
    return v;
  }

 private:
  const std::string& source_;
  std::unordered_map<std::string, const io::GgufValue*> index_;
};

}  // namespace

Vocab vocab_from_gguf_kvs(const std::vector<io::GgufKeyValue>& kvs, const std::string& source) {
  const KvLookup kv(kvs, source);
  const std::string model = kv.string_or("tokenizer.ggml.model", "");
  LLMOPT_CHECK_INPUT(!model.empty(), "[tokenizer] {}: GGUF has no tokenizer.ggml.model", source);
  Vocab v;
  if (model == "llama") {
    v.kind = VocabKind::Spm;
  } else if (model == "gpt2") {
    v.kind = VocabKind::ByteLevelBpe;
  } else {
    throw_input(
        "[tokenizer] {}: tokenizer.ggml.model '{}' is not supported (expected 'llama' "
        "(SentencePiece BPE) or 'gpt2' (byte-level BPE))",
        source, model);
  }

  const io::GgufValue* tokens = kv.array("tokenizer.ggml.tokens", true);
  LLMOPT_CHECK_INPUT(tokens->elem_type == io::GgufType::String,
                     "[tokenizer] {}: tokenizer.ggml.tokens should hold strings, found {}", source,
                     io::gguf_type_name(tokens->elem_type));
  const size_t n = tokens->items.size();
  v.tokens.reserve(n);
  for (const auto& t : tokens->items) v.tokens.push_back(t.str);

  v.scores.assign(n, 0.0f);
  if (const io::GgufValue* scores = kv.array("tokenizer.ggml.scores", false)) {
    LLMOPT_CHECK_INPUT(scores->items.size() == n,
                       "[tokenizer] {}: tokenizer.ggml.scores has {} entries, expected {}", source,
                       scores->items.size(), n);
    for (size_t i = 0; i < n; ++i) {
      const auto& s = scores->items[i];
      LLMOPT_CHECK_INPUT(s.type == io::GgufType::F32 || s.type == io::GgufType::F64,
                         "[tokenizer] {}: tokenizer.ggml.scores[{}] is {}, expected f32", source, i,
                         io::gguf_type_name(s.type));
      v.scores[i] = static_cast<float>(s.f);
    }
  }
  v.types.assign(n, TokenType::Normal);
  if (const io::GgufValue* types = kv.array("tokenizer.ggml.token_type", false)) {
    LLMOPT_CHECK_INPUT(types->items.size() == n,
                       "[tokenizer] {}: tokenizer.ggml.token_type has {} entries, expected {}",
                       source, types->items.size(), n);
    for (size_t i = 0; i < n; ++i) {
      const auto& t = types->items[i];
      LLMOPT_CHECK_INPUT(t.is_integer() && t.as_int64() >= 0 && t.as_int64() <= 6,
                         "[tokenizer] {}: tokenizer.ggml.token_type[{}] = {}, expected 0..6",
                         source, i, t.to_string());
      v.types[i] = static_cast<TokenType>(t.as_int64());
    }
  }
  if (v.kind == VocabKind::ByteLevelBpe) {
    const io::GgufValue* merges = kv.array("tokenizer.ggml.merges", true);
    v.merges.reserve(merges->items.size());
    for (size_t i = 0; i < merges->items.size(); ++i) {
      const std::string& m = merges->items[i].str;
      const size_t space = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
      LLMOPT_CHECK_INPUT(
          merges->items[i].type == io::GgufType::String && space != std::string::npos,
          "[tokenizer] {}: tokenizer.ggml.merges[{}] = '{}', expected 'left right'", source, i, m);
      v.merges.emplace_back(m.substr(0, space), m.substr(space + 1));
    }
    v.pre = kv.string_or("tokenizer.ggml.pre", "default");
    // llama.cpp takes a pre-token that is a whole vocab entry as is for these families
    // (tokenizer.json "ignore_merges": true in Llama 3 and Tekken).
    for (const char* name : {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "llama4",
                             "tekken", "pixtral"}) {
      if (v.pre == name) v.ignore_merges = true;
    }
  }

  // Defaults as llama.cpp's llama_vocab::load sets them before reading the optional keys.
  const bool spm = v.kind == VocabKind::Spm;
  v.bos_id = kv.id_or("tokenizer.ggml.bos_token_id", spm ? 1 : -1);
  v.eos_id = kv.id_or("tokenizer.ggml.eos_token_id", spm ? 2 : -1);
  v.unk_id = kv.id_or("tokenizer.ggml.unknown_token_id", spm ? 0 : -1);
  v.pad_id = kv.id_or("tokenizer.ggml.padding_token_id", -1);
  v.add_bos = kv.bool_or("tokenizer.ggml.add_bos_token", spm);
  v.add_eos = kv.bool_or("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = kv.bool_or("tokenizer.ggml.add_space_prefix", spm);
  for (int32_t* id : {&v.bos_id, &v.eos_id, &v.unk_id, &v.pad_id}) {
    if (*id >= static_cast<int64_t>(n)) *id = -1;  // llama.cpp ignores out-of-range defaults
  }
  v.validate(source);
  return v;
}

Vocab vocab_from_gguf(const io::GgufFile& file) {
  return vocab_from_gguf_kvs(file.kvs(), file.path());
}

Vocab load_gguf_vocab(const std::string& path) { return vocab_from_gguf(io::GgufFile::open(path)); }

std::vector<io::GgufKeyValue> export_gguf_kvs(const Vocab& v) {
  if (v.remove_extra_whitespaces) {
    log::warn("[tokenizer] GGUF cannot express SentencePiece's remove_extra_whitespaces: llama.cpp "
              "will keep repeated, leading and trailing spaces that this tokenizer drops");
  }
  std::vector<io::GgufKeyValue> kvs;
  const bool spm = v.kind == VocabKind::Spm;
  kvs.emplace_back("tokenizer.ggml.model", io::GgufValue::make_string(spm ? "llama" : "gpt2"));
  if (!spm) kvs.emplace_back("tokenizer.ggml.pre", io::GgufValue::make_string(v.pre));
  kvs.emplace_back("tokenizer.ggml.tokens", io::GgufValue::make_string_array(v.tokens));
  std::vector<float> scores = v.scores;
  if (spm && !v.merges.empty()) {
    // A merges-ranked SPM vocabulary (from tokenizer.json): llama.cpp merges by piece score, so
    // give each piece the negated rank of the first merge that produces it.
    std::unordered_map<std::string, size_t> first_rank;
    for (size_t r = 0; r < v.merges.size(); ++r) {
      first_rank.emplace(v.merges[r].first + v.merges[r].second, r);
    }
    for (size_t i = 0; i < v.tokens.size(); ++i) {
      const auto it = first_rank.find(v.tokens[i]);
      scores[i] = it == first_rank.end() ? -1e9f : -static_cast<float>(it->second);
    }
  }
  kvs.emplace_back("tokenizer.ggml.scores", io::GgufValue::make_f32_array(scores));
  std::vector<int32_t> types;
  types.reserve(v.types.size());
  for (TokenType t : v.types) types.push_back(static_cast<int32_t>(t));
  kvs.emplace_back("tokenizer.ggml.token_type", io::GgufValue::make_i32_array(types));
  if (!spm) {
    std::vector<std::string> merges;
    merges.reserve(v.merges.size());
    for (const auto& [left, right] : v.merges) merges.push_back(left + " " + right);
    kvs.emplace_back("tokenizer.ggml.merges", io::GgufValue::make_string_array(merges));
  }
  const auto put_id = [&](const char* key, int32_t id) {
    if (id >= 0) kvs.emplace_back(key, io::GgufValue::make_u32(static_cast<uint32_t>(id)));
  };
  put_id("tokenizer.ggml.bos_token_id", v.bos_id);
  put_id("tokenizer.ggml.eos_token_id", v.eos_id);
  put_id("tokenizer.ggml.unknown_token_id", v.unk_id);
  put_id("tokenizer.ggml.padding_token_id", v.pad_id);
  kvs.emplace_back("tokenizer.ggml.add_bos_token", io::GgufValue::make_bool(v.add_bos));
  kvs.emplace_back("tokenizer.ggml.add_eos_token", io::GgufValue::make_bool(v.add_eos));
  if (spm) {
    kvs.emplace_back("tokenizer.ggml.add_space_prefix",
                     io::GgufValue::make_bool(v.add_space_prefix));
  }
  return kvs;
}

}  // namespace llmopt::tok
