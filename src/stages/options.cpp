#include "stages/options.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

namespace llmopt::stages {

std::string field_type_name(FieldType t) {
  switch (t) {
    case FieldType::Bool: return "bool";
    case FieldType::Int: return "int";
    case FieldType::Float: return "float";
    case FieldType::String: return "string";
    case FieldType::StringList: return "list of strings";
    case FieldType::IntList: return "list of ints";
    case FieldType::FloatList: return "list of floats";
    case FieldType::Section: return "mapping";
    case FieldType::Custom: return "custom";
  }
  return "?";
}

const FieldSpec* SchemaBase::find(const std::string& name) const {
  for (const auto& f : fields_)
    if (f.name == name) return &f;
  return nullptr;
}

std::vector<std::string> SchemaBase::field_names() const {
  std::vector<std::string> names;
  for (const auto& f : fields_) names.push_back(f.name);
  return names;
}

static std::string child_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

void SchemaBase::parse_map(void* obj, const ConfigNode& node, Diagnostics& diag,
                           const std::string& path, const std::set<std::string>& extra_keys) const {
  if (node.is_null()) {
    // "section:" with nothing under it: every field keeps its default.
    for (const auto& f : fields_)
      if (f.required)
        diag.error(node.loc(), fmt::format("missing required key '{}'", child_path(path, f.name)));
    return;
  }
  if (!node.is_map()) {
    diag.error(node.loc(), fmt::format("{}: expected a mapping, found {}",
                                       path.empty() ? "recipe" : path, node.describe()));
    return;
  }
  std::vector<std::string> known = field_names();
  known.insert(known.end(), extra_keys.begin(), extra_keys.end());
  for (const auto& e : node.entries()) {
    if (extra_keys.count(e.key)) continue;
    const FieldSpec* f = find(e.key);
    if (!f) {
      diag.error(e.key_loc,
                 fmt::format("unknown key '{}'{}{}; valid keys: {}", e.key,
                             path.empty() ? "" : " in " + path, did_you_mean(e.key, known),
                             join(known)));
      continue;
    }
    if (f->parse) f->parse(obj, e.value, *f, diag, child_path(path, e.key));
  }
  for (const auto& f : fields_)
    if (f.required && !node.find(f.name))
      diag.error(node.loc(), fmt::format("missing required key '{}'", child_path(path, f.name)));
}

nlohmann::json SchemaBase::to_json(const void* obj) const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& f : fields_)
    if (f.to_json) j[f.name] = f.to_json(obj);
  return j;
}

namespace detail {

static bool expect_scalar(const ConfigNode& n, const std::string& what, Diagnostics& d,
                          const std::string& path) {
  if (n.is_scalar()) return true;
  d.error(n.loc(), fmt::format("{}: expected {}, found {}", path, what, n.describe()));
  return false;
}

static void check_range(double v, const ConfigNode& n, const FieldSpec& f, Diagnostics& d,
                        const std::string& path) {
  if ((f.min && v < *f.min) || (f.max && v > *f.max)) {
    std::string bounds;
    if (f.min && f.max) bounds = fmt::format("between {} and {}", *f.min, *f.max);
    else if (f.min) bounds = fmt::format(">= {}", *f.min);
    else bounds = fmt::format("<= {}", *f.max);
    d.error(n.loc(), fmt::format("{}: value {} is out of range (must be {})", path, n.text(), bounds));
  }
}

static void check_choice(const std::string& v, const ConfigNode& n, const FieldSpec& f,
                         Diagnostics& d, const std::string& path) {
  if (f.choices.empty()) return;
  for (const auto& c : f.choices)
    if (c == v) return;
  d.error(n.loc(), fmt::format("{}: '{}' is not one of: {}{}", path, v, join(f.choices),
                               did_you_mean(v, f.choices)));
}

void parse_value(bool& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d,
                 const std::string& path) {
  if (!expect_scalar(n, "a boolean (true or false)", d, path)) return;
  if (!parse_bool_scalar(n.text(), out))
    d.error(n.loc(), fmt::format("{}: expected a boolean (true or false), found '{}'", path, n.text()));
}

void parse_value(int64_t& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d,
                 const std::string& path) {
  if (!expect_scalar(n, "an integer", d, path)) return;
  if (!parse_int_scalar(n.text(), out)) {
    d.error(n.loc(), fmt::format("{}: expected an integer, found '{}'", path, n.text()));
    return;
  }
  check_range(static_cast<double>(out), n, f, d, path);
}

void parse_value(double& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d,
                 const std::string& path) {
  if (!expect_scalar(n, "a number", d, path)) return;
  if (!parse_float_scalar(n.text(), out)) {
    d.error(n.loc(), fmt::format("{}: expected a number, found '{}'", path, n.text()));
    return;
  }
  check_range(out, n, f, d, path);
}

void parse_value(std::string& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d,
                 const std::string& path) {
  if (n.is_null()) {
    out.clear();
  } else {
    if (!expect_scalar(n, "a string", d, path)) return;
    out = n.text();
  }
  check_choice(out, n, f, d, path);
  if (f.existing_path && !out.empty()) {
    std::error_code ec;
    if (!std::filesystem::exists(out, ec))
      d.error(n.loc(), fmt::format("{}: file not found: '{}'", path, out));
  }
}

template <typename E>
static void parse_list(std::vector<E>& out, const ConfigNode& n, const FieldSpec& f,
                       Diagnostics& d, const std::string& path) {
  // A single scalar is accepted as a one-element list ("formats: gguf").
  std::vector<const ConfigNode*> items;
  if (n.is_scalar()) {
    items.push_back(&n);
  } else if (n.is_sequence()) {
    for (const auto& i : n.items()) items.push_back(&i);
  } else if (!n.is_null()) {
    d.error(n.loc(), fmt::format("{}: expected a list, found {}", path, n.describe()));
    return;
  }
  out.clear();
  for (size_t i = 0; i < items.size(); ++i) {
    E v{};
    parse_value(v, *items[i], f, d, fmt::format("{}[{}]", path, i));
    out.push_back(v);
  }
}

void parse_value(std::vector<std::string>& out, const ConfigNode& n, const FieldSpec& f,
                 Diagnostics& d, const std::string& path) {
  parse_list(out, n, f, d, path);
}
void parse_value(std::vector<int64_t>& out, const ConfigNode& n, const FieldSpec& f,
                 Diagnostics& d, const std::string& path) {
  parse_list(out, n, f, d, path);
}
void parse_value(std::vector<double>& out, const ConfigNode& n, const FieldSpec& f,
                 Diagnostics& d, const std::string& path) {
  parse_list(out, n, f, d, path);
}

std::string render_default(bool v) { return v ? "true" : "false"; }
std::string render_default(int64_t v) { return std::to_string(v); }
std::string render_default(double v) { return fmt::format("{}", v); }
std::string render_default(const std::string& v) { return v.empty() ? "\"\"" : v; }
std::string render_default(const std::vector<std::string>& v) { return "[" + join(v) + "]"; }
std::string render_default(const std::vector<int64_t>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}
std::string render_default(const std::vector<double>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}

}  // namespace detail
}  // namespace llmopt::stages
