#include "train/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace llmopt::train {
namespace fs = std::filesystem;
namespace {

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\v\f";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

class Builder {
 public:
  void markup(const std::string& text) { add(text, false); }
  void response(const std::string& text) { add(text, true); }
  std::vector<ChatSegment> take() { return std::move(out_); }

 private:
  void add(const std::string& text, bool is_response) {
    if (text.empty()) return;
    if (!out_.empty() && out_.back().is_response == is_response) {
      out_.back().text += text;
    } else {
      out_.push_back({text, is_response});
    }
  }
  std::vector<ChatSegment> out_;
};

void check_roles(const std::vector<ChatMessage>& messages, const std::string& where) {
  for (const auto& m : messages)
    LLMOPT_CHECK_INPUT(m.role == "system" || m.role == "user" || m.role == "assistant",
                       "[data] {}: message role '{}' is not system, user or assistant", where, m.role);
}

// Formats whose published template raises unless turns alternate user, assistant, user, ...
// (after an optional leading system message): llama2, mistral, gemma.
void check_alternation(const std::vector<ChatMessage>& turns, const std::string& name, const std::string& where) {
  for (size_t i = 0; i < turns.size(); ++i) {
    LLMOPT_CHECK_INPUT(turns[i].role != "system",
                       "[data] {}: template {} takes a system message only as the first message (message {} is one)",
                       where, name, i + 1);
    const char* expected = i % 2 == 0 ? "user" : "assistant";
    LLMOPT_CHECK_INPUT(turns[i].role == expected,
                       "[data] {}: template {} needs turns alternating user/assistant starting with user; turn {} is "
                       "'{}', expected '{}'",
                       where, name, i + 1, turns[i].role, expected);
  }
}

// Splits off a leading system message.
std::pair<std::optional<std::string>, std::vector<ChatMessage>> split_system(const std::vector<ChatMessage>& m) {
  if (!m.empty() && m[0].role == "system") return {m[0].content, std::vector<ChatMessage>(m.begin() + 1, m.end())};
  return {std::nullopt, m};
}

// Each function renders one published format (the Jinja of the model family's tokenizer_config.json
// without a generation prompt; bos/eos from the tokenizer).
void render_plain(Builder& b, const std::vector<ChatMessage>& messages) {
  for (const auto& m : messages) {
    if (m.role == "system") b.markup(m.content + "\n");
    if (m.role == "user") b.markup("User: " + m.content + "\n");
    if (m.role == "assistant") {
      b.markup("Assistant: ");
      b.response(m.content);
      b.markup("\n");
    }
  }
}

// <|im_start|>{role}\n{content}<|im_end|>\n
void render_chatml(Builder& b, const std::vector<ChatMessage>& messages) {
  for (const auto& m : messages) {
    b.markup("<|im_start|>" + m.role + "\n");
    if (m.role == "assistant") {
      b.response(m.content + "<|im_end|>");
      b.markup("\n");
    } else {
      b.markup(m.content + "<|im_end|>\n");
    }
  }
}

// Llama-2-chat: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
void render_llama2(Builder& b, const std::vector<ChatMessage>& messages, const ChatSpecialPieces& p,
                   const std::string& where) {
  const auto [system, turns] = split_system(messages);
  check_alternation(turns, "llama2", where);
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == "user") {
      std::string content = turns[i].content;
      if (i == 0 && system) content = "<<SYS>>\n" + *system + "\n<</SYS>>\n\n" + content;
      b.markup(p.bos + "[INST] " + strip(content) + " [/INST]");
    } else {
      b.markup(" ");
      b.response(strip(turns[i].content) + " " + p.eos);
    }
  }
}

// Llama 3: <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>
void render_llama3(Builder& b, const std::vector<ChatMessage>& messages, const ChatSpecialPieces& p) {
  b.markup(p.bos);
  for (const auto& m : messages) {
    b.markup("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n");
    if (m.role == "assistant") {
      b.response(strip(m.content) + "<|eot_id|>");
    } else {
      b.markup(strip(m.content) + "<|eot_id|>");
    }
  }
}

// Zephyr: <|{role}|>\n{content}</s>\n
void render_zephyr(Builder& b, const std::vector<ChatMessage>& messages, const ChatSpecialPieces& p) {
  for (const auto& m : messages) {
    b.markup("<|" + m.role + "|>\n");
    if (m.role == "assistant") {
      b.response(m.content + p.eos);
      b.markup("\n");
    } else {
      b.markup(m.content + p.eos + "\n");
    }
  }
}

// Mistral-7B-Instruct v0.1: <s>[INST] {user} [/INST]{assistant}</s>[INST] ... (no system role).
void render_mistral(Builder& b, const std::vector<ChatMessage>& messages, const ChatSpecialPieces& p,
                    const std::string& where) {
  LLMOPT_CHECK_INPUT(messages.empty() || messages[0].role != "system",
                     "[data] {}: template mistral (v1) has no system role; fold the system text into the first user "
                     "message or choose another template",
                     where);
  check_alternation(messages, "mistral", where);
  b.markup(p.bos);
  for (const auto& m : messages) {
    if (m.role == "user") {
      b.markup("[INST] " + m.content + " [/INST]");
    } else {
      b.response(m.content + p.eos);
    }
  }
}

// Gemma: <bos><start_of_turn>user\n{content|trim}<end_of_turn>\n<start_of_turn>model\n...; a system
// message goes before the first user message's text, separated by a blank line (as Gemma 3 does).
void render_gemma(Builder& b, const std::vector<ChatMessage>& messages, const ChatSpecialPieces& p,
                  const std::string& where) {
  const auto [system, turns] = split_system(messages);
  check_alternation(turns, "gemma", where);
  b.markup(p.bos);
  for (size_t i = 0; i < turns.size(); ++i) {
    if (turns[i].role == "user") {
      const std::string content = i == 0 && system ? *system + "\n\n" + turns[i].content : turns[i].content;
      b.markup("<start_of_turn>user\n" + strip(content) + "<end_of_turn>\n");
    } else {
      b.markup("<start_of_turn>model\n");
      b.response(strip(turns[i].content) + "<end_of_turn>");
      b.markup("\n");
    }
  }
}

// Phi-3: <|{role}|>\n{content}<|end|>\n
void render_phi3(Builder& b, const std::vector<ChatMessage>& messages) {
  for (const auto& m : messages) {
    b.markup("<|" + m.role + "|>\n");
    if (m.role == "assistant") {
      b.response(m.content + "<|end|>");
      b.markup("\n");
    } else {
      b.markup(m.content + "<|end|>\n");
    }
  }
}

}  // namespace

std::vector<ChatMessage> chat_messages(const nlohmann::json& messages, const std::string& where) {
  LLMOPT_CHECK_INPUT(messages.is_array() && !messages.empty(), "[data] {}: 'messages' must be a non-empty array",
                     where);
  std::vector<ChatMessage> out;
  for (const auto& m : messages) {
    LLMOPT_CHECK_INPUT(m.is_object() && m.contains("role") && m["role"].is_string() && m.contains("content") &&
                           m["content"].is_string(),
                       "[data] {}: every message needs string fields 'role' and 'content'", where);
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

ChatSpecialPieces chat_special_pieces(const tok::Tokenizer& tk) {
  ChatSpecialPieces p;
  if (tk.bos_id() >= 0) p.bos = tk.token_piece(tk.bos_id());
  if (tk.eos_id() >= 0) p.eos = tk.token_piece(tk.eos_id());
  return p;
}

const std::vector<std::string>& chat_template_names() {
  static const std::vector<std::string> names = {"plain",   "chatml", "llama2", "llama3",
                                                 "zephyr", "mistral", "gemma", "phi3"};
  return names;
}

std::string chat_template_list() {
  std::string s;
  for (const auto& n : chat_template_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::vector<ChatSegment> render_chat(const std::string& name, const std::vector<ChatMessage>& messages,
                                     const ChatSpecialPieces& pieces, const std::string& where) {
  check_roles(messages, where);
  Builder b;
  if (name == "plain") {
    render_plain(b, messages);
  } else if (name == "chatml") {
    render_chatml(b, messages);
  } else if (name == "llama2") {
    render_llama2(b, messages, pieces, where);
  } else if (name == "llama3") {
    render_llama3(b, messages, pieces);
  } else if (name == "zephyr") {
    render_zephyr(b, messages, pieces);
  } else if (name == "mistral") {
    render_mistral(b, messages, pieces, where);
  } else if (name == "gemma") {
    render_gemma(b, messages, pieces, where);
  } else if (name == "phi3") {
    render_phi3(b, messages);
  } else {
    throw_input("[data] template '{}' is unknown (built-in: auto, {})", name, chat_template_list());
  }
  return b.take();
}

std::string joined_text(const std::vector<ChatSegment>& segments) {
  std::string s;
  for (const auto& g : segments) s += g.text;
  return s;
}

std::optional<std::string> detect_chat_template(const std::string& jinja) {
  const auto has = [&](const char* marker) { return jinja.find(marker) != std::string::npos; };
  if (has("<|im_start|>")) return "chatml";
  if (has("<|start_header_id|>") && has("<|end_header_id|>")) return "llama3";
  if (has("<start_of_turn>")) return "gemma";
  if (has("<|assistant|>") && has("<|end|>")) return "phi3";
  if (has("<|user|>") && has("<|assistant|>")) return "zephyr";
  if (has("[INST]")) return has("<<SYS>>") ? "llama2" : "mistral";
  return std::nullopt;
}

std::optional<ModelChatTemplate> read_model_chat_template(const std::string& model_path) {
  if (model_path.empty() || !fs::exists(model_path)) return std::nullopt;
  const fs::path p(model_path);
  if (!fs::is_directory(p) && p.extension() == ".gguf") {
    const io::GgufFile g = io::GgufFile::open(model_path);
    if (!g.has("tokenizer.chat_template")) return std::nullopt;
    return ModelChatTemplate{g.get_string("tokenizer.chat_template"), model_path + " (tokenizer.chat_template)"};
  }
  const fs::path dir = fs::is_directory(p) ? p : p.parent_path();
  // Newer transformers save the template as its own file beside tokenizer_config.json.
  const fs::path jinja = dir / "chat_template.jinja";
  if (fs::exists(jinja)) return ModelChatTemplate{io::read_text_file(jinja.string(), "chat-template"), jinja.string()};
  const fs::path config = dir / "tokenizer_config.json";
  if (!fs::exists(config)) return std::nullopt;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(io::read_text_file(config.string(), "chat-template"));
  } catch (const nlohmann::json::exception& e) {
    throw_input("[chat-template] {}: not valid JSON ({})", config.string(), e.what());
  }
  if (!j.is_object() || !j.contains("chat_template") || j["chat_template"].is_null()) return std::nullopt;
  const auto& t = j["chat_template"];
  if (t.is_string()) return ModelChatTemplate{t.get<std::string>(), config.string()};
  LLMOPT_CHECK_INPUT(t.is_array(), "[chat-template] {}: chat_template must be a string or a list of {{name, template}}",
                     config.string());
  for (const auto& e : t)
    if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e["template"].is_string())
      return ModelChatTemplate{e["template"].get<std::string>(), config.string() + " (chat_template 'default')"};
  throw_input("[chat-template] {}: chat_template is a list without an entry named 'default'; set template: NAME "
              "(built-in: {})",
              config.string(), chat_template_list());
}

std::string resolve_chat_template(const std::string& name, const std::string& model_path) {
  if (name != "auto") {
    const auto& names = chat_template_names();
    LLMOPT_CHECK_INPUT(std::find(names.begin(), names.end(), name) != names.end(),
                       "[data] template '{}' is unknown (built-in: auto, {})", name, chat_template_list());
    return name;
  }
  const auto t = read_model_chat_template(model_path);
  if (!t) return "plain";
  const auto detected = detect_chat_template(t->text);
  LLMOPT_CHECK_INPUT(detected.has_value(),
                     "[data] {}: the model's chat_template matches none of the built-in templates ({}); set template: "
                     "NAME",
                     t->source, chat_template_list());
  return *detected;
}

ChatTokens encode_chat(const tok::Tokenizer& tk, const std::vector<ChatSegment>& segments) {
  tok::EncodeOptions eo;
  eo.add_bos = false;
  eo.parse_special = true;
  const std::string text = joined_text(segments);
  ChatTokens out;
  for (int32_t id : tk.encode(text, eo)) out.ids.push_back(id);
  out.target.assign(out.ids.size(), 0);
  // Byte span of each token, where the tokens' bytes spell the text exactly (byte-level BPE, SPM
  // without a dummy prefix): a token is a target when its span overlaps a response segment.
  std::vector<size_t> ends;
  size_t covered = 0;
  const tok::Vocab& vocab = tk.vocab();
  for (int64_t id : out.ids) {
    // A control token matched in the text (parse_special) spans its piece; it decodes to nothing.
    const bool control = vocab.valid_id(id) && vocab.type(static_cast<int32_t>(id)) == tok::TokenType::Control;
    covered += control ? vocab.tokens[static_cast<size_t>(id)].size() : tk.decode_token(static_cast<int32_t>(id)).size();
    ends.push_back(covered);
  }
  if (covered == text.size()) {
    size_t offset = 0;
    for (const auto& g : segments) {
      const size_t begin = offset, end = offset + g.text.size();
      offset = end;
      if (!g.is_response) continue;
      for (size_t t = 0; t < ends.size(); ++t) {
        const size_t start = t == 0 ? 0 : ends[t - 1];
        if (start < end && ends[t] > begin) out.target[t] = 1;
      }
    }
    return out;
  }
  // Otherwise (SPM's dummy-prefix spaces are bytes the text does not have): by prefix encodings.
  size_t offset = 0;
  for (const auto& g : segments) {
    const size_t begin = offset, end = offset + g.text.size();
    offset = end;
    if (!g.is_response) continue;
    const auto before = tk.encode(std::string_view(text).substr(0, begin), eo);
    const auto through = tk.encode(std::string_view(text).substr(0, end), eo);
    size_t s = std::min(before.size(), out.ids.size());
    // The prefix's last token differs from the whole text's there: that token of the whole text
    // merges across the seam into the response, so it is learned too.
    if (s > 0 && before[s - 1] != out.ids[s - 1]) --s;
    const size_t e = std::min(through.size(), out.ids.size());
    for (size_t t = s; t < e; ++t) out.target[t] = 1;
  }
  return out;
}

}  // namespace llmopt::train
