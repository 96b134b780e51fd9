#include "core/memory.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

namespace llmopt {
namespace {
int64_t read_status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t klen = std::strlen(key);
  while (std::getline(f, line)) {
    if (line.compare(0, klen, key) == 0) return std::stoll(line.substr(klen + 1)) * 1024;
  }
  return -1;
}
}  // namespace

int64_t peak_rss_bytes() { return read_status_kb("VmHWM"); }
int64_t current_rss_bytes() { return read_status_kb("VmRSS"); }

bool reset_peak_rss() {
  FILE* f = std::fopen("/proc/self/clear_refs", "w");
  if (!f) return false;
  bool ok = std::fputs("5", f) >= 0;
  return (std::fclose(f) == 0) && ok;
}

}  // namespace llmopt
