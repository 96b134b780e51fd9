// Options declared once. Every options struct (a stage's, or a recipe section's) lists its fields
// in a static `describe(Schema<T>&)`:
//
//   struct EvalDataOptions {
//     std::string path;
//     int64_t ctx = 256;
//     static void describe(Schema<EvalDataOptions>& s) {
//       s.field("path", &EvalDataOptions::path, "Text file to evaluate on").existing_path();
//       s.field("ctx", &EvalDataOptions::ctx, "Context length in tokens").range(2, 1 << 20);
//     }
//   };
//
// That single list drives YAML parsing (with locations in every error), defaults (the struct's
// member initializers), validation (unknown keys with "did you mean", wrong types, ranges, choices,
// missing files), `llmopt stages` help, the generated docs/recipes.md and the canonical JSON used
// for cache keys.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "stages/config_node.h"
#include "stages/diagnostics.h"

namespace llmopt::stages {

enum class FieldType { Bool, Int, Float, String, StringList, IntList, FloatList, Section, Custom };
std::string field_type_name(FieldType t);

class SchemaBase;

struct FieldSpec {
  std::string name;
  std::string doc;
  FieldType type = FieldType::String;
  std::string default_text;  // the default rendered as YAML ("" for an empty string)
  std::vector<std::string> choices;
  std::optional<double> min, max;
  bool existing_path = false;  // a non-empty value must name an existing file or directory
  bool required = false;
  const SchemaBase* section = nullptr;  // nested options (FieldType::Section)
  // Reads `node` into the field of `obj` (a T*), reporting problems to `diag`. `path` is the
  // dotted name of the field for messages ("data.eval.ctx").
  std::function<void(void* obj, const ConfigNode& node, const FieldSpec& self, Diagnostics& diag,
                     const std::string& path)>
      parse;
  std::function<nlohmann::json(const void* obj)> to_json;
};

class SchemaBase {
 public:
  virtual ~SchemaBase() = default;
  const std::vector<FieldSpec>& fields() const { return fields_; }
  const FieldSpec* find(const std::string& name) const;
  std::vector<std::string> field_names() const;

  // Parses a mapping into `obj`: every key must be a declared field (or in `extra_keys`, handled
  // by the caller); required fields must be present. `path` prefixes messages ("data.eval").
  void parse_map(void* obj, const ConfigNode& node, Diagnostics& diag, const std::string& path,
                 const std::set<std::string>& extra_keys = {}) const;
  nlohmann::json to_json(const void* obj) const;

 protected:
  std::vector<FieldSpec> fields_;
};

// Chained refinements of the field just declared.
class FieldBuilder {
 public:
  explicit FieldBuilder(FieldSpec& f) : f_(f) {}
  FieldBuilder& choices(std::vector<std::string> c) {
    f_.choices = std::move(c);
    return *this;
  }
  FieldBuilder& range(double lo, double hi) {
    f_.min = lo;
    f_.max = hi;
    return *this;
  }
  FieldBuilder& min(double lo) {
    f_.min = lo;
    return *this;
  }
  FieldBuilder& existing_path() {
    f_.existing_path = true;
    return *this;
  }
  FieldBuilder& required() {
    f_.required = true;
    return *this;
  }

 private:
  FieldSpec& f_;
};

// Parsers for each supported member type (options.cpp).
namespace detail {
void parse_value(bool& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(int64_t& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(double& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(std::string& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(std::vector<std::string>& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(std::vector<int64_t>& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
void parse_value(std::vector<double>& out, const ConfigNode& n, const FieldSpec& f, Diagnostics& d, const std::string& path);
std::string render_default(bool v);
std::string render_default(int64_t v);
std::string render_default(double v);
std::string render_default(const std::string& v);
std::string render_default(const std::vector<std::string>& v);
std::string render_default(const std::vector<int64_t>& v);
std::string render_default(const std::vector<double>& v);

template <typename M>
constexpr FieldType field_type_of() {
  if constexpr (std::is_same_v<M, bool>) return FieldType::Bool;
  else if constexpr (std::is_same_v<M, int64_t>) return FieldType::Int;
  else if constexpr (std::is_same_v<M, double>) return FieldType::Float;
  else if constexpr (std::is_same_v<M, std::string>) return FieldType::String;
  else if constexpr (std::is_same_v<M, std::vector<std::string>>) return FieldType::StringList;
  else if constexpr (std::is_same_v<M, std::vector<int64_t>>) return FieldType::IntList;
  else if constexpr (std::is_same_v<M, std::vector<double>>) return FieldType::FloatList;
  else return FieldType::Section;
}
}  // namespace detail

template <typename T>
class Schema;

// The schema of an options struct, built once from T::describe.
template <typename T>
const Schema<T>& schema_of() {
  static const Schema<T> s = [] {
    Schema<T> built;
    T::describe(built);
    return built;
  }();
  return s;
}

template <typename T>
class Schema : public SchemaBase {
 public:
  template <typename M>
  FieldBuilder field(const std::string& name, M T::*member, const std::string& doc) {
    FieldSpec f;
    f.name = name;
    f.doc = doc;
    f.type = detail::field_type_of<M>();
    const T defaults{};
    if constexpr (detail::field_type_of<M>() == FieldType::Section) {
      const SchemaBase* nested = &schema_of<M>();
      f.section = nested;
      f.parse = [member, nested](void* obj, const ConfigNode& n, const FieldSpec&, Diagnostics& d,
                                 const std::string& path) {
        nested->parse_map(&(static_cast<T*>(obj)->*member), n, d, path);
      };
      f.to_json = [member, nested](const void* obj) {
        return nested->to_json(&(static_cast<const T*>(obj)->*member));
      };
    } else {
      f.default_text = detail::render_default(defaults.*member);
      f.parse = [member](void* obj, const ConfigNode& n, const FieldSpec& self, Diagnostics& d,
                         const std::string& path) {
        detail::parse_value(static_cast<T*>(obj)->*member, n, self, d, path);
      };
      f.to_json = [member](const void* obj) {
        return nlohmann::json(static_cast<const T*>(obj)->*member);
      };
    }
    fields_.push_back(std::move(f));
    return FieldBuilder(fields_.back());
  }

  // A key handled by the owner (e.g. the recipe's `pipeline` list): known to validation and docs,
  // parsed elsewhere.
  void custom(const std::string& name, const std::string& type_text, const std::string& doc,
              const std::string& default_text = "") {
    FieldSpec f;
    f.name = name;
    f.doc = doc;
    f.type = FieldType::Custom;
    f.default_text = default_text;
    f.choices = {type_text};
    fields_.push_back(std::move(f));
  }

  void parse(T& obj, const ConfigNode& node, Diagnostics& diag, const std::string& path,
             const std::set<std::string>& extra_keys = {}) const {
    parse_map(&obj, node, diag, path, extra_keys);
  }
  nlohmann::json json(const T& obj) const { return to_json(&obj); }
};

}  // namespace llmopt::stages
