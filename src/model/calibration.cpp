#include "model/calibration.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "io/architecture.h"

namespace llmopt::model {
namespace {

std::string read_range(const CalibrationOptions& o) {
  LLMOPT_CHECK_INPUT(!o.path.empty(), "[{}] path: no calibration text given (quantization methods gptq, awq, "
                     "static and calibrated rtn need one)", o.where);
  std::ifstream f(o.path, std::ios::binary);
  LLMOPT_CHECK_INPUT(f.good(), "[{}] path: cannot read '{}'", o.where, o.path);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string all = ss.str();
  LLMOPT_CHECK_INPUT(o.offset >= 0 && o.offset <= static_cast<int64_t>(all.size()),
                     "[{}] offset: {} is beyond the end of '{}' ({} bytes)", o.where, o.offset, o.path, all.size());
  std::string part = all.substr(static_cast<size_t>(o.offset),
                                o.max_bytes > 0 ? static_cast<size_t>(o.max_bytes) : std::string::npos);
  return part;
}

bool is_jsonl(const CalibrationOptions& o) {
  if (o.format == "jsonl") return true;
  if (o.format == "text") return false;
  LLMOPT_CHECK_INPUT(o.format == "auto", "[{}] format: expected auto, text or jsonl, got '{}'", o.where, o.format);
  const auto ext = std::filesystem::path(o.path).extension().string();
  return ext == ".jsonl" || ext == ".json";
}

// The texts of a jsonl file's lines, joined by blank lines.
std::string jsonl_text(const std::string& data, const CalibrationOptions& o) {
  std::string out;
  std::istringstream in(data);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw_input("[{}] {}:{}: not a JSON object ({})", o.where, o.path, lineno, e.what());
    }
    LLMOPT_CHECK_INPUT(j.is_object() && j.contains(o.field) && j[o.field].is_string(),
                       "[{}] {}:{}: no string field '{}' (set field)", o.where, o.path, lineno, o.field);
    if (!out.empty()) out += "\n\n";
    out += j[o.field].get<std::string>();
  }
  return out;
}

// Forwards unchanged and records the inputs' statistics.
class CaptureLinear : public LinearLayer {
 public:
  CaptureLinear(std::shared_ptr<LinearLayer> inner, std::shared_ptr<InputStats> stats, StatsRequest req,
                int64_t stride)
      : inner_(std::move(inner)), stats_(std::move(stats)), req_(req), stride_(stride) {}
  torch::Tensor forward(const torch::Tensor& x) override {
    if (stats_) stats_->add(x.reshape({-1, x.size(-1)}), req_.hessian, req_.sample_rows > 0 ? stride_ : 0);
    return inner_->forward(x);
  }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  std::string kind() const override { return inner_->kind(); }
  torch::Tensor dense_weight() const override { return inner_->dense_weight(); }
  torch::Tensor bias() const override { return inner_->bias(); }
  int64_t storage_bytes() const override { return inner_->storage_bytes(); }
  LayerState stored_state() const override { return inner_->stored_state(); }

 private:
  std::shared_ptr<LinearLayer> inner_;
  std::shared_ptr<InputStats> stats_;
  StatsRequest req_;
  int64_t stride_;
};

// Which projections of a decoder layer read the same input: q/k/v, o, gate/up, down.
int input_group(io::arch::Role r) {
  using io::arch::Role;
  switch (r) {
    case Role::AttnQ: case Role::AttnK: case Role::AttnV: return 0;
    case Role::AttnOut: return 1;
    case Role::FfnGate: case Role::FfnUp: return 2;
    default: return 3;
  }
}

}  // namespace

torch::Tensor load_calibration_tokens(const CalibrationOptions& o, const tok::Tokenizer& tk) {
  LLMOPT_CHECK_INPUT(o.samples >= 1, "[{}] samples: must be ≥ 1, got {}", o.where, o.samples);
  LLMOPT_CHECK_INPUT(o.seq_len >= 2, "[{}] seq_len: must be ≥ 2, got {}", o.where, o.seq_len);
  std::string text = read_range(o);
  if (is_jsonl(o)) text = jsonl_text(text, o);
  LLMOPT_CHECK_INPUT(!text.empty(), "[{}] path: '{}' holds no calibration text in the bytes used", o.where, o.path);
  tok::EncodeOptions eo;
  eo.add_bos = false;
  const std::vector<int32_t> ids = tk.encode(text, eo);
  // Windows as llama-imatrix cuts them: consecutive chunks, each starting with BOS when the
  // tokenizer adds one (the chunk's first token replaced).
  const bool bos = tk.add_bos_default() && tk.bos_id() >= 0;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int64_t available = n / o.seq_len;
  LLMOPT_CHECK_INPUT(available >= o.samples,
                     "[{}] samples: {} windows of {} tokens need {} tokens, but '{}' (bytes {}..{}) gives {} tokens "
                     "({} windows): lower samples or seq_len, or give more text",
                     o.where, o.samples, o.seq_len, o.samples * o.seq_len, o.path, o.offset,
                     o.offset + static_cast<int64_t>(text.size()), n, available);
  std::vector<int64_t> order(static_cast<size_t>(available));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(o.seed);
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(static_cast<size_t>(o.samples));
  std::sort(order.begin(), order.end());
  auto out = torch::empty({o.samples, o.seq_len}, torch::kInt64);
  auto* p = out.data_ptr<int64_t>();
  for (int64_t s = 0; s < o.samples; ++s) {
    const int64_t start = order[static_cast<size_t>(s)] * o.seq_len;
    for (int64_t t = 0; t < o.seq_len; ++t) p[s * o.seq_len + t] = ids[static_cast<size_t>(start + t)];
    if (bos) p[s * o.seq_len] = tk.bos_id();
  }
  log::info("[{}] {} windows of {} tokens from {} ({} tokens, {} windows available)", o.where, o.samples, o.seq_len,
            o.path, n, available);
  return out;
}

void check_calibration_overlap(const CalibrationOptions& cal, const std::string& eval_path, int64_t eval_offset,
                               int64_t eval_max_bytes, const std::string& eval_where) {
  if (cal.path.empty() || eval_path.empty()) return;
  std::error_code ec;
  if (!std::filesystem::equivalent(cal.path, eval_path, ec) || ec) return;
  const auto size = static_cast<int64_t>(std::filesystem::file_size(cal.path, ec));
  const int64_t c0 = cal.offset, c1 = cal.max_bytes > 0 ? std::min(size, cal.offset + cal.max_bytes) : size;
  const int64_t e0 = eval_offset, e1 = eval_max_bytes > 0 ? std::min(size, eval_offset + eval_max_bytes) : size;
  LLMOPT_CHECK_INPUT(c1 <= e0 || e1 <= c0,
                     "[{}] calibration bytes {}..{} of '{}' overlap the evaluation bytes {}..{} ({}): a model "
                     "calibrated on its test text scores better than it is; set offset/max_bytes so they are disjoint",
                     cal.where, c0, c1, cal.path, e0, e1, eval_where);
}

void InputStats::add(const torch::Tensor& x2d, bool with_hessian, int64_t sample_stride) {
  torch::NoGradGuard ng;
  auto x = x2d.to(torch::kFloat32).contiguous();
  const int64_t in = x.size(1);
  if (!sum_sq.defined()) {
    sum_sq = torch::zeros({in}, torch::kFloat64);
    sum_abs = torch::zeros({in}, torch::kFloat64);
    abs_max = torch::zeros({in}, torch::kFloat32);
  }
  const auto xd = x.to(torch::kFloat64);
  sum_sq += xd.pow(2).sum(0);
  sum_abs += xd.abs().sum(0);
  abs_max = torch::maximum(abs_max, x.abs().amax(0));
  if (with_hessian) {
    if (!hessian.defined()) hessian = torch::zeros({in, in}, torch::kFloat64);
    hessian += torch::matmul(xd.t(), xd);
  }
  if (sample_stride > 0) {
    // Rows whose global index is a multiple of the stride.
    const int64_t first = (sample_stride - rows % sample_stride) % sample_stride;
    if (first < x.size(0)) {
      auto idx = torch::arange(first, x.size(0), sample_stride, torch::kInt64);
      auto picked = x.index_select(0, idx);
      sample = sample.defined() ? torch::cat({sample, picked}, 0) : picked;
    }
  }
  rows += x.size(0);
}

torch::Tensor InputStats::mean_sq() const { return (sum_sq / std::max<int64_t>(rows, 1)).to(torch::kFloat32); }
torch::Tensor InputStats::mean_abs() const { return (sum_abs / std::max<int64_t>(rows, 1)).to(torch::kFloat32); }

void calibrate_layerwise(LlamaModel& m, const torch::Tensor& tokens, const CalibrateOptions& o,
                         const CalibrationStep& step) {
  torch::NoGradGuard no_grad;
  LLMOPT_CHECK_INPUT(tokens.dim() == 2 && tokens.size(0) > 0, "[calibration] expected [samples, seq_len] tokens");
  const int64_t N = tokens.size(0), T = tokens.size(1);
  const int64_t batch = std::max<int64_t>(1, o.batch);
  const auto in = m.layer_inputs(T, 0);
  const int64_t stride = o.stats.sample_rows > 0 ? std::max<int64_t>(1, N * T / o.stats.sample_rows) : 0;

  // Hidden states entering the current layer, all windows.
  std::vector<torch::Tensor> x;
  for (int64_t b0 = 0; b0 < N; b0 += batch) x.push_back(m.embed(tokens.narrow(0, b0, std::min(batch, N - b0))));

  std::map<std::string, std::shared_ptr<LinearLayer>> all;
  for (auto& [path, layer] : m.linear_layers()) all[path] = layer;
  const int64_t L = m.num_layers();
  const bool head = o.include_head && all.count(io::arch::module_path(io::arch::Role::Output)) > 0;
  const int64_t total = L + (head ? 1 : 0);

  for (int64_t li = 0; li < L; ++li) {
    LayerCalibration lc;
    lc.layer = li;
    std::vector<io::arch::Role> roles(io::arch::kLayerLinears.begin(), io::arch::kLayerLinears.end());
    for (auto r : roles) lc.paths.push_back(io::arch::module_path(r, li));
    auto capture = [&]() {
      std::map<int, std::shared_ptr<InputStats>> groups;
      std::map<std::string, std::shared_ptr<LinearLayer>> current;
      for (auto& [path, layer] : m.linear_layers()) current[path] = layer;
      for (size_t j = 0; j < roles.size(); ++j) {
        const int g = input_group(roles[j]);
        const bool first = !groups.count(g);
        if (first) groups[g] = std::make_shared<InputStats>();
        lc.stats[lc.paths[j]] = groups[g];
        // One hook per input group: the others share its statistics.
        m.set_linear(lc.paths[j], std::make_shared<CaptureLinear>(current.at(lc.paths[j]),
                                                                  first ? groups[g] : nullptr, o.stats, stride));
      }
      for (const auto& xb : x) m.forward_layer(li, xb, in);
      for (const auto& p : lc.paths) m.set_linear(p, current.at(p));
    };
    capture();
    lc.recapture = capture;
    step(lc);
    for (auto& xb : x) xb = m.forward_layer(li, xb, in);
    if (o.progress) o.progress(li + 1, total);
  }
  if (head) {
    LayerCalibration lc;
    const std::string path = io::arch::module_path(io::arch::Role::Output);
    lc.paths = {path};
    auto capture = [&]() {
      auto stats = std::make_shared<InputStats>();
      lc.stats[path] = stats;
      std::shared_ptr<LinearLayer> cur;
      for (auto& [p, layer] : m.linear_layers())
        if (p == path) cur = layer;
      m.set_linear(path, std::make_shared<CaptureLinear>(cur, stats, o.stats, stride));
      for (const auto& xb : x) {
        auto h = xb * torch::rsqrt(xb.pow(2).mean(-1, true) + m.config().rms_norm_eps) * m.final_norm();
        m.logits_from_hidden(h);
      }
      m.set_linear(path, cur);
    };
    capture();
    lc.recapture = capture;
    step(lc);
    if (o.progress) o.progress(total, total);
  }
}

std::vector<ScaleGroup> scale_groups(LlamaModel& m, int64_t li) {
  using io::arch::Role;
  const auto& cfg = m.config();
  std::vector<ScaleGroup> groups = {
      {"attn_norm", {Role::AttnQ, Role::AttnK, Role::AttnV}, Role::TokenEmbd, &m.attn_norm(li)},
      {"ffn_norm", {Role::FfnGate, Role::FfnUp}, Role::TokenEmbd, &m.ffn_norm(li)},
      {"up_proj", {Role::FfnDown}, Role::FfnUp, nullptr},
  };
  if (cfg.num_attention_heads == cfg.num_key_value_heads)
    groups.insert(groups.begin() + 1, ScaleGroup{"v_proj", {Role::AttnOut}, Role::AttnV, nullptr});
  return groups;
}

}  // namespace llmopt::model
