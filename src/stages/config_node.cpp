#include "stages/config_node.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace llmopt::stages {

std::string SourceLoc::str() const {
  return fmt::format("{}:{}:{}", file.empty() ? "<recipe>" : file, line > 0 ? line : 1,
                     column > 0 ? column : 1);
}

ConfigNode ConfigNode::scalar(std::string text, SourceLoc loc, bool quoted) {
  ConfigNode n;
  n.kind_ = Kind::Scalar;
  n.text_ = std::move(text);
  n.loc_ = std::move(loc);
  n.quoted_ = quoted;
  return n;
}
ConfigNode ConfigNode::map(SourceLoc loc) {
  ConfigNode n;
  n.kind_ = Kind::Map;
  n.loc_ = std::move(loc);
  return n;
}
ConfigNode ConfigNode::sequence(SourceLoc loc) {
  ConfigNode n;
  n.kind_ = Kind::Sequence;
  n.loc_ = std::move(loc);
  return n;
}
ConfigNode ConfigNode::null(SourceLoc loc) {
  ConfigNode n;
  n.loc_ = std::move(loc);
  return n;
}

static SourceLoc loc_of(const YAML::Mark& m, const std::string& file, int line_offset,
                        int column_offset) {
  SourceLoc loc;
  loc.file = file;
  if (m.line >= 0) {
    loc.line = m.line + 1 + line_offset;
    // The column offset only applies on the first line of an override value.
    loc.column = m.column + 1 + (m.line == 0 ? column_offset : 0);
  }
  return loc;
}

static ConfigNode convert(const YAML::Node& node, const std::string& file, int lo, int co) {
  const SourceLoc loc = loc_of(node.Mark(), file, lo, co);
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      // yaml-cpp tags plain scalars "?" and quoted ones "!".
      return ConfigNode::scalar(node.Scalar(), loc, node.Tag() == "!");
    case YAML::NodeType::Sequence: {
      ConfigNode seq = ConfigNode::sequence(loc);
      for (const auto& item : node) seq.items().push_back(convert(item, file, lo, co));
      return seq;
    }
    case YAML::NodeType::Map: {
      ConfigNode map = ConfigNode::map(loc);
      for (const auto& kv : node) {
        const SourceLoc key_loc = loc_of(kv.first.Mark(), file, lo, co);
        LLMOPT_CHECK_INPUT(kv.first.IsScalar(), "[recipe] {}: mapping keys must be plain names",
                           key_loc.str());
        const std::string key = kv.first.Scalar();
        LLMOPT_CHECK_INPUT(map.find(key) == nullptr, "[recipe] {}: duplicate key '{}'",
                           key_loc.str(), key);
        map.entries().push_back({key, key_loc, convert(kv.second, file, lo, co)});
      }
      return map;
    }
    default:
      return ConfigNode::null(loc);
  }
}

ConfigNode ConfigNode::from_yaml(const YAML::Node& node, const std::string& file) {
  return convert(node, file, 0, 0);
}

ConfigNode ConfigNode::parse(const std::string& text, const std::string& file, int line_offset,
                             int column_offset) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    SourceLoc loc = loc_of(e.mark, file, line_offset, column_offset);
    throw InputError(fmt::format("[recipe] {}: malformed YAML: {}", loc.str(), e.msg));
  }
  ConfigNode n = convert(root, file, line_offset, column_offset);
  if (n.is_null() && n.loc().line == 0) n.set_loc({file, 1 + line_offset, 1 + column_offset});
  return n;
}

ConfigNode ConfigNode::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LLMOPT_CHECK_INPUT(in.good(), "[recipe] {}:1:1: cannot read the file", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

std::string ConfigNode::describe() const {
  switch (kind_) {
    case Kind::Null:
      return "nothing";
    case Kind::Scalar:
      return fmt::format("'{}'", text_);
    case Kind::Sequence:
      return "a list";
    case Kind::Map:
      return "a mapping";
  }
  return "?";
}

const ConfigNode::Entry* ConfigNode::find_entry(const std::string& key) const {
  for (const auto& e : entries_)
    if (e.key == key) return &e;
  return nullptr;
}
const ConfigNode* ConfigNode::find(const std::string& key) const {
  const Entry* e = find_entry(key);
  return e ? &e->value : nullptr;
}
ConfigNode* ConfigNode::find(const std::string& key) {
  for (auto& e : entries_)
    if (e.key == key) return &e.value;
  return nullptr;
}
ConfigNode& ConfigNode::set(const std::string& key, ConfigNode value, SourceLoc key_loc) {
  if (kind_ != Kind::Map) {
    kind_ = Kind::Map;
    items_.clear();
    text_.clear();
  }
  for (auto& e : entries_) {
    if (e.key == key) {
      e.value = std::move(value);
      if (key_loc.line > 0) e.key_loc = key_loc;
      return e.value;
    }
  }
  if (key_loc.line == 0) key_loc = value.loc();
  entries_.push_back({key, key_loc, std::move(value)});
  return entries_.back().value;
}
bool ConfigNode::erase(const std::string& key) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (it->key == key) {
      entries_.erase(it);
      return true;
    }
  }
  return false;
}
std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> k;
  for (const auto& e : entries_) k.push_back(e.key);
  return k;
}

ConfigNode ConfigNode::merge(const ConfigNode& base, const ConfigNode& over) {
  if (!base.is_map() || !over.is_map()) return over;
  ConfigNode out = base;
  for (const auto& e : over.entries()) {
    ConfigNode* existing = out.find(e.key);
    if (existing) {
      *existing = merge(*existing, e.value);
      for (auto& oe : out.entries())
        if (oe.key == e.key) oe.key_loc = e.key_loc;
    } else {
      out.entries().push_back(e);
    }
  }
  return out;
}

bool scalar_is_null(const std::string& t) {
  return t.empty() || t == "~" || t == "null" || t == "Null" || t == "NULL";
}
bool parse_bool_scalar(const std::string& t, bool& out) {
  if (t == "true" || t == "True" || t == "TRUE") {
    out = true;
    return true;
  }
  if (t == "false" || t == "False" || t == "FALSE") {
    out = false;
    return true;
  }
  return false;
}
bool parse_int_scalar(const std::string& t, int64_t& out) {
  if (t.empty()) return false;
  const char* b = t.data();
  const char* e = t.data() + t.size();
  if (*b == '+') ++b;
  auto r = std::from_chars(b, e, out);
  return r.ec == std::errc() && r.ptr == e;
}
bool parse_float_scalar(const std::string& t, double& out) {
  if (t.empty()) return false;
  if (t == ".inf" || t == "+.inf") {
    out = INFINITY;
    return true;
  }
  if (t == "-.inf") {
    out = -INFINITY;
    return true;
  }
  const char* b = t.data();
  const char* e = t.data() + t.size();
  if (*b == '+') ++b;
  auto r = std::from_chars(b, e, out);
  return r.ec == std::errc() && r.ptr == e && std::isfinite(out);
}

nlohmann::json ConfigNode::to_json() const {
  switch (kind_) {
    case Kind::Null:
      return nullptr;
    case Kind::Scalar: {
      if (quoted_) return text_;
      int64_t i;
      double d;
      bool b;
      if (parse_int_scalar(text_, i)) return i;
      if (parse_float_scalar(text_, d)) return d;
      if (parse_bool_scalar(text_, b)) return b;
      if (scalar_is_null(text_)) return nullptr;
      return text_;
    }
    case Kind::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& item : items_) a.push_back(item.to_json());
      return a;
    }
    case Kind::Map: {
      // ordered_json would keep order; hashes use the sorted form, which is what we want.
      nlohmann::json o = nlohmann::json::object();
      for (const auto& e : entries_) o[e.key] = e.value.to_json();
      return o;
    }
  }
  return nullptr;
}

static bool all_scalars(const std::vector<ConfigNode>& items) {
  for (const auto& i : items)
    if (!i.is_scalar()) return false;
  return true;
}

void ConfigNode::emit(YAML::Emitter& out) const {
  switch (kind_) {
    case Kind::Null:
      out << YAML::Null;
      break;
    case Kind::Scalar:
      if (quoted_) out << YAML::DoubleQuoted;
      out << text_;
      break;
    case Kind::Sequence:
      if (all_scalars(items_)) out << YAML::Flow;
      out << YAML::BeginSeq;
      for (const auto& i : items_) i.emit(out);
      out << YAML::EndSeq;
      break;
    case Kind::Map:
      out << YAML::BeginMap;
      for (const auto& e : entries_) {
        out << YAML::Key << e.key << YAML::Value;
        e.value.emit(out);
      }
      out << YAML::EndMap;
      break;
  }
}

std::string ConfigNode::to_yaml() const {
  YAML::Emitter out;
  emit(out);
  return std::string(out.c_str()) + "\n";
}

}  // namespace llmopt::stages
