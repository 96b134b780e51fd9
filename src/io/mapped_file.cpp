#include "io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "core/error.h"

namespace llmopt::io {
namespace {

// Live mappings of open(): start address -> size.
std::mutex g_maps_mutex;
std::map<uintptr_t, size_t>& live_maps() {
  static std::map<uintptr_t, size_t> maps;
  return maps;
}

}  // namespace

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_input("[io] {}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_input("[io] {}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw_input("[io] {}: not a regular file", path);
  }
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<size_t>(st.st_size);
  if (file->size_ > 0) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw_input("[io] {}: cannot map {} bytes: {}", path, file->size_, std::strerror(err));
    }
    file->data_ = static_cast<const uint8_t*>(p);
    file->mapped_ = true;
    std::lock_guard<std::mutex> lock(g_maps_mutex);
    live_maps()[reinterpret_cast<uintptr_t>(p)] = file->size_;
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return file;
}

std::shared_ptr<const MappedFile> MappedFile::from_bytes(std::vector<uint8_t> bytes,
                                                         std::string name) {
  std::shared_ptr<MappedFile> file(new MappedFile());
  file->path_ = std::move(name);
  file->owned_ = std::move(bytes);
  file->size_ = file->owned_.size();
  file->data_ = file->owned_.empty() ? nullptr : file->owned_.data();
  return file;
}

MappedFile::~MappedFile() {
  if (!mapped_) return;
  {
    std::lock_guard<std::mutex> lock(g_maps_mutex);
    live_maps().erase(reinterpret_cast<uintptr_t>(data_));
  }
  ::munmap(const_cast<uint8_t*>(data_), size_);
}

void release_mapped_pages(const void* p, size_t n) {
  if (p == nullptr || n == 0) return;
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lock(g_maps_mutex);
  auto& maps = live_maps();
  auto it = maps.upper_bound(a);
  if (it == maps.begin()) return;
  --it;
  const uintptr_t start = it->first, end = it->first + it->second;
  if (a >= end) return;
  // Whole pages covering the range, clamped to the mapping (page-aligned at its start). Pages it
  // shares with neighbouring tensors are only dropped from memory, never changed.
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = std::max(start, a / page * page);
  const uintptr_t hi = std::min(end, (a + n + page - 1) / page * page);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

std::string read_text_file(const std::string& path, const char* component) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_input("[{}] {}: cannot open: {}", component, path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw_input("[{}] {}: read error", component, path);
  return ss.str();
}

}  // namespace llmopt::io
