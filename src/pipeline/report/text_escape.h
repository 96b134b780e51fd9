// Escaping of run-directory text (stage names, errors, recipe, manifest values) before it is placed
// in report.html or report.md: nothing read from a run directory is trusted as markup.
#pragma once
#include <string>
#include <string_view>

namespace llmopt::pipeline::report {

// Text content and attribute values for HTML/SVG: & < > " ' become character references.
std::string html_escape(std::string_view text);

// One GitHub-Markdown table cell: HTML-escaped (GitHub renders inline HTML), '|' escaped,
// newlines turned into <br> so the cell stays on one table row.
std::string markdown_cell(std::string_view text);

// A fence of backticks longer than any backtick run inside `text` (at least 3), so that a recipe
// containing ``` cannot close its code block early.
std::string markdown_fence_for(std::string_view text);

}  // namespace llmopt::pipeline::report
