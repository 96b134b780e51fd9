#include "pipeline/report/atomic_write.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace llmopt::pipeline::report {

void write_file_atomically(const std::string& path, std::string_view contents) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  // The pid keeps two processes writing the same report from sharing a temporary file.
  const fs::path temporary =
      target.parent_path() / fmt::format(".{}.tmp-{}", target.filename().string(), getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_run("[report] {}: cannot create: {}", temporary.string(), std::strerror(errno));
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      throw_run("[report] {}: write failed after {} of {} bytes: {}", temporary.string(), written,
                contents.size(), std::strerror(error));
    }
    written += static_cast<size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  const int sync_error = errno;
  const bool closed = ::close(fd) == 0;
  if (!synced || !closed) {
    const int error = synced ? errno : sync_error;
    ::unlink(temporary.c_str());
    throw_run("[report] {}: flush failed: {}", temporary.string(), std::strerror(error));
  }
  if (::rename(temporary.c_str(), target.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    throw_run("[report] {}: cannot rename {} over it: {}", target.string(), temporary.string(),
              std::strerror(error));
  }
}

}  // namespace llmopt::pipeline::report
