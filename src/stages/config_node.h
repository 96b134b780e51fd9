// A YAML document as a tree that remembers, for every node, the file, line and column it came
// from. Recipes are composed from several files and patched by command-line overrides, so a
// yaml-cpp node (which knows its line but not its file) is converted into this tree on load; every
// later step (merge, interpolation, override, validation) keeps the locations, and every error
// can say "FILE:LINE:COLUMN: message".
#pragma once
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace llmopt::stages {

// 1-based line and column; line 0 means "no position known" (e.g. a built-in default).
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;
  // "file:line:column" ("file:1:1" when the position is unknown, so the format never changes).
  std::string str() const;
};

class ConfigNode {
 public:
  enum class Kind { Null, Scalar, Sequence, Map };
  struct Entry;

  ConfigNode() = default;
  static ConfigNode scalar(std::string text, SourceLoc loc, bool quoted = false);
  static ConfigNode map(SourceLoc loc);
  static ConfigNode sequence(SourceLoc loc);
  static ConfigNode null(SourceLoc loc);

  // Converts a parsed yaml-cpp node; `file` is recorded in every location.
  static ConfigNode from_yaml(const YAML::Node& node, const std::string& file);
  // Parses YAML text (a file's contents or an override value). InputError "FILE:L:C: ..." on
  // malformed YAML. `line_offset`/`column_offset` shift the recorded positions (overrides).
  static ConfigNode parse(const std::string& text, const std::string& file, int line_offset = 0,
                          int column_offset = 0);
  static ConfigNode load_file(const std::string& path);

  Kind kind() const { return kind_; }
  bool is_null() const { return kind_ == Kind::Null; }
  bool is_scalar() const { return kind_ == Kind::Scalar; }
  bool is_map() const { return kind_ == Kind::Map; }
  bool is_sequence() const { return kind_ == Kind::Sequence; }
  // "a mapping", "a list", "a scalar 'x'", "nothing": for "expected X, found Y" messages.
  std::string describe() const;

  const SourceLoc& loc() const { return loc_; }
  void set_loc(const SourceLoc& loc) { loc_ = loc; }
  // Scalar text (as written, quotes removed) and whether it was quoted in the source.
  const std::string& text() const { return text_; }
  void set_text(std::string t) { text_ = std::move(t); }
  bool quoted() const { return quoted_; }

  // Map access. find() returns null when absent.
  const ConfigNode* find(const std::string& key) const;
  ConfigNode* find(const std::string& key);
  const Entry* find_entry(const std::string& key) const;
  // Inserts or replaces (keeping the entry's position when replacing).
  ConfigNode& set(const std::string& key, ConfigNode value, SourceLoc key_loc = {});
  bool erase(const std::string& key);
  std::vector<Entry>& entries() { return entries_; }
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<std::string> keys() const;

  // Sequence access.
  std::vector<ConfigNode>& items() { return items_; }
  const std::vector<ConfigNode>& items() const { return items_; }

  // Deep merge: maps merge key by key (recursively), anything else in `over` replaces.
  static ConfigNode merge(const ConfigNode& base, const ConfigNode& over);

  // Scalars become JSON numbers/booleans/null when they read as such (unless quoted).
  nlohmann::json to_json() const;
  // Emits the tree as YAML (block style; flow style for lists of scalars).
  void emit(YAML::Emitter& out) const;
  std::string to_yaml() const;

 private:
  Kind kind_ = Kind::Null;
  SourceLoc loc_;
  std::string text_;
  bool quoted_ = false;
  std::vector<Entry> entries_;
  std::vector<ConfigNode> items_;
};

struct ConfigNode::Entry {
  std::string key;
  SourceLoc key_loc;
  ConfigNode value;
};

// Typed reading of a plain scalar, YAML 1.2 core schema.
bool scalar_is_null(const std::string& text);
bool parse_bool_scalar(const std::string& text, bool& out);
bool parse_int_scalar(const std::string& text, int64_t& out);
bool parse_float_scalar(const std::string& text, double& out);

}  // namespace llmopt::stages
