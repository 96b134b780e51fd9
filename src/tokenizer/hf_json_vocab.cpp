// Hugging Face tokenizer.json <-> Vocab. Reads BPE models (vocab, merges in both the "a b" and
// the ["a", "b"] form, byte_fallback, ignore_merges), added_tokens, and enough of the normalizer,
// pre_tokenizer and decoder to tell byte-level BPE from SentencePiece-style BPE and to get the
// pre-tokenizer regexes. BOS/EOS come from tokenizer_config.json beside the file when present.
#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/log.h"
#include "io/mapped_file.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace llmopt::tok {
namespace {

using nlohmann::json;

// Escapes a literal string for use inside a PCRE2 pattern.
std::string regex_quote(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

bool mentions(const json& node, std::string_view type) {
  if (node.is_object()) {
    const auto it = node.find("type");
    if (it != node.end() && it->is_string() && it->get<std::string>() == type) return true;
    for (const auto& [key, child] : node.items()) {
      if (mentions(child, type)) return true;
    }
  } else if (node.is_array()) {
    for (const auto& child : node) {
      if (mentions(child, type)) return true;
    }
  }
  return false;
}

struct PreTokenizerSpec {
  std::vector<std::string> regexes;
  bool byte_level = false;
  bool add_prefix_space = false;
  bool metaspace = false;
  bool metaspace_prefix = true;
};

void parse_pre_tokenizer(const json& node, const std::string& source, PreTokenizerSpec& spec) {
  if (node.is_null()) return;
  LLMOPT_CHECK_INPUT(node.is_object() && node.contains("type") && node["type"].is_string(),
                     "[tokenizer] {}: pre_tokenizer entry without a \"type\": {}", source,
                     node.dump().substr(0, 120));
  const std::string type = node["type"].get<std::string>();
  if (type == "Sequence") {
    for (const auto& child : node.value("pretokenizers", json::array())) {
      parse_pre_tokenizer(child, source, spec);
    }
  } else if (type == "ByteLevel") {
    spec.byte_level = true;
    spec.add_prefix_space = node.value("add_prefix_space", false);
    if (node.value("use_regex", true)) spec.regexes.push_back(kGpt2Regex);
  } else if (type == "Split") {
    const json& pattern = node.value("pattern", json::object());
    std::string regex;
    if (pattern.contains("Regex") && pattern["Regex"].is_string()) {
      regex = pattern["Regex"].get<std::string>();
    } else if (pattern.contains("String") && pattern["String"].is_string()) {
      regex = regex_quote(pattern["String"].get<std::string>());
    } else {
      throw_input("[tokenizer] {}: Split pre-tokenizer without a Regex or String pattern", source);
    }
    const std::string behavior = node.value("behavior", std::string("Isolated"));
    LLMOPT_CHECK_INPUT(behavior == "Isolated" && !node.value("invert", false),
                       "[tokenizer] {}: Split pre-tokenizer behavior '{}'{} is not supported "
                       "(expected Isolated)",
                       source, behavior, node.value("invert", false) ? " with invert" : "");
    spec.regexes.push_back(regex);
  } else if (type == "Digits") {
    spec.regexes.push_back(node.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+");
  } else if (type == "Punctuation") {
    spec.regexes.push_back("[\\p{P}!-/:-@\\[-`{-~]");
  } else if (type == "Metaspace") {
    spec.metaspace = true;
    const std::string scheme = node.value("prepend_scheme", std::string("always"));
    spec.metaspace_prefix = node.value("add_prefix_space", scheme != "never");
  } else {
    throw_input(
        "[tokenizer] {}: pre_tokenizer type '{}' is not supported (supported: ByteLevel, "
        "Split, Digits, Punctuation, Metaspace, Sequence)",
        source, type);
  }
}

// A GGUF tokenizer.ggml.pre name whose llama.cpp regex family equals `regexes`, or "".
std::string pre_name_for(const std::vector<std::string>& regexes) {
  if (regexes == std::vector<std::string>{kGpt2Regex}) return "gpt-2";
  for (const char* name :
       {"gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "falcon", "starcoder",
        "poro-chat", "viking", "tekken", "chameleon", "gpt-4o", "default"}) {
    if (pretokenizer_regexes(name) == regexes) return name;
  }
  return "";
}

std::string token_content(const json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return "";
}

}  // namespace

Vocab parse_hf_tokenizer_json(std::string_view json_text, const std::string& source,
                              std::string_view config_json) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    throw_input("[tokenizer] {}: not valid JSON: {}", source, e.what());
  }
  try {
    LLMOPT_CHECK_INPUT(root.is_object(), "[tokenizer] {}: top level is not a JSON object", source);
    LLMOPT_CHECK_INPUT(root.contains("model") && root["model"].is_object(),
                       "[tokenizer] {}: no \"model\" object (not a Hugging Face tokenizer.json?)",
                       source);
    const json& model = root["model"];
    const std::string model_type = model.value("type", std::string("BPE"));
    LLMOPT_CHECK_INPUT(model_type == "BPE",
                       "[tokenizer] {}: model type '{}' is not supported (expected BPE)", source,
                       model_type);
    LLMOPT_CHECK_INPUT(model.contains("vocab") && model["vocab"].is_object(),
                       "[tokenizer] {}: model has no \"vocab\" object", source);

    // id -> piece, from the model vocab and the added tokens.
    std::map<int64_t, std::string> by_id;
    for (const auto& [piece, id_json] : model["vocab"].items()) {
      LLMOPT_CHECK_INPUT(id_json.is_number_integer(),
                         "[tokenizer] {}: vocab entry '{}' has id {}, expected an integer", source,
                         piece, id_json.dump());
      const auto id = id_json.get<int64_t>();
      LLMOPT_CHECK_INPUT(id >= 0 && id < (int64_t{1} << 24),
                         "[tokenizer] {}: vocab entry '{}' has id {} out of range [0, 2^24)",
                         source, piece, id);
      const auto [it, inserted] = by_id.emplace(id, piece);
      LLMOPT_CHECK_INPUT(inserted, "[tokenizer] {}: id {} used by both '{}' and '{}'", source, id,
                         it->second, piece);
    }
    std::unordered_map<int64_t, TokenType> added_types;
    for (const auto& added : root.value("added_tokens", json::array())) {
      LLMOPT_CHECK_INPUT(added.is_object() && added.contains("id") &&
                             added["id"].is_number_integer() && added.contains("content") &&
                             added["content"].is_string(),
                         "[tokenizer] {}: added_tokens entry needs integer \"id\" and string "
                         "\"content\": {}",
                         source, added.dump().substr(0, 120));
      const auto id = added["id"].get<int64_t>();
      const std::string content = added["content"].get<std::string>();
      LLMOPT_CHECK_INPUT(id >= 0 && id < (int64_t{1} << 24),
                         "[tokenizer] {}: added token '{}' has id {} out of range [0, 2^24)",
                         source, content, id);
      const auto [it, inserted] = by_id.emplace(id, content);
      if (!inserted) it->second = content;  // the added token's raw content wins
      added_types[id] = added.value("special", false) ? TokenType::Control : TokenType::UserDefined;
    }
    LLMOPT_CHECK_INPUT(!by_id.empty(), "[tokenizer] {}: vocabulary is empty", source);
    const int64_t n = by_id.rbegin()->first + 1;
    LLMOPT_CHECK_INPUT(static_cast<int64_t>(by_id.size()) == n,
                       "[tokenizer] {}: ids are not contiguous: {} tokens but the largest id is "
                       "{}",
                       source, by_id.size(), n - 1);

    Vocab v;
    PreTokenizerSpec pre;
    parse_pre_tokenizer(root.value("pre_tokenizer", json()), source, pre);
    const json& normalizer = root.value("normalizer", json());
    const json& decoder = root.value("decoder", json());
    const bool spm = pre.metaspace || mentions(decoder, "ByteFallback") ||
                     mentions(decoder, "Metaspace") ||
                     normalizer.dump().find("\xE2\x96\x81") != std::string::npos;
    v.kind = spm ? VocabKind::Spm : VocabKind::ByteLevelBpe;
    LLMOPT_CHECK_INPUT(spm || pre.byte_level || mentions(decoder, "ByteLevel"),
                       "[tokenizer] {}: neither byte-level (ByteLevel pre-tokenizer/decoder) nor "
                       "SentencePiece-style (Metaspace, ByteFallback, '\u2581' normalizer) BPE",
                       source);
    v.tokens.reserve(static_cast<size_t>(n));
    for (auto& [id, piece] : by_id) {
      TokenType type = TokenType::Normal;
      if (const auto it = added_types.find(id); it != added_types.end())
        type = it->second;
      else if (spm && parse_byte_piece(piece) >= 0)
        type = TokenType::Byte;
      v.tokens.push_back(std::move(piece));
      v.types.push_back(type);
    }
    v.scores.assign(v.tokens.size(), 0.0f);

    // Merges: "left right" strings or ["left", "right"] pairs.
    const json& merges = model.value("merges", json::array());
    LLMOPT_CHECK_INPUT(merges.is_array(), "[tokenizer] {}: model \"merges\" is not an array",
                       source);
    v.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t space = s.size() > 1 ? s.find(' ', 1) : std::string::npos;
        LLMOPT_CHECK_INPUT(space != std::string::npos && space + 1 < s.size(),
                           "[tokenizer] {}: merges[{}] = \"{}\", expected \"left right\"", source,
                           i, s);
        v.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        v.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        throw_input("[tokenizer] {}: merges[{}] = {}, expected \"left right\" or [left, right]",
                    source, i, m.dump().substr(0, 80));
      }
    }
    {
      std::unordered_set<std::string_view> pieces(v.tokens.begin(), v.tokens.end());
      for (size_t i = 0; i < v.merges.size(); ++i) {
        const auto& [left, right] = v.merges[i];
        LLMOPT_CHECK_INPUT(pieces.count(left) && pieces.count(right),
                           "[tokenizer] {}: merges[{}] = \"{} {}\" uses a piece not in the vocab",
                           source, i, left, right);
      }
    }

    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      const std::string unk = model["unk_token"].get<std::string>();
      for (int32_t id = 0; id < v.size(); ++id) {
        if (v.tokens[static_cast<size_t>(id)] == unk) {
          v.unk_id = id;
          if (spm) v.types[static_cast<size_t>(id)] = TokenType::Unknown;
          break;
        }
      }
    }
    v.byte_fallback = model.value("byte_fallback", false);
    v.ignore_merges = model.value("ignore_merges", false);
    if (spm) {
      const std::string norm = normalizer.dump();
      v.add_space_prefix = pre.metaspace ? pre.metaspace_prefix : mentions(normalizer, "Prepend");
      v.remove_extra_whitespaces = normalizer.dump().find("\" {2,}\"") != std::string::npos;
      v.add_bos = true;
    } else {
      v.pre_regexes = pre.regexes;
      v.add_prefix_space = pre.add_prefix_space;
      const std::string name = pre_name_for(pre.regexes);
      v.pre = name.empty() ? "default" : name;
      if (name.empty()) {
        log::warn(
            "[tokenizer] {}: pre-tokenizer matches no llama.cpp family; GGUF exports will "
            "name it 'default'",
            source);
      }
    }

    // Special ids: tokenizer_config.json next to the file, else conventional names.
    const auto find_piece = [&](const std::string& piece) -> int32_t {
      if (piece.empty()) return -1;
      for (int32_t id = 0; id < v.size(); ++id) {
        if (v.tokens[static_cast<size_t>(id)] == piece) return id;
      }
      return -1;
    };
    json config;
    if (!config_json.empty()) {
      try {
        config = json::parse(config_json);
      } catch (const json::exception& e) {
        throw_input("[tokenizer] {}: tokenizer_config.json beside it is not valid JSON: {}", source,
                    e.what());
      }
    }
    if (config.is_object()) {
      v.bos_id = find_piece(token_content(config, "bos_token"));
      v.eos_id = find_piece(token_content(config, "eos_token"));
      v.pad_id = find_piece(token_content(config, "pad_token"));
      if (v.unk_id < 0) v.unk_id = find_piece(token_content(config, "unk_token"));
      if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean()) {
        v.add_bos = config["add_bos_token"].get<bool>();
      }
      if (config.contains("add_eos_token") && config["add_eos_token"].is_boolean()) {
        v.add_eos = config["add_eos_token"].get<bool>();
      }
    } else {
      for (const char* bos : {"<s>", "<|begin_of_text|>", "<|endoftext|>", "<bos>"}) {
        if ((v.bos_id = find_piece(bos)) >= 0) break;
      }
      for (const char* eos : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"}) {
        if ((v.eos_id = find_piece(eos)) >= 0) break;
      }
      // A TemplateProcessing post-processor whose single-sequence template starts with a special
      // token names the BOS piece and says that it is added.
      v.add_bos = false;
      const json& post = root.value("post_processor", json());
      if (post.is_object() && post.value("type", std::string()) == "TemplateProcessing" &&
          post.contains("single") && post["single"].is_array() && !post["single"].empty()) {
        const json& first_step = post["single"][0];
        if (first_step.contains("SpecialToken") && first_step["SpecialToken"].contains("id") &&
            first_step["SpecialToken"]["id"].is_string()) {
          const int32_t bos = find_piece(first_step["SpecialToken"]["id"].get<std::string>());
          if (bos >= 0) {
            v.bos_id = bos;
            v.add_bos = true;
          }
        }
      }
    }
    v.validate(source);
    return v;
  } catch (const json::exception& e) {
    throw_input("[tokenizer] {}: unexpected structure: {}", source, e.what());
  }
}

Vocab load_hf_tokenizer_json(const std::string& path) {
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  std::string config;
  if (std::filesystem::is_regular_file(config_path, ec)) {
    config = io::read_text_file(config_path.string(), "tokenizer");
  }
  return parse_hf_tokenizer_json(io::read_text_file(path, "tokenizer"), path, config);
}

std::string export_hf_tokenizer_json(const Vocab& v) {
  json root = json::object();
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  json added = json::array();
  for (int32_t id = 0; id < v.size(); ++id) {
    const TokenType type = v.type(id);
    if (type != TokenType::Control && type != TokenType::UserDefined &&
        type != TokenType::Unknown) {
      continue;
    }
    added.push_back({{"id", id},
                     {"content", v.tokens[static_cast<size_t>(id)]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", type == TokenType::UserDefined},
                     {"special", type != TokenType::UserDefined}});
  }
  root["added_tokens"] = added;

  json vocab = json::object();
  for (int32_t id = 0; id < v.size(); ++id) vocab[v.tokens[static_cast<size_t>(id)]] = id;
  json merges = json::array();
  json model = {{"type", "BPE"},
                {"dropout", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"ignore_merges", v.ignore_merges}};
  if (v.kind == VocabKind::Spm) {
    std::vector<std::pair<std::string, std::string>> spm_merges = v.merges;
    if (spm_merges.empty()) {
      // SentencePiece merges by the score of the merged piece: list every split of every piece
      // into two vocab pieces, best merged score first (ties: lower merged id, then split
      // position), as Hugging Face's SentencePiece converter does.
      std::unordered_map<std::string_view, int32_t> ids;
      for (int32_t id = 0; id < v.size(); ++id) {
        const TokenType t = v.type(id);
        if (t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Unused) {
          ids.emplace(v.tokens[static_cast<size_t>(id)], id);
        }
      }
      struct Candidate {
        float score;
        int32_t merged;
        size_t split;
      };
      std::vector<Candidate> candidates;
      for (int32_t id = 0; id < v.size(); ++id) {
        if (v.type(id) != TokenType::Normal) continue;
        const std::string& piece = v.tokens[static_cast<size_t>(id)];
        for (size_t split = 1; split < piece.size(); ++split) {
          if ((static_cast<uint8_t>(piece[split]) & 0xC0) == 0x80) continue;  // mid-character
          const std::string_view s(piece);
          if (ids.count(s.substr(0, split)) && ids.count(s.substr(split))) {
            candidates.push_back({v.scores[static_cast<size_t>(id)], id, split});
          }
        }
      }
      std::stable_sort(candidates.begin(), candidates.end(),
                       [](const Candidate& a, const Candidate& b) {
                         if (a.score != b.score) return a.score > b.score;
                         return a.merged < b.merged;
                       });
      for (const Candidate& c : candidates) {
        const std::string& piece = v.tokens[static_cast<size_t>(c.merged)];
        spm_merges.emplace_back(piece.substr(0, c.split), piece.substr(c.split));
      }
    }
    for (const auto& [left, right] : spm_merges) merges.push_back(left + " " + right);
    model["fuse_unk"] = true;
    model["byte_fallback"] = v.byte_fallback;
    model["unk_token"] = v.unk_id >= 0 ? json(v.tokens[static_cast<size_t>(v.unk_id)]) : json();
    const json replace_space = {
        {"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", std::string(kSpmSpace)}};
    json normalizers = json::array();
    if (v.remove_extra_whitespaces) {
      // Hugging Face's SentencePiece converter writes these two for remove_extra_whitespaces.
      normalizers.push_back({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}});
      normalizers.push_back(
          {{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}});
    }
    if (v.add_space_prefix) {
      normalizers.push_back({{"type", "Prepend"}, {"prepend", std::string(kSpmSpace)}});
    }
    normalizers.push_back(replace_space);
    root["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
    root["pre_tokenizer"] = nullptr;
    json decoders = json::array();
    decoders.push_back(
        {{"type", "Replace"}, {"pattern", {{"String", std::string(kSpmSpace)}}}, {"content", " "}});
    decoders.push_back({{"type", "ByteFallback"}});
    decoders.push_back({{"type", "Fuse"}});
    if (v.add_space_prefix) {
      decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    }
    root["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  } else {
    for (const auto& [left, right] : v.merges) merges.push_back(left + " " + right);
    model["fuse_unk"] = false;
    model["byte_fallback"] = false;
    model["unk_token"] = nullptr;
    root["normalizer"] = nullptr;
    std::vector<std::string> regexes = v.pre_regexes;
    if (regexes.empty()) regexes = pretokenizer_regexes(v.pre);
    const json byte_level_plain = {{"type", "ByteLevel"},
                                   {"add_prefix_space", v.add_prefix_space},
                                   {"trim_offsets", true},
                                   {"use_regex", false}};
    if (regexes == std::vector<std::string>{kGpt2Regex}) {
      json byte_level = byte_level_plain;
      byte_level["use_regex"] = true;
      root["pre_tokenizer"] = byte_level;
    } else {
      json steps = json::array();
      for (const std::string& r : regexes) {
        steps.push_back({{"type", "Split"},
                         {"pattern", {{"Regex", r}}},
                         {"behavior", "Isolated"},
                         {"invert", false}});
      }
      steps.push_back(byte_level_plain);
      root["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", steps}};
    }
    root["decoder"] = {{"type", "ByteLevel"},
                       {"add_prefix_space", true},
                       {"trim_offsets", true},
                       {"use_regex", true}};
  }
  if (v.add_bos && v.bos_id >= 0) {
    const std::string bos = v.tokens[static_cast<size_t>(v.bos_id)];
    root["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {v.bos_id}}, {"tokens", {bos}}}}}}};
  } else {
    root["post_processor"] = nullptr;
  }
  model["vocab"] = vocab;
  model["merges"] = merges;
  root["model"] = model;
  return root.dump(2);
}

std::string export_hf_tokenizer_config_json(const Vocab& v) {
  const auto piece_or_null = [&](int32_t id) {
    return id >= 0 ? json(v.tokens[static_cast<size_t>(id)]) : json();
  };
  json config = {
      {"add_bos_token", v.add_bos},
      {"add_eos_token", v.add_eos},
      {"bos_token", piece_or_null(v.bos_id)},
      {"eos_token", piece_or_null(v.eos_id)},
      {"unk_token", piece_or_null(v.unk_id)},
      {"pad_token", piece_or_null(v.pad_id)},
      {"clean_up_tokenization_spaces", false},
      {"tokenizer_class", v.kind == VocabKind::Spm ? "LlamaTokenizer" : "PreTrainedTokenizerFast"}};
  if (v.kind == VocabKind::Spm) config["legacy"] = false;
  return config.dump(2);
}

}  // namespace llmopt::tok
