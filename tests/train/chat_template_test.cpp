// Chat templates (train/chat_template.h), against texts written here by hand from each model
// family's published chat format (not produced by the code under test):
//  - every built-in renders a two-turn conversation with a system message to the expected bytes, and
//    its learned segments are exactly the assistant contents plus the end-of-turn marker;
//  - with a vocabulary that has the markers as control tokens, the markers encode as their ids and
//    the targets are exactly the response bytes and marker ids (every assistant turn);
//  - detection by markers, `auto` from tokenizer_config.json (string, named list, none, unknown),
//    and bad input (unknown name, unknown role, system where the format has none) as exit-2
//    InputErrors naming the file, line or the way out.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"
#include "train/chat_template.h"
#include "train/finetune_data.h"

namespace llmopt::train {
namespace {
namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  auto d = fs::temp_directory_path() / ("llmopt_chat_template_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

const std::vector<ChatMessage> kConversation = {{"system", "Be brief."},
                                                {"user", "Hi"},
                                                {"assistant", "Hello!"},
                                                {"user", "Bye"},
                                                {"assistant", "See you."}};

struct Expected {
  std::string text;
  std::vector<std::string> responses;
};

// The published formats, written out by hand (bos "<s>", eos "</s>").
const std::map<std::string, Expected>& expected_renderings() {
  static const std::map<std::string, Expected> e = {
      {"plain", {"Be brief.\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant: See you.\n", {"Hello!", "See you."}}},
      {"chatml",
       {"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>"
        "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\nSee you.<|im_end|>\n",
        {"Hello!<|im_end|>", "See you.<|im_end|>"}}},
      {"llama2",
       {"<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST] See you. </s>",
        {"Hello! </s>", "See you. </s>"}}},
      {"llama3",
       {"<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>"
        "\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|"
        "end_header_id|>\n\nBye<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nSee you.<|eot_id|>",
        {"Hello!<|eot_id|>", "See you.<|eot_id|>"}}},
      {"zephyr",
       {"<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|user|>\nBye</s>\n<|assistant|>\nSee "
        "you.</s>\n",
        {"Hello!</s>", "See you.</s>"}}},
      {"gemma",
       {"<s><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_"
        "turn>user\nBye<end_of_turn>\n<start_of_turn>model\nSee you.<end_of_turn>\n",
        {"Hello!<end_of_turn>", "See you.<end_of_turn>"}}},
      {"phi3",
       {"<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|user|>\nBye<|end|>\n<|"
        "assistant|>\nSee you.<|end|>\n",
        {"Hello!<|end|>", "See you.<|end|>"}}},
  };
  return e;
}

TEST(ChatTemplate, EachBuiltInRendersThePublishedFormatAndLearnsOnlyTheReplies) {
  for (const auto& [name, want] : expected_renderings()) {
    const auto segments = render_chat(name, kConversation, ChatSpecialPieces{}, "test");
    EXPECT_EQ(joined_text(segments), want.text) << name;
    std::vector<std::string> responses;
    for (const auto& g : segments)
      if (g.is_response) responses.push_back(g.text);
    EXPECT_EQ(responses, want.responses) << name;
  }
  // Mistral v1 has no system role: the same conversation without it.
  const std::vector<ChatMessage> no_system(kConversation.begin() + 1, kConversation.end());
  const auto m = render_chat("mistral", no_system, ChatSpecialPieces{}, "test");
  EXPECT_EQ(joined_text(m), "<s>[INST] Hi [/INST]Hello!</s>[INST] Bye [/INST]See you.</s>");
  ASSERT_EQ(m.size(), 4u);
  EXPECT_TRUE(m[1].is_response && m[3].is_response && !m[0].is_response && !m[2].is_response);
  EXPECT_EQ(m[1].text, "Hello!</s>");
  // The other built-ins render the same conversation without system too.
  for (const auto& name : chat_template_names()) EXPECT_NO_THROW(render_chat(name, no_system, {}, "test")) << name;
}

// Byte-fallback SPM vocabulary (every byte its own <0xXX> piece, no dummy prefix) with the chatml
// markers as control tokens 300 and 301.
std::unique_ptr<tok::Tokenizer> chatml_tokenizer() {
  tok::Vocab v = tok::byte_fallback_vocab(310);
  v.add_space_prefix = false;
  v.tokens[300] = "<|im_start|>";
  v.tokens[301] = "<|im_end|>";
  v.types[300] = v.types[301] = tok::TokenType::Control;
  return tok::make_tokenizer(std::move(v), "chatml test vocabulary");
}

// The ids this vocabulary gives `text` with the two markers: byte b -> 3 + b, space -> 259 (U+2581).
std::vector<int64_t> expected_ids(const std::string& text) {
  std::vector<int64_t> ids;
  for (size_t i = 0; i < text.size();) {
    if (text.compare(i, 12, "<|im_start|>") == 0) {
      ids.push_back(300), i += 12;
    } else if (text.compare(i, 10, "<|im_end|>") == 0) {
      ids.push_back(301), i += 10;
    } else {
      const auto c = static_cast<unsigned char>(text[i++]);
      ids.push_back(c == ' ' ? 259 : 3 + c);
    }
  }
  return ids;
}

TEST(ChatTemplate, ChatmlMarkersEncodeAsSpecialIdsAndEveryReplyIsTrained) {
  const auto tk = chatml_tokenizer();
  const auto tokens = encode_chat(*tk, render_chat("chatml", kConversation, chat_special_pieces(*tk), "test"));
  const std::string prompt1 = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                              "<|im_start|>assistant\n";
  const std::string reply1 = "Hello!<|im_end|>";
  const std::string prompt2 = "\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n";
  const std::string reply2 = "See you.<|im_end|>";
  std::vector<int64_t> ids, target;
  for (const auto& [part, learned] : std::vector<std::pair<std::string, int64_t>>{
           {prompt1, 0}, {reply1, 1}, {prompt2, 0}, {reply2, 1}, {"\n", 0}}) {
    for (int64_t id : expected_ids(part)) ids.push_back(id), target.push_back(learned);
  }
  EXPECT_EQ(tokens.ids, ids);
  EXPECT_EQ(tokens.target, target);
}

TEST(ChatTemplate, DetectsTheFormatByItsMarkers) {
  EXPECT_EQ(detect_chat_template("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\\n'}}"), "chatml");
  EXPECT_EQ(detect_chat_template("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"), "llama3");
  EXPECT_EQ(detect_chat_template("{{ '<start_of_turn>' + role + '\\n' }}"), "gemma");
  EXPECT_EQ(detect_chat_template("{{'<|user|>\\n' + c + '<|end|>\\n'}}{{'<|assistant|>\\n'}}"), "phi3");
  EXPECT_EQ(detect_chat_template("{{ '<|user|>\\n' + c + eos_token }}{{ '<|assistant|>' }}"), "zephyr");
  EXPECT_EQ(detect_chat_template("{{ bos_token + '[INST] <<SYS>>\\n' }}"), "llama2");
  EXPECT_EQ(detect_chat_template("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), "mistral");
  EXPECT_FALSE(detect_chat_template("{{ 'Human: ' + message['content'] }}").has_value());
}

TEST(ChatTemplate, AutoReadsTheModelsTokenizerConfig) {
  const auto d = temp_dir("auto");
  EXPECT_EQ(resolve_chat_template("auto", d.string()), "plain");  // no tokenizer_config.json
  write(d / "tokenizer_config.json", R"({"bos_token": "<s>"})");
  EXPECT_EQ(resolve_chat_template("auto", d.string()), "plain");  // no chat_template in it
  write(d / "tokenizer_config.json", R"({"chat_template": "{{ '<|im_start|>' }}"})");
  EXPECT_EQ(resolve_chat_template("auto", d.string()), "chatml");
  write(d / "tokenizer.json", "{}");
  EXPECT_EQ(resolve_chat_template("auto", (d / "tokenizer.json").string()), "chatml");  // a file: its directory
  EXPECT_EQ(resolve_chat_template("gemma", d.string()), "gemma");                      // a name wins
  write(d / "tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "<|im_start|>"}, {"name": "default", "template": "[INST] <<SYS>>"}]})");
  EXPECT_EQ(resolve_chat_template("auto", d.string()), "llama2");
  write(d / "tokenizer_config.json", R"({"chat_template": "{{ 'Human: ' + m['content'] }}"})");
  try {
    resolve_chat_template("auto", d.string());
    FAIL() << "an undetectable template must be an InputError";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find((d / "tokenizer_config.json").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("set template: NAME"), std::string::npos) << msg;
    EXPECT_NE(msg.find("chatml, llama2"), std::string::npos) << msg;
  }
  EXPECT_THROW(resolve_chat_template("vicuna", d.string()), InputError);
  fs::remove_all(d);
}

TEST(ChatTemplate, BadRowsNameFileAndLine) {
  const auto d = temp_dir("bad");
  const auto tk = chatml_tokenizer();
  FinetuneDataOptions o;
  o.path = (d / "chat.jsonl").string();
  o.format = "jsonl";
  o.seq_len = 128;
  o.template_name = "chatml";
  write(o.path, R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"
                "\n"
                R"({"messages": [{"role": "robot", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"
                "\n");
  try {
    load_finetune_data(o, *tk, 1);
    FAIL() << "an unknown role must be an InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("chat.jsonl:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("robot"), std::string::npos) << e.what();
  }
  o.template_name = "mistral";
  write(o.path, R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"
                "\n");
  EXPECT_THROW(load_finetune_data(o, *tk, 1), InputError);
  o.template_name = "nosuch";
  EXPECT_THROW(load_finetune_data(o, *tk, 1), InputError);
  // A good row under chatml: the loader's targets are the reply and <|im_end|>, no BOS added.
  o.template_name = "chatml";
  write(o.path, R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})"
                "\n");
  const auto data = load_finetune_data(o, *tk, 1);
  EXPECT_EQ(data.train_tokens, 3);  // 'Y', 'o', <|im_end|>
  fs::remove_all(d);
}

}  // namespace
}  // namespace llmopt::train
