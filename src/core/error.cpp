#include "core/error.h"

namespace llmopt {

void assert_fail(const char* expr, const char* file, int line, const std::string& msg) {
  throw std::logic_error(fmt::format("internal error at {}:{}: assertion `{}` failed{}{}", file, line,
                                     expr, msg.empty() ? "" : ": ", msg));
}

}  // namespace llmopt
