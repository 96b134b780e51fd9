#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>

namespace llmopt::log {

void init(bool quiet) {
  auto logger = spdlog::stderr_color_mt("llmopt");
  logger->set_pattern("%^[%L]%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(quiet ? spdlog::level::warn : spdlog::level::info);
  if (const char* lvl = std::getenv("LLMOPT_LOG")) spdlog::set_level(spdlog::level::from_str(lvl));
}

}  // namespace llmopt::log
