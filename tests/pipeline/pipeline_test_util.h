// Helpers for pipeline tests: temporary directories, files, running the llmopt binary (LLMOPT_BIN,
// set by ctest) and a tiny model (random weights + a BPE tokenizer trained on grammar stories).
#pragma once
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

namespace llmopt::testing {

namespace fs = std::filesystem;

inline fs::path make_temp_dir(const std::string& tag) {
  fs::path base = fs::temp_directory_path() / "llmopt-pipeline-tests";
  fs::create_directories(base);
  std::string templ = (base / (tag + "-XXXXXX")).string();
  char* made = ::mkdtemp(templ.data());
  EXPECT_NE(made, nullptr);
  return fs::path(templ);
}

inline void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << text;
}

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string llmopt_bin() {
  const char* b = std::getenv("LLMOPT_BIN");
  if (b && *b) return b;
  return std::string(LLMOPT_BINARY_DIR) + "/apps/llmopt/llmopt";
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout + stderr
};

// Runs `llmopt ARGS` (already quoted) in `cwd`, capturing stdout and stderr together.
inline CommandResult run_llmopt(const std::string& args, const fs::path& cwd = {}) {
  std::string cmd;
  if (!cwd.empty()) cmd += "cd " + shell_quote(cwd.string()) + " && ";
  cmd += shell_quote(llmopt_bin()) + " " + args + " 2>&1";
  CommandResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

}  // namespace llmopt::testing
