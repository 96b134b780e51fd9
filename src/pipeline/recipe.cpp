#include "pipeline/recipe.h"

#include <fmt/format.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "core/error.h"

#ifndef LLMOPT_CONFIGS_DIR
#define LLMOPT_CONFIGS_DIR ""
#endif

namespace fs = std::filesystem;

namespace llmopt::pipeline {

using stages::did_you_mean;
using stages::join;

// ---------------------------------------------------------------- composition

static std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

static std::optional<fs::path> find_recipe_file(const std::string& name, const fs::path& beside,
                                                const std::vector<std::string>& search_dirs) {
  std::vector<std::string> names = {name};
  if (fs::path(name).extension() != ".yaml" && fs::path(name).extension() != ".yml") {
    names.push_back(name + ".yaml");
    names.push_back(name + ".yml");
  }
  std::vector<fs::path> dirs = {beside};
  for (const auto& d : search_dirs)
    if (!d.empty()) dirs.emplace_back(d);
  for (const auto& dir : dirs) {
    for (const auto& n : names) {
      const fs::path p = fs::path(n).is_absolute() ? fs::path(n) : dir / n;
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return p;
    }
  }
  return std::nullopt;
}

static std::string display_path(const fs::path& p) {
  // Paths in messages are as short as possible: relative to the working directory when inside it.
  std::error_code ec;
  const fs::path rel = fs::relative(p, fs::current_path(), ec);
  if (!ec && !rel.empty() && rel.native().rfind("..", 0) != 0) return rel.string();
  return p.string();
}

static ConfigNode compose_impl(const std::string& path, const std::vector<std::string>& search_dirs,
                               std::vector<std::string>& stack, std::vector<std::string>& files) {
  ConfigNode node = ConfigNode::load_file(path);
  if (node.is_null()) node = ConfigNode::map({path, 1, 1});
  LLMOPT_CHECK_INPUT(node.is_map(), "[recipe] {}: a recipe must be a mapping of sections, found {}",
                     node.loc().str(), node.describe());
  const ConfigNode* defaults = node.find("defaults");
  ConfigNode merged = ConfigNode::map(node.loc());
  if (defaults) {
    std::vector<const ConfigNode*> names;
    if (defaults->is_scalar()) names.push_back(defaults);
    else if (defaults->is_sequence())
      for (const auto& item : defaults->items()) names.push_back(&item);
    else if (!defaults->is_null())
      throw_input("[recipe] {}: defaults: expected a list of recipe names, found {}",
                  defaults->loc().str(), defaults->describe());
    const fs::path beside = fs::path(path).parent_path();
    for (const ConfigNode* n : names) {
      LLMOPT_CHECK_INPUT(n->is_scalar() && !n->text().empty(),
                         "[recipe] {}: defaults: expected a recipe name, found {}", n->loc().str(),
                         n->describe());
      const auto found = find_recipe_file(n->text(), beside.empty() ? "." : beside, search_dirs);
      if (!found) {
        std::vector<std::string> where = {beside.empty() ? "." : beside.string()};
        for (const auto& d : search_dirs)
          if (!d.empty()) where.push_back(d);
        throw_input("[recipe] {}: defaults: recipe '{}' not found (looked in {})", n->loc().str(),
                    n->text(), join(where));
      }
      const std::string canonical = fs::weakly_canonical(*found).string();
      for (size_t i = 0; i < stack.size(); ++i) {
        if (stack[i] == canonical) {
          std::vector<std::string> chain;
          for (size_t j = i; j < stack.size(); ++j) chain.push_back(display_path(stack[j]));
          chain.push_back(display_path(canonical));
          throw_input("[recipe] {}: cyclic defaults: {}", n->loc().str(), join(chain, " -> "));
        }
      }
      stack.push_back(canonical);
      ConfigNode sub = compose_impl(display_path(*found), search_dirs, stack, files);
      stack.pop_back();
      merged = ConfigNode::merge(merged, sub);
    }
    node.erase("defaults");
  }
  files.push_back(path);
  return ConfigNode::merge(merged, node);
}

static std::vector<std::string> default_search_dirs(const std::vector<std::string>& extra) {
  std::vector<std::string> dirs = extra;
  dirs.push_back("configs");
  if (std::string(LLMOPT_CONFIGS_DIR).size()) dirs.push_back(LLMOPT_CONFIGS_DIR);
  return dirs;
}

ConfigNode compose_recipe(const std::string& path, const std::vector<std::string>& search_dirs,
                          std::vector<std::string>& files) {
  std::error_code ec;
  LLMOPT_CHECK_INPUT(fs::is_regular_file(path, ec), "[recipe] {}:1:1: recipe file not found", path);
  std::vector<std::string> stack = {fs::weakly_canonical(path).string()};
  return compose_impl(path, default_search_dirs(search_dirs), stack, files);
}

// ---------------------------------------------------------------- overrides

static bool parse_index(const std::string& s, size_t& out) {
  if (s.empty() || s.size() > 9) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  out = std::stoul(s);
  return true;
}

static std::vector<std::string> child_names(const ConfigNode& n) {
  if (n.is_map()) return n.keys();
  std::vector<std::string> out;
  if (n.is_sequence())
    for (size_t i = 0; i < n.items().size(); ++i) out.push_back(std::to_string(i));
  return out;
}

bool set_path(ConfigNode& tree, const std::string& path, ConfigNode value, SetMode mode,
              const SourceLoc& loc, Diagnostics& diag) {
  const std::vector<std::string> parts = split_path(path);
  for (const auto& p : parts) {
    if (p.empty()) {
      diag.error(loc, fmt::format("bad override path '{}': empty key", path));
      return false;
    }
  }
  ConfigNode* node = &tree;
  std::string walked;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& key = parts[i];
    const bool last = i + 1 == parts.size();
    const std::string where = walked.empty() ? "the recipe" : "'" + walked + "'";
    if (node->is_sequence()) {
      size_t idx = 0;
      const size_t size = node->items().size();
      if (!parse_index(key, idx)) {
        diag.error(loc, fmt::format("bad override path '{}': {} is a list, '{}' is not an index",
                                    path, where, key));
        return false;
      }
      if (idx < size) {
        if (last) {
          node->items()[idx] = std::move(value);
          return true;
        }
        node = &node->items()[idx];
      } else if (idx == size && mode == SetMode::Add) {
        if (last) {
          node->items().push_back(std::move(value));
          return true;
        }
        node->items().push_back(ConfigNode::map(loc));
        node = &node->items().back();
      } else {
        diag.error(loc, fmt::format("bad override path '{}': index {} is out of range ({} has {} "
                                    "entries{})",
                                    path, idx, where, size,
                                    mode == SetMode::Add ? "" : "; use +PATH=VALUE to append"));
        return false;
      }
    } else if (node->is_map() || (node->is_null() && mode == SetMode::Add)) {
      ConfigNode* child = node->is_map() ? node->find(key) : nullptr;
      if (last) {
        if (child && mode == SetMode::Add) {
          diag.error(loc, fmt::format("override '+{}': the key already exists; use {}=VALUE to "
                                      "change it",
                                      path, path));
          return false;
        }
        node->set(key, std::move(value), loc);
        return true;
      }
      if (!child) {
        if (mode != SetMode::Add) {
          diag.error(loc, fmt::format("bad override path '{}': no key '{}' in {}{}", path, key,
                                      where, did_you_mean(key, child_names(*node))));
          return false;
        }
        child = &node->set(key, ConfigNode::map(loc), loc);
      }
      node = child;
    } else {
      diag.error(loc, fmt::format("bad override path '{}': {} is {}, not a mapping or list", path,
                                  where, node->describe()));
      return false;
    }
    walked += (walked.empty() ? "" : ".") + key;
  }
  return true;
}

static bool delete_path(ConfigNode& tree, const std::string& path, const SourceLoc& loc,
                        Diagnostics& diag) {
  const std::vector<std::string> parts = split_path(path);
  ConfigNode* node = &tree;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& key = parts[i];
    const bool last = i + 1 == parts.size();
    if (node->is_map()) {
      if (last) {
        if (node->erase(key)) return true;
        break;
      }
      node = node->find(key);
      if (!node) break;
    } else if (node->is_sequence()) {
      size_t idx = 0;
      if (!parse_index(key, idx) || idx >= node->items().size()) break;
      if (last) {
        node->items().erase(node->items().begin() + static_cast<long>(idx));
        return true;
      }
      node = &node->items()[idx];
    } else {
      break;
    }
  }
  diag.error(loc, fmt::format("bad override path '~{}': nothing to delete there", path));
  return false;
}

void apply_override(ConfigNode& tree, const std::string& text, int index, Diagnostics& diag) {
  const SourceLoc start{"<override>", index, 1};
  if (text.empty()) {
    diag.error(start, "empty override");
    return;
  }
  SetMode mode = SetMode::Set;
  size_t path_begin = 0;
  if (text[0] == '~') {
    std::string path = text.substr(1);
    const size_t eq = path.find('=');
    if (eq != std::string::npos) path = path.substr(0, eq);
    if (path.empty()) diag.error(start, "override '~': missing the path to delete");
    else delete_path(tree, path, {"<override>", index, 2}, diag);
    return;
  }
  if (text[0] == '+') {
    mode = SetMode::Add;
    path_begin = 1;
  }
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == path_begin) {
    diag.error(start, fmt::format("override '{}' must look like key.path=value, +key.path=value or "
                                  "~key.path",
                                  text));
    return;
  }
  const std::string path = text.substr(path_begin, eq - path_begin);
  const std::string value_text = text.substr(eq + 1);
  // The value is YAML, so lists and mappings work: pipeline.3.formats=[gguf,hf].
  ConfigNode value = ConfigNode::parse(value_text, "<override>", index - 1, static_cast<int>(eq) + 1);
  set_path(tree, path, std::move(value), mode,
           {"<override>", index, static_cast<int>(path_begin) + 1}, diag);
}

// ---------------------------------------------------------------- interpolation

std::string utc_timestamp() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

static const ConfigNode* find_path(const ConfigNode& root, const std::string& path) {
  const ConfigNode* node = &root;
  for (const auto& key : split_path(path)) {
    if (node->is_map()) {
      node = node->find(key);
    } else if (node->is_sequence()) {
      size_t idx = 0;
      if (!parse_index(key, idx) || idx >= node->items().size()) return nullptr;
      node = &node->items()[idx];
    } else {
      return nullptr;
    }
    if (!node) return nullptr;
  }
  return node;
}

static void collect_paths(const ConfigNode& n, const std::string& prefix,
                          std::vector<std::string>& out) {
  if (n.is_map()) {
    for (const auto& e : n.entries()) {
      const std::string p = prefix.empty() ? e.key : prefix + "." + e.key;
      out.push_back(p);
      collect_paths(e.value, p, out);
    }
  } else if (n.is_sequence()) {
    for (size_t i = 0; i < n.items().size(); ++i) {
      const std::string p = prefix + "." + std::to_string(i);
      out.push_back(p);
      collect_paths(n.items()[i], p, out);
    }
  }
}

namespace {
class Interpolator {
 public:
  Interpolator(const ConfigNode& root, std::string timestamp, Diagnostics& diag)
      : root_(root), timestamp_(std::move(timestamp)), diag_(diag) {}

  std::optional<std::string> resolve(const std::string& text, const SourceLoc& loc, bool quoted) {
    std::string out;
    size_t i = 0;
    while (i < text.size()) {
      const size_t s = text.find("${", i);
      if (s == std::string::npos) {
        out += text.substr(i);
        break;
      }
      out += text.substr(i, s - i);
      SourceLoc at = loc;
      // Plain one-line scalars start at their mark; quoted ones one column later.
      at.column += static_cast<int>(s) + (quoted ? 1 : 0);
      const size_t e = text.find('}', s + 2);
      if (e == std::string::npos) {
        diag_.error(at, fmt::format("unterminated interpolation in '{}' (missing '}}')", text));
        return std::nullopt;
      }
      const std::string key = text.substr(s + 2, e - s - 2);
      const auto value = lookup(key, at);
      if (!value) return std::nullopt;
      out += *value;
      i = e + 1;
    }
    return out;
  }

 private:
  std::optional<std::string> lookup(const std::string& key, const SourceLoc& at) {
    if (key.empty()) {
      diag_.error(at, "empty interpolation '${}'");
      return std::nullopt;
    }
    if (key == "timestamp") return timestamp_;
    if (key.rfind("env:", 0) == 0) {
      const std::string var = key.substr(4);
      const char* v = var.empty() ? nullptr : std::getenv(var.c_str());
      if (!v) {
        diag_.error(at, fmt::format("interpolation '${{{}}}': environment variable '{}' is not set",
                                    key, var));
        return std::nullopt;
      }
      return std::string(v);
    }
    const ConfigNode* node = find_path(root_, key);
    if (!node) {
      std::vector<std::string> paths = {"timestamp"};
      collect_paths(root_, "", paths);
      diag_.error(at, fmt::format("interpolation '${{{}}}': no such key in the recipe{}", key,
                                  did_you_mean(key, paths)));
      return std::nullopt;
    }
    if (!node->is_scalar()) {
      diag_.error(at, fmt::format("interpolation '${{{}}}' refers to {}; only single values can be "
                                  "interpolated",
                                  key, node->describe()));
      return std::nullopt;
    }
    for (size_t i = 0; i < stack_.size(); ++i) {
      if (stack_[i] == key) {
        std::vector<std::string> chain(stack_.begin() + static_cast<long>(i), stack_.end());
        chain.push_back(key);
        diag_.error(at, fmt::format("cyclic interpolation: {}", join(chain, " -> ")));
        return std::nullopt;
      }
    }
    stack_.push_back(key);
    auto v = resolve(node->text(), node->loc(), node->quoted());
    stack_.pop_back();
    return v;
  }

  const ConfigNode& root_;
  std::string timestamp_;
  Diagnostics& diag_;
  std::vector<std::string> stack_;
};

void interpolate_node(ConfigNode& n, Interpolator& interp) {
  if (n.is_scalar()) {
    if (n.text().find("${") != std::string::npos) {
      auto v = interp.resolve(n.text(), n.loc(), n.quoted());
      if (v) n.set_text(*v);
    }
  } else if (n.is_map()) {
    for (auto& e : n.entries()) interpolate_node(e.value, interp);
  } else if (n.is_sequence()) {
    for (auto& item : n.items()) interpolate_node(item, interp);
  }
}
}  // namespace

void interpolate(ConfigNode& tree, const std::string& timestamp, Diagnostics& diag) {
  // Resolution reads the tree while scalars are rewritten in place; a rewritten scalar holds its
  // final text, so later lookups of it see the same value.
  Interpolator interp(tree, timestamp, diag);
  interpolate_node(tree, interp);
}

// ---------------------------------------------------------------- validation

static void validate_stages(const ConfigNode& tree, const stages::Registry& registry, Recipe& r,
                            Diagnostics& diag) {
  const ConfigNode* pipeline = tree.find("pipeline");
  if (!pipeline) {
    diag.error(tree.loc(), "missing required key 'pipeline' (a list of stages)");
    return;
  }
  if (!pipeline->is_sequence() || pipeline->items().empty()) {
    diag.error(pipeline->loc(), fmt::format("pipeline: expected a non-empty list of stages, found {}",
                                            pipeline->describe()));
    return;
  }
  std::map<std::string, int> type_counts;
  for (const auto& item : pipeline->items()) {
    const ConfigNode* t = item.is_map() ? item.find("type") : nullptr;
    if (t && t->is_scalar()) type_counts[t->text()]++;
  }
  std::set<std::string> names;
  for (size_t i = 0; i < pipeline->items().size(); ++i) {
    const ConfigNode& item = pipeline->items()[i];
    const std::string path = fmt::format("pipeline.{}", i);
    if (!item.is_map()) {
      diag.error(item.loc(), fmt::format("{}: expected a stage mapping with a 'type:', found {}",
                                         path, item.describe()));
      continue;
    }
    const ConfigNode* type = item.find("type");
    if (!type) {
      diag.error(item.loc(), fmt::format("{}: missing required key 'type' (one of: {})", path,
                                         join(registry.types())));
      continue;
    }
    if (!type->is_scalar()) {
      diag.error(type->loc(), fmt::format("{}.type: expected a stage type, found {}", path,
                                          type->describe()));
      continue;
    }
    const stages::StageInfo* info = registry.find(type->text());
    if (!info) {
      diag.error(type->loc(), fmt::format("{}: unknown stage type '{}'{}; valid types: {}", path,
                                          type->text(), did_you_mean(type->text(), registry.types()),
                                          join(registry.types())));
      continue;
    }
    StageEntry entry;
    entry.type = info->type;
    entry.loc = item.loc();
    entry.stage = info->create(item, diag, path);
    const ConfigNode* name = item.find("name");
    if (name) {
      if (!name->is_scalar() || name->text().empty())
        diag.error(name->loc(), fmt::format("{}.name: expected a stage name, found {}", path,
                                            name->describe()));
      else
        entry.name = name->text();
    }
    if (entry.name.empty())
      entry.name = type_counts[entry.type] > 1 ? fmt::format("{}-{}", entry.type, i) : entry.type;
    if (!names.insert(entry.name).second)
      diag.error(name ? name->loc() : item.loc(),
                 fmt::format("{}: stage name '{}' is used twice; names must be unique", path,
                             entry.name));
    r.stages.push_back(std::move(entry));
  }
}

static void validate_sweep(const ConfigNode& tree, Recipe& r, Diagnostics& diag) {
  const ConfigNode* sweep = tree.find("sweep");
  if (!sweep || sweep->is_null()) return;
  if (!sweep->is_map()) {
    diag.error(sweep->loc(), fmt::format("sweep: expected a mapping of override paths to lists of "
                                         "values, found {}",
                                         sweep->describe()));
    return;
  }
  for (const auto& e : sweep->entries()) {
    SweepAxis axis;
    axis.path = e.key;
    axis.loc = e.key_loc;
    const std::string root = split_path(e.key)[0];
    if (root == "sweep" || root == "sweep_parallel" || root == "output" || root == "defaults") {
      diag.error(e.key_loc, fmt::format("sweep: '{}' cannot be swept", e.key));
      continue;
    }
    if (e.value.is_sequence()) {
      axis.values = e.value.items();
    } else {
      diag.error(e.value.loc(), fmt::format("sweep.{}: expected a list of values, found {}", e.key,
                                            e.value.describe()));
      continue;
    }
    if (axis.values.empty()) {
      diag.error(e.value.loc(), fmt::format("sweep.{}: the list of values is empty", e.key));
      continue;
    }
    r.sweep.push_back(std::move(axis));
  }
}

Recipe recipe_from_tree(ConfigNode tree, const std::string& path, const RecipeLoadOptions& options) {
  const stages::Registry& registry =
      options.registry ? *options.registry : stages::builtin_registry();
  Diagnostics diag;
  Recipe r;
  r.path = path;
  r.timestamp = options.timestamp;
  if (!tree.is_map()) {
    diag.error(tree.loc(), fmt::format("a recipe must be a mapping of sections, found {}",
                                       tree.describe()));
    diag.throw_if_any();
  }
  stages::schema_of<RecipeOptions>().parse(r.options, tree, diag, "");
  validate_stages(tree, registry, r, diag);
  validate_sweep(tree, r, diag);
  diag.throw_if_any();
  // Every sweep value must give a valid recipe too: check each axis value on its own (the
  // product's points combine already checked values of different keys).
  if (!r.sweep.empty()) {
    ConfigNode base = tree;
    base.erase("sweep");
    for (const auto& axis : r.sweep) {
      for (const auto& v : axis.values) {
        ConfigNode point = base;
        if (!set_path(point, axis.path, v, SetMode::Set, axis.loc, diag)) break;
        Diagnostics point_diag;
        Recipe scratch;
        stages::schema_of<RecipeOptions>().parse(scratch.options, point, point_diag, "");
        validate_stages(point, registry, scratch, point_diag);
        for (const auto& d : point_diag.errors()) diag.error(d.loc, d.message);
      }
    }
    diag.throw_if_any();
  }
  r.tree = std::move(tree);
  return r;
}

Recipe load_recipe(const std::string& path, const RecipeLoadOptions& options) {
  std::vector<std::string> files;
  ConfigNode tree = compose_recipe(path, options.search_dirs, files);
  Diagnostics diag;
  for (size_t i = 0; i < options.overrides.size(); ++i)
    apply_override(tree, options.overrides[i], static_cast<int>(i) + 1, diag);
  diag.throw_if_any();
  // Defaults that interpolation may refer to.
  const SourceLoc root_loc = tree.loc();
  if (!tree.find("name"))
    tree.set("name", ConfigNode::scalar(fs::path(path).stem().string(), root_loc, true), root_loc);
  ConfigNode* output = tree.find("output");
  if (!output) output = &tree.set("output", ConfigNode::map(root_loc), root_loc);
  if (output->is_map() && !output->find("dir"))
    output->set("dir", ConfigNode::scalar(OutputOptions{}.dir, root_loc, true), root_loc);
  RecipeLoadOptions resolved = options;
  if (resolved.timestamp.empty()) resolved.timestamp = utc_timestamp();
  interpolate(tree, resolved.timestamp, diag);
  diag.throw_if_any();
  Recipe r = recipe_from_tree(std::move(tree), path, resolved);
  r.composed_files = files;
  return r;
}

std::string sweep_point_name(const std::vector<std::pair<std::string, ConfigNode>>& point) {
  std::vector<std::string> parts;
  for (const auto& [path, value] : point) {
    const std::vector<std::string> segs = split_path(path);
    std::string key = segs.back();
    size_t idx;
    // "pipeline.1.bits" -> "bits"; a bare index would say nothing, keep the whole path then.
    if (parse_index(key, idx)) key = path;
    std::string v = value.is_scalar() ? value.text() : value.to_json().dump();
    parts.push_back(key + "=" + v);
  }
  return join(parts, ",");
}

}  // namespace llmopt::pipeline
