// Help text generated from the options declarations: `llmopt stages` (plain text or --json) and
// the recipe reference docs/recipes.md (`llmopt stages --markdown`). Nothing here is written by
// hand, so the docs cannot drift from what the parser accepts.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "stages/registry.h"

namespace llmopt::pipeline {

std::string stages_text(const stages::Registry& registry);
nlohmann::json stages_json(const stages::Registry& registry);
std::string recipe_reference_markdown(const stages::Registry& registry);

}  // namespace llmopt::pipeline
