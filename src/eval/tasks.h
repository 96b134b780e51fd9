// Evaluation tasks defined in YAML (configs/tasks/*.yaml), in the shape of lm-evaluation-harness
// task configs: where the documents are, how a document becomes a prompt (doc_to_text), its
// choices or target, the request kind (output_type) and the metrics. Adding a task is adding a
// YAML file; nothing here knows a task by name. Torch-free.
//
// Templates: text with "{{path}}" placeholders, path = field names joined by '.', with list
// indexes "[0]" or "[field]" (an index read from the document): "{{query}}\nAnswer:",
// "{{choices[gold]}}". A template that is exactly one placeholder yields the field's JSON value
// (a list for doc_to_choice, a number for gold, a list of references for doc_to_target).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace llmopt::eval {

enum class OutputType { MultipleChoice, Loglikelihood, LoglikelihoodRolling, GenerateUntil };
std::string output_type_name(OutputType t);

// lm-eval's "regex" filter followed by "take_first": the group_select-th match of `regex` in the
// generated text (of the first non-empty group when the pattern has groups), stripped;
// `fallback` when nothing matches.
struct RegexFilter {
  std::string name;
  std::string regex;
  int group_select = 0;  // negative counts from the end, as in Python
  std::string fallback = "[invalid]";
};

// lm-eval's exact_match (HF evaluate): each regex in regexes_to_ignore removed from prediction and
// reference, then optional lower-casing and removal of ASCII punctuation; equal strings score 1.
struct ExactMatchOptions {
  bool ignore_case = false;
  bool ignore_punctuation = false;
  std::vector<std::string> regexes_to_ignore;
};

// How a multiple-choice option's tokens make its score. The default is lm-eval's: the sum of the
// continuation's token log-probabilities. llama.cpp's `llama-perplexity` scores Winogrande and
// HellaSwag differently (tools/perplexity/perplexity.cpp): the mean per token, Winogrande without
// the sentence's last token, HellaSwag from the first token where the options' token sequences
// differ. YAML: scoring: {reduce: sum|mean, from: continuation|common_prefix, drop_last: N, short_tail: N}.
struct ChoiceScoring {
  bool mean = false;            // reduce: mean (per scored token) instead of sum
  bool common_prefix = false;   // from: common_prefix — skip continuation tokens every option shares
  int drop_last = 0;            // leave out the last N scored tokens (while more than N remain)
  int short_tail = 0;           // when an option has at most N tokens after the options' common
                                // prefix, score every option from that prefix (llama.cpp Winogrande: 3)
  bool is_default() const { return !mean && !common_prefix && drop_last == 0 && short_tail == 0; }
};

struct TaskSpec {
  std::string name;
  std::string file;         // the YAML file it came from
  std::string data;         // resolved path of the documents
  std::string format = "jsonl";  // jsonl | tsv | squad_v2 | text
  std::string fewshot_data;      // resolved path; empty = the evaluated documents (the doc itself excluded)
  std::string train_data;        // resolved path of a training split shipped with the task (same format);
                                 // empty = split `data` by index when a training part is asked (TaskSplit)
  std::string text_split;        // format text: separator between documents (empty = one document)
  OutputType output_type = OutputType::MultipleChoice;
  std::string doc_to_text;
  std::string doc_to_target;
  std::string doc_to_choice;                // template (a list-valued placeholder) ...
  std::vector<std::string> choice_list;     // ... or a list of templates, one per choice
  std::string gold;                         // multiple_choice: index (or text) of the right choice
  bool multiple_input = false;  // choices are contexts, doc_to_target the shared continuation (Winogrande)
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  int num_fewshot = 0;
  std::vector<std::string> metrics;
  std::vector<std::string> until;  // generate_until: stop sequences (default: fewshot_delimiter)
  int max_gen_toks = 256;
  std::vector<RegexFilter> filters;  // generate_until: empty = the raw generation ("none")
  ExactMatchOptions exact_match;
  ChoiceScoring scoring;         // multiple_choice: how an option's tokens make its score (acc)
  std::optional<double> chance;  // chance level; default 1/choices (multiple_choice) or none
};

// Metrics each output type can report (the first ones are the defaults).
std::vector<std::string> supported_metrics(OutputType t);

// Parses a task file. Relative `data` / `fewshot_data` paths starting with "./" or "../" are taken
// from the YAML file's directory, other relative ones from `shared_dir`. InputError
// "[tasks] FILE:LINE: ..." for a missing or unknown field, a bad value or a missing data file.
TaskSpec load_task_file(const std::string& path, const std::string& shared_dir);

// The directory of the shipped task files: `override` if given, else $LLMOPT_TASKS_DIR, else
// configs/tasks under the current directory or above the executable. Empty if none.
std::string find_tasks_dir(const std::string& override_dir = "");
// The shared data directory: $LLMOPT_SHARED_DIR, else ../shared beside the repository that holds
// `tasks_dir` (configs/tasks → ../../../shared), else ../shared from the current directory.
std::string find_shared_dir(const std::string& tasks_dir);
// Task names (file stems) of the YAML files in `dir`, sorted.
std::vector<std::string> list_tasks(const std::string& dir);
// A task name (a file in tasks_dir) or a path to a YAML file. InputError listing the known tasks.
TaskSpec resolve_task(const std::string& name_or_path, const std::string& tasks_dir, const std::string& shared_dir);

struct DocSet {
  std::vector<nlohmann::json> docs;
  std::vector<std::string> where;  // "FILE:LINE" (or "FILE#id") of each document, for errors and logs
};
// Reads documents: jsonl (one object per line), tsv (header line, one row per document, values as
// strings), squad_v2 (queries.json beside ground_truth.json, joined by id: fields id, context,
// question, answers (list, empty when is_impossible), is_impossible) or text (field "text").
DocSet load_docs(const std::string& path, const std::string& format, const std::string& text_split = "");

// Which documents of a task a run uses. Part `all` is every document of `data`. Otherwise the
// documents are split in two disjoint parts: a task that ships a training split (`train_data`)
// trains on that file and holds out all of `data`; any other task holds out `held_out` documents
// of `data` (a count >= 1, or a fraction in (0, 1) of them, rounded), picked by a permutation of
// the document indices drawn from `seed` (a Fisher-Yates shuffle over mt19937_64, the same on
// every platform), and trains on the rest. The same (held_out, seed) always gives the same parts.
struct TaskSplit {
  std::string part = "all";  // all | train | held_out
  double held_out = 0;
  uint64_t seed = 1;
};
// "all", "train", "held_out" (also spelled "held-out"); InputError naming `what` otherwise.
std::string parse_split_part(const std::string& s, const std::string& what);
// Indices (ascending) of the documents in `part` when n documents are split by index. InputError
// (naming `what`) when held_out is 0, not a whole count, or leaves no training document.
std::vector<size_t> split_indices(size_t n, const TaskSplit& split, const std::string& what);

struct SplitDocs {
  DocSet docs;                // the documents of the part, in file order
  std::vector<size_t> index;  // each one's index in its file
  std::string file;           // the file they came from (data or train_data)
};
// The documents of `split.part` of a task (see TaskSplit).
SplitDocs load_split_docs(const TaskSpec& t, const TaskSplit& split);
// "sst2 held_out: 500 of 872 documents (seed 1)" for logs and errors.
std::string describe_split(const TaskSpec& t, const TaskSplit& split, size_t selected);

// Template rendering (see the top of this file). `what` names the template in errors.
std::string render_template(const std::string& tmpl, const nlohmann::json& doc, const std::string& what);
nlohmann::json render_value(const std::string& tmpl, const nlohmann::json& doc, const std::string& what);

}  // namespace llmopt::eval
