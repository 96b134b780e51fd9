#include "train/finetune_data.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "eval/harness.h"
#include "io/mapped_file.h"
#include "train/chat_template.h"

namespace llmopt::train {
namespace fs = std::filesystem;
namespace {

using Example = ChatTokens;  // ids, and target 1 where ids[t] is a target

void append(Example& e, const tok::Tokenizer& tk, const std::string& text, bool target) {
  tok::EncodeOptions eo;
  eo.add_bos = false;
  for (int32_t id : tk.encode(text, eo)) {
    e.ids.push_back(id);
    e.target.push_back(target ? 1 : 0);
  }
}

// A prompt/response pair tokenized as the task harness tokenizes a context and its continuation
// (eval::encode_pair, lm-eval's _encode_pair): the prompt's trailing whitespace moves to the
// response, the whole text is encoded and the response is what follows the prompt's own tokens.
// Encoding the two apart would differ at the seam for tokenizers with a dummy-prefix space
// (SentencePiece: " yes" alone is "▁" "▁yes", after "Answer:" it is "▁yes"), so the model would
// learn tokens it never sees when the harness scores the same text.
void append_pair(Example& e, const tok::Tokenizer& tk, const std::string& prompt, const std::string& response) {
  if (prompt.find_first_not_of(" \t\n\r\v\f") == std::string::npos) {
    append(e, tk, prompt + response, true);
    return;
  }
  const auto [ctx, cont] = eval::encode_pair(tk, prompt, response, false);
  for (int64_t id : ctx) e.ids.push_back(id), e.target.push_back(0);
  for (int64_t id : cont) e.ids.push_back(id), e.target.push_back(1);
}

// A `messages` row rendered with a chat template (train/chat_template.h): the template's text is the
// whole sequence (its own BOS where the format has one), the targets its response segments.
Example chat_example(const std::vector<ChatMessage>& messages, const std::string& name, const tok::Tokenizer& tk,
                     const std::string& where) {
  const auto segments = render_chat(name, messages, chat_special_pieces(tk), where);
  LLMOPT_CHECK_INPUT(std::any_of(messages.begin(), messages.end(), [](const ChatMessage& m) { return m.role == "assistant"; }),
                     "[data] {}: 'messages' has no assistant message to learn", where);
  return encode_chat(tk, segments);
}

// The built-in `plain` template: system text on its own line, "User: ...\n", "Assistant: ...".
std::string render_role(const std::string& role, const std::string& content, bool* is_response,
                        const std::string& where) {
  *is_response = false;
  if (role == "system") return content + "\n";
  if (role == "user") return "User: " + content + "\n";
  if (role == "assistant") {
    *is_response = true;
    return content;
  }
  throw_input("[data] {}: message role '{}' is not system, user or assistant", where, role);
}

// `tmpl` a built-in chat template name or auto (train/chat_template.h), resolved against
// `template_model` at the first `messages` row.
std::vector<Example> read_jsonl(const std::string& path, const tok::Tokenizer& tk, const std::string& tmpl,
                                const std::string& template_model, const std::string& eos_mode) {
  LLMOPT_CHECK_INPUT(eos_mode == "auto" || eos_mode == "true" || eos_mode == "false",
                     "[data] eos '{}': expected auto, true or false", eos_mode);
  std::string chat = tmpl == "auto" ? "" : resolve_chat_template(tmpl, template_model);
  std::ifstream in(path);
  LLMOPT_CHECK_INPUT(in.good(), "[data] {}: cannot read", path);
  std::vector<Example> out;
  std::string line;
  int64_t lineno = 0;
  const int32_t bos = tk.bos_id(), eos = tk.eos_id();
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, lineno);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw_input("[data] {}: not valid JSON ({})", where, e.what());
    }
    LLMOPT_CHECK_INPUT(j.is_object(), "[data] {}: expected a JSON object", where);
    // "eos": false = no EOS target after the response (task data: the harness scores the response
    // tokens alone, `llmopt data instruct` writes it for log-likelihood tasks).
    bool add_eos = eos >= 0;
    if (j.contains("eos")) {
      LLMOPT_CHECK_INPUT(j["eos"].is_boolean(), "[data] {}: 'eos' must be true or false, found {}", where,
                         j["eos"].dump());
      if (eos_mode == "auto") add_eos = add_eos && j["eos"].get<bool>();
    }
    // The eos option overrides the lines: true = an EOS target after every response, false = none.
    if (eos_mode == "false") add_eos = false;
    Example e;
    if (bos >= 0 && tk.add_bos_default()) {
      e.ids.push_back(bos);
      e.target.push_back(0);
    }
    if (j.contains("messages")) {
      const auto messages = chat_messages(j["messages"], where);
      if (chat.empty()) chat = resolve_chat_template(tmpl, template_model);
      if (chat != "plain") e = chat_example(messages, chat, tk, where);
      // plain: each message tokenized on its own, an EOS id after each reply (add_eos).
      bool any_response = chat != "plain";
      for (const auto& m : chat == "plain" ? messages : std::vector<ChatMessage>{}) {
        bool is_response = false;
        const std::string text = render_role(m.role, m.content, &is_response, where);
        if (is_response) {
          append(e, tk, "Assistant: ", false);
          append(e, tk, text, true);
          if (add_eos) e.ids.push_back(eos), e.target.push_back(1);
          append(e, tk, "\n", false);
          any_response = true;
        } else {
          append(e, tk, text, false);
        }
      }
      LLMOPT_CHECK_INPUT(any_response, "[data] {}: 'messages' has no assistant message to learn", where);
    } else {
      LLMOPT_CHECK_INPUT(j.contains("prompt") && j["prompt"].is_string(),
                         "[data] {}: missing string field 'prompt' (or 'messages')", where);
      LLMOPT_CHECK_INPUT(j.contains("response") && j["response"].is_string(),
                         "[data] {}: missing string field 'response'", where);
      append_pair(e, tk, j["prompt"].get<std::string>(), j["response"].get<std::string>());
      if (add_eos) e.ids.push_back(eos), e.target.push_back(1);
    }
    int64_t n = 0;
    for (size_t t = 1; t < e.target.size(); ++t) n += e.target[t];
    LLMOPT_CHECK_INPUT(n > 0, "[data] {}: the response has no tokens", where);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

std::vector<ChatTokens> read_instruction_rows(const FinetuneDataOptions& o, const tok::Tokenizer& tk) {
  return read_jsonl(o.path, tk, o.template_name, o.template_model, o.eos);
}

namespace {

// Instruction rows: one example per row, truncated to seq_len + 1 tokens, padded with 0 (masked).
std::shared_ptr<FinetuneDataset> jsonl_rows(const std::vector<Example>& ex, int64_t seq_len) {
  const auto n = static_cast<int64_t>(ex.size());
  auto rows = torch::zeros({n, seq_len + 1}, torch::kInt64);
  auto mask = torch::zeros({n, seq_len + 1}, torch::kInt64);
  auto r = rows.accessor<int64_t, 2>();
  auto m = mask.accessor<int64_t, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& e = ex[static_cast<size_t>(i)];
    const int64_t len = std::min<int64_t>(static_cast<int64_t>(e.ids.size()), seq_len + 1);
    for (int64_t t = 0; t < len; ++t) {
      r[i][t] = e.ids[static_cast<size_t>(t)];
      m[i][t] = t > 0 ? e.target[static_cast<size_t>(t)] : 0;
    }
  }
  return std::make_shared<FinetuneDataset>(rows, mask);
}

std::vector<int64_t> text_tokens(const std::string& path, int64_t offset, int64_t max_bytes, const tok::Tokenizer& tk) {
  std::string text = io::read_text_file(path, "data");
  LLMOPT_CHECK_INPUT(offset <= static_cast<int64_t>(text.size()), "[data] {}: offset {} is past the end ({} bytes)",
                     path, offset, text.size());
  text = text.substr(static_cast<size_t>(offset));
  if (max_bytes > 0 && static_cast<int64_t>(text.size()) > max_bytes) text.resize(static_cast<size_t>(max_bytes));
  tok::EncodeOptions eo;
  eo.add_bos = tk.add_bos_default();
  const auto ids = tk.encode(text, eo);
  return {ids.begin(), ids.end()};
}

// Non-overlapping rows of seq_len + 1 tokens advancing by seq_len: every token after the first is
// predicted exactly once.
std::shared_ptr<FinetuneDataset> text_rows(const std::vector<int64_t>& ids, int64_t seq_len, int64_t first,
                                           int64_t count) {
  auto rows = torch::empty({count, seq_len + 1}, torch::kInt64);
  auto r = rows.accessor<int64_t, 2>();
  for (int64_t i = 0; i < count; ++i)
    for (int64_t t = 0; t <= seq_len; ++t) r[i][t] = ids[static_cast<size_t>((first + i) * seq_len + t)];
  return std::make_shared<FinetuneDataset>(rows, torch::Tensor());
}

int64_t text_row_count(size_t tokens, int64_t seq_len) {
  return tokens < 2 ? 0 : static_cast<int64_t>(tokens - 1) / seq_len;
}

}  // namespace

int64_t FinetuneDataset::targets() const {
  if (!mask_.defined()) return rows_.size(0) * (rows_.size(1) - 1);
  return mask_.slice(1, 1).sum().item<int64_t>();
}

torch::Tensor FinetuneDataset::batch_at(int64_t index, int64_t batch, uint64_t seed) const {
  const int64_t n = size();
  std::vector<int64_t> pick(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pos = index * batch + b;
    const int64_t epoch = pos / n;
    if (epoch != perm_epoch_ || seed != perm_seed_) {
      auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ULL + static_cast<uint64_t>(epoch));
      perm_ = torch::randperm(n, gen, torch::kInt64);
      perm_epoch_ = epoch;
      perm_seed_ = seed;
    }
    pick[static_cast<size_t>(b)] = perm_[pos % n].item<int64_t>();
  }
  const auto idx = torch::tensor(pick, torch::kInt64);
  if (!mask_.defined()) return rows_.index_select(0, idx);
  return torch::stack({rows_.index_select(0, idx), mask_.index_select(0, idx)}, 1);
}

torch::Tensor FinetuneDataset::rows(int64_t begin, int64_t end) const {
  if (!mask_.defined()) return rows_.slice(0, begin, end);
  return torch::stack({rows_.slice(0, begin, end), mask_.slice(0, begin, end)}, 1);
}

FinetuneData load_finetune_data(const FinetuneDataOptions& o, const tok::Tokenizer& tk, int64_t batch) {
  LLMOPT_CHECK_INPUT(!o.path.empty(), "[data] train.path is empty");
  LLMOPT_CHECK_INPUT(fs::exists(o.path), "[data] train.path {}: no such file", o.path);
  LLMOPT_CHECK_INPUT(o.seq_len >= 1, "[data] train.seq_len must be >= 1, found {}", o.seq_len);
  LLMOPT_CHECK_INPUT(o.val_fraction >= 0 && o.val_fraction < 1, "[data] val.fraction must be in [0, 1), found {}",
                     o.val_fraction);
  FinetuneData d;
  d.format = o.format;
  if (d.format == "auto") d.format = fs::path(o.path).extension() == ".jsonl" ? "jsonl" : "text";
  LLMOPT_CHECK_INPUT(d.format == "text" || d.format == "jsonl", "[data] train.format must be auto, text or jsonl, found '{}'",
                     o.format);
  if (d.format == "text") {
    const auto ids = text_tokens(o.path, o.offset, o.max_bytes, tk);
    const int64_t rows = text_row_count(ids.size(), o.seq_len);
    const int64_t val_rows = o.val_path.empty() ? static_cast<int64_t>(static_cast<double>(rows) * o.val_fraction) : 0;
    LLMOPT_CHECK_INPUT(rows - val_rows >= 1,
                       "[data] {}: {} tokens make {} rows of seq_len + 1 = {} tokens ({} held out for validation); "
                       "at least one training row is needed",
                       o.path, ids.size(), rows, o.seq_len + 1, val_rows);
    d.train = text_rows(ids, o.seq_len, 0, rows - val_rows);
    if (val_rows > 0) d.val = text_rows(ids, o.seq_len, rows - val_rows, val_rows);
    if (!o.val_path.empty()) {
      const auto vids = text_tokens(o.val_path, 0, 0, tk);
      const int64_t vrows = text_row_count(vids.size(), o.seq_len);
      LLMOPT_CHECK_INPUT(vrows >= 1, "[data] val.path {}: {} tokens, fewer than one row of {}", o.val_path, vids.size(),
                         o.seq_len + 1);
      d.val = text_rows(vids, o.seq_len, 0, vrows);
    }
  } else {
    const auto ex = read_jsonl(o.path, tk, o.template_name, o.template_model, o.eos);
    const auto n = static_cast<int64_t>(ex.size());
    const int64_t val_n = o.val_path.empty() ? static_cast<int64_t>(static_cast<double>(n) * o.val_fraction) : 0;
    LLMOPT_CHECK_INPUT(n - val_n >= 1, "[data] {}: {} examples ({} held out); at least one training example is needed",
                       o.path, n, val_n);
    d.train = jsonl_rows(std::vector<Example>(ex.begin(), ex.end() - val_n), o.seq_len);
    if (val_n > 0) d.val = jsonl_rows(std::vector<Example>(ex.end() - val_n, ex.end()), o.seq_len);
    if (!o.val_path.empty()) {
      const auto vex = read_jsonl(o.val_path, tk, o.template_name, o.template_model, o.eos);
      LLMOPT_CHECK_INPUT(!vex.empty(), "[data] val.path {}: no examples", o.val_path);
      d.val = jsonl_rows(vex, o.seq_len);
    }
    LLMOPT_CHECK_INPUT(d.train->targets() > 0,
                       "[data] {}: no response token fits in seq_len {} (prompts too long?)", o.path, o.seq_len);
  }
  LLMOPT_CHECK_INPUT(d.train->size() >= batch,
                     "[data] {}: {} training rows of {} tokens, fewer than one batch of {} (more data, or a smaller "
                     "batch_size / seq_len)",
                     o.path, d.train->size(), o.seq_len + 1, batch);
  d.train_tokens = d.train->targets();
  d.val_tokens = d.val ? d.val->targets() : 0;
  return d;
}

LossFn masked_next_token_loss(model::LlamaModel& model) {
  return [&model](const torch::Tensor& batch) {
    if (batch.dim() == 2) return next_token_loss(model)(batch);
    LLMOPT_CHECK_INPUT(batch.dim() == 3 && batch.size(1) == 2 && batch.size(2) >= 2,
                       "[train] masked batch must be [B, 2, T+1], found {} dims", batch.dim());
    const torch::Tensor tokens = batch.select(1, 0).to(model.device());
    const torch::Tensor mask = batch.select(1, 1).slice(1, 1).reshape({-1});
    // Logits only at the target positions: an instruction row has a handful of response tokens
    // after a long prompt, and the [B, T, vocab] logits of every position (100 MB at 8 x 64 and a
    // 50k vocabulary, with their gradient) would cost more than the model itself. The hidden
    // states of the targets' positions are gathered first; same arithmetic per target.
    const torch::Tensor where = mask.nonzero().reshape({-1}).to(model.device());
    const torch::Tensor hidden = model.forward_hidden(tokens.slice(1, 0, -1).contiguous());  // [B, T, D]
    const int64_t k = where.numel();
    if (k == 0) return (hidden.sum() * 0.0).reshape({});  // no target in the batch: zero loss, zero gradient
    const torch::Tensor h = hidden.reshape({-1, hidden.size(-1)}).index_select(0, where).unsqueeze(0);  // [1, K, D]
    const torch::Tensor logits = model.logits_from_hidden(h).reshape({k, -1});
    const torch::Tensor targets = tokens.slice(1, 1).reshape({-1}).index_select(0, where);
    return torch::nn::functional::cross_entropy(logits, targets);
  };
}

double dataset_loss(model::LlamaModel& model, const FinetuneDataset& data, int64_t batch) {
  torch::NoGradGuard no_grad;
  double sum = 0, count = 0;
  for (int64_t b = 0; b < data.size(); b += batch) {
    const torch::Tensor rows = data.rows(b, std::min(b + batch, data.size()));
    const torch::Tensor tokens = rows.dim() == 3 ? rows.select(1, 0) : rows;
    const torch::Tensor logits = model.forward(tokens.slice(1, 0, -1).contiguous().to(model.device()));
    torch::Tensor nll = torch::nn::functional::cross_entropy(
        logits.reshape({-1, logits.size(-1)}).to(torch::kFloat64), tokens.slice(1, 1).reshape({-1}).to(model.device()),
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
    if (rows.dim() == 3) {
      const torch::Tensor mask = rows.select(1, 1).slice(1, 1).reshape({-1}).to(model.device()).to(torch::kFloat64);
      sum += (nll * mask).sum().item<double>();
      count += mask.sum().item<double>();
    } else {
      sum += nll.sum().item<double>();
      count += static_cast<double>(nll.numel());
    }
  }
  return count > 0 ? sum / count : NAN;
}

}  // namespace llmopt::train
