#include "pipeline/report/text_escape.h"

#include <algorithm>

namespace llmopt::pipeline::report {

std::string html_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string markdown_cell(std::string_view text) {
  const std::string escaped = html_escape(text);
  std::string out;
  out.reserve(escaped.size());
  for (size_t i = 0; i < escaped.size(); ++i) {
    const char c = escaped[i];
    if (c == '|') {
      out += "\\|";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\r') {
      continue;
    } else if (c == '\n') {
      if (i + 1 < escaped.size()) out += "<br>";
    } else {
      out += c;
    }
  }
  return out;
}

std::string markdown_fence_for(std::string_view text) {
  size_t longest = 0, run = 0;
  for (const char c : text) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  return std::string(std::max<size_t>(3, longest + 1), '`');
}

}  // namespace llmopt::pipeline::report
