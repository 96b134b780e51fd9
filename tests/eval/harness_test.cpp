// Task harness (src/eval/harness.h, tasks.h) against references written here: a fake engine whose
// logits are a closed-form function of (previous token, position), scored in float64 straight from
// lm-eval's definitions (input = (context + continuation)[-(L+1):][:-1]); rolling windows and
// metrics against values worked out by hand from lm-eval's code; batch-size independence on
// stories260K with the native engine; bad task files → InputError naming file:line.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <unistd.h>

#include "core/error.h"
#include "eval/harness.h"
#include "eval/tasks.h"
#include "infer/llama_cpu.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/vocab.h"

namespace llmopt {
namespace {

namespace fs = std::filesystem;
using eval::LoglikelihoodRequest;

// ------------------------------------------------------------------ fake engine

class FakeCache : public infer::EngineCache {
 public:
  explicit FakeCache(int64_t cap) : cap_(cap) {}
  int64_t length() const override { return static_cast<int64_t>(tokens.size()); }
  int64_t capacity() const override { return cap_; }
  void truncate(int64_t n) override { tokens.resize(static_cast<size_t>(n)); }
  int64_t bytes() const override { return 0; }
  std::vector<int64_t> tokens;

 private:
  int64_t cap_;
};

// logits[v] at position p after token `prev`: 3 sin(0.37 v (prev + 1) + 0.05 p), in float32.
float fake_logit(int64_t prev, int64_t pos, int64_t v) {
  return static_cast<float>(3.0 * std::sin(0.37 * static_cast<double>(v) * static_cast<double>(prev + 1) +
                                           0.05 * static_cast<double>(pos)));
}

class FakeEngine : public infer::Engine {
 public:
  FakeEngine(int64_t vocab, int64_t max_len) {
    c_.vocab_size = vocab;
    c_.max_position_embeddings = max_len;
  }
  const ModelConfig& config() const override { return c_; }
  std::string name() const override { return "fake"; }
  std::unique_ptr<infer::EngineCache> make_cache(int64_t capacity) const override {
    return std::make_unique<FakeCache>(capacity);
  }
  void prefill(const int64_t* tokens, int64_t n, infer::EngineCache& cache, float* logits,
               bool all_positions) const override {
    auto& fc = dynamic_cast<FakeCache&>(cache);
    if (fc.length() + n > fc.capacity()) throw InputError("fake: cache full");
    for (int64_t t = 0; t < n; ++t) {
      fc.tokens.push_back(tokens[t]);
      const int64_t pos = fc.length() - 1;
      if (all_positions || t == n - 1) {
        float* dst = logits + (all_positions ? t * c_.vocab_size : 0);
        for (int64_t v = 0; v < c_.vocab_size; ++v) dst[v] = fake_logit(tokens[t], pos, v);
      }
    }
  }
  void decode(int64_t token, infer::EngineCache& cache, float* logits) const override {
    prefill(&token, 1, cache, logits, false);
  }
  int64_t weight_bytes() const override { return 0; }

 private:
  ModelConfig c_;
};

// lm-eval's _loglikelihood_tokens for one request, in float64 on the fake logits.
std::pair<double, bool> reference_ll(const std::vector<int64_t>& ctx, const std::vector<int64_t>& cont, int64_t L,
                                     int64_t V) {
  std::vector<int64_t> whole = ctx;
  whole.insert(whole.end(), cont.begin(), cont.end());
  const size_t start = whole.size() > static_cast<size_t>(L + 1) ? whole.size() - static_cast<size_t>(L + 1) : 0;
  std::vector<int64_t> inp(whole.begin() + static_cast<std::ptrdiff_t>(start), whole.end() - 1);
  double lp = 0;
  bool greedy = true;
  for (size_t j = 0; j < cont.size(); ++j) {
    const int64_t p = static_cast<int64_t>(inp.size() - cont.size() + j);
    double mx = -1e300;
    int64_t arg = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double x = fake_logit(inp[static_cast<size_t>(p)], p, v);
      if (x > mx) {
        mx = x;
        arg = v;
      }
    }
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(fake_logit(inp[static_cast<size_t>(p)], p, v)) - mx);
    lp += fake_logit(inp[static_cast<size_t>(p)], p, cont[j]) - mx - std::log(s);
    greedy = greedy && arg == cont[j];
  }
  return {lp, greedy};
}

TEST(TaskHarness, LoglikelihoodMatchesDirectComputationIncludingTruncation) {
  const int64_t V = 50, L = 12;
  FakeEngine m(V, L);
  std::vector<LoglikelihoodRequest> reqs = {
      {{1, 2, 3}, {4}},
      {{1, 2, 3}, {5, 6, 7}},                           // shares the context above
      {{9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12}, {1, 2}},  // 14 tokens > L + 1: left-truncated
      {{7}, {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}},       // continuation of L tokens
  };
  const auto got = eval::score_loglikelihood(m, reqs, 16);
  ASSERT_EQ(got.size(), reqs.size());
  // Float32 logits read the same in both; only the float64 summation order may differ.
  constexpr double kTol = 1e-12;
  for (size_t i = 0; i < reqs.size(); ++i) {
    const auto [lp, greedy] = reference_ll(reqs[i].context, reqs[i].continuation, L, V);
    EXPECT_NEAR(got[i].logprob, lp, kTol) << "request " << i;
    EXPECT_EQ(got[i].is_greedy, greedy) << "request " << i;
  }
  // A continuation longer than the model's context: pieces of L tokens, each after all before it.
  std::vector<int64_t> long_cont;
  for (int64_t t = 0; t < 30; ++t) long_cont.push_back((t * 7) % V);
  const auto got_long = eval::score_loglikelihood(m, {{{3, 4}, long_cont}}, 1)[0];
  double lp_long = 0;
  bool greedy_long = true;
  for (size_t a = 0; a < long_cont.size(); a += L) {
    std::vector<int64_t> ctx = {3, 4};
    ctx.insert(ctx.end(), long_cont.begin(), long_cont.begin() + static_cast<std::ptrdiff_t>(a));
    const std::vector<int64_t> piece(long_cont.begin() + static_cast<std::ptrdiff_t>(a),
                                     long_cont.begin() + static_cast<std::ptrdiff_t>(std::min(a + L, long_cont.size())));
    const auto [lp, g] = reference_ll(ctx, piece, L, V);
    lp_long += lp;
    greedy_long = greedy_long && g;
  }
  EXPECT_NEAR(got_long.logprob, lp_long, kTol);
  EXPECT_EQ(got_long.is_greedy, greedy_long);
  EXPECT_THROW(eval::score_loglikelihood(m, {{{1}, {}}}, 1), InputError);
}

TEST(TaskHarness, GreedyFlagTrueForArgmaxContinuation) {
  const int64_t V = 30, L = 16;
  FakeEngine m(V, L);
  // Build the greedy continuation of [3] by hand from the closed form.
  std::vector<int64_t> ctx = {3}, cont;
  int64_t prev = 3;
  for (int64_t p = 0; p < 4; ++p) {
    int64_t arg = 0;
    for (int64_t v = 1; v < V; ++v)
      if (fake_logit(prev, p, v) > fake_logit(prev, p, arg)) arg = v;
    cont.push_back(arg);
    prev = arg;
  }
  const auto got = eval::score_loglikelihood(m, {{ctx, cont}}, 1);
  EXPECT_TRUE(got[0].is_greedy);
  cont.back() = (cont.back() + 1) % V;
  EXPECT_FALSE(eval::score_loglikelihood(m, {{ctx, cont}}, 1)[0].is_greedy);
}

TEST(TaskHarness, RollingWindowsAsLmEval) {
  // get_rolling_token_windows(tokens 1..10, prefix 0, max_seq_len 4, context_len 1) followed by
  // make_disjoint_window, worked out by hand: ([0], 1 2 3 4), ([4], 5 6 7 8), ([6 7 8], 9 10).
  std::vector<int64_t> toks = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const auto w = eval::rolling_windows(toks, 0, 4);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].context, (std::vector<int64_t>{0}));
  EXPECT_EQ(w[0].continuation, (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(w[1].context, (std::vector<int64_t>{4}));
  EXPECT_EQ(w[1].continuation, (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(w[2].context, (std::vector<int64_t>{6, 7, 8}));
  EXPECT_EQ(w[2].continuation, (std::vector<int64_t>{9, 10}));
  // Short text: one window.
  const auto one = eval::rolling_windows({5, 6}, 0, 4);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].context, (std::vector<int64_t>{0}));
  EXPECT_EQ(one[0].continuation, (std::vector<int64_t>{5, 6}));
  EXPECT_TRUE(eval::rolling_windows({}, 0, 4).empty());
}

// ------------------------------------------------------------------ metrics

TEST(TaskMetrics, StderrIsSampleStdOverSqrtN) {
  // [1, 0, 1, 1]: mean 0.75, sample variance (3 * 0.0625 + 0.5625) / 3 = 0.25 → sd 0.5, / 2.
  EXPECT_DOUBLE_EQ(eval::mean_stderr({1, 0, 1, 1}), 0.25);
  EXPECT_DOUBLE_EQ(eval::mean_stderr({1}), 0.0);
}

TEST(TaskMetrics, SquadNormalizationF1AndNoAnswer) {
  EXPECT_EQ(eval::squad_normalize("The  Cat, sat on a mat!"), "cat sat on mat");
  EXPECT_EQ(eval::squad_normalize("theory"), "theory");
  // pred "red cat" vs gold "the red car": common 1 ("red"), P = 1/2, R = 1/2 → 0.5.
  EXPECT_DOUBLE_EQ(eval::squad_f1("red cat", {"the red car"}), 0.5);
  // best reference counts
  EXPECT_DOUBLE_EQ(eval::squad_f1("red cat", {"dog", "Red cat."}), 1.0);
  EXPECT_DOUBLE_EQ(eval::squad_exact("The Red cat", {"red cat"}), 1.0);
  // unanswerable: only an empty answer scores
  EXPECT_DOUBLE_EQ(eval::squad_f1("", {}), 1.0);
  EXPECT_DOUBLE_EQ(eval::squad_f1("the", {}), 1.0);  // normalizes to empty
  EXPECT_DOUBLE_EQ(eval::squad_f1("paris", {}), 0.0);
  EXPECT_DOUBLE_EQ(eval::squad_exact("paris", {}), 0.0);
}

TEST(TaskMetrics, RougeLAsRougeScoreByHand) {
  // rouge-score's tokenizer: lower case, runs of non-[a-z0-9] separate.
  EXPECT_EQ(eval::rouge_tokenize("The cat's  HAT, 2x!"), (std::vector<std::string>{"the", "cat", "s", "hat", "2x"}));
  // "the cat sat on the mat" vs "the cat on the mat": LCS 5 ("the cat on the mat"),
  // P = 5/6, R = 5/5, F = 2 * (5/6) / (5/6 + 1) = 10/11.
  const auto s = eval::rouge_l("the cat sat on the mat", "the cat on the mat");
  EXPECT_DOUBLE_EQ(s.precision, 5.0 / 6);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  EXPECT_NEAR(s.fmeasure, 10.0 / 11, 1e-15);
  // Order matters (subsequence, not bag): "a b c d" vs "d c b a" share only one in order → LCS 1,
  // P = R = 1/4, F = 1/4.
  EXPECT_NEAR(eval::rouge_l("a b c d", "d c b a").fmeasure, 0.25, 1e-15);
  // Nothing shared, empty sides.
  EXPECT_DOUBLE_EQ(eval::rouge_l("x y", "a b").fmeasure, 0.0);
  EXPECT_DOUBLE_EQ(eval::rouge_l("", "a b").fmeasure, 0.0);
  EXPECT_DOUBLE_EQ(eval::rouge_l("...", "a").fmeasure, 0.0);
  // Best reference: "police killed the gunman" vs refs; LCS with "the gunman was shot by police"
  // is 2 ("the gunman"... or "police"): P = 2/4, R = 2/6, F = 0.4; with "police kill the gunman" 3
  // ("police the gunman"): P = R = 3/4, F = 0.75.
  EXPECT_NEAR(eval::rouge_l("police killed the gunman", "the gunman was shot by police").fmeasure, 0.4, 1e-15);
  EXPECT_NEAR(eval::rouge_l_best("police killed the gunman", {"the gunman was shot by police", "police kill the gunman"}),
              0.75, 1e-15);
  EXPECT_DOUBLE_EQ(eval::rouge_l_best("anything", {}), 0.0);
}

TEST(TaskMetrics, ChoiceScoreRules) {
  const std::vector<double> lp = {-1, -2, -3, -4};  // continuation tokens after a 5-token context
  eval::ChoiceScoring sum;
  EXPECT_DOUBLE_EQ(eval::choice_score(lp, 5, 5, sum), -10);
  eval::ChoiceScoring mean;
  mean.mean = true;
  EXPECT_DOUBLE_EQ(eval::choice_score(lp, 5, 5, mean), -2.5);
  eval::ChoiceScoring llama_wino = mean;
  llama_wino.drop_last = 1;
  int64_t n = 0;
  EXPECT_DOUBLE_EQ(eval::choice_score(lp, 5, 5, llama_wino, &n), -2.0);  // (-1 - 2 - 3) / 3
  EXPECT_EQ(n, 3);
  // From a common prefix two tokens into the continuation: (-3 - 4) / 2.
  EXPECT_DOUBLE_EQ(eval::choice_score(lp, 5, 7, mean), -3.5);
  // drop_last keeps at least one token.
  EXPECT_DOUBLE_EQ(eval::choice_score({-7}, 5, 5, llama_wino, &n), -7);
  EXPECT_EQ(n, 1);
}

TEST(TaskMetrics, Gsm8kExtractionAndExactMatch) {
  eval::RegexFilter strict{"strict-match", "#### (\\-?[0-9\\.\\,]+)"};
  eval::RegexFilter flexible{"flexible-extract", "(-?[$0-9.,]{2,})|(-?[0-9]+)", -1};
  const std::string gen = " She has 3 apples, pays $1,234.5 and keeps 7.\n#### 1,241.5";
  EXPECT_EQ(eval::apply_regex_filter(gen, strict), "1,241.5");
  EXPECT_EQ(eval::apply_regex_filter(" so 3 plus 4 is 7", flexible), "7");
  EXPECT_EQ(eval::apply_regex_filter(" costs $12 in total", flexible), "$12");
  EXPECT_EQ(eval::apply_regex_filter("no number", strict), "[invalid]");
  eval::ExactMatchOptions em;
  em.ignore_case = true;
  em.regexes_to_ignore = {",", "\\$", "(?s).*#### ", "\\.$"};
  const std::string ref = "Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes $18.\n#### 1,018";
  EXPECT_TRUE(eval::exact_match("1,018", ref, em));
  EXPECT_TRUE(eval::exact_match("$1018.", ref, em));
  EXPECT_FALSE(eval::exact_match("1019", ref, em));
}

// ------------------------------------------------------------------ task files

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("llmopt_tasks_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

TEST(TaskFiles, BadInputNamesFileAndLine) {
  TempDir d;
  d.write("docs.jsonl", R"({"q": "a", "c": ["x", "y"], "g": 1})" "\n" R"({"q": "b", "c": [], "g": 0})" "\n");
  const std::string missing = d.write("missing.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                                      "doc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\n");
  EXPECT_NE(message_of([&] { eval::load_task_file(missing, d.path.string()); }).find("missing.yaml:1: missing field 'gold'"),
            std::string::npos);
  const std::string unknown = d.write("unknown.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                                      "doc_to_text: x\ndoc_to_choice: x\ngold: x\nchioces: [a]\n");
  EXPECT_NE(message_of([&] { eval::load_task_file(unknown, ""); }).find("unknown.yaml:7: unknown field 'chioces'"),
            std::string::npos);
  const std::string badtype = d.write("badtype.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: classify\n");
  EXPECT_NE(message_of([&] { eval::load_task_file(badtype, ""); }).find("badtype.yaml:3"), std::string::npos);
  const std::string nodata = d.write("nodata.yaml", "task: t\ndata: ./none.jsonl\noutput_type: loglikelihood\n"
                                                    "doc_to_text: x\ndoc_to_target: y\n");
  EXPECT_NE(message_of([&] { eval::load_task_file(nodata, ""); }).find("nodata.yaml:2: data file"), std::string::npos);
  // Unknown task: the message lists the known ones.
  const std::string msg = message_of([&] { eval::resolve_task("no_such_task", d.path.string(), ""); });
  EXPECT_NE(msg.find("unknown task 'no_such_task'"), std::string::npos);
  EXPECT_NE(msg.find("badtype, missing, nodata, unknown"), std::string::npos) << msg;

  // Empty choices and k larger than the pool, at run time.
  const std::string ok = d.write("ok.yaml", "task: t\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                            "doc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{c}}\"\ngold: \"{{g}}\"\n");
  const auto spec = eval::load_task_file(ok, "");
  FakeEngine m(300, 64);
  auto tk = tok::make_tokenizer(tok::byte_fallback_vocab(300), "bytes");
  EXPECT_NE(message_of([&] { eval::run_task(m, *tk, spec, {}); }).find("empty choices"), std::string::npos);
  eval::TaskRunOptions o;
  o.limit = 1;
  o.num_fewshot = 2;  // the pool has 1 document besides the evaluated one
  EXPECT_NE(message_of([&] { eval::run_task(m, *tk, spec, o); }).find("2 few-shot examples asked"), std::string::npos);
}

TEST(TaskFiles, TemplatesRenderFieldsIndexesAndValues) {
  const nlohmann::json doc = {{"q", "Why?"}, {"c", {"no", "yes"}}, {"g", 1}, {"n", {{"x", "deep"}}}};
  EXPECT_EQ(eval::render_template("{{q}}\nAnswer: {{ c[g] }} {{c[0]}} {{n.x}}", doc, "t"), "Why?\nAnswer: yes no deep");
  EXPECT_EQ(eval::render_value("{{c}}", doc, "t"), (nlohmann::json{"no", "yes"}));
  EXPECT_EQ(eval::render_value("{{g}}", doc, "t"), 1);
  EXPECT_THROW(eval::render_template("{{missing}}", doc, "t"), InputError);
  EXPECT_THROW(eval::render_template("{{c[5]}}", doc, "t"), InputError);
}

// Every shipped task file parses and its documents render (choices, gold, targets), so a typo in
// configs/tasks fails here rather than in a user's run.
TEST(TaskFiles, ShippedTasksLoad) {
  const std::string dir = std::string(LLMOPT_SOURCE_DIR) + "/configs/tasks";
  const auto names = eval::list_tasks(dir);
  ASSERT_GE(names.size(), 13u);
  for (const auto& name : names) {
    const auto spec = eval::resolve_task(name, dir, LLMOPT_SHARED_DIR);
    EXPECT_EQ(spec.name, name) << spec.file;
    const auto docs = eval::load_docs(spec.data, spec.format, spec.text_split);
    EXPECT_GT(docs.docs.size(), 0u) << name;
  }
}

// ------------------------------------------------------------------ whole tasks

TEST(TaskRun, MultipleChoiceAccAndAccNormFromDirectScores) {
  TempDir d;
  // Choices of different lengths (acc_norm divides by characters, "é" counting one).
  d.write("docs.jsonl", R"({"q": "Question: sky?", "c": ["blue", "green grass", "é"], "g": 0})" "\n"
                        R"({"q": "Question: sea? ", "c": ["wet", "dry"], "g": 1})" "\n"
                        R"({"q": "Question: sun?", "c": ["hot", "cold", "warm"], "g": 2})" "\n");
  const std::string file = d.write("mc.yaml", "task: mc\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                              "doc_to_text: \"{{q}}\\nAnswer:\"\ndoc_to_choice: \"{{c}}\"\n"
                                              "gold: \"{{g}}\"\nmetrics: [acc, acc_norm]\n");
  const auto spec = eval::load_task_file(file, "");
  const int64_t V = 300, L = 64;
  FakeEngine m(V, L);
  auto tk = tok::make_tokenizer(tok::byte_fallback_vocab(static_cast<int32_t>(V)), "bytes");
  eval::TaskRunOptions o;
  o.log_samples_dir = d.path.string();
  const auto r = eval::run_task(m, *tk, spec, o);
  ASSERT_EQ(r.samples, 3);

  // Reference: lm-eval's requests (context "Q\nAnswer:", continuation " " + choice; trailing
  // whitespace of the context moved into the continuation), encoded whole and split.
  auto enc = [&](const std::string& s) {
    tok::EncodeOptions eo;
    eo.add_bos = false;
    auto v = tk->encode(s, eo);
    return std::vector<int64_t>(v.begin(), v.end());
  };
  struct Doc {
    std::string q;
    std::vector<std::string> c;
    int64_t g;
    std::vector<size_t> chars;
  };
  const std::vector<Doc> docs = {{"Question: sky?", {"blue", "green grass", "é"}, 0, {4, 11, 1}},
                                 {"Question: sea? ", {"wet", "dry"}, 1, {3, 3}},
                                 {"Question: sun?", {"hot", "cold", "warm"}, 2, {3, 4, 4}}};
  double acc = 0, acc_norm = 0;
  std::ifstream log(d.path / "mc.jsonl");
  for (const auto& doc : docs) {
    const std::string ctx = doc.q + "\nAnswer:";
    std::vector<double> lls, norm;
    std::string line;
    ASSERT_TRUE(std::getline(log, line));
    const auto j = nlohmann::json::parse(line);
    for (size_t c = 0; c < doc.c.size(); ++c) {
      const auto whole = enc(ctx + " " + doc.c[c]);
      const auto ce = enc(ctx);
      const std::vector<int64_t> ne(whole.begin() + static_cast<std::ptrdiff_t>(ce.size()), whole.end());
      const double lp = reference_ll(ce, ne, L, V).first;
      lls.push_back(lp);
      norm.push_back(lp / static_cast<double>(doc.chars[c]));
      EXPECT_NEAR(j["scores"][c]["loglikelihood"].get<double>(), lp, 1e-12);
    }
    const auto pred = std::max_element(lls.begin(), lls.end()) - lls.begin();
    const auto pred_norm = std::max_element(norm.begin(), norm.end()) - norm.begin();
    acc += pred == doc.g;
    acc_norm += pred_norm == doc.g;
    EXPECT_EQ(j["prediction"].get<int64_t>(), pred);
    EXPECT_EQ(j["prompt"].get<std::string>(), ctx);
  }
  EXPECT_DOUBLE_EQ(r.metrics["acc"].get<double>(), acc / 3);
  EXPECT_DOUBLE_EQ(r.metrics["acc_norm"].get<double>(), acc_norm / 3);
  EXPECT_NEAR(r.chance.get<double>(), (1.0 / 3 + 1.0 / 2 + 1.0 / 3) / 3, 1e-15);
}

TEST(TaskRun, FewShotPromptsAreSeededAndExcludeTheDocument) {
  TempDir d;
  std::string lines;
  for (int i = 0; i < 6; ++i)
    lines += "{\"q\": \"Q" + std::to_string(i) + "\", \"c\": [\"a" + std::to_string(i) + "\", \"b\"], \"g\": 0}\n";
  d.write("docs.jsonl", lines);
  const std::string file = d.write("fs.yaml", "task: fs\ndata: ./docs.jsonl\noutput_type: multiple_choice\n"
                                              "doc_to_text: \"{{q}}:\"\ndoc_to_choice: \"{{c}}\"\ngold: \"{{g}}\"\n");
  const auto spec = eval::load_task_file(file, "");
  FakeEngine m(300, 256);
  auto tk = tok::make_tokenizer(tok::byte_fallback_vocab(300), "bytes");
  auto prompts = [&](uint64_t seed, int64_t limit) {
    TempDir logs;
    eval::TaskRunOptions o;
    o.num_fewshot = 3;
    o.seed = seed;
    o.limit = limit;
    o.log_samples_dir = logs.path.string();
    eval::run_task(m, *tk, spec, o);
    std::vector<std::string> out;
    std::ifstream in(logs.path / "fs.jsonl");
    for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)["prompt"]);
    return out;
  };
  const auto a = prompts(1234, 0), b = prompts(1234, 2), c = prompts(99, 0);
  ASSERT_EQ(a.size(), 6u);
  EXPECT_EQ(b[0], a[0]);  // independent of --limit
  EXPECT_EQ(b[1], a[1]);
  EXPECT_NE(a, c);        // the seed matters
  for (size_t i = 0; i < a.size(); ++i) {
    // Three "Qk: ak\n\n" examples, then the document; never the document itself as an example.
    const std::string self = "Q" + std::to_string(i) + ": a" + std::to_string(i) + "\n\n";
    EXPECT_EQ(a[i].find(self), std::string::npos) << a[i];
    EXPECT_EQ(a[i].substr(a[i].size() - 3), "Q" + std::to_string(i) + ":");
    size_t examples = 0;
    for (size_t p = 0; (p = a[i].find("\n\n", p)) != std::string::npos; p += 2) ++examples;
    EXPECT_EQ(examples, 3u);
  }
}

// ------------------------------------------------------------------ a real model

std::string shared(const std::string& rel) { return std::string(LLMOPT_SHARED_DIR) + "/" + rel; }

TEST(TaskRun, Stories260KScoresDoNotDependOnBatchSize) {
  auto lm = infer::load_cpu_model(shared("models/stories260K/stories260K.bin"),
                                  shared("models/stories260K/tok512.bin"));
  const std::string dir = std::string(LLMOPT_SOURCE_DIR) + "/configs/tasks";
  for (const std::string task : {"arc_easy", "winogrande"}) {
    const auto spec = eval::resolve_task(task, dir, LLMOPT_SHARED_DIR);
    std::map<int64_t, std::vector<double>> lls;
    for (int64_t bs : {1, 16}) {
      TempDir logs;
      eval::TaskRunOptions o;
      o.limit = 12;
      o.batch_size = bs;
      o.log_samples_dir = logs.path.string();
      const auto r = eval::run_task(*lm.model, *lm.tokenizer, spec, o);
      std::ifstream in(r.samples_file);
      ASSERT_TRUE(in.good()) << r.samples_file;
      for (std::string line; std::getline(in, line);) {
        const auto j = nlohmann::json::parse(line);
        for (const auto& s : j["scores"]) lls[bs].push_back(s["loglikelihood"].get<double>());
      }
    }
    ASSERT_GE(lls[1].size(), 24u);
    EXPECT_EQ(lls[1], lls[16]) << task;  // bitwise identical
  }
}

// A request scored through the shared-prefix path (context prefill, then the continuation on the
// cache) against one prefill of context + continuation with every position's logits: the same
// numbers up to float32 reassociation in the engine (different GEMM shapes).
TEST(TaskRun, Stories260KPrefixPathMatchesWholeSequence) {
  auto lm = infer::load_cpu_model(shared("models/stories260K/stories260K.bin"),
                                  shared("models/stories260K/tok512.bin"));
  const auto& m = *lm.model;
  const int64_t V = m.config().vocab_size;
  const auto [ctx, cont] = eval::encode_pair(*lm.tokenizer, "Once upon a time, there was a little", " girl named Lily.",
                                             false);
  ASSERT_GT(cont.size(), 2u);
  const auto got = eval::score_loglikelihood(m, {{ctx, cont}}, 1)[0];
  std::vector<int64_t> whole = ctx;
  whole.insert(whole.end(), cont.begin(), cont.end());
  auto cache = m.make_cache(static_cast<int64_t>(whole.size()));
  std::vector<float> logits(whole.size() * static_cast<size_t>(V));
  m.prefill(whole.data(), static_cast<int64_t>(whole.size()), *cache, logits.data(), true);
  double lp = 0;
  for (size_t j = 0; j < cont.size(); ++j) {
    const float* row = logits.data() + (ctx.size() - 1 + j) * static_cast<size_t>(V);
    double mx = row[0];
    for (int64_t v = 1; v < V; ++v) mx = std::max<double>(mx, row[v]);
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(row[v] - mx);
    lp += row[cont[j]] - mx - std::log(s);
  }
  // float32 logits of a few units carry ~1e-6 relative error per position.
  constexpr double kTol = 1e-4;
  EXPECT_NEAR(got.logprob, lp, kTol);
}

TEST(TaskRun, LlamaCppScoringRulesFromPerTokenReference) {
  TempDir d;
  // "blue sky" / "blue sea" share " blue s" (byte tokens): from common_prefix scores "ky" / "ea".
  d.write("docs.jsonl", R"({"q": "Q: up?", "c": ["blue sky", "blue sea", "red"], "g": 0})" "\n"
                        R"({"q": "Q: down?", "c": ["deep sea", "deep mud"], "g": 1})" "\n");
  const std::string base = "data: ./docs.jsonl\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\n"
                           "doc_to_choice: \"{{c}}\"\ngold: \"{{g}}\"\nmetrics: [acc]\n";
  const auto hs = eval::load_task_file(d.write("hs.yaml", "task: hs\n" + base +
                                                              "scoring: {reduce: mean, from: common_prefix}\n"), "");
  const auto wg = eval::load_task_file(d.write("wg.yaml", "task: wg\n" + base + "scoring: {reduce: mean, drop_last: 1}\n"), "");
  EXPECT_TRUE(hs.scoring.mean && hs.scoring.common_prefix && hs.scoring.drop_last == 0);
  EXPECT_TRUE(wg.scoring.mean && !wg.scoring.common_prefix && wg.scoring.drop_last == 1);
  const int64_t V = 300, L = 64;
  FakeEngine m(V, L);
  auto tk = tok::make_tokenizer(tok::byte_fallback_vocab(static_cast<int32_t>(V)), "bytes");
  auto enc = [&](const std::string& s) {
    tok::EncodeOptions eo;
    eo.add_bos = false;
    auto v = tk->encode(s, eo);
    return std::vector<int64_t>(v.begin(), v.end());
  };
  // Per-token log p from one-token requests, each after everything before it.
  auto token_lp = [&](const std::vector<int64_t>& seq, size_t i) {
    return reference_ll(std::vector<int64_t>(seq.begin(), seq.begin() + static_cast<std::ptrdiff_t>(i)), {seq[i]}, L, V)
        .first;
  };
  const std::vector<std::pair<std::string, std::vector<std::string>>> docs = {
      {"Q: up?", {"blue sky", "blue sea", "red"}}, {"Q: down?", {"deep sea", "deep mud"}}};
  for (const auto* spec : {&hs, &wg}) {
    eval::TaskRunOptions o;
    o.log_samples_dir = d.path.string();
    eval::run_task(m, *tk, *spec, o);
    std::ifstream log(d.path / (spec->name + ".jsonl"));
    for (const auto& [q, choices] : docs) {
      std::string line;
      ASSERT_TRUE(std::getline(log, line));
      const auto j = nlohmann::json::parse(line);
      std::vector<std::vector<int64_t>> full;
      for (const auto& c : choices) full.push_back(enc(q + " " + c));
      size_t common = full[0].size();
      for (const auto& f : full) {
        size_t k = 0;
        while (k < common && k < f.size() && f[k] == full[0][k]) ++k;
        common = k;
      }
      const size_t nctx = enc(q).size();
      for (size_t c = 0; c < choices.size(); ++c) {
        size_t a = spec->scoring.common_prefix ? std::max(common, nctx) : nctx, b = full[c].size();
        if (spec->scoring.drop_last && b - a > 1) b -= 1;
        double s = 0;
        for (size_t i = a; i < b; ++i) s += token_lp(full[c], i);
        s /= static_cast<double>(b - a);
        EXPECT_NEAR(j["scores"][c]["score"].get<double>(), s, 1e-12) << spec->name << " " << choices[c];
        EXPECT_EQ(j["scores"][c]["scored_tokens"].get<int64_t>(), static_cast<int64_t>(b - a));
      }
    }
  }
  // Winogrande-style (multiple_input) with llama.cpp's short-tail fallback: a document whose
  // options have at most 3 tokens after their common prefix is scored from that prefix (inside
  // the contexts), the others after each context.
  d.write("wino.jsonl", R"({"o": ["The cat sat on it", "The dog sat on it"], "r": "and slept well.", "g": 0})" "\n"
                        R"({"o": ["It was a bit", "It was a bin"], "r": ".", "g": 1})" "\n");
  const auto ws = eval::load_task_file(
      d.write("ws.yaml", "task: ws\ndata: ./wino.jsonl\noutput_type: multiple_choice\nmultiple_input: true\n"
                         "doc_to_choice: \"{{o}}\"\ndoc_to_target: \"{{r}}\"\ngold: \"{{g}}\"\nmetrics: [acc]\n"
                         "scoring: {reduce: mean, drop_last: 1, short_tail: 3}\n"),
      "");
  EXPECT_EQ(ws.scoring.short_tail, 3);
  {
    eval::TaskRunOptions o;
    o.log_samples_dir = d.path.string();
    eval::run_task(m, *tk, ws, o);
    std::ifstream log(d.path / "ws.jsonl");
    const std::vector<std::pair<std::vector<std::string>, std::string>> wdocs = {
        {{"The cat sat on it", "The dog sat on it"}, "and slept well."}, {{"It was a bit", "It was a bin"}, "."}};
    for (size_t di = 0; di < wdocs.size(); ++di) {
      const auto& [opts, rest] = wdocs[di];
      std::string line;
      ASSERT_TRUE(std::getline(log, line));
      const auto j = nlohmann::json::parse(line);
      std::vector<std::vector<int64_t>> full;
      for (const auto& c : opts) full.push_back(enc(c + " " + rest));
      size_t common = full[0].size();
      for (const auto& f : full) {
        size_t k = 0;
        while (k < common && k < f.size() && f[k] == full[0][k]) ++k;
        common = k;
      }
      bool short_tail = false;
      for (const auto& f : full) short_tail = short_tail || f.size() - common <= 3;
      EXPECT_EQ(short_tail, di == 1);  // "bit ." / "bin ." differ 3 bytes before the end
      for (size_t c = 0; c < opts.size(); ++c) {
        size_t a = short_tail ? common : enc(opts[c]).size(), b = full[c].size();
        if (b - a > 1) b -= 1;
        double s = 0;
        for (size_t i = a; i < b; ++i) s += token_lp(full[c], i);
        s /= static_cast<double>(b - a);
        EXPECT_NEAR(j["scores"][c]["score"].get<double>(), s, 1e-12) << opts[c];
        // lm-eval's loglikelihood (after the context) is still logged.
        double lm = 0;
        for (size_t i = enc(opts[c]).size(); i < full[c].size(); ++i) lm += token_lp(full[c], i);
        EXPECT_NEAR(j["scores"][c]["loglikelihood"].get<double>(), lm, 1e-12);
      }
    }
  }
  // Bad values name the file and line.
  try {
    eval::load_task_file(d.write("bad.yaml", "task: bad\n" + base + "scoring: {reduce: median}\n"), "");
    FAIL() << "no InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.yaml:8"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("median"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace llmopt
