// Logging goes to stderr only (stdout is for machine-readable results).
#pragma once
#include <spdlog/spdlog.h>

namespace llmopt::log {

// Sets up the stderr logger once; level from LLMOPT_LOG (trace|debug|info|warn|error|off).
void init(bool quiet = false);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

}  // namespace llmopt::log
