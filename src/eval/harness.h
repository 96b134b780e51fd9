// Task evaluation in the manner of lm-evaluation-harness (lm-eval 0.4, HF backend), run through
// the one inference interface (infer::Engine) so that it needs no Python and no torch:
//  - loglikelihood of a continuation given a context (multiple choice: acc, acc_norm; LAMBADA:
//    acc = greedy continuation, perplexity),
//  - rolling loglikelihood of a whole text (word/byte perplexity, bits per byte),
//  - greedy generation until a stop sequence (exact match, SQuAD F1, regex extraction).
// Tokenization follows lm-eval's HFLM: no BOS (add_special_tokens=False) unless asked, trailing
// whitespace of a context moved to the continuation, context+continuation encoded whole and split
// at the length of the encoded context (`_encode_pair`), an empty context replaced by BOS (or EOS
// when there is no BOS), inputs left-truncated to the model's context length.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "infer/engine.h"
#include "tokenizer/tokenizer.h"

namespace llmopt::eval {

struct LoglikelihoodRequest {
  std::vector<int64_t> context;       // ≥ 1 token
  std::vector<int64_t> continuation;  // ≥ 1 token
};
struct LoglikelihoodResult {
  double logprob = 0;      // sum of log p(continuation token | prefix), float64 log-softmax
  bool is_greedy = false;  // every continuation token is the argmax (first maximum on ties)
  std::vector<double> token_logprobs;  // log p of each continuation token (sums to logprob)
};

// The model's context length for task requests (max_position_embeddings; 2048 when unset).
int64_t task_max_length(const infer::Engine& m);

// Scores requests `batch_size` at a time. Within a batch, requests whose (truncated) context is
// the same token sequence share one prefill of it; each continuation then runs on the cache
// truncated back to the context. The arithmetic of a request does not depend on which other
// requests share its batch: every context is prefilled into an empty cache of the same capacity
// and every continuation appended to exactly that context, so scores do not depend on batch_size.
// A continuation longer than the model's context (lm-eval refuses it) is scored in pieces of at
// most max_length tokens, each after the (left-truncated) context and the pieces before it.
std::vector<LoglikelihoodResult> score_loglikelihood(const infer::Engine& m,
                                                     const std::vector<LoglikelihoodRequest>& requests,
                                                     int64_t batch_size = 16, const ProgressFn& progress = {});

// A multiple-choice option's score under a task's `scoring` rule (ChoiceScoring): the tokens of
// `full` (context + continuation tokens) from `start` (≥ the context length; a common prefix of
// all the options' sequences may start it later) to the end less `drop_last` tokens (at least one
// kept), summed or averaged. `token_logprobs` are the continuation's (full.size() - context tokens).
double choice_score(const std::vector<double>& token_logprobs, int64_t context_tokens, int64_t start,
                    const ChoiceScoring& rule, int64_t* scored_tokens = nullptr);

// lm-eval `_encode_pair` (causal LM): context's trailing whitespace moved to the continuation,
// the continuation's tokens = encode(context + continuation) after the first len(encode(context)).
// An empty context becomes [BOS] (or [EOS] without BOS) and the continuation is encoded alone.
// add_bos: BOS first in every context (lm-eval's add_bos_token=True).
std::pair<std::vector<int64_t>, std::vector<int64_t>> encode_pair(const tok::Tokenizer& tk, const std::string& context,
                                                                  const std::string& continuation, bool add_bos);

// lm-eval get_rolling_token_windows(context_len=1) + make_disjoint_window: (context,
// continuation) pairs that score every token of `tokens` once, the first one after `prefix`.
std::vector<LoglikelihoodRequest> rolling_windows(const std::vector<int64_t>& tokens, int64_t prefix,
                                                  int64_t max_length);

// Greedy generation: the context left-truncated to max_length - max_gen_toks, tokens appended until
// EOS, max_gen_toks or the context is full, or the decoded text contains a stop sequence; the text
// is cut before the first occurrence of each stop sequence (lm-eval's generate_until).
std::string generate_until(const infer::Engine& m, const tok::Tokenizer& tk, const std::vector<int64_t>& context,
                           const std::vector<std::string>& until, int max_gen_toks);

// ---- metrics (as lm-eval computes them) ----
// Sample standard deviation (n - 1) over sqrt(n): lm-eval's mean_stderr. 0 for n < 2.
double mean_stderr(const std::vector<double>& values);
// lm-eval regex filter + take_first.
std::string apply_regex_filter(const std::string& text, const RegexFilter& f);
// lm-eval exact_match (HF evaluate's exact_match).
bool exact_match(const std::string& prediction, const std::string& reference, const ExactMatchOptions& o);
// SQuAD normalize_answer: lower case, ASCII punctuation removed, articles (a, an, the) removed,
// whitespace collapsed.
std::string squad_normalize(const std::string& s);
// SQuAD v2 token F1 / exact match against the best reference; no references = unanswerable, where
// only an empty (normalized) prediction scores 1.
double squad_f1(const std::string& prediction, const std::vector<std::string>& references);
double squad_exact(const std::string& prediction, const std::vector<std::string>& references);

// ROUGE-L as Google's rouge-score computes `rougeL` (no stemmer): both texts lower-cased, every
// run of characters other than [a-z0-9] a separator, the longest common subsequence of the token
// lists; precision = LCS / prediction tokens, recall = LCS / reference tokens, F = 2PR / (P + R)
// (0 when either list is empty or nothing is shared).
struct RougeScore {
  double precision = 0, recall = 0, fmeasure = 0;
};
std::vector<std::string> rouge_tokenize(const std::string& text);
RougeScore rouge_l(const std::string& prediction, const std::string& reference);
// The best F-measure over the references (0 without references), the generate_until metric rougeL.
double rouge_l_best(const std::string& prediction, const std::vector<std::string>& references);

struct TaskRunOptions {
  int num_fewshot = -1;  // -1 = the task's num_fewshot
  int64_t limit = 0;     // 0 = every document
  uint64_t seed = 1234;  // few-shot sampling
  int64_t batch_size = 16;
  bool add_bos = false;  // lm-eval's add_bos_token
  std::string log_samples_dir;  // DIR/<task>.jsonl when not empty
  TaskSplit split;              // which documents are scored (default: all)
  // Instruction jsonl the model was trained on (instruction_examples): scoring a document whose
  // prompt is in it is an InputError naming both lines. Empty = no check.
  std::string trained_on;
};

struct TaskResult {
  std::string name;
  std::string output_type;
  int64_t samples = 0;
  int num_fewshot = 0;
  nlohmann::json metrics = nlohmann::json::object();  // "acc", "acc_stderr", ... ("exact_match,strict-match")
  nlohmann::json chance;                              // number or null
  double seconds = 0;
  std::string samples_file;  // the jsonl written, if any
};

TaskResult run_task(const infer::Engine& m, const tok::Tokenizer& tk, const TaskSpec& spec, const TaskRunOptions& o,
                    const ProgressFn& progress = {});

// Instruction tuning on a task: a document as the (prompt, response) pair that teaches what the
// task scores. prompt = the zero-shot context run_task renders (doc_to_text; multiple_input: the
// context with the gold option), response = target_delimiter + the gold choice (multiple_input:
// the shared continuation; loglikelihood: the target; generate_until: the first reference). The
// fine-tuning loader tokenizes the pair as the harness does (encode_pair), so the response tokens
// are the gold continuation's tokens as scored. InputError for loglikelihood_rolling tasks.
struct InstructionExample {
  std::string prompt, response;
  size_t doc = 0;      // the document's index in its file
  std::string source;  // "FILE:LINE"
};
InstructionExample instruction_example(const TaskSpec& t, const nlohmann::json& doc, const std::string& where);
// The examples of `split.part` (usually train). The prompts of the other part are computed too, and
// an example whose prompt also occurs there (a duplicate document in the set) is left out, so no
// scored prompt of the other part is ever trained on; *dropped counts them.
std::vector<InstructionExample> instruction_examples(const TaskSpec& t, const TaskSplit& split,
                                                     int64_t* dropped = nullptr);
// InputError when the prompt of a document of `docs` (as instruction_example renders it) is a
// prompt of the instruction jsonl `trained_on`, naming both.
void check_not_trained_on(const TaskSpec& t, const DocSet& docs, const std::string& trained_on);
// One jsonl line: {"prompt", "response", "task", "doc", "source"}, and "eos": false for tasks
// scored by log-likelihood (multiple_choice, loglikelihood): the fine-tuning loader then adds no
// EOS target after the response, which the harness never scores (and which a model that rarely
// saw its EOS cannot learn cheaply: tinyllama-bpe-17m's frozen tied head gives EOS at most p 0.05).
// generate_until keeps the EOS (generation should stop after the answer).
nlohmann::json instruction_json(const TaskSpec& t, const InstructionExample& e);

nlohmann::json task_result_json(const TaskResult& r);
// "arc_easy  acc 0.4200 ± 0.0101  acc_norm 0.3900 ± 0.0100  (n=2376, 0-shot, chance 0.2500)"
std::string task_result_line(const TaskResult& r);

}  // namespace llmopt::eval
