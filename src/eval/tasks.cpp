#include "eval/tasks.h"

#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/mapped_file.h"

namespace llmopt::eval {

namespace fs = std::filesystem;
using nlohmann::json;

std::string output_type_name(OutputType t) {
  switch (t) {
    case OutputType::MultipleChoice: return "multiple_choice";
    case OutputType::Loglikelihood: return "loglikelihood";
    case OutputType::LoglikelihoodRolling: return "loglikelihood_rolling";
    case OutputType::GenerateUntil: return "generate_until";
  }
  return "?";
}

std::vector<std::string> supported_metrics(OutputType t) {
  switch (t) {
    case OutputType::MultipleChoice: return {"acc", "acc_norm"};
    case OutputType::Loglikelihood: return {"perplexity", "acc"};
    case OutputType::LoglikelihoodRolling: return {"word_perplexity", "byte_perplexity", "bits_per_byte"};
    case OutputType::GenerateUntil: return {"exact_match", "exact", "f1", "rougeL"};
  }
  return {};
}

// ------------------------------------------------------------------ templates

namespace {

// One step of a placeholder path: a field name or a list index (literal or read from the doc).
struct PathStep {
  std::string field;
  bool index = false;
  bool index_from_doc = false;
  int64_t literal = 0;
};

std::string trim_ws(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::vector<PathStep> parse_path(const std::string& expr, const std::string& what) {
  std::vector<PathStep> steps;
  size_t i = 0;
  auto ident = [&](size_t& j) {
    const size_t s = j;
    while (j < expr.size() && (std::isalnum(static_cast<unsigned char>(expr[j])) || expr[j] == '_' || expr[j] == '-'))
      ++j;
    return expr.substr(s, j - s);
  };
  while (i < expr.size()) {
    if (expr[i] == '.') {
      ++i;
      continue;
    }
    if (expr[i] == '[') {
      const auto close = expr.find(']', i);
      LLMOPT_CHECK_INPUT(close != std::string::npos, "[tasks] {}: '{{{{{}}}}}': unclosed '['", what, expr);
      const std::string inner = trim_ws(expr.substr(i + 1, close - i - 1));
      PathStep st;
      st.index = true;
      LLMOPT_CHECK_INPUT(!inner.empty(), "[tasks] {}: '{{{{{}}}}}': empty index", what, expr);
      if (std::isdigit(static_cast<unsigned char>(inner[0])) || inner[0] == '-') {
        try {
          st.literal = std::stoll(inner);
        } catch (const std::exception&) {
          throw_input("[tasks] {}: '{{{{{}}}}}': bad index '{}'", what, expr, inner);
        }
      } else {
        st.index_from_doc = true;
        st.field = inner;
      }
      steps.push_back(st);
      i = close + 1;
      continue;
    }
    const std::string name = ident(i);
    LLMOPT_CHECK_INPUT(!name.empty(), "[tasks] {}: '{{{{{}}}}}': expected a field name at character {}", what, expr,
                       i);
    steps.push_back({name});
  }
  LLMOPT_CHECK_INPUT(!steps.empty(), "[tasks] {}: empty placeholder '{{{{}}}}'", what);
  return steps;
}

const json& lookup(const json& doc, const std::vector<PathStep>& steps, const std::string& expr,
                   const std::string& what) {
  const json* cur = &doc;
  for (const auto& st : steps) {
    if (!st.index) {
      LLMOPT_CHECK_INPUT(cur->is_object() && cur->contains(st.field),
                         "[tasks] {}: '{{{{{}}}}}': the document has no field '{}'", what, expr, st.field);
      cur = &(*cur)[st.field];
      continue;
    }
    int64_t idx = st.literal;
    if (st.index_from_doc) {
      LLMOPT_CHECK_INPUT(doc.contains(st.field), "[tasks] {}: '{{{{{}}}}}': the document has no field '{}'", what,
                         expr, st.field);
      const json& v = doc[st.field];
      if (v.is_number_integer()) {
        idx = v.get<int64_t>();
      } else if (v.is_string()) {
        try {
          idx = std::stoll(v.get<std::string>());
        } catch (const std::exception&) {
          throw_input("[tasks] {}: '{{{{{}}}}}': field '{}' = '{}' is not an index", what, expr, st.field,
                      v.get<std::string>());
        }
      } else {
        throw_input("[tasks] {}: '{{{{{}}}}}': field '{}' is not an index", what, expr, st.field);
      }
    }
    LLMOPT_CHECK_INPUT(cur->is_array(), "[tasks] {}: '{{{{{}}}}}': indexing a value that is not a list", what, expr);
    const int64_t n = static_cast<int64_t>(cur->size());
    if (idx < 0) idx += n;
    LLMOPT_CHECK_INPUT(idx >= 0 && idx < n, "[tasks] {}: '{{{{{}}}}}': index {} out of range (list of {})", what,
                       expr, idx, n);
    cur = &(*cur)[static_cast<size_t>(idx)];
  }
  return *cur;
}

std::string value_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "";
  return v.dump();
}

}  // namespace

std::string render_template(const std::string& tmpl, const json& doc, const std::string& what) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    const auto open = tmpl.find("{{", i);
    if (open == std::string::npos) {
      out.append(tmpl, i, std::string::npos);
      break;
    }
    out.append(tmpl, i, open - i);
    const auto close = tmpl.find("}}", open + 2);
    LLMOPT_CHECK_INPUT(close != std::string::npos, "[tasks] {}: unclosed '{{{{' at character {}", what, open);
    const std::string expr = trim_ws(tmpl.substr(open + 2, close - open - 2));
    out += value_text(lookup(doc, parse_path(expr, what), expr, what));
    i = close + 2;
  }
  return out;
}

json render_value(const std::string& tmpl, const json& doc, const std::string& what) {
  const std::string t = trim_ws(tmpl);
  if (t.size() > 4 && t.rfind("{{", 0) == 0 && t.compare(t.size() - 2, 2, "}}") == 0 &&
      t.find("{{", 2) == std::string::npos) {
    const std::string expr = trim_ws(t.substr(2, t.size() - 4));
    return lookup(doc, parse_path(expr, what), expr, what);
  }
  return render_template(tmpl, doc, what);
}

// ------------------------------------------------------------------ documents

namespace {

std::vector<std::string> split_tsv_line(const std::string& line) {
  std::vector<std::string> out;
  size_t s = 0;
  while (true) {
    const auto t = line.find('\t', s);
    out.push_back(line.substr(s, t == std::string::npos ? std::string::npos : t - s));
    if (t == std::string::npos) break;
    s = t + 1;
  }
  return out;
}

json parse_json_file(const std::string& path) {
  const std::string text = io::read_text_file(path, "tasks");
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    throw_input("[tasks] {}: not valid JSON: {}", path, e.what());
  }
}

}  // namespace

DocSet load_docs(const std::string& path, const std::string& format, const std::string& text_split) {
  DocSet d;
  if (format == "squad_v2") {
    // A directory (or its queries.json) with ground_truth.json beside it.
    fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
    const json q = parse_json_file((dir / "queries.json").string());
    const json g = parse_json_file((dir / "ground_truth.json").string());
    LLMOPT_CHECK_INPUT(q.contains("queries") && q["queries"].is_array(), "[tasks] {}: no 'queries' list",
                       (dir / "queries.json").string());
    for (const auto& item : q["queries"]) {
      const std::string id = item.value("id", "");
      LLMOPT_CHECK_INPUT(g.contains(id), "[tasks] {}: no ground truth for query '{}'",
                         (dir / "ground_truth.json").string(), id);
      json doc = item;
      const json& truth = g[id];
      const bool impossible = truth.value("is_impossible", false);
      doc["is_impossible"] = impossible;
      doc["answers"] = impossible ? json::array() : truth.value("answers", json::array());
      d.docs.push_back(std::move(doc));
      d.where.push_back((dir / "queries.json").string() + "#" + id);
    }
    return d;
  }
  const std::string text = io::read_text_file(path, "tasks");
  if (format == "text") {
    if (text_split.empty()) {
      d.docs.push_back({{"text", text}});
      d.where.push_back(path + ":1");
      return d;
    }
    size_t s = 0;
    int64_t line = 1;
    while (s <= text.size()) {
      auto e = text.find(text_split, s);
      if (e == std::string::npos) e = text.size();
      const std::string piece = text.substr(s, e - s);
      if (piece.find_first_not_of(" \t\r\n") != std::string::npos) {
        d.docs.push_back({{"text", piece}});
        d.where.push_back(path + ":" + std::to_string(line));
      }
      line += std::count(text.begin() + static_cast<std::ptrdiff_t>(s),
                         text.begin() + static_cast<std::ptrdiff_t>(std::min(text.size(), e + text_split.size())), '\n');
      if (e >= text.size()) break;
      s = e + text_split.size();
    }
    return d;
  }
  std::istringstream in(text);
  std::string line;
  int64_t lineno = 0;
  std::vector<std::string> header;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    if (format == "jsonl") {
      json doc;
      try {
        doc = json::parse(line);
      } catch (const json::parse_error& e) {
        throw_input("[tasks] {}: not a JSON object: {}", where, e.what());
      }
      LLMOPT_CHECK_INPUT(doc.is_object(), "[tasks] {}: expected a JSON object per line", where);
      d.docs.push_back(std::move(doc));
    } else if (format == "tsv") {
      auto cells = split_tsv_line(line);
      if (header.empty()) {
        header = std::move(cells);
        continue;
      }
      LLMOPT_CHECK_INPUT(cells.size() == header.size(), "[tasks] {}: {} columns, the header has {}", where,
                         cells.size(), header.size());
      json doc = json::object();
      for (size_t i = 0; i < header.size(); ++i) doc[header[i]] = cells[i];
      d.docs.push_back(std::move(doc));
    } else {
      throw_input("[tasks] {}: unknown format '{}' (jsonl, tsv, squad_v2, text)", path, format);
    }
    d.where.push_back(where);
  }
  return d;
}

// ------------------------------------------------------------------ task files

namespace {

struct YamlCtx {
  std::string file;
  std::string at(const YAML::Node& n) const {
    return fmt::format("{}:{}", file, n.Mark().line >= 0 ? n.Mark().line + 1 : 1);
  }
};

std::string scalar(const YamlCtx& y, const YAML::Node& n, const std::string& key) {
  LLMOPT_CHECK_INPUT(n.IsScalar(), "[tasks] {}: '{}' must be a string", y.at(n), key);
  return n.as<std::string>();
}

std::vector<std::string> string_list(const YamlCtx& y, const YAML::Node& n, const std::string& key) {
  if (n.IsScalar()) return {n.as<std::string>()};
  LLMOPT_CHECK_INPUT(n.IsSequence(), "[tasks] {}: '{}' must be a list of strings", y.at(n), key);
  std::vector<std::string> out;
  for (const auto& e : n) out.push_back(scalar(y, e, key));
  return out;
}

bool boolean(const YamlCtx& y, const YAML::Node& n, const std::string& key) {
  try {
    return n.as<bool>();
  } catch (const YAML::Exception&) {
    throw_input("[tasks] {}: '{}' must be true or false", y.at(n), key);
  }
}

int64_t integer(const YamlCtx& y, const YAML::Node& n, const std::string& key, int64_t lo, int64_t hi) {
  int64_t v = 0;
  try {
    v = n.as<int64_t>();
  } catch (const YAML::Exception&) {
    throw_input("[tasks] {}: '{}' must be an integer", y.at(n), key);
  }
  LLMOPT_CHECK_INPUT(v >= lo && v <= hi, "[tasks] {}: '{}' = {} is out of range [{}, {}]", y.at(n), key, v, lo, hi);
  return v;
}

std::string resolve_data_path(const std::string& p, const std::string& yaml_file, const std::string& shared_dir) {
  fs::path path(p);
  if (path.is_absolute()) return p;
  if (p.rfind("./", 0) == 0 || p.rfind("../", 0) == 0) return (fs::path(yaml_file).parent_path() / path).string();
  return (fs::path(shared_dir) / path).string();
}

}  // namespace

TaskSpec load_task_file(const std::string& path, const std::string& shared_dir) {
  YamlCtx y{path};
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw_input("[tasks] cannot read task file '{}'", path);
  } catch (const YAML::ParserException& e) {
    throw_input("[tasks] {}:{}: {}", path, e.mark.line + 1, e.msg);
  }
  LLMOPT_CHECK_INPUT(root.IsMap(), "[tasks] {}:1: a task file is a mapping (task:, data:, output_type:, ...)", path);
  static const std::set<std::string> known = {
      "task",          "description",      "notes",        "data",          "format",       "fewshot_data",
      "train_data",
      "text_split",    "output_type",      "doc_to_text",  "doc_to_target", "doc_to_choice", "gold",
      "multiple_input", "target_delimiter", "fewshot_delimiter", "num_fewshot", "metrics", "generation",
      "filters",       "exact_match",      "chance",       "scoring"};
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    LLMOPT_CHECK_INPUT(known.count(key), "[tasks] {}: unknown field '{}' (known: task, data, format, output_type, "
                       "doc_to_text, doc_to_target, doc_to_choice, gold, multiple_input, target_delimiter, "
                       "fewshot_delimiter, fewshot_data, train_data, num_fewshot, metrics, generation, filters, exact_match, "
                       "scoring, chance, text_split, description, notes)",
                       y.at(kv.first), key);
  }
  TaskSpec t;
  t.file = path;
  auto need = [&](const char* key, const std::string& why) {
    LLMOPT_CHECK_INPUT(root[key].IsDefined() && !root[key].IsNull(), "[tasks] {}: missing field '{}'{}", y.at(root),
                       key, why);
    return root[key];
  };
  t.name = scalar(y, need("task", ""), "task");
  const std::string type = scalar(y, need("output_type", " (multiple_choice, loglikelihood, loglikelihood_rolling, "
                                                       "generate_until)"), "output_type");
  if (type == "multiple_choice") t.output_type = OutputType::MultipleChoice;
  else if (type == "loglikelihood") t.output_type = OutputType::Loglikelihood;
  else if (type == "loglikelihood_rolling") t.output_type = OutputType::LoglikelihoodRolling;
  else if (type == "generate_until") t.output_type = OutputType::GenerateUntil;
  else
    throw_input("[tasks] {}: output_type '{}' is not one of multiple_choice, loglikelihood, loglikelihood_rolling, "
                "generate_until", y.at(root["output_type"]), type);
  const std::string why = " (output_type " + type + ")";
  t.data = resolve_data_path(scalar(y, need("data", ""), "data"), path, shared_dir);
  if (root["format"]) t.format = scalar(y, root["format"], "format");
  LLMOPT_CHECK_INPUT(t.format == "jsonl" || t.format == "tsv" || t.format == "squad_v2" || t.format == "text",
                     "[tasks] {}: format '{}' is not one of jsonl, tsv, squad_v2, text", y.at(root["format"]),
                     t.format);
  LLMOPT_CHECK_INPUT(fs::exists(t.data), "[tasks] {}: data file '{}' does not exist", y.at(root["data"]), t.data);
  if (root["fewshot_data"]) {
    t.fewshot_data = resolve_data_path(scalar(y, root["fewshot_data"], "fewshot_data"), path, shared_dir);
    LLMOPT_CHECK_INPUT(fs::exists(t.fewshot_data), "[tasks] {}: fewshot_data file '{}' does not exist",
                       y.at(root["fewshot_data"]), t.fewshot_data);
  }
  if (root["train_data"]) {
    t.train_data = resolve_data_path(scalar(y, root["train_data"], "train_data"), path, shared_dir);
    LLMOPT_CHECK_INPUT(fs::exists(t.train_data), "[tasks] {}: train_data file '{}' does not exist",
                       y.at(root["train_data"]), t.train_data);
  }
  if (root["text_split"]) t.text_split = scalar(y, root["text_split"], "text_split");
  if (root["multiple_input"]) t.multiple_input = boolean(y, root["multiple_input"], "multiple_input");
  switch (t.output_type) {
    case OutputType::MultipleChoice:
      if (!t.multiple_input) t.doc_to_text = scalar(y, need("doc_to_text", why), "doc_to_text");
      else {
        if (root["doc_to_text"]) t.doc_to_text = scalar(y, root["doc_to_text"], "doc_to_text");
        t.doc_to_target = scalar(y, need("doc_to_target", why + " with multiple_input"), "doc_to_target");
      }
      need("doc_to_choice", why);
      t.gold = scalar(y, need("gold", why), "gold");
      break;
    case OutputType::Loglikelihood:
    case OutputType::GenerateUntil:
      t.doc_to_text = scalar(y, need("doc_to_text", why), "doc_to_text");
      t.doc_to_target = scalar(y, need("doc_to_target", why), "doc_to_target");
      break;
    case OutputType::LoglikelihoodRolling:
      t.doc_to_target = scalar(y, need("doc_to_target", why), "doc_to_target");
      break;
  }
  LLMOPT_CHECK_INPUT(!t.multiple_input || t.output_type == OutputType::MultipleChoice,
                     "[tasks] {}: multiple_input is for output_type multiple_choice", y.at(root["multiple_input"]));
  if (root["doc_to_choice"]) {
    LLMOPT_CHECK_INPUT(t.output_type == OutputType::MultipleChoice, "[tasks] {}: doc_to_choice is for output_type "
                       "multiple_choice", y.at(root["doc_to_choice"]));
    const auto n = root["doc_to_choice"];
    if (n.IsSequence()) {
      t.choice_list = string_list(y, n, "doc_to_choice");
      LLMOPT_CHECK_INPUT(!t.choice_list.empty(), "[tasks] {}: doc_to_choice is an empty list", y.at(n));
    } else {
      t.doc_to_choice = scalar(y, n, "doc_to_choice");
    }
  }
  if (root["target_delimiter"]) t.target_delimiter = scalar(y, root["target_delimiter"], "target_delimiter");
  if (root["fewshot_delimiter"]) t.fewshot_delimiter = scalar(y, root["fewshot_delimiter"], "fewshot_delimiter");
  if (root["num_fewshot"]) t.num_fewshot = static_cast<int>(integer(y, root["num_fewshot"], "num_fewshot", 0, 1000));
  const auto supported = supported_metrics(t.output_type);
  if (root["metrics"]) {
    t.metrics = string_list(y, root["metrics"], "metrics");
    LLMOPT_CHECK_INPUT(!t.metrics.empty(), "[tasks] {}: metrics is empty", y.at(root["metrics"]));
    for (const auto& m : t.metrics) {
      LLMOPT_CHECK_INPUT(std::find(supported.begin(), supported.end(), m) != supported.end(),
                         "[tasks] {}: metric '{}' is not one of {} (output_type {})", y.at(root["metrics"]), m,
                         fmt::format("{}", fmt::join(supported, ", ")), type);
    }
  } else {
    t.metrics = t.output_type == OutputType::GenerateUntil ? std::vector<std::string>{"exact_match"} : supported;
  }
  if (root["generation"]) {
    const auto g = root["generation"];
    LLMOPT_CHECK_INPUT(t.output_type == OutputType::GenerateUntil && g.IsMap(),
                       "[tasks] {}: generation (a mapping: until, max_gen_toks) is for output_type generate_until",
                       y.at(g));
    for (const auto& kv : g) {
      const std::string key = kv.first.as<std::string>();
      if (key == "until") t.until = string_list(y, kv.second, "generation.until");
      else if (key == "max_gen_toks")
        t.max_gen_toks = static_cast<int>(integer(y, kv.second, "generation.max_gen_toks", 1, 1 << 20));
      else
        throw_input("[tasks] {}: unknown field 'generation.{}' (until, max_gen_toks)", y.at(kv.first), key);
    }
  }
  if (t.output_type == OutputType::GenerateUntil && t.until.empty()) t.until = {t.fewshot_delimiter};
  if (root["filters"]) {
    const auto f = root["filters"];
    LLMOPT_CHECK_INPUT(t.output_type == OutputType::GenerateUntil && f.IsSequence(),
                       "[tasks] {}: filters (a list of {{name, regex}}) are for output_type generate_until", y.at(f));
    for (const auto& e : f) {
      LLMOPT_CHECK_INPUT(e.IsMap(), "[tasks] {}: a filter is a mapping (name, regex, group_select, fallback)",
                         y.at(e));
      RegexFilter rf;
      for (const auto& kv : e) {
        const std::string key = kv.first.as<std::string>();
        if (key == "name") rf.name = scalar(y, kv.second, "filters.name");
        else if (key == "regex") rf.regex = scalar(y, kv.second, "filters.regex");
        else if (key == "group_select")
          rf.group_select = static_cast<int>(integer(y, kv.second, "filters.group_select", -1000, 1000));
        else if (key == "fallback") rf.fallback = scalar(y, kv.second, "filters.fallback");
        else
          throw_input("[tasks] {}: unknown field 'filters.{}' (name, regex, group_select, fallback)",
                      y.at(kv.first), key);
      }
      LLMOPT_CHECK_INPUT(!rf.name.empty() && !rf.regex.empty(), "[tasks] {}: a filter needs name and regex",
                         y.at(e));
      t.filters.push_back(rf);
    }
  }
  if (root["exact_match"]) {
    const auto e = root["exact_match"];
    LLMOPT_CHECK_INPUT(e.IsMap(), "[tasks] {}: exact_match is a mapping (ignore_case, ignore_punctuation, "
                       "regexes_to_ignore)", y.at(e));
    for (const auto& kv : e) {
      const std::string key = kv.first.as<std::string>();
      if (key == "ignore_case") t.exact_match.ignore_case = boolean(y, kv.second, key);
      else if (key == "ignore_punctuation") t.exact_match.ignore_punctuation = boolean(y, kv.second, key);
      else if (key == "regexes_to_ignore") t.exact_match.regexes_to_ignore = string_list(y, kv.second, key);
      else
        throw_input("[tasks] {}: unknown field 'exact_match.{}' (ignore_case, ignore_punctuation, "
                    "regexes_to_ignore)", y.at(kv.first), key);
    }
  }
  if (root["scoring"]) {
    const auto sc = root["scoring"];
    LLMOPT_CHECK_INPUT(t.output_type == OutputType::MultipleChoice && sc.IsMap(),
                       "[tasks] {}: scoring (a mapping: reduce, from, drop_last, short_tail) is for output_type multiple_choice",
                       y.at(sc));
    for (const auto& kv : sc) {
      const std::string key = kv.first.as<std::string>();
      if (key == "reduce") {
        const std::string v = scalar(y, kv.second, "scoring.reduce");
        LLMOPT_CHECK_INPUT(v == "sum" || v == "mean", "[tasks] {}: scoring.reduce '{}' is not one of sum, mean",
                           y.at(kv.second), v);
        t.scoring.mean = v == "mean";
      } else if (key == "from") {
        const std::string v = scalar(y, kv.second, "scoring.from");
        LLMOPT_CHECK_INPUT(v == "continuation" || v == "common_prefix",
                           "[tasks] {}: scoring.from '{}' is not one of continuation, common_prefix", y.at(kv.second),
                           v);
        t.scoring.common_prefix = v == "common_prefix";
      } else if (key == "drop_last") {
        t.scoring.drop_last = static_cast<int>(integer(y, kv.second, "scoring.drop_last", 0, 1000));
      } else if (key == "short_tail") {
        t.scoring.short_tail = static_cast<int>(integer(y, kv.second, "scoring.short_tail", 0, 1000));
      } else {
        throw_input("[tasks] {}: unknown field 'scoring.{}' (reduce, from, drop_last, short_tail)", y.at(kv.first),
                    key);
      }
    }
  }
  if (root["chance"]) {
    double c = 0;
    try {
      c = root["chance"].as<double>();
    } catch (const YAML::Exception&) {
      throw_input("[tasks] {}: chance must be a number", y.at(root["chance"]));
    }
    t.chance = c;
  }
  return t;
}

std::string find_tasks_dir(const std::string& override_dir) {
  if (!override_dir.empty()) {
    LLMOPT_CHECK_INPUT(fs::is_directory(override_dir), "[tasks] --tasks-dir '{}' is not a directory", override_dir);
    return override_dir;
  }
  if (const char* env = std::getenv("LLMOPT_TASKS_DIR"); env && *env) return env;
  if (fs::is_directory("configs/tasks")) return "configs/tasks";
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path p = exe.parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path()) {
      if (fs::is_directory(p / "configs" / "tasks")) return (p / "configs" / "tasks").string();
    }
  }
  return "";
}

std::string find_shared_dir(const std::string& tasks_dir) {
  if (const char* env = std::getenv("LLMOPT_SHARED_DIR"); env && *env) return env;
  if (!tasks_dir.empty()) {
    const fs::path root = fs::absolute(fs::path(tasks_dir)).lexically_normal();
    // <repo>/configs/tasks → <repo>/../shared
    const fs::path candidate = root.parent_path().parent_path().parent_path() / "shared";
    if (fs::is_directory(candidate)) return candidate.string();
  }
  return "../shared";
}

std::vector<std::string> list_tasks(const std::string& dir) {
  std::vector<std::string> names;
  if (dir.empty() || !fs::is_directory(dir)) return names;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() == ".yaml") names.push_back(e.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

TaskSpec resolve_task(const std::string& name_or_path, const std::string& tasks_dir, const std::string& shared_dir) {
  const fs::path p(name_or_path);
  if (p.extension() == ".yaml" || p.extension() == ".yml") {
    LLMOPT_CHECK_INPUT(fs::exists(p), "[tasks] task file '{}' does not exist", name_or_path);
    return load_task_file(name_or_path, shared_dir);
  }
  const auto known = list_tasks(tasks_dir);
  LLMOPT_CHECK_INPUT(std::find(known.begin(), known.end(), name_or_path) != known.end(),
                     "[tasks] unknown task '{}'; known tasks{}: {}", name_or_path,
                     tasks_dir.empty() ? "" : " (" + tasks_dir + ")",
                     known.empty() ? std::string("none (no configs/tasks found; give --tasks-dir)")
                                   : fmt::format("{}", fmt::join(known, ", ")));
  return load_task_file((fs::path(tasks_dir) / (name_or_path + ".yaml")).string(), shared_dir);
}

// ------------------------------------------------------------------ splits

std::string parse_split_part(const std::string& s, const std::string& what) {
  if (s == "all" || s == "train") return s;
  if (s == "held_out" || s == "held-out") return "held_out";
  throw_input("[tasks] {}: split '{}' is not one of all, train, held_out", what, s);
}

std::vector<size_t> split_indices(size_t n, const TaskSplit& split, const std::string& what) {
  const std::string part = parse_split_part(split.part, what);
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  if (part == "all") return all;
  const double h = split.held_out;
  LLMOPT_CHECK_INPUT(h > 0, "[tasks] {}: split {} needs held_out > 0 (a count of documents, or a fraction below 1)",
                     what, part);
  LLMOPT_CHECK_INPUT(h < 1 || h == std::floor(h), "[tasks] {}: held_out {} is neither a whole count nor a fraction below 1",
                     what, h);
  const size_t k = h < 1 ? static_cast<size_t>(std::llround(h * static_cast<double>(n))) : static_cast<size_t>(h);
  LLMOPT_CHECK_INPUT(k >= 1 && k < n,
                     "[tasks] {}: held_out {} gives {} held-out documents of {}; between 1 and {} are possible", what, h,
                     k, n, n > 0 ? n - 1 : 0);
  // Fisher-Yates from the back with mt19937_64 (its output sequence is fixed by the standard, and
  // the index is drawn by a modulo rather than std::uniform_int_distribution, whose algorithm is
  // not): the permutation is the same with every standard library.
  std::seed_seq ss{static_cast<uint32_t>(split.seed), static_cast<uint32_t>(split.seed >> 32), 0x5eed5u};
  std::mt19937_64 rng(ss);
  std::vector<size_t> perm = all;
  for (size_t i = n; i > 1; --i) std::swap(perm[i - 1], perm[static_cast<size_t>(rng() % i)]);
  std::vector<char> held(n, 0);
  for (size_t i = 0; i < k; ++i) held[perm[i]] = 1;
  std::vector<size_t> out;
  for (size_t i = 0; i < n; ++i)
    if ((held[i] != 0) == (part == "held_out")) out.push_back(i);
  return out;
}

SplitDocs load_split_docs(const TaskSpec& t, const TaskSplit& split) {
  const std::string part = parse_split_part(split.part, t.file);
  SplitDocs s;
  if (!t.train_data.empty() && part != "all") {
    LLMOPT_CHECK_INPUT(split.held_out == 0,
                       "[tasks] task '{}' ships a training split (train_data {}); held_out must be 0, found {}", t.name,
                       t.train_data, split.held_out);
    s.file = part == "train" ? t.train_data : t.data;
    s.docs = load_docs(s.file, t.format, t.text_split);
    s.index.resize(s.docs.docs.size());
    for (size_t i = 0; i < s.index.size(); ++i) s.index[i] = i;
    return s;
  }
  s.file = t.data;
  DocSet all = load_docs(t.data, t.format, t.text_split);
  s.index = split_indices(all.docs.size(), split, fmt::format("task '{}' ({})", t.name, t.data));
  for (size_t i : s.index) {
    s.docs.docs.push_back(std::move(all.docs[i]));
    s.docs.where.push_back(std::move(all.where[i]));
  }
  return s;
}

std::string describe_split(const TaskSpec& t, const TaskSplit& split, size_t selected) {
  const std::string part = parse_split_part(split.part, t.file);
  if (part == "all") return fmt::format("{}: all {} documents", t.name, selected);
  if (!t.train_data.empty()) return fmt::format("{} {}: {} documents of {}", t.name, part, selected,
                                                part == "train" ? t.train_data : t.data);
  return fmt::format("{} {}: {} documents (held_out {}, seed {})", t.name, part, selected, split.held_out, split.seed);
}

}  // namespace llmopt::eval
