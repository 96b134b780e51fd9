#include "io/imatrix.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/architecture.h"
#include "io/atomic_file.h"
#include "io/byte_reader.h"
#include "io/gguf.h"
#include "io/mapped_file.h"

namespace llmopt::io {
namespace {

void check_values(const std::string& path, const std::string& name, const std::vector<float>& v) {
  for (size_t j = 0; j < v.size(); ++j)
    LLMOPT_CHECK_INPUT(std::isfinite(v[j]) && v[j] >= 0,
                       "[imatrix] {}: entry '{}' column {}: importance must be finite and >= 0, found {}",
                       path, name, j, v[j]);
}

Imatrix read_legacy(const std::string& path, const MappedFile& f) {
  ByteReader r(f.data(), f.size(), "imatrix", path);
  Imatrix m;
  const auto n_entries = r.read<int32_t>("entry count");
  LLMOPT_CHECK_INPUT(n_entries >= 1, "[imatrix] {}: expected at least 1 entry, found {}", path, n_entries);
  for (int32_t i = 0; i < n_entries; ++i) {
    const auto len = r.read<int32_t>("name length");
    LLMOPT_CHECK_INPUT(len > 0 && len < 4096, "[imatrix] {}: entry {}: name length {} out of range (1..4095)",
                       path, i, len);
    std::string name(r.read_bytes(static_cast<uint64_t>(len), "entry name"));
    const auto ncall = r.read<int32_t>("call count");
    const auto nval = r.read<int32_t>("value count");
    LLMOPT_CHECK_INPUT(nval >= 1, "[imatrix] {}: entry '{}': expected at least 1 value, found {}", path, name,
                       nval);
    r.need(static_cast<uint64_t>(nval) * 4, "entry values");
    std::vector<float> v(static_cast<size_t>(nval));
    std::memcpy(v.data(), r.here(), v.size() * 4);
    r.skip(v.size() * 4, "entry values");
    if (ncall > 0)
      for (auto& x : v) x /= static_cast<float>(ncall);
    check_values(path, name, v);
    m.entries[name] = std::move(v);
  }
  // The newest legacy writers append the chunk count and the dataset file name.
  if (r.remaining() >= 8) {
    m.chunks = r.read<int32_t>("chunk count");
    const auto len = r.read<int32_t>("dataset name length");
    LLMOPT_CHECK_INPUT(len >= 0, "[imatrix] {}: negative dataset name length {}", path, len);
    m.datasets.emplace_back(r.read_bytes(static_cast<uint64_t>(len), "dataset name"));
  }
  return m;
}

Imatrix read_gguf(const std::string& path) {
  const GgufFile g = GgufFile::open(path);
  Imatrix m;
  std::map<std::string, std::pair<const GgufTensorInfo*, const GgufTensorInfo*>> sums_counts;
  auto strip = [](const std::string& s, std::string_view suffix, std::string& base) {
    if (s.size() <= suffix.size() || s.compare(s.size() - suffix.size(), suffix.size(), suffix) != 0) return false;
    base = s.substr(0, s.size() - suffix.size());
    return true;
  };
  for (const auto& t : g.tensors()) {
    std::string base;
    if (strip(t.name, ".in_sum2", base))
      sums_counts[base].first = &t;
    else if (strip(t.name, ".counts", base))
      sums_counts[base].second = &t;
  }
  LLMOPT_CHECK_INPUT(!sums_counts.empty(), "[imatrix] {}: no '<tensor>.in_sum2' tensors: not an imatrix GGUF",
                     path);
  for (const auto& [name, sc] : sums_counts) {
    const auto* sums = sc.first;
    const auto* counts = sc.second;
    LLMOPT_CHECK_INPUT(sums && counts, "[imatrix] {}: '{}' has {} but no {}", path, name,
                       sums ? "in_sum2" : "counts", sums ? "counts" : "in_sum2");
    LLMOPT_CHECK_INPUT(sums->dtype == DType::F32 && counts->dtype == DType::F32 && !sums->ne.empty(),
                       "[imatrix] {}: '{}': expected f32 in_sum2 and counts", path, name);
    const int64_t ne0 = sums->ne[0], ne1 = sums->numel() / std::max<int64_t>(ne0, 1);
    LLMOPT_CHECK_INPUT(counts->numel() == ne1, "[imatrix] {}: '{}': {} counts for {} rows of sums", path, name,
                       counts->numel(), ne1);
    std::vector<float> s(static_cast<size_t>(sums->numel())), c(static_cast<size_t>(ne1));
    std::memcpy(s.data(), sums->data, s.size() * 4);
    std::memcpy(c.data(), counts->data, c.size() * 4);
    std::vector<float> v(s.size());
    for (int64_t j = 0; j < ne1; ++j)
      for (int64_t i = 0; i < ne0; ++i)
        v[j * ne0 + i] = c[j] > 0 ? s[j * ne0 + i] / c[j] : 1.0f;
    check_values(path, name, v);
    m.entries[name] = std::move(v);
  }
  if (g.has("imatrix.datasets")) m.datasets = g.get_string_array("imatrix.datasets");
  if (g.has("imatrix.chunk_count")) m.chunks = g.get_i64("imatrix.chunk_count");
  return m;
}

}  // namespace

Imatrix read_imatrix(const std::string& path) {
  const auto f = MappedFile::open(path);
  if (f->size() >= 4 && std::memcmp(f->data(), "GGUF", 4) == 0) return read_gguf(path);
  return read_legacy(path, *f);
}

const std::vector<float>* Imatrix::find_projection(std::string_view module_path, int64_t columns,
                                                   std::string_view file) const {
  const auto named = arch::parse_hf_name(std::string(module_path) + ".weight");
  if (!named) return nullptr;
  const std::string gguf = arch::gguf_name(named->role, named->layer);
  const auto it = entries.find(gguf);
  if (it == entries.end()) return nullptr;
  LLMOPT_CHECK_INPUT(static_cast<int64_t>(it->second.size()) == columns,
                     "[imatrix] {}: entry '{}' ({}) has {} values, expected {} (one per input column)", file,
                     gguf, module_path, it->second.size(), columns);
  return &it->second;
}

void write_imatrix_dat(const std::string& path, const Imatrix& m) {
  LLMOPT_CHECK_INPUT(!m.entries.empty(), "[imatrix] {}: nothing to write (no entries)", path);
  AtomicFile out(path);
  out.write_pod(static_cast<int32_t>(m.entries.size()));
  for (const auto& [name, v] : m.entries) {
    out.write_pod(static_cast<int32_t>(name.size()));
    out.write(name);
    out.write_pod(int32_t{1});  // ncall: the values are already means
    out.write_pod(static_cast<int32_t>(v.size()));
    out.write(v.data(), v.size() * 4);
  }
  const std::string dataset = m.datasets.empty() ? std::string() : m.datasets.front();
  out.write_pod(static_cast<int32_t>(m.chunks));
  out.write_pod(static_cast<int32_t>(dataset.size()));
  out.write(dataset);
  out.commit();
}

}  // namespace llmopt::io
