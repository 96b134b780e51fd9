// Errors are exceptions with context; apps/llmopt maps them to exit codes (DESIGN.md CLI contract).
#pragma once
#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace llmopt {

// Bad input from the user: malformed file, bad option, shape mismatch. Exit code 2.
// Messages start with the component in brackets and name the file/option, expected vs found:
//   "[gguf] model.gguf: tensor 'x' data ends at byte 1234, past end of file (1000 bytes)"
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Failure while running (a stage failed, out of memory, interrupted). Exit code 1.
class RunError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <typename... Args>
[[noreturn]] void throw_input(fmt::format_string<Args...> f, Args&&... args) {
  throw InputError(fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
[[noreturn]] void throw_run(fmt::format_string<Args...> f, Args&&... args) {
  throw RunError(fmt::format(f, std::forward<Args>(args)...));
}

[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const std::string& msg);

}  // namespace llmopt

// Internal invariant (a bug if it fails, not bad input): reports file and line.
#define LLMOPT_ASSERT(cond, ...)                                                        \
  do {                                                                                 \
    if (!(cond)) ::llmopt::assert_fail(#cond, __FILE__, __LINE__, fmt::format("" __VA_ARGS__)); \
  } while (0)

// Input check: throws InputError with the formatted message.
#define LLMOPT_CHECK_INPUT(cond, ...)                 \
  do {                                               \
    if (!(cond)) ::llmopt::throw_input(__VA_ARGS__); \
  } while (0)
