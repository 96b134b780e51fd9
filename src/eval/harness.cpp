#include "eval/harness.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"

namespace llmopt::eval {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t task_max_length(const infer::Engine& m) {
  const int64_t n = m.config().max_position_embeddings;
  return n > 0 ? n : 2048;
}

// ------------------------------------------------------------------ scoring

namespace {

// log p(token) from one row of float32 logits (float64 log-softmax) and whether token is the
// first maximum.
void score_row(const float* row, int64_t vocab, int64_t token, LoglikelihoodResult& res) {
  int64_t arg = 0;
  float best = row[0];
  for (int64_t v = 1; v < vocab; ++v) {
    if (row[v] > best) {
      best = row[v];
      arg = v;
    }
  }
  double sum = 0;
  for (int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - best);
  const double lp = static_cast<double>(row[token]) - best - std::log(sum);
  res.logprob += lp;
  res.token_logprobs.push_back(lp);
  res.is_greedy = res.is_greedy && arg == token;
}

}  // namespace

std::vector<LoglikelihoodResult> score_loglikelihood(const infer::Engine& m,
                                                     const std::vector<LoglikelihoodRequest>& requests,
                                                     int64_t batch_size, const ProgressFn& progress) {
  LLMOPT_CHECK_INPUT(batch_size >= 1, "[eval] batch size {} must be at least 1", batch_size);
  const int64_t L = task_max_length(m);
  // A continuation longer than the context (lm-eval asserts against it) is scored in pieces of
  // at most L tokens, each after everything before it (left-truncated as usual), and summed.
  bool long_cont = false;
  for (const auto& r : requests) long_cont = long_cont || static_cast<int64_t>(r.continuation.size()) > L;
  if (long_cont) {
    std::vector<LoglikelihoodRequest> pieces;
    std::vector<size_t> owner;
    for (size_t i = 0; i < requests.size(); ++i) {
      const auto& r = requests[i];
      const int64_t nc = static_cast<int64_t>(r.continuation.size());
      for (int64_t a = 0; a < std::max<int64_t>(nc, 1); a += L) {
        LoglikelihoodRequest q;
        q.context = r.context;
        q.context.insert(q.context.end(), r.continuation.begin(), r.continuation.begin() + a);
        q.continuation.assign(r.continuation.begin() + a, r.continuation.begin() + std::min(nc, a + L));
        pieces.push_back(std::move(q));
        owner.push_back(i);
      }
    }
    const auto part = score_loglikelihood(m, pieces, batch_size, progress);
    std::vector<LoglikelihoodResult> out(requests.size());
    for (auto& o : out) o.is_greedy = true;
    for (size_t k = 0; k < part.size(); ++k) {
      out[owner[k]].logprob += part[k].logprob;
      out[owner[k]].is_greedy = out[owner[k]].is_greedy && part[k].is_greedy;
      out[owner[k]].token_logprobs.insert(out[owner[k]].token_logprobs.end(), part[k].token_logprobs.begin(),
                                          part[k].token_logprobs.end());
    }
    return out;
  }
  const int64_t V = m.config().vocab_size;
  std::vector<LoglikelihoodResult> out(requests.size());
  // One cache of the model's full length, reset per context: every request runs on a cache of
  // the same capacity whatever the batch.
  auto cache = m.make_cache(L);
  std::vector<float> last(static_cast<size_t>(V));
  std::vector<float> rows;
  const int64_t n = static_cast<int64_t>(requests.size());
  for (int64_t b0 = 0; b0 < n; b0 += batch_size) {
    const int64_t b1 = std::min(n, b0 + batch_size);
    std::map<std::vector<int64_t>, std::vector<int64_t>> groups;  // truncated context → requests
    for (int64_t i = b0; i < b1; ++i) {
      const auto& r = requests[static_cast<size_t>(i)];
      const int64_t nc = static_cast<int64_t>(r.continuation.size());
      LLMOPT_CHECK_INPUT(!r.context.empty(), "[eval] request {}: empty context", i);
      LLMOPT_CHECK_INPUT(nc >= 1, "[eval] request {}: empty continuation", i);
      for (int64_t t : r.continuation)
        LLMOPT_CHECK_INPUT(t >= 0 && t < V, "[eval] request {}: token id {} out of range (vocab {})", i, t, V);
      // lm-eval: (context + continuation)[-(L + 1):][:-1] is the input.
      const int64_t total = static_cast<int64_t>(r.context.size()) + nc;
      const int64_t drop = std::max<int64_t>(0, total - (L + 1));
      groups[std::vector<int64_t>(r.context.begin() + drop, r.context.end())].push_back(i);
    }
    for (const auto& [ctx, idx] : groups) {
      cache->reset();
      m.prefill(ctx.data(), static_cast<int64_t>(ctx.size()), *cache, last.data(), false);
      for (int64_t i : idx) {
        const auto& cont = requests[static_cast<size_t>(i)].continuation;
        cache->truncate(static_cast<int64_t>(ctx.size()));
        LoglikelihoodResult res;
        res.is_greedy = true;
        score_row(last.data(), V, cont[0], res);
        const int64_t rest = static_cast<int64_t>(cont.size()) - 1;
        if (rest > 0) {
          rows.resize(static_cast<size_t>(rest * V));
          m.prefill(cont.data(), rest, *cache, rows.data(), true);
          for (int64_t t = 0; t < rest; ++t)
            score_row(rows.data() + t * V, V, cont[static_cast<size_t>(t + 1)], res);
        }
        out[static_cast<size_t>(i)] = res;
      }
    }
    if (progress) progress(b1, n);
  }
  return out;
}

double choice_score(const std::vector<double>& token_logprobs, int64_t context_tokens, int64_t start,
                    const ChoiceScoring& rule, int64_t* scored_tokens) {
  const int64_t n = static_cast<int64_t>(token_logprobs.size());
  int64_t a = std::clamp<int64_t>(start - context_tokens, 0, n > 0 ? n - 1 : 0);
  int64_t b = n;
  if (rule.drop_last > 0) b = std::max(a + 1, n - rule.drop_last);
  double s = 0;
  for (int64_t i = a; i < b; ++i) s += token_logprobs[static_cast<size_t>(i)];
  if (scored_tokens) *scored_tokens = b - a;
  return rule.mean && b > a ? s / static_cast<double>(b - a) : s;
}

namespace {

std::vector<int64_t> encode_ids(const tok::Tokenizer& tk, const std::string& s) {
  tok::EncodeOptions eo;
  eo.add_bos = false;
  const auto v = tk.encode(s, eo);
  return {v.begin(), v.end()};
}

bool is_py_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int64_t prefix_token(const tok::Tokenizer& tk) { return tk.bos_id() >= 0 ? tk.bos_id() : tk.eos_id(); }

}  // namespace

std::pair<std::vector<int64_t>, std::vector<int64_t>> encode_pair(const tok::Tokenizer& tk, const std::string& context,
                                                                  const std::string& continuation, bool add_bos) {
  std::vector<int64_t> ctx_enc, cont_enc;
  if (context.empty()) {
    ctx_enc = {prefix_token(tk)};
    cont_enc = encode_ids(tk, continuation);
    LLMOPT_CHECK_INPUT(ctx_enc[0] >= 0, "[eval] the tokenizer has neither BOS nor EOS for an empty context");
    return {ctx_enc, cont_enc};
  }
  size_t keep = context.size();
  while (keep > 0 && is_py_space(context[keep - 1])) --keep;
  const std::string ctx = context.substr(0, keep);
  const std::string cont = context.substr(keep) + continuation;
  const auto whole = encode_ids(tk, ctx + cont);
  ctx_enc = encode_ids(tk, ctx);
  if (ctx_enc.size() < whole.size())
    cont_enc.assign(whole.begin() + static_cast<std::ptrdiff_t>(ctx_enc.size()), whole.end());
  if (ctx_enc.empty()) ctx_enc = {prefix_token(tk)};  // context of whitespace only
  if (add_bos && tk.bos_id() >= 0) ctx_enc.insert(ctx_enc.begin(), tk.bos_id());
  return {ctx_enc, cont_enc};
}

std::vector<LoglikelihoodRequest> rolling_windows(const std::vector<int64_t>& tokens, int64_t prefix,
                                                  int64_t max_length) {
  std::vector<LoglikelihoodRequest> out;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return out;
  const int64_t L = max_length;
  const int64_t pred_len = L;  // max_seq_len - context_len + 1 with context_len = 1
  auto slice = [&](int64_t a, int64_t b) {
    a = std::max<int64_t>(0, a);
    return std::vector<int64_t>(tokens.begin() + a, tokens.begin() + b);
  };
  // First window: [prefix] + tokens[:first-1] predicts tokens[:first]; disjoint: context = [prefix].
  const int64_t first = std::min(L, n);
  out.push_back({{prefix}, slice(0, first)});
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t wlen = std::min(n - predicted, pred_len);
    const int64_t end = predicted + wlen;
    // input tokens[end - L - 1 : end - 1], predictions tokens[end - wlen : end]; make_disjoint_window
    // keeps the input's first len(input) - (wlen - 1) tokens as the context.
    std::vector<int64_t> input = slice(end - L - 1, end - 1);
    const int64_t ctx_len = static_cast<int64_t>(input.size()) - (wlen - 1);
    input.resize(static_cast<size_t>(ctx_len));
    out.push_back({input, slice(end - wlen, end)});
    predicted += wlen;
  }
  return out;
}

std::string generate_until(const infer::Engine& m, const tok::Tokenizer& tk, const std::vector<int64_t>& context,
                           const std::vector<std::string>& until, int max_gen_toks) {
  const int64_t L = task_max_length(m);
  const int64_t V = m.config().vocab_size;
  LLMOPT_CHECK_INPUT(max_gen_toks >= 1 && max_gen_toks < L, "[eval] max_gen_toks {} must be in [1, {}) (the model's "
                     "context length)", max_gen_toks, L);
  const int64_t max_ctx = L - max_gen_toks;
  std::vector<int64_t> ctx = context;
  if (static_cast<int64_t>(ctx.size()) > max_ctx) ctx.erase(ctx.begin(), ctx.end() - max_ctx);
  LLMOPT_CHECK_INPUT(!ctx.empty(), "[eval] generation with an empty context");
  auto cache = m.make_cache(L);
  std::vector<float> logits(static_cast<size_t>(V));
  m.prefill(ctx.data(), static_cast<int64_t>(ctx.size()), *cache, logits.data(), false);
  std::vector<int32_t> gen;
  auto stopped = [&](const std::string& text) {
    for (const auto& s : until)
      if (!s.empty() && text.find(s) != std::string::npos) return true;
    return false;
  };
  for (int step = 0; step < max_gen_toks; ++step) {
    int64_t arg = 0;
    for (int64_t v = 1; v < V; ++v)
      if (logits[static_cast<size_t>(v)] > logits[static_cast<size_t>(arg)]) arg = v;
    if (arg == tk.eos_id()) break;
    gen.push_back(static_cast<int32_t>(arg));
    if (stopped(tk.decode(gen))) break;
    if (cache->length() >= cache->capacity() || step + 1 == max_gen_toks) break;
    m.decode(arg, *cache, logits.data());
  }
  std::string text = tk.decode(gen);
  for (const auto& s : until) {
    if (s.empty()) continue;
    const auto p = text.find(s);
    if (p != std::string::npos) text.resize(p);
  }
  return text;
}

// ------------------------------------------------------------------ metrics

double mean_stderr(const std::vector<double>& v) {
  const size_t n = v.size();
  if (n < 2) return 0;
  double mu = 0;
  for (double x : v) mu += x;
  mu /= static_cast<double>(n);
  double ss = 0;
  for (double x : v) ss += (x - mu) * (x - mu);
  return std::sqrt(ss / static_cast<double>(n - 1)) / std::sqrt(static_cast<double>(n));
}

namespace {

struct RegexMatch {
  size_t start = 0, end = 0;
  std::vector<std::optional<std::string>> groups;  // capture groups 1..n
};

// Python's re.finditer over bytes (PCRE2 without UTF: the patterns of the shipped tasks are ASCII).
class Regex {
 public:
  explicit Regex(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(), 0, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR buf[256];
      pcre2_get_error_message(err, buf, sizeof buf);
      throw_input("[tasks] regex '{}': {} at offset {}", pattern, reinterpret_cast<const char*>(buf), off);
    }
    pcre2_pattern_info(code_, PCRE2_INFO_CAPTURECOUNT, &groups_);
  }
  ~Regex() { pcre2_code_free(code_); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  uint32_t group_count() const { return groups_; }

  std::vector<RegexMatch> find_all(const std::string& s) const {
    std::vector<RegexMatch> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t pos = 0;
    while (pos <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos, 0, md, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      RegexMatch m;
      m.start = ov[0];
      m.end = ov[1];
      for (uint32_t g = 1; g <= groups_; ++g) {
        if (static_cast<int>(g) < rc && ov[2 * g] != PCRE2_UNSET)
          m.groups.emplace_back(s.substr(ov[2 * g], ov[2 * g + 1] - ov[2 * g]));
        else
          m.groups.emplace_back(std::nullopt);
      }
      out.push_back(std::move(m));
      pos = ov[1] > ov[0] ? ov[1] : ov[1] + 1;
    }
    pcre2_match_data_free(md);
    return out;
  }

  std::string remove_all(const std::string& s) const {
    std::string out;
    size_t last = 0;
    for (const auto& m : find_all(s)) {
      out.append(s, last, m.start - last);
      last = m.end;
    }
    out.append(s, last, std::string::npos);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
  uint32_t groups_ = 0;
};

std::string py_strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_py_space(s[b])) ++b;
  while (e > b && is_py_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

bool is_ascii_punct(unsigned char c) { return c < 128 && std::ispunct(c); }

std::string ascii_lower(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_py_space(s[i])) ++i;
    const size_t b = i;
    while (i < s.size() && !is_py_space(s[i])) ++i;
    if (i > b) out.push_back(s.substr(b, i - b));
  }
  return out;
}

// Unicode code points of UTF-8 text (Python's len of a str).
int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

std::string apply_regex_filter(const std::string& text, const RegexFilter& f) {
  const Regex re(f.regex);
  const auto matches = re.find_all(text);
  if (matches.empty()) return f.fallback;
  int64_t k = f.group_select;
  const int64_t n = static_cast<int64_t>(matches.size());
  if (k < 0) k += n;
  if (k < 0 || k >= n) return f.fallback;  // Python would raise IndexError
  const auto& m = matches[static_cast<size_t>(k)];
  std::string s;
  if (re.group_count() == 0) {
    s = text.substr(m.start, m.end - m.start);
  } else if (re.group_count() == 1) {
    s = m.groups[0].value_or("");
  } else {
    bool found = false;
    for (const auto& g : m.groups)
      if (g && !g->empty()) {
        s = *g;
        found = true;
        break;
      }
    if (!found) return f.fallback;
  }
  return py_strip(s);
}

bool exact_match(const std::string& prediction, const std::string& reference, const ExactMatchOptions& o) {
  std::string p = prediction, r = reference;
  for (const auto& pat : o.regexes_to_ignore) {
    const Regex re(pat);
    p = re.remove_all(p);
    r = re.remove_all(r);
  }
  if (o.ignore_case) {
    p = ascii_lower(p);
    r = ascii_lower(r);
  }
  if (o.ignore_punctuation) {
    auto strip_punct = [](const std::string& s) {
      std::string out;
      for (char c : s)
        if (!is_ascii_punct(static_cast<unsigned char>(c))) out += c;
      return out;
    };
    p = strip_punct(p);
    r = strip_punct(r);
  }
  return p == r;
}

std::string squad_normalize(const std::string& s) {
  std::string t;
  for (char c : ascii_lower(s))
    if (!is_ascii_punct(static_cast<unsigned char>(c))) t += c;
  // \b(a|an|the)\b → ' ' (word characters: letters, digits, '_', and non-ASCII bytes)
  auto word = [](unsigned char c) { return std::isalnum(c) || c == '_' || c >= 0x80; };
  std::string u;
  size_t i = 0;
  while (i < t.size()) {
    if (!word(static_cast<unsigned char>(t[i]))) {
      u += t[i++];
      continue;
    }
    const size_t b = i;
    while (i < t.size() && word(static_cast<unsigned char>(t[i]))) ++i;
    const std::string w = t.substr(b, i - b);
    u += (w == "a" || w == "an" || w == "the") ? std::string(" ") : w;
  }
  std::string out;
  for (const auto& w : split_ws(u)) out += (out.empty() ? "" : " ") + w;
  return out;
}

std::vector<std::string> rouge_tokenize(const std::string& text) {
  // rouge_score.tokenize: lower(), re.sub(r"[^a-z0-9]+", " "), split(). Non-ASCII bytes are
  // separators, as in rouge-score (its pattern keeps ASCII letters and digits only).
  std::vector<std::string> out;
  std::string cur;
  for (unsigned char ch : text) {
    const unsigned char c = (ch >= 'A' && ch <= 'Z') ? static_cast<unsigned char>(ch - 'A' + 'a') : ch;
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      cur += static_cast<char>(c);
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

RougeScore rouge_l(const std::string& prediction, const std::string& reference) {
  const auto p = rouge_tokenize(prediction), r = rouge_tokenize(reference);
  RougeScore s;
  if (p.empty() || r.empty()) return s;
  // LCS by dynamic programming over two rows.
  std::vector<int64_t> prev(r.size() + 1, 0), cur(r.size() + 1, 0);
  for (size_t i = 1; i <= p.size(); ++i) {
    for (size_t j = 1; j <= r.size(); ++j)
      cur[j] = p[i - 1] == r[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  const double lcs = static_cast<double>(prev[r.size()]);
  s.precision = lcs / static_cast<double>(p.size());
  s.recall = lcs / static_cast<double>(r.size());
  s.fmeasure = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0;
  return s;
}

double rouge_l_best(const std::string& prediction, const std::vector<std::string>& references) {
  double best = 0;
  for (const auto& r : references) best = std::max(best, rouge_l(prediction, r).fmeasure);
  return best;
}

double squad_f1(const std::string& prediction, const std::vector<std::string>& references) {
  const std::vector<std::string> refs = references.empty() ? std::vector<std::string>{""} : references;
  const auto pred = split_ws(squad_normalize(prediction));
  double best = 0;
  for (const auto& ref : refs) {
    const auto gold = split_ws(squad_normalize(ref));
    double f1 = 0;
    if (gold.empty() || pred.empty()) {
      f1 = gold == pred ? 1.0 : 0.0;
    } else {
      std::map<std::string, int64_t> count;
      for (const auto& w : gold) ++count[w];
      int64_t same = 0;
      for (const auto& w : pred) {
        auto it = count.find(w);
        if (it != count.end() && it->second > 0) {
          --it->second;
          ++same;
        }
      }
      if (same > 0) {
        const double precision = static_cast<double>(same) / static_cast<double>(pred.size());
        const double recall = static_cast<double>(same) / static_cast<double>(gold.size());
        f1 = 2 * precision * recall / (precision + recall);
      }
    }
    best = std::max(best, f1);
  }
  return best;
}

double squad_exact(const std::string& prediction, const std::vector<std::string>& references) {
  const std::vector<std::string> refs = references.empty() ? std::vector<std::string>{""} : references;
  const std::string p = squad_normalize(prediction);
  for (const auto& r : refs)
    if (squad_normalize(r) == p) return 1.0;
  return 0.0;
}

// ------------------------------------------------------------------ tasks

namespace {

// One document turned into requests.
struct Instance {
  std::string prompt;                // the context (multiple_input: the few-shot prefix + doc_to_text)
  std::vector<std::string> choices;  // multiple_choice (multiple_input: the contexts)
  int64_t gold = -1;
  std::string target;                // loglikelihood continuation / rolling text / multiple_input continuation
  std::vector<std::string> references;  // generate_until
  size_t first = 0, count = 0;       // its loglikelihood requests
};

std::vector<std::string> doc_choices(const TaskSpec& t, const json& doc, const std::string& where) {
  std::vector<std::string> out;
  const std::string what = t.file + " doc_to_choice, document " + where;
  if (!t.choice_list.empty()) {
    for (const auto& c : t.choice_list) out.push_back(render_template(c, doc, what));
  } else {
    const json v = render_value(t.doc_to_choice, doc, what);
    LLMOPT_CHECK_INPUT(v.is_array(), "[tasks] {}: doc_to_choice must give a list, got {}", what, v.dump());
    for (const auto& e : v) out.push_back(e.is_string() ? e.get<std::string>() : e.dump());
  }
  LLMOPT_CHECK_INPUT(!out.empty(), "[tasks] task '{}': document {} has no choices (empty choices)", t.name, where);
  return out;
}

int64_t doc_gold(const TaskSpec& t, const json& doc, const std::vector<std::string>& choices, const std::string& where) {
  const std::string what = t.file + " gold, document " + where;
  const json v = render_value(t.gold, doc, what);
  int64_t g = -1;
  if (v.is_number_integer()) {
    g = v.get<int64_t>();
  } else if (v.is_string()) {
    const std::string s = v.get<std::string>();
    const auto it = std::find(choices.begin(), choices.end(), s);
    if (it != choices.end()) {
      g = it - choices.begin();
    } else {
      try {
        size_t used = 0;
        g = std::stoll(s, &used);
        if (used != s.size()) g = -1;
      } catch (const std::exception&) {
        g = -1;
      }
    }
  }
  LLMOPT_CHECK_INPUT(g >= 0 && g < static_cast<int64_t>(choices.size()),
                     "[tasks] {}: gold {} is not a choice index in [0, {})", what, v.dump(), choices.size());
  return g;
}

std::vector<std::string> doc_references(const TaskSpec& t, const json& doc, const std::string& where) {
  const json v = render_value(t.doc_to_target, doc, t.file + " doc_to_target, document " + where);
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v) out.push_back(e.is_string() ? e.get<std::string>() : e.dump());
  } else {
    out.push_back(v.is_string() ? v.get<std::string>() : v.dump());
  }
  return out;
}

// The labelled example lm-eval's ContextSampler writes for a few-shot document (without the
// few-shot delimiter).
std::string fewshot_example(const TaskSpec& t, const json& doc, const std::string& where) {
  const std::string text = t.doc_to_text.empty() ? "" : render_template(t.doc_to_text, doc, t.file + " doc_to_text");
  switch (t.output_type) {
    case OutputType::MultipleChoice: {
      const auto ch = doc_choices(t, doc, where);
      const int64_t g = doc_gold(t, doc, ch, where);
      if (t.multiple_input)
        return text + ch[static_cast<size_t>(g)] + t.target_delimiter +
               render_template(t.doc_to_target, doc, t.file + " doc_to_target");
      return text + t.target_delimiter + ch[static_cast<size_t>(g)];
    }
    case OutputType::Loglikelihood:
      return text + t.target_delimiter + render_template(t.doc_to_target, doc, t.file + " doc_to_target");
    case OutputType::GenerateUntil: {
      const auto refs = doc_references(t, doc, where);
      return text + t.target_delimiter + (refs.empty() ? std::string() : refs[0]);
    }
    case OutputType::LoglikelihoodRolling: break;
  }
  return text;
}

// k distinct documents of the pool, drawn with a generator seeded by (seed, doc index) so that a
// document's prompt does not depend on --limit or on the other documents; `exclude` (the document
// itself when the pool is the evaluated set) is never drawn.
std::vector<size_t> sample_fewshot(size_t pool, int k, uint64_t seed, size_t doc_index, std::optional<size_t> exclude) {
  std::seed_seq ss{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(doc_index),
                   static_cast<uint32_t>(static_cast<uint64_t>(doc_index) >> 32)};
  std::mt19937_64 rng(ss);
  std::vector<size_t> out;
  std::set<size_t> used;
  if (exclude) used.insert(*exclude);
  while (static_cast<int>(out.size()) < k) {
    const size_t j = static_cast<size_t>(rng() % pool);
    if (used.insert(j).second) out.push_back(j);
  }
  return out;
}

int64_t argmax_first(const std::vector<double>& v) {
  int64_t a = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[static_cast<size_t>(a)]) a = static_cast<int64_t>(i);
  return a;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}


// The prompts of an instruction jsonl, each with its "FILE:LINE".
std::map<std::string, std::string> trained_prompts(const std::string& path) {
  std::ifstream in(path);
  LLMOPT_CHECK_INPUT(in.good(), "[eval] --trained-on {}: cannot read", path);
  std::map<std::string, std::string> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw_input("[eval] {}:{}: not valid JSON ({})", path, lineno, e.what());
    }
    if (j.is_object() && j.contains("prompt") && j["prompt"].is_string())
      out.emplace(j["prompt"].get<std::string>(), fmt::format("{}:{}", path, lineno));
  }
  return out;
}

}  // namespace

void check_not_trained_on(const TaskSpec& t, const DocSet& docs, const std::string& trained_on) {
  if (t.output_type == OutputType::LoglikelihoodRolling) return;
  const auto trained = trained_prompts(trained_on);
  for (size_t i = 0; i < docs.docs.size(); ++i) {
    const auto it = trained.find(instruction_example(t, docs.docs[i], docs.where[i]).prompt);
    LLMOPT_CHECK_INPUT(it == trained.end(),
                       "[eval] task '{}': document {} is in the training data ({}): evaluate items that were not "
                       "trained on (the held_out split the training data was built without)",
                       t.name, docs.where[i], it->second);
  }
}

InstructionExample instruction_example(const TaskSpec& t, const json& doc, const std::string& where) {
  InstructionExample e;
  e.source = where;
  const std::string text =
      t.doc_to_text.empty() ? "" : render_template(t.doc_to_text, doc, t.file + " doc_to_text, document " + where);
  const std::string target_what = t.file + " doc_to_target, document " + where;
  switch (t.output_type) {
    case OutputType::MultipleChoice: {
      const auto ch = doc_choices(t, doc, where);
      const int64_t g = doc_gold(t, doc, ch, where);
      if (t.multiple_input) {
        e.prompt = text + ch[static_cast<size_t>(g)];
        e.response = t.target_delimiter + render_template(t.doc_to_target, doc, target_what);
      } else {
        e.prompt = text;
        e.response = t.target_delimiter + ch[static_cast<size_t>(g)];
      }
      break;
    }
    case OutputType::Loglikelihood:
      e.prompt = text;
      e.response = render_template(t.doc_to_target, doc, target_what);
      break;
    case OutputType::GenerateUntil: {
      const auto refs = doc_references(t, doc, where);
      LLMOPT_CHECK_INPUT(!refs.empty() && !refs[0].empty(), "[tasks] task '{}': document {} has no reference answer",
                         t.name, where);
      e.prompt = text;
      e.response = t.target_delimiter + refs[0];
      break;
    }
    case OutputType::LoglikelihoodRolling:
      throw_input("[tasks] task '{}' ({}) is loglikelihood_rolling: a text to score, with no prompt/response pair "
                  "to train on (train on the text itself)",
                  t.name, t.file);
  }
  return e;
}

std::vector<InstructionExample> instruction_examples(const TaskSpec& t, const TaskSplit& split, int64_t* dropped) {
  const SplitDocs mine = load_split_docs(t, split);
  std::set<std::string> other_prompts;
  const std::string part = parse_split_part(split.part, t.file);
  if (part != "all") {
    TaskSplit other = split;
    other.part = part == "train" ? "held_out" : "train";
    const SplitDocs theirs = load_split_docs(t, other);
    for (size_t i = 0; i < theirs.docs.docs.size(); ++i)
      other_prompts.insert(instruction_example(t, theirs.docs.docs[i], theirs.docs.where[i]).prompt);
  }
  std::vector<InstructionExample> out;
  int64_t n_dropped = 0;
  for (size_t i = 0; i < mine.docs.docs.size(); ++i) {
    InstructionExample e = instruction_example(t, mine.docs.docs[i], mine.docs.where[i]);
    e.doc = mine.index[i];
    if (other_prompts.count(e.prompt)) {
      ++n_dropped;
      continue;
    }
    out.push_back(std::move(e));
  }
  if (dropped) *dropped = n_dropped;
  return out;
}

json instruction_json(const TaskSpec& t, const InstructionExample& e) {
  json j = {{"prompt", e.prompt}, {"response", e.response}, {"task", t.name}, {"doc", e.doc}, {"source", e.source}};
  // A log-likelihood task scores the response tokens alone: no EOS target after them.
  if (t.output_type != OutputType::GenerateUntil) j["eos"] = false;
  return j;
}

TaskResult run_task(const infer::Engine& m, const tok::Tokenizer& tk, const TaskSpec& t, const TaskRunOptions& o,
                    const ProgressFn& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  TaskResult r;
  r.name = t.name;
  r.output_type = output_type_name(t.output_type);
  const SplitDocs part = load_split_docs(t, o.split);
  const DocSet& docs = part.docs;
  LLMOPT_CHECK_INPUT(!docs.docs.empty(), "[tasks] task '{}': no documents in {}", t.name, part.file);
  if (o.split.part != "all") log::info("[eval] {}", describe_split(t, o.split, docs.docs.size()));
  if (!o.trained_on.empty()) check_not_trained_on(t, docs, o.trained_on);
  const int k = o.num_fewshot >= 0 ? o.num_fewshot : t.num_fewshot;
  r.num_fewshot = k;
  DocSet pool_own;
  const bool same_pool = t.fewshot_data.empty();
  if (!same_pool && k > 0) pool_own = load_docs(t.fewshot_data, t.format, t.text_split);
  const DocSet& pool = same_pool ? docs : pool_own;
  if (k > 0) {
    LLMOPT_CHECK_INPUT(t.output_type != OutputType::LoglikelihoodRolling,
                       "[tasks] task '{}': loglikelihood_rolling tasks are zero-shot (--num-fewshot {})", t.name, k);
    const size_t avail = pool.docs.size() - (same_pool ? 1 : 0);
    LLMOPT_CHECK_INPUT(static_cast<size_t>(k) <= avail,
                       "[tasks] task '{}': {} few-shot examples asked, the few-shot pool ({}) has {}{}", t.name, k,
                       same_pool ? t.data : t.fewshot_data, avail,
                       same_pool ? " besides the evaluated document" : "");
  }
  const size_t n = o.limit > 0 ? std::min<size_t>(static_cast<size_t>(o.limit), docs.docs.size()) : docs.docs.size();
  r.samples = static_cast<int64_t>(n);

  // Documents → instances → loglikelihood requests (text).
  std::vector<Instance> inst(n);
  std::vector<std::pair<std::string, std::string>> text_requests;
  std::vector<LoglikelihoodRequest> requests;
  const int64_t L = task_max_length(m);
  for (size_t i = 0; i < n; ++i) {
    const json& doc = docs.docs[i];
    const std::string& where = docs.where[i];
    Instance& in = inst[i];
    std::string fewshot;
    if (k > 0) {
      for (size_t j : sample_fewshot(pool.docs.size(), k, o.seed, i, same_pool ? std::optional<size_t>(i) : std::nullopt))
        fewshot += fewshot_example(t, pool.docs[j], pool.where[j]) + t.fewshot_delimiter;
    }
    const std::string text =
        t.doc_to_text.empty() ? "" : render_template(t.doc_to_text, doc, t.file + " doc_to_text, document " + where);
    in.prompt = fewshot + text;
    in.first = text_requests.size();
    switch (t.output_type) {
      case OutputType::MultipleChoice:
        in.choices = doc_choices(t, doc, where);
        in.gold = doc_gold(t, doc, in.choices, where);
        if (t.multiple_input) {
          in.target = render_template(t.doc_to_target, doc, t.file + " doc_to_target, document " + where);
          for (const auto& c : in.choices) text_requests.emplace_back(in.prompt + c, t.target_delimiter + in.target);
        } else {
          for (const auto& c : in.choices) text_requests.emplace_back(in.prompt, t.target_delimiter + c);
        }
        break;
      case OutputType::Loglikelihood:
        in.target = render_template(t.doc_to_target, doc, t.file + " doc_to_target, document " + where);
        text_requests.emplace_back(in.prompt, in.target);
        break;
      case OutputType::LoglikelihoodRolling: {
        in.target = render_template(t.doc_to_target, doc, t.file + " doc_to_target, document " + where);
        // Rolling windows are token requests; record them directly.
        break;
      }
      case OutputType::GenerateUntil:
        in.references = doc_references(t, doc, where);
        break;
    }
    in.count = text_requests.size() - in.first;
  }
  for (const auto& [ctx, cont] : text_requests) {
    auto [ce, ne] = encode_pair(tk, ctx, cont, o.add_bos);
    LLMOPT_CHECK_INPUT(!ne.empty(), "[eval] task '{}': continuation '{}' encodes to no tokens", t.name, cont);
    requests.push_back({std::move(ce), std::move(ne)});
  }
  // A multiple-choice `scoring` rule other than lm-eval's may score from the options' common token
  // prefix (scoring.from common_prefix, or scoring.short_tail), which can lie inside a
  // multiple_input context: such a request is split at that prefix instead, so the tokens after it
  // get their log-probabilities. lm_split = where lm-eval's continuation starts in the whole
  // sequence; common = the options' common prefix, per document.
  std::vector<int64_t> lm_split(requests.size()), common(n, 0);
  for (size_t q = 0; q < requests.size(); ++q) lm_split[q] = static_cast<int64_t>(requests[q].context.size());
  if (t.output_type == OutputType::MultipleChoice && !t.scoring.is_default()) {
    for (size_t i = 0; i < n; ++i) {
      const Instance& in = inst[i];
      std::vector<std::vector<int64_t>> full(in.count);
      for (size_t c = 0; c < in.count; ++c) {
        const auto& q = requests[in.first + c];
        full[c] = q.context;
        full[c].insert(full[c].end(), q.continuation.begin(), q.continuation.end());
      }
      int64_t cp = static_cast<int64_t>(full[0].size());
      for (size_t c = 1; c < in.count; ++c) {
        int64_t k = 0;
        while (k < cp && k < static_cast<int64_t>(full[c].size()) &&
               full[c][static_cast<size_t>(k)] == full[0][static_cast<size_t>(k)])
          ++k;
        cp = k;
      }
      common[i] = cp;
      const int64_t at = std::max<int64_t>(cp, 1);
      for (size_t c = 0; c < in.count; ++c) {
        auto& q = requests[in.first + c];
        if (at < static_cast<int64_t>(q.context.size()) && at < static_cast<int64_t>(full[c].size())) {
          q.context.assign(full[c].begin(), full[c].begin() + at);
          q.continuation.assign(full[c].begin() + at, full[c].end());
        }
      }
    }
  }
  // Rolling documents: their windows after the text requests.
  std::vector<std::pair<size_t, size_t>> rolling_span(n);
  if (t.output_type == OutputType::LoglikelihoodRolling) {
    for (size_t i = 0; i < n; ++i) {
      auto w = rolling_windows(encode_ids(tk, inst[i].target), prefix_token(tk), L);
      rolling_span[i] = {requests.size(), w.size()};
      for (auto& q : w) requests.push_back(std::move(q));
    }
  }
  const int64_t total_units = static_cast<int64_t>(requests.size()) +
                              (t.output_type == OutputType::GenerateUntil ? static_cast<int64_t>(n) : 0);
  const auto ll = score_loglikelihood(m, requests, o.batch_size, [&](int64_t d, int64_t) {
    if (progress) progress(d, total_units);
  });

  // Generation.
  std::vector<std::string> generations(t.output_type == OutputType::GenerateUntil ? n : 0);
  if (t.output_type == OutputType::GenerateUntil) {
    for (size_t i = 0; i < n; ++i) {
      std::vector<int64_t> ctx = encode_ids(tk, inst[i].prompt);
      if (o.add_bos && tk.bos_id() >= 0) ctx.insert(ctx.begin(), tk.bos_id());
      if (ctx.empty()) ctx = {prefix_token(tk)};
      generations[i] = generate_until(m, tk, ctx, t.until, t.max_gen_toks);
      if (progress) progress(static_cast<int64_t>(requests.size() + i + 1), total_units);
    }
  }

  // Metrics.
  auto wants = [&](const std::string& name) { return std::find(t.metrics.begin(), t.metrics.end(), name) != t.metrics.end(); };
  std::map<std::string, std::vector<double>> per_doc;  // metric key → per-document values (mean metrics)
  std::vector<json> logs;
  double sum_ll = 0, chance_sum = 0;
  int64_t sum_words = 0, sum_bytes = 0;
  std::vector<double> lambada_ll;
  std::vector<std::string> filter_names;
  for (const auto& f : t.filters) filter_names.push_back(f.name);
  if (filter_names.empty()) filter_names.push_back("none");
  for (size_t i = 0; i < n; ++i) {
    const Instance& in = inst[i];
    json log = {{"doc_id", i}, {"source", docs.where[i]}, {"prompt", in.prompt}};
    json doc_metrics = json::object();
    switch (t.output_type) {
      case OutputType::MultipleChoice: {
        std::vector<double> lls, normed;
        json scores = json::array();
        // A non-default scoring rule: which tokens of each option count (see ChoiceScoring).
        bool short_tail = false;
        for (size_t c = 0; c < in.count && t.scoring.short_tail > 0; ++c) {
          const auto& q = requests[in.first + c];
          const int64_t len = static_cast<int64_t>(q.context.size() + q.continuation.size());
          short_tail = short_tail || len - common[i] <= t.scoring.short_tail;
        }
        for (size_t c = 0; c < in.count; ++c) {
          const auto& res = ll[in.first + c];
          const auto& q = requests[in.first + c];
          const int64_t nctx = static_cast<int64_t>(q.context.size()), split = lm_split[in.first + c];
          // lm-eval's loglikelihood: the tokens after its own context/continuation split.
          ChoiceScoring lm;
          const double lm_ll = t.scoring.is_default() ? res.logprob : choice_score(res.token_logprobs, nctx, split, lm);
          json entry = {{"loglikelihood", lm_ll}, {"is_greedy", res.is_greedy}, {"tokens", q.continuation.size()}};
          if (t.scoring.is_default()) {
            lls.push_back(res.logprob);
            normed.push_back(res.logprob / static_cast<double>(code_points(in.choices[c])));
          } else {
            const int64_t start = short_tail ? common[i] : t.scoring.common_prefix ? std::max(common[i], split) : split;
            int64_t scored = 0;
            const double sc = choice_score(res.token_logprobs, nctx, start, t.scoring, &scored);
            ChoiceScoring summed = t.scoring;
            summed.mean = false;
            lls.push_back(sc);
            normed.push_back(choice_score(res.token_logprobs, nctx, start, summed) /
                             static_cast<double>(code_points(in.choices[c])));
            entry["score"] = sc;
            entry["scored_tokens"] = scored;
            if (short_tail) entry["short_tail"] = true;
          }
          scores.push_back(std::move(entry));
        }
        const int64_t pred = argmax_first(lls), pred_norm = argmax_first(normed);
        doc_metrics["acc"] = pred == in.gold ? 1.0 : 0.0;
        doc_metrics["acc_norm"] = pred_norm == in.gold ? 1.0 : 0.0;
        chance_sum += 1.0 / static_cast<double>(in.choices.size());
        if (t.multiple_input) {
          log["contexts"] = in.choices;
          log["continuation"] = t.target_delimiter + in.target;
        } else {
          log["choices"] = in.choices;
        }
        log["gold"] = in.gold;
        log["scores"] = scores;
        log["prediction"] = pred;
        log["prediction_norm"] = pred_norm;
        break;
      }
      case OutputType::Loglikelihood: {
        const auto& res = ll[in.first];
        doc_metrics["acc"] = res.is_greedy ? 1.0 : 0.0;
        lambada_ll.push_back(res.logprob);
        log["continuation"] = in.target;
        log["scores"] = json::array({{{"loglikelihood", res.logprob},
                                      {"is_greedy", res.is_greedy},
                                      {"tokens", requests[in.first].continuation.size()}}});
        log["prediction"] = res.is_greedy;
        break;
      }
      case OutputType::LoglikelihoodRolling: {
        double s = 0;
        for (size_t w = 0; w < rolling_span[i].second; ++w) s += ll[rolling_span[i].first + w].logprob;
        // lm-eval: words = len(re.split(r"\s+", text)), bytes = len(text.encode("utf-8")).
        int64_t words = 1;
        for (size_t c = 0; c < in.target.size();) {
          if (is_py_space(in.target[c])) {
            ++words;
            while (c < in.target.size() && is_py_space(in.target[c])) ++c;
          } else {
            ++c;
          }
        }
        sum_ll += s;
        sum_words += words;
        sum_bytes += static_cast<int64_t>(in.target.size());
        log.erase("prompt");
        log["loglikelihood"] = s;
        log["words"] = words;
        log["bytes"] = in.target.size();
        log["windows"] = rolling_span[i].second;
        break;
      }
      case OutputType::GenerateUntil: {
        const std::string& gen = generations[i];
        json filtered = json::object();
        for (size_t fi = 0; fi < filter_names.size(); ++fi) {
          const std::string p = t.filters.empty() ? gen : apply_regex_filter(gen, t.filters[fi]);
          filtered[filter_names[fi]] = p;
          const std::string suffix = t.filters.empty() ? "" : "," + filter_names[fi];
          if (wants("exact_match")) {
            bool any = false;
            const auto refs = in.references.empty() ? std::vector<std::string>{""} : in.references;
            for (const auto& ref : refs) any = any || exact_match(p, ref, t.exact_match);
            doc_metrics["exact_match" + suffix] = any ? 1.0 : 0.0;
          }
          if (wants("exact")) doc_metrics["exact" + suffix] = squad_exact(p, in.references);
          if (wants("f1")) doc_metrics["f1" + suffix] = squad_f1(p, in.references);
          if (wants("rougeL")) doc_metrics["rougeL" + suffix] = rouge_l_best(p, in.references);
        }
        log["references"] = in.references;
        log["generation"] = gen;
        log["prediction"] = t.filters.empty() ? json(gen) : filtered;
        break;
      }
    }
    for (auto& [key, v] : doc_metrics.items()) {
      const std::string base = key.substr(0, key.find(','));
      if (wants(base)) per_doc[key].push_back(v.get<double>());
    }
    log["metrics"] = doc_metrics;
    logs.push_back(std::move(log));
  }
  for (const auto& [key, values] : per_doc) {
    const auto comma = key.find(',');
    const std::string base = key.substr(0, comma), filter = comma == std::string::npos ? "" : key.substr(comma);
    r.metrics[key] = mean_of(values);
    r.metrics[base + "_stderr" + filter] = mean_stderr(values);
  }
  if (t.output_type == OutputType::Loglikelihood && wants("perplexity")) {
    r.metrics["perplexity"] = std::exp(-mean_of(lambada_ll));
    r.metrics["perplexity_stderr"] = nullptr;  // lm-eval bootstraps it; not computed here
  }
  if (t.output_type == OutputType::LoglikelihoodRolling) {
    if (wants("word_perplexity")) r.metrics["word_perplexity"] = std::exp(-sum_ll / static_cast<double>(sum_words));
    if (wants("byte_perplexity")) r.metrics["byte_perplexity"] = std::exp(-sum_ll / static_cast<double>(sum_bytes));
    if (wants("bits_per_byte")) r.metrics["bits_per_byte"] = -sum_ll / static_cast<double>(sum_bytes) / std::log(2.0);
  }
  if (t.chance) r.chance = *t.chance;
  else if (t.output_type == OutputType::MultipleChoice) r.chance = chance_sum / static_cast<double>(n);
  else r.chance = nullptr;

  if (!o.log_samples_dir.empty()) {
    LLMOPT_CHECK_INPUT(fs::is_directory(o.log_samples_dir), "[eval] --log-samples '{}' is not a directory",
                       o.log_samples_dir);
    r.samples_file = (fs::path(o.log_samples_dir) / (t.name + ".jsonl")).string();
    io::AtomicFile f(r.samples_file);
    for (const auto& l : logs) f.write(l.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
    f.commit();
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

json task_result_json(const TaskResult& r) {
  json j = {{"output_type", r.output_type}, {"samples", r.samples}, {"num_fewshot", r.num_fewshot},
            {"chance", r.chance}, {"seconds", r.seconds}};
  j.update(r.metrics);
  if (!r.samples_file.empty()) j["samples_file"] = r.samples_file;
  return j;
}

std::string task_result_line(const TaskResult& r) {
  std::string s = fmt::format("{:<16}", r.name);
  for (const auto& [key, v] : r.metrics.items()) {
    if (key.find("_stderr") != std::string::npos || !v.is_number()) continue;
    const auto comma = key.find(',');
    const std::string se_key =
        key.substr(0, comma) + "_stderr" + (comma == std::string::npos ? "" : key.substr(comma));
    s += fmt::format("  {} {:.4f}", key, v.get<double>());
    if (r.metrics.contains(se_key) && r.metrics[se_key].is_number())
      s += fmt::format(" ± {:.4f}", r.metrics[se_key].get<double>());
  }
  s += fmt::format("  (n={}, {}-shot", r.samples, r.num_fewshot);
  if (r.chance.is_number()) s += fmt::format(", chance {:.4f}", r.chance.get<double>());
  return s + ")";
}

}  // namespace llmopt::eval
