// Starter recipes for `llmopt init`: the commented YAML files in configs/templates/ (found in
// ./configs/templates or the source tree's configs/templates).
#pragma once
#include <string>
#include <vector>

namespace llmopt::pipeline {

struct TemplateInfo {
  std::string name;
  std::string summary;  // the template's first comment line
  std::string path;
};

std::vector<TemplateInfo> list_templates();
// InputError listing the available templates when `name` is unknown.
std::string template_text(const std::string& name);

}  // namespace llmopt::pipeline
