// Chat templates for instruction jsonl `messages` rows: each built-in renders a conversation into
// segments of text, marking the ones the loss learns (the assistant's content plus the template's
// end-of-turn marker, as TRL / axolotl "train on responses only" do; never system or user turns or
// the assistant header). `auto` reads the model's own chat_template (tokenizer_config.json beside
// the model or its tokenizer, or GGUF `tokenizer.chat_template`) and picks the built-in whose
// distinctive markers it contains, as llama.cpp's llm_chat_detect_template does. Torch-free.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace llmopt::train {

struct ChatMessage {
  std::string role;  // system | user | assistant
  std::string content;
};

struct ChatSegment {
  std::string text;
  bool is_response = false;  // learned: assistant content + end-of-turn marker
};

// A jsonl row's `messages` array: InputError naming `where` (file:line) unless it is a non-empty
// array of objects with string fields role and content.
std::vector<ChatMessage> chat_messages(const nlohmann::json& messages, const std::string& where);

// The tokenizer's BOS / EOS pieces as the templates write them (bos_token / eos_token in Jinja).
struct ChatSpecialPieces {
  std::string bos = "<s>", eos = "</s>";
};
ChatSpecialPieces chat_special_pieces(const tok::Tokenizer& tk);

// Built-in names: plain, chatml, llama2, llama3, zephyr, mistral, gemma, phi3.
const std::vector<std::string>& chat_template_names();
std::string chat_template_list();  // "plain, chatml, ..." for messages

// Renders `messages` with built-in `name` (not auto). InputError naming `where` (file:line) for an
// unknown name or role, a system message the format has no place for, or turns that must alternate
// user/assistant and do not. `plain` renders its assistant turns without the EOS token (the data
// loader appends the EOS id for plain).
std::vector<ChatSegment> render_chat(const std::string& name, const std::vector<ChatMessage>& messages,
                                     const ChatSpecialPieces& pieces, const std::string& where);
std::string joined_text(const std::vector<ChatSegment>& segments);

// The built-in a Jinja chat template implements, by its markers; nullopt when none matches.
std::optional<std::string> detect_chat_template(const std::string& jinja);

// The model's chat template: `model_path` a directory (its tokenizer_config.json), a .gguf file
// (tokenizer.chat_template) or another file (tokenizer_config.json beside it). A list of named
// templates yields the one named "default". nullopt when the model carries none.
struct ModelChatTemplate {
  std::string text;
  std::string source;  // the file it came from
};
std::optional<ModelChatTemplate> read_model_chat_template(const std::string& model_path);

// `name` itself unless it is "auto": then the built-in detected from the model's template, or plain
// when the model has none. InputError (exit 2) for an unknown name, or a model template that
// matches no built-in (naming its file and the built-ins, "set template: NAME").
std::string resolve_chat_template(const std::string& name, const std::string& model_path);

// Tokens of a rendered conversation and which of them are targets (1 = learned). The whole text is
// encoded at once with parse_special (as Hugging Face tokenizers match special tokens anywhere in
// the text), so "<|im_start|>" is the vocabulary's special id when it has one, and no BOS is added:
// the text is the whole sequence, as apply_chat_template(tokenize=True) makes it. A token is a
// target when its byte span overlaps a response segment (a token merging across a seam is learned);
// where the tokens' bytes do not spell the text (SPM dummy-prefix spaces), when it lies between
// the token counts of the text up to the segment's start and end (prefix encodings).
struct ChatTokens {
  std::vector<int64_t> ids;
  std::vector<int64_t> target;
};
ChatTokens encode_chat(const tok::Tokenizer& tk, const std::vector<ChatSegment>& segments);

}  // namespace llmopt::train
