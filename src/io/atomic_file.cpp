#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"

namespace llmopt::io {
namespace {
constexpr size_t kBufferBytes = size_t{1} << 20;

// The process's umask, read from /proc/self/status: umask(2) can only read it by setting it,
// which would race with other threads creating files (parallel sweep points).
mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  }
  return 022;  // kernels before 4.7 do not report it: the usual default
}
}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  namespace fs = std::filesystem;
  const fs::path dest(path_);
  const fs::path dir = dest.has_parent_path() ? dest.parent_path() : fs::path(".");
  // Hidden name so a half-written file is never mistaken for output. Built with insert/append
  // because string operator+ trips a GCC 12 -Wrestrict false positive here.
  std::string name = dest.filename().string();
  name.insert(0, 1, '.');
  name.append(".tmp-XXXXXX");
  std::string templ = (dir / name).string();
  fd_ = ::mkstemp(templ.data());
  if (fd_ < 0) {
    const int err = errno;
    // A destination in a directory that does not exist is bad input (exit 2), not a failure.
    if (err == ENOENT || err == ENOTDIR)
      throw_input("[io] {}: cannot write: the directory {} does not exist", path_, dir.string());
    throw_run("[io] {}: cannot create a temporary file in {}: {}", path_, dir.string(),
              std::strerror(err));
  }
  temp_path_ = templ;
  // mkstemp creates the file 0600; give it the mode a plain write would (0666 minus the umask).
  if (::fchmod(fd_, 0666 & ~current_umask()) != 0) fail("chmod", errno);
  buffer_.reserve(kBufferBytes);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::fail(std::string_view what, int err) {
  // Leave nothing behind: the destructor would also do this, but the caller may keep the object.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  ::unlink(temp_path_.c_str());
  throw_run("[io] {}: {} failed after {} bytes: {}", path_, what, written_, std::strerror(err));
}

void AtomicFile::flush_buffer() {
  size_t done = 0;
  while (done < buffer_.size()) {
    const ssize_t n = ::write(fd_, buffer_.data() + done, buffer_.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    if (n == 0) fail("write", ENOSPC);
    done += static_cast<size_t>(n);
  }
  buffer_.clear();
}

void AtomicFile::write(const void* data, size_t n) {
  LLMOPT_ASSERT(fd_ >= 0 && !committed_, "write to a closed AtomicFile {}", path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const size_t take = std::min(n, kBufferBytes - buffer_.size());
    buffer_.insert(buffer_.end(), p, p + take);
    p += take;
    n -= take;
    written_ += take;
    if (buffer_.size() == kBufferBytes) flush_buffer();
  }
}

void AtomicFile::write_zeros(size_t n) {
  static const char zeros[4096] = {};
  while (n > 0) {
    const size_t take = std::min(n, sizeof(zeros));
    write(zeros, take);
    n -= take;
  }
}

void AtomicFile::commit() {
  LLMOPT_ASSERT(fd_ >= 0 && !committed_, "commit of a closed AtomicFile {}", path_);
  flush_buffer();
  if (::fsync(fd_) != 0) fail("fsync", errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("close", errno);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) fail("rename", errno);
  committed_ = true;
  // Make the rename itself durable.
  const std::filesystem::path dest(path_);
  const std::string dir = dest.has_parent_path() ? dest.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFile f(path);
  f.write(contents);
  f.commit();
}

}  // namespace llmopt::io
