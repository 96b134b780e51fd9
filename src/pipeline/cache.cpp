#include "pipeline/cache.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "core/log.h"
#include "pipeline/run_dir.h"

namespace fs = std::filesystem;

namespace llmopt::pipeline {

std::string default_cache_dir() {
  if (const char* d = std::getenv("LLMOPT_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return (fs::path(x) / "llmopt" / "stages").string();
  if (const char* h = std::getenv("HOME"); h && *h)
    return (fs::path(h) / ".cache" / "llmopt" / "stages").string();
  return (fs::temp_directory_path() / "llmopt-cache" / "stages").string();
}

std::string StageCache::entry_dir(const std::string& key) const {
  return (fs::path(root_) / key.substr(0, 2) / key).string();
}

std::optional<nlohmann::json> StageCache::lookup(const std::string& key) const {
  const fs::path entry = fs::path(entry_dir(key)) / "entry.json";
  std::error_code ec;
  if (!fs::is_regular_file(entry, ec)) return std::nullopt;
  try {
    return read_json_file(entry.string());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  fs::create_directories(fs::path(to).parent_path());
  const fs::path tmp = fs::path(to).parent_path() /
                       ("." + fs::path(to).filename().string() + ".tmp-copy-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(from, tmp, ec);
  if (ec) fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
  fs::rename(tmp, to);
}

void StageCache::store(const std::string& key, const nlohmann::json& entry,
                       const std::string& run_dir, const std::vector<std::string>& artifacts,
                       const std::string& model_dir) const {
  const fs::path final_dir = entry_dir(key);
  const fs::path tmp = final_dir.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  try {
    if (fs::exists(final_dir / "entry.json", ec)) return;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp);
    for (const auto& a : artifacts) {
      const fs::path dest = tmp / a;
      fs::create_directories(dest.parent_path());
      fs::create_hard_link(fs::path(run_dir) / a, dest, ec);
      if (ec) fs::copy_file(fs::path(run_dir) / a, dest);
    }
    if (!model_dir.empty()) fs::copy(model_dir, tmp / "model", fs::copy_options::recursive);
    write_json_atomic((tmp / "entry.json").string(), entry);
    fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir);
  } catch (const std::exception& e) {
    log::warn("[cache] could not store stage result in {}: {}", final_dir.string(), e.what());
    fs::remove_all(tmp, ec);
  }
}

bool StageCache::restore_artifacts(const std::string& key, const std::string& run_dir,
                                   const std::vector<std::string>& artifacts) const {
  const fs::path dir = entry_dir(key);
  for (const auto& a : artifacts) {
    std::error_code ec;
    if (!fs::is_regular_file(dir / a, ec)) return false;
  }
  for (const auto& a : artifacts) copy_file_atomic((dir / a).string(), (fs::path(run_dir) / a).string());
  return true;
}

}  // namespace llmopt::pipeline
