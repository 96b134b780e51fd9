#include "pipeline/templates.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "stages/diagnostics.h"

#ifndef LLMOPT_CONFIGS_DIR
#define LLMOPT_CONFIGS_DIR ""
#endif

namespace fs = std::filesystem;

namespace llmopt::pipeline {

static std::vector<fs::path> template_dirs() {
  std::vector<fs::path> dirs = {fs::path("configs") / "templates"};
  if (std::string(LLMOPT_CONFIGS_DIR).size()) dirs.push_back(fs::path(LLMOPT_CONFIGS_DIR) / "templates");
  return dirs;
}

std::vector<TemplateInfo> list_templates() {
  std::vector<TemplateInfo> out;
  for (const auto& dir : template_dirs()) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() != ".yaml") continue;
      const std::string name = e.path().stem().string();
      if (std::any_of(out.begin(), out.end(), [&](const TemplateInfo& t) { return t.name == name; }))
        continue;
      TemplateInfo t{name, "", e.path().string()};
      std::ifstream in(e.path());
      std::string line;
      if (std::getline(in, line) && line.rfind("#", 0) == 0) {
        t.summary = line.substr(1);
        t.summary.erase(0, t.summary.find_first_not_of(' '));
      }
      out.push_back(t);
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

std::string template_text(const std::string& name) {
  const auto all = list_templates();
  std::vector<std::string> names;
  for (const auto& t : all) {
    names.push_back(t.name);
    if (t.name == name) {
      std::ifstream in(t.path);
      std::stringstream ss;
      ss << in.rdbuf();
      return ss.str();
    }
  }
  throw_input("[init] unknown template '{}'{}; available: {}", name,
              stages::did_you_mean(name, names), names.empty() ? "(none found)" : stages::join(names));
}

}  // namespace llmopt::pipeline
