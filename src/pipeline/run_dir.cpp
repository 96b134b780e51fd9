#include "pipeline/run_dir.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/sha256.h"

namespace fs = std::filesystem;

namespace llmopt::pipeline {

std::vector<InputHashes::Entry> InputHashes::add(const std::string& path) {
  std::vector<std::string> files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& e : fs::recursive_directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<Entry> out;
  for (const auto& f : files) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = entries_.find(f);
      if (it != entries_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    Entry e;
    e.path = f;
    e.sha256 = io::sha256_file_hex(f);
    e.bytes = static_cast<int64_t>(fs::file_size(f));
    std::lock_guard<std::mutex> lock(mu_);
    entries_[f] = e;
    out.push_back(e);
  }
  return out;
}

std::string InputHashes::digest(const std::string& path) {
  const auto entries = add(path);
  if (entries.size() == 1 && entries[0].path == path) return entries[0].sha256;
  io::Sha256 h;
  for (const auto& e : entries) {
    h.update(fs::relative(e.path, path).string());
    h.update(std::string_view("\0", 1));
    h.update(e.sha256);
  }
  return h.finish_hex();
}

std::vector<InputHashes::Entry> InputHashes::all() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<Entry> out;
  for (const auto& [k, v] : entries_) out.push_back(v);
  return out;
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  }
  return "unknown";
}

std::string host_name() {
  char buf[256] = {0};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

void write_json_atomic(const std::string& path, const nlohmann::json& j) {
  io::write_file_atomic(path, j.dump(2) + "\n");
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  LLMOPT_CHECK_INPUT(in.good(), "[pipeline] cannot read {}", path);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  LLMOPT_CHECK_INPUT(!j.is_discarded(), "[pipeline] {}: malformed JSON", path);
  return j;
}

void remove_stale_temporaries(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  std::vector<fs::path> doomed;
  for (auto it = fs::recursive_directory_iterator(dir, ec); it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    const std::string name = it->path().filename().string();
    const bool temp_file = !name.empty() && name[0] == '.' && name.find(".tmp") != std::string::npos;
    if (temp_file) {
      doomed.push_back(it->path());
      if (it->is_directory()) it.disable_recursion_pending();
    }
  }
  for (const auto& p : doomed) fs::remove_all(p, ec);
}

}  // namespace llmopt::pipeline
