// Stage registry: YAML `type:` string -> options schema + factory. One explicit function,
// register_builtin_stages(), lists every stage; an unknown type is an error listing the valid ones.
#pragma once
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "stages/options.h"
#include "stages/stage.h"

namespace llmopt::stages {

struct StageInfo {
  std::string type;
  std::string doc;  // one line
  const SchemaBase* schema = nullptr;
  // Parses the stage's mapping (keys besides `type` and `name`) and builds the stage.
  std::function<std::unique_ptr<Stage>(const ConfigNode& node, Diagnostics& diag,
                                       const std::string& path)>
      create;
};

// Keys every pipeline entry may have besides its options.
inline const std::set<std::string>& common_stage_keys() {
  static const std::set<std::string> keys = {"type", "name"};
  return keys;
}

class Registry {
 public:
  void add(StageInfo info);
  // S has `using Options = ...`, `static constexpr const char* kType`, `kDoc`, and a constructor
  // taking Options.
  template <typename S>
  void add() {
    StageInfo info;
    info.type = S::kType;
    info.doc = S::kDoc;
    info.schema = &schema_of<typename S::Options>();
    info.create = [](const ConfigNode& node, Diagnostics& diag, const std::string& path) {
      typename S::Options options{};
      schema_of<typename S::Options>().parse(options, node, diag, path, common_stage_keys());
      return std::unique_ptr<Stage>(new S(options));
    };
    add(std::move(info));
  }
  const StageInfo* find(const std::string& type) const;
  std::vector<std::string> types() const;
  const std::vector<StageInfo>& all() const { return stages_; }

 private:
  std::vector<StageInfo> stages_;
};

// Registers evaluate, export (and every stage added later).
void register_builtin_stages(Registry& registry);
// A registry with the built-in stages (built once).
const Registry& builtin_registry();

}  // namespace llmopt::stages
