#include "io/onnx_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <optional>

#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "core/log.h"
#include "io/onnx_graph.h"
#include "kernels/intn.h"
#include "kernels/nf4.h"
#include "kernels/quant_formats.h"

namespace llmopt::io {

OnnxAttribute OnnxAttribute::of_int(std::string name, int64_t v) {
  OnnxAttribute a;
  a.name = std::move(name);
  a.kind = Kind::Int;
  a.i = v;
  return a;
}
OnnxAttribute OnnxAttribute::of_float(std::string name, float v) {
  OnnxAttribute a;
  a.name = std::move(name);
  a.kind = Kind::Float;
  a.f = v;
  return a;
}
OnnxAttribute OnnxAttribute::of_ints(std::string name, std::vector<int64_t> v) {
  OnnxAttribute a;
  a.name = std::move(name);
  a.kind = Kind::Ints;
  a.ints = std::move(v);
  return a;
}

const OnnxAttribute* OnnxNode::attribute(std::string_view n) const {
  for (const auto& a : attributes)
    if (a.name == n) return &a;
  return nullptr;
}

const TensorView* OnnxPackedWeight::find(std::string_view name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

bool is_pow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Builds one projection's nodes and initializers with names under `prefix`.
class Builder {
 public:
  Builder(const std::string& prefix, const OnnxQuantOptions& o) : prefix_(prefix), opts_(o) {}

  std::string init(const std::string& suffix, OnnxElemType t, std::vector<int64_t> dims, std::vector<uint8_t> raw) {
    OnnxInitializer i;
    i.name = prefix_ + "." + suffix;
    i.type = t;
    i.dims = std::move(dims);
    i.raw = std::move(raw);
    out_.initializers.push_back(std::move(i));
    return out_.initializers.back().name;
  }
  // Float values in the graph's float type.
  std::string init_float(const std::string& suffix, std::vector<int64_t> dims, const std::vector<float>& v,
                         OnnxElemType t) {
    std::vector<uint8_t> raw;
    if (t == OnnxElemType::Float16) {
      raw.resize(2 * v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = f32_to_f16(v[i]);
        std::memcpy(raw.data() + 2 * i, &h, 2);
      }
    } else {
      raw.resize(4 * v.size());
      std::memcpy(raw.data(), v.data(), raw.size());
    }
    return init(suffix, t, std::move(dims), std::move(raw));
  }
  std::string init_i64(const std::string& suffix, std::vector<int64_t> dims, const std::vector<int64_t>& v) {
    std::vector<uint8_t> raw(8 * v.size());
    std::memcpy(raw.data(), v.data(), raw.size());
    return init(suffix, OnnxElemType::Int64, std::move(dims), std::move(raw));
  }
  // A node; its single output is `output` when given, else prefix/<op><n>.
  std::string node(const std::string& op, std::vector<std::string> inputs, std::vector<OnnxAttribute> attrs = {},
                   std::string output = {}, const std::string& domain = {}) {
    OnnxNode n;
    n.op_type = op;
    n.domain = domain;
    n.name = prefix_ + "/" + op + "_" + std::to_string(out_.nodes.size());
    if (output.empty()) output = n.name;
    n.inputs = std::move(inputs);
    n.outputs = {output};
    n.attributes = std::move(attrs);
    out_.nodes.push_back(std::move(n));
    if (domain == kOnnxMsDomain) out_.uses_ms_domain = true;
    return output;
  }
  void need_opset(int v) { out_.min_opset = std::max(out_.min_opset, v); }
  OnnxQuantProjection& result() { return out_; }
  const OnnxQuantOptions& opts() const { return opts_; }

 private:
  std::string prefix_;
  OnnxQuantOptions opts_;
  OnnxQuantProjection out_;
};

// The weight as (code, scale, zero) blocks along K, before it is written in one of the forms:
// codes [N, K] one byte each, scale/zero [N, nb] for blocks of `block` columns (the last block
// of a row may be a tail). Float zero points are kept when a format has a float offset.
struct BlockGrid {
  int bits = 4;
  int64_t n = 0, k = 0, block = 32;
  std::vector<uint8_t> codes;  // [n, k]
  std::vector<float> scale;    // [n, nb]
  std::vector<float> zero;     // [n, nb]: integer-valued unless float_zero
  bool float_zero = false;
  bool has_zero = true;          // false: the format's default zero point (2^(bits−1)) applies
  bool signed_codes = false;     // int8 codes (q8_0), zero point 0
  std::vector<int64_t> perm;     // act-order: x's columns gathered in this order first
  std::string source;            // "q4_0", "int4 g128 asym" ... for the mapping text
  int64_t nb() const { return (k + block - 1) / block; }
};

// ggml 4-bit formats: one grid per 32 elements.
BlockGrid grid_from_ggml(const TensorView& t, DType type, int64_t n, int64_t k, const std::string& where) {
  LLMOPT_CHECK_INPUT(t.shape.size() == 2 && t.shape[0] == n && t.shape[1] == k && t.dtype == type,
                     "[onnx] {}: packed weight must be {} [{}, {}]", where, dtype_name(type), n, k);
  const int64_t be = dtype_block_elems(type), bb = dtype_block_bytes(type);
  LLMOPT_CHECK_INPUT(k % be == 0 && t.nbytes == n * (k / be) * bb, "[onnx] {}: {} bytes for {} [{}, {}], expected {}",
                     where, t.nbytes, dtype_name(type), n, k, n * (k / std::max<int64_t>(be, 1)) * bb);
  BlockGrid g;
  g.n = n;
  g.k = k;
  g.block = 32;
  g.source = std::string(dtype_name(type));
  std::transform(g.source.begin(), g.source.end(), g.source.begin(), [](unsigned char c) { return std::tolower(c); });
  const int64_t nb = k / 32;
  g.codes.assign(static_cast<size_t>(n * k), 0);
  g.scale.assign(static_cast<size_t>(n * nb), 0.0f);
  g.zero.assign(static_cast<size_t>(n * nb), 0.0f);
  // A block with zero step holds one constant c: codes 0, zero point 1, scale −c, so
  // (0 − 1)·(−c) = c exactly.
  auto set_grid = [&](int64_t r, int64_t b, double step, double offset, uint8_t* codes) {
    // x = step·q + offset  →  (q − zp)·step with zp = −offset/step
    const size_t i = static_cast<size_t>(r * nb + b);
    if (step == 0.0) {
      std::fill(codes, codes + 32, uint8_t{0});
      g.scale[i] = static_cast<float>(-offset);
      g.zero[i] = offset == 0.0 ? 0.0f : 1.0f;
    } else {
      g.scale[i] = static_cast<float>(step);
      g.zero[i] = static_cast<float>(-offset / step);
    }
  };
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t* row = t.data + r * (k / be) * bb;
    uint8_t* codes = g.codes.data() + r * k;
    if (type == DType::Q4_0 || type == DType::Q4_1) {
      const bool q41 = type == DType::Q4_1;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * bb;
        uint16_t d16, m16 = 0;
        std::memcpy(&d16, blk, 2);
        if (q41) std::memcpy(&m16, blk + 2, 2);
        const uint8_t* qs = blk + (q41 ? 4 : 2);
        uint8_t* c = codes + b * 32;
        // ggml: low nibbles are elements 0..15, high nibbles 16..31.
        for (int j = 0; j < 16; ++j) {
          c[j] = qs[j] & 0x0f;
          c[j + 16] = qs[j] >> 4;
        }
        if (q41) {
          set_grid(r, b, f16_to_f32(d16), f16_to_f32(m16), c);
        } else {
          g.scale[static_cast<size_t>(r * nb + b)] = f16_to_f32(d16);
          g.zero[static_cast<size_t>(r * nb + b)] = 8.0f;
        }
      }
      g.float_zero = q41;
    } else if (type == DType::Q4_K) {
      for (int64_t sb = 0; sb < k / 256; ++sb) {
        kernels::BlockQ4_K blk;
        std::memcpy(&blk, row + sb * bb, sizeof blk);
        const double d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
        for (int j = 0; j < 8; ++j) {
          // 6-bit scale and min of sub-block j packed in 12 bytes (ggml's get_scale_min_k4).
          int sc, mn;
          if (j < 4) {
            sc = blk.scales[j] & 63;
            mn = blk.scales[j + 4] & 63;
          } else {
            sc = (blk.scales[j + 4] & 0x0f) | ((blk.scales[j - 4] >> 6) << 4);
            mn = (blk.scales[j + 4] >> 4) | ((blk.scales[j] >> 6) << 4);
          }
          // Sub-block j = 2c + h takes the low (h = 0) or high (h = 1) nibbles of qs[32c, 32c+32).
          const uint8_t* qs = blk.qs + 32 * (j / 2);
          uint8_t* c = codes + sb * 256 + 32 * j;
          for (int l = 0; l < 32; ++l) c[l] = (j % 2 == 0) ? (qs[l] & 0x0f) : (qs[l] >> 4);
          // d·sc and dmin·mn are exact in f32 (11-bit significand × 6-bit integer).
          set_grid(r, sb * 8 + j, static_cast<double>(static_cast<float>(d * sc)),
                   -static_cast<double>(static_cast<float>(dmin * mn)), c);
        }
      }
      g.float_zero = true;
    } else if (type == DType::Q8_0) {
      g.bits = 8;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = row + b * bb;
        uint16_t d16;
        std::memcpy(&d16, blk, 2);
        // int8 codes are kept as their bytes (two's complement); zero 0.
        std::memcpy(codes + b * 32, blk + 2, 32);
        g.scale[static_cast<size_t>(r * nb + b)] = f16_to_f32(d16);
      }
    } else {
      LLMOPT_ASSERT(false, "grid_from_ggml: unexpected type {}", dtype_name(type));
    }
  }
  g.bits = type == DType::Q8_0 ? 8 : 4;
  g.has_zero = type != DType::Q4_0;
  g.signed_codes = type == DType::Q8_0;
  return g;
}

template <typename T>
const T* typed(const TensorView& t, DType want, int64_t count, const std::string& where) {
  LLMOPT_CHECK_INPUT(t.dtype == want && t.nbytes == count * static_cast<int64_t>(sizeof(T)),
                     "[onnx] {}: stored tensor '{}' must be {} with {} values, got {} ({} bytes)", where, t.name,
                     dtype_name(want), count, dtype_name(t.dtype), t.nbytes);
  return reinterpret_cast<const T*>(t.data);
}

kernels::IntNMatrix intn_view(const OnnxPackedWeight& w, const std::string& where) {
  kernels::IntNMatrix m;
  try {
    m.bits = w.meta.at("bits").get<int>();
    m.group = w.meta.at("group_size").get<int64_t>();
    m.sym = w.meta.at("sym").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw_input("[onnx] {}: intn layer meta needs bits, group_size, sym: {}", where, e.what());
  }
  kernels::intn_check_bits(m.bits, where.c_str());
  m.rows = w.out;
  m.cols = w.in;
  const TensorView* q = w.find("qweight");
  const TensorView* s = w.find("scales");
  LLMOPT_CHECK_INPUT(q && s, "[onnx] {}: intn layer needs stored tensors qweight and scales", where);
  m.codes = typed<uint8_t>(*q, DType::U8, m.rows * m.code_row_bytes(), where);
  if (s->dtype == DType::F32) {  // exact f32 scales (kernels/intn.h scales_f32), read through grid()
    m.scales_f32 = typed<float>(*s, DType::F32, m.rows * m.groups(), where);
  } else {
    m.scales = typed<uint16_t>(*s, DType::F16, m.rows * m.groups(), where);
  }
  if (!m.sym) {
    const TensorView* z = w.find("qzeros");
    LLMOPT_CHECK_INPUT(z, "[onnx] {}: asymmetric intn layer needs stored tensor qzeros", where);
    m.zeros = typed<uint8_t>(*z, DType::U8, m.rows * m.zero_row_bytes(), where);
  }
  if (const TensorView* gi = w.find("g_idx")) {
    m.g_idx = typed<int32_t>(*gi, DType::I32, m.cols, where);
    for (int64_t j = 0; j < m.cols; ++j)
      LLMOPT_CHECK_INPUT(m.g_idx[j] >= 0 && m.g_idx[j] < m.groups(), "[onnx] {}: g_idx[{}] = {} outside [0, {})",
                         where, j, m.g_idx[j], m.groups());
  }
  return m;
}

// Why an int-N act-order layout cannot be sorted into contiguous groups ("" when it can): every
// group must hold exactly its share of columns (group_size, the last one the tail).
std::string act_order_problem(const kernels::IntNMatrix& m) {
  if (!m.g_idx) return {};
  const int64_t gs = m.group_size(), groups = m.groups();
  std::vector<int64_t> count(static_cast<size_t>(groups), 0);
  for (int64_t j = 0; j < m.cols; ++j) ++count[static_cast<size_t>(m.g_idx[j])];
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t want = std::min(gs, m.cols - g * gs);
    if (count[static_cast<size_t>(g)] != want)
      return fmt::format("act-order group {} holds {} columns, not {}: the groups cannot be gathered into blocks", g,
                         count[static_cast<size_t>(g)], want);
  }
  return {};
}

BlockGrid grid_from_intn(const kernels::IntNMatrix& m) {
  BlockGrid g;
  g.bits = m.bits;
  g.n = m.rows;
  g.k = m.cols;
  const int64_t gs = m.group_size();
  const bool whole_row = m.groups() == 1;
  // Blocks must each lie in one group: the group itself when it is a power of two ≥ 16, else
  // (whole-row groups of any length) blocks of 128 that all take the row's grid. The 8-bit forms
  // (DequantizeLinear / explicit) take any block, so a whole row is one block there.
  if (g.bits == 4) {
    g.block = (is_pow2(gs) && gs >= 16 && gs <= 256) ? gs : 128;
  } else {
    g.block = gs;
  }
  LLMOPT_ASSERT(whole_row || g.block == gs, "intn group {} has no block form", gs);
  g.source = fmt::format("int{} g{} {}{}", m.bits, whole_row ? int64_t{-1} : gs, m.sym ? "sym" : "asym",
                         m.g_idx ? " act-order" : "");
  // Column order: act-order layers sorted by group (stable), so group g is block g.
  std::vector<int64_t> order(static_cast<size_t>(m.cols));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (m.g_idx) {
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return m.g_idx[a] < m.g_idx[b]; });
    g.perm = order;
  }
  const int64_t nb = g.nb();
  g.codes.assign(static_cast<size_t>(g.n * g.k), 0);
  g.scale.assign(static_cast<size_t>(g.n * nb), 0.0f);
  g.zero.assign(static_cast<size_t>(g.n * nb), 0.0f);
  std::vector<uint8_t> row(static_cast<size_t>(m.cols));
  for (int64_t r = 0; r < m.rows; ++r) {
    kernels::intn_unpack_codes(m.codes + r * m.code_row_bytes(), 0, m.cols, m.bits, row.data());
    for (int64_t p = 0; p < m.cols; ++p) g.codes[static_cast<size_t>(r * g.k + p)] = row[static_cast<size_t>(order[static_cast<size_t>(p)])];
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t grp = whole_row ? 0 : b;
      const kernels::IntNGrid grid = m.grid(r, grp);
      g.scale[static_cast<size_t>(r * nb + b)] = grid.scale;
      g.zero[static_cast<size_t>(r * nb + b)] = grid.zero;
    }
  }
  g.has_zero = !m.sym || g.bits != 4;  // MatMulNBits' default zero point is llmopt's sym 2^(bits−1)
  return g;
}

// Gathers x's columns into act-order first when the grid needs it; returns the matmul input.
std::string gathered_input(Builder& b, const BlockGrid& g, const std::string& input) {
  if (g.perm.empty()) return input;
  const std::string idx = b.init_i64("perm", {g.k}, g.perm);
  return b.node("Gather", {input, idx}, {OnnxAttribute::of_int("axis", -1)});
}

void emit_matmul_nbits(Builder& b, const BlockGrid& g, const std::string& input, const std::string& output) {
  const OnnxElemType ft = b.opts().float_type;
  const int64_t nb = g.nb(), blob = g.block / 2;
  std::vector<uint8_t> packed(static_cast<size_t>(g.n * nb * blob), 0);
  for (int64_t r = 0; r < g.n; ++r)
    for (int64_t j = 0; j < g.k; ++j) {
      // element 2i of a block in the low nibble of byte i, 2i+1 in the high nibble
      const int64_t blk = j / g.block, e = j % g.block;
      uint8_t& byte = packed[static_cast<size_t>((r * nb + blk) * blob + e / 2)];
      byte = static_cast<uint8_t>(byte | (g.codes[static_cast<size_t>(r * g.k + j)] << (4 * (e % 2))));
    }
  const std::string x = gathered_input(b, g, input);
  std::vector<std::string> ins = {x, b.init("qweight", OnnxElemType::Uint8, {g.n, nb, blob}, std::move(packed)),
                                  b.init_float("scales", {g.n * nb}, g.scale, ft)};
  if (g.has_zero) {
    if (g.float_zero) {
      ins.push_back(b.init_float("zero_points", {g.n * nb}, g.zero, ft));
    } else {
      const int64_t zrow = (nb + 1) / 2;
      std::vector<uint8_t> zp(static_cast<size_t>(g.n * zrow), 0);
      for (int64_t r = 0; r < g.n; ++r)
        for (int64_t blk = 0; blk < nb; ++blk) {
          const auto z = static_cast<uint8_t>(g.zero[static_cast<size_t>(r * nb + blk)]);
          zp[static_cast<size_t>(r * zrow + blk / 2)] |= static_cast<uint8_t>(z << (4 * (blk % 2)));
        }
      ins.push_back(b.init("zero_points", OnnxElemType::Uint8, {g.n * zrow}, std::move(zp)));
    }
  }
  std::vector<OnnxAttribute> attrs = {OnnxAttribute::of_int("K", g.k), OnnxAttribute::of_int("N", g.n),
                                      OnnxAttribute::of_int("bits", 4), OnnxAttribute::of_int("block_size", g.block)};
  if (b.opts().accuracy_level > 0) attrs.push_back(OnnxAttribute::of_int("accuracy_level", b.opts().accuracy_level));
  b.node("MatMulNBits", ins, std::move(attrs), output, kOnnxMsDomain);
  b.result().mapping = fmt::format("MatMulNBits bits 4 block {}{} ({})", g.block,
                                   !g.has_zero ? "" : g.float_zero ? " float zero points" : " zero points", g.source);
}

// 8-bit (and widened 2..7-bit) codes dequantized in the graph, then MatMul.
void emit_dequantized(Builder& b, const BlockGrid& g, const std::string& input, const std::string& output) {
  const OnnxElemType ft = b.opts().float_type;
  const bool signed_codes = g.signed_codes;
  const OnnxElemType ct = signed_codes ? OnnxElemType::Int8 : OnnxElemType::Uint8;
  const int64_t nb = g.nb();
  const std::string x = gathered_input(b, g, input);
  // scale and zero transposed to [nb, N]
  std::vector<float> scale_t(static_cast<size_t>(nb * g.n)), zero_t(static_cast<size_t>(nb * g.n));
  for (int64_t r = 0; r < g.n; ++r)
    for (int64_t blk = 0; blk < nb; ++blk) {
      scale_t[static_cast<size_t>(blk * g.n + r)] = g.scale[static_cast<size_t>(r * nb + blk)];
      zero_t[static_cast<size_t>(blk * g.n + r)] = g.zero[static_cast<size_t>(r * nb + blk)];
    }
  std::string wt;
  if (b.opts().opset >= 21) {
    // Wᵀ codes [K, N]; blocked DequantizeLinear along axis 0.
    std::vector<uint8_t> codes(static_cast<size_t>(g.k * g.n));
    for (int64_t r = 0; r < g.n; ++r)
      for (int64_t j = 0; j < g.k; ++j) codes[static_cast<size_t>(j * g.n + r)] = g.codes[static_cast<size_t>(r * g.k + j)];
    std::vector<std::string> ins = {b.init("qweight", ct, {g.k, g.n}, std::move(codes)),
                                    b.init_float("scales", {nb, g.n}, scale_t, ft)};
    if (!signed_codes) {
      std::vector<uint8_t> z(zero_t.size());
      for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<uint8_t>(zero_t[i]);
      ins.push_back(b.init("zero_points", OnnxElemType::Uint8, {nb, g.n}, std::move(z)));
    }
    wt = b.node("DequantizeLinear", ins, {OnnxAttribute::of_int("axis", 0), OnnxAttribute::of_int("block_size", g.block)});
    b.need_opset(21);
    b.result().mapping = fmt::format("DequantizeLinear block {} + MatMul ({})", g.block, g.source);
  } else {
    // codes [nb, block, N] (rows past K zero), (Cast − zero)·scale, Reshape [nb·block, N], Slice to K.
    std::vector<uint8_t> codes(static_cast<size_t>(nb * g.block * g.n), 0);
    for (int64_t r = 0; r < g.n; ++r)
      for (int64_t j = 0; j < g.k; ++j) codes[static_cast<size_t>(j * g.n + r)] = g.codes[static_cast<size_t>(r * g.k + j)];
    const std::string q = b.init("qweight", ct, {nb, g.block, g.n}, std::move(codes));
    std::string v = b.node("Cast", {q}, {OnnxAttribute::of_int("to", static_cast<int64_t>(ft))});
    if (!signed_codes) v = b.node("Sub", {v, b.init_float("zero_points", {nb, 1, g.n}, zero_t, ft)});
    v = b.node("Mul", {v, b.init_float("scales", {nb, 1, g.n}, scale_t, ft)});
    v = b.node("Reshape", {v, b.init_i64("wshape", {2}, {nb * g.block, g.n})});
    if (nb * g.block != g.k)
      v = b.node("Slice", {v, b.init_i64("slice_starts", {1}, {0}), b.init_i64("slice_ends", {1}, {g.k}),
                           b.init_i64("slice_axes", {1}, {0})});
    wt = v;
    b.result().mapping = fmt::format("(Cast − zero)·scale block {} + MatMul ({})", g.block, g.source);
  }
  b.node("MatMul", {x, wt}, {}, output);
}

// W8A8: the layer's forward() in ONNX ops (see the top of the header).
void emit_w8a8(Builder& b, const OnnxPackedWeight& w, const std::string& input, const std::string& output,
               const std::string& where) {
  std::string mode;
  double threshold = 0;
  try {
    mode = w.meta.at("mode").get<std::string>();
    threshold = w.meta.at("threshold").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw_input("[onnx] {}: w8a8 layer meta needs mode and threshold: {}", where, e.what());
  }
  LLMOPT_CHECK_INPUT(mode == "dynamic" || mode == "static", "[onnx] {}: w8a8 mode '{}' (valid: dynamic, static)", where,
                     mode);
  const int64_t n = w.out, k = w.in;
  const TensorView* q = w.find("qweight");
  const TensorView* s = w.find("wscale");
  LLMOPT_CHECK_INPUT(q && s, "[onnx] {}: w8a8 layer needs stored tensors qweight and wscale", where);
  const auto* qw = typed<int8_t>(*q, DType::I8, n * k, where);
  const auto* ws = typed<float>(*s, DType::F32, n, where);
  const int64_t* cols = nullptr;
  const uint16_t* colw = nullptr;
  int64_t nk = 0;
  if (const TensorView* c = w.find("outlier_cols"); c && c->nbytes > 0) {
    nk = c->nbytes / 8;
    cols = typed<int64_t>(*c, DType::I64, nk, where);
    const TensorView* cw = w.find("outlier_w");
    LLMOPT_CHECK_INPUT(cw, "[onnx] {}: w8a8 outlier_cols without outlier_w", where);
    colw = typed<uint16_t>(*cw, DType::F16, n * nk, where);
    for (int64_t i = 0; i < nk; ++i)
      LLMOPT_CHECK_INPUT(cols[i] >= 0 && cols[i] < k, "[onnx] {}: outlier column {} outside [0, {})", where, cols[i], k);
  }
  float act_scale = 0;
  if (mode == "static") {
    const TensorView* a = w.find("act_scale");
    LLMOPT_CHECK_INPUT(a, "[onnx] {}: static w8a8 layer needs act_scale", where);
    act_scale = *typed<float>(*a, DType::F32, 1, where);
    LLMOPT_CHECK_INPUT(act_scale > 0, "[onnx] {}: w8a8 act_scale must be > 0, got {}", where, act_scale);
  }
  const OnnxElemType ft = OnnxElemType::Float;  // computed in f32; f16 graphs cast around it
  std::string x = input;
  const bool f16 = b.opts().float_type == OnnxElemType::Float16;
  if (f16) x = b.node("Cast", {x}, {OnnxAttribute::of_int("to", static_cast<int64_t>(ft))});
  // Wᵀ int8 [K, N]
  std::vector<uint8_t> wt(static_cast<size_t>(k * n));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k; ++j) std::memcpy(&wt[static_cast<size_t>(j * n + r)], &qw[r * k + j], 1);
  const std::string wq = b.init("qweight", OnnxElemType::Int8, {k, n}, std::move(wt));
  const std::string wscale = b.init_float("wscale", {n}, std::vector<float>(ws, ws + n), ft);
  // Columns taken out of the integer product: calibrated (kept f16 weights).
  std::string xi = x;
  std::vector<float> keep(static_cast<size_t>(k), 1.0f);
  for (int64_t i = 0; i < nk; ++i) keep[static_cast<size_t>(cols[i])] = 0.0f;
  std::string keep_name;
  if (nk > 0) {
    keep_name = b.init_float("keep_cols", {k}, keep, ft);
    xi = b.node("Mul", {x, keep_name});
  }
  std::vector<std::string> extra;  // float terms added to the integer product
  if (nk > 0) {
    std::vector<float> cw(static_cast<size_t>(nk * n));  // [k_out, N]
    for (int64_t r = 0; r < n; ++r)
      for (int64_t i = 0; i < nk; ++i) cw[static_cast<size_t>(i * n + r)] = f16_to_f32(colw[r * nk + i]);
    const std::string xo = b.node("Gather", {x, b.init_i64("outlier_cols", {nk}, std::vector<int64_t>(cols, cols + nk))},
                                  {OnnxAttribute::of_int("axis", -1)});
    extra.push_back(b.node("MatMul", {xo, b.init_float("outlier_w", {nk, n}, cw, ft)}));
  }
  std::string sx;
  if (mode == "dynamic") {
    if (threshold > 0) {
      // Columns whose |x| exceeds the threshold anywhere in this call (not calibrated ones).
      std::string a = b.node("Abs", {x});
      a = b.node("Reshape", {a, b.init_i64("rows_shape", {2}, {-1, k})});
      if (b.opts().opset >= 18) {
        a = b.node("ReduceMax", {a, b.init_i64("axis0", {1}, {0})}, {OnnxAttribute::of_int("keepdims", 0)});
      } else {
        a = b.node("ReduceMax", {a}, {OnnxAttribute::of_ints("axes", {0}), OnnxAttribute::of_int("keepdims", 0)});
      }
      const std::string thr = b.init_float("threshold", {}, {static_cast<float>(threshold)}, ft);
      std::string hit = b.node("Greater", {a, thr});
      hit = b.node("Cast", {hit}, {OnnxAttribute::of_int("to", static_cast<int64_t>(ft))});
      if (nk > 0) hit = b.node("Mul", {hit, keep_name});
      const std::string xh = b.node("Mul", {x, hit});
      // Σ_j x_j·q_j·s = (x_hit · Cast(Wqᵀ))·s
      const std::string wf = b.node("Cast", {wq}, {OnnxAttribute::of_int("to", static_cast<int64_t>(ft))});
      extra.push_back(b.node("Mul", {b.node("MatMul", {xh, wf}), wscale}));
      const std::string one = b.init_float("one", {}, {1.0f}, ft);
      xi = b.node("Mul", {xi, b.node("Sub", {one, hit})});
    }
    // per-row step max|xi|/127, 1 for an all-zero row
    std::string amax = b.node("Abs", {xi});
    if (b.opts().opset >= 18) {
      amax = b.node("ReduceMax", {amax, b.init_i64("axis_last", {1}, {-1})}, {OnnxAttribute::of_int("keepdims", 1)});
    } else {
      amax = b.node("ReduceMax", {amax}, {OnnxAttribute::of_ints("axes", {-1}), OnnxAttribute::of_int("keepdims", 1)});
    }
    const std::string zero = b.init_float("zero", {}, {0.0f}, ft);
    const std::string pos = b.node("Greater", {amax, zero});
    const std::string step = b.node("Div", {amax, b.init_float("q127", {}, {127.0f}, ft)});
    sx = b.node("Where", {pos, step, b.init_float("unit", {}, {1.0f}, ft)});
  } else {
    sx = b.init_float("act_scale", {}, {act_scale}, ft);
  }
  std::string xq = b.node("Round", {b.node("Div", {xi, sx})});
  xq = b.node("Clip", {xq, b.init_float("qmin", {}, {-127.0f}, ft), b.init_float("qmax", {}, {127.0f}, ft)});
  xq = b.node("Cast", {xq}, {OnnxAttribute::of_int("to", static_cast<int64_t>(OnnxElemType::Int8))});
  std::string y = b.node("MatMulInteger", {xq, wq});
  y = b.node("Cast", {y}, {OnnxAttribute::of_int("to", static_cast<int64_t>(ft))});
  y = b.node("Mul", {b.node("Mul", {y, sx}), wscale});
  for (const auto& e : extra) y = b.node("Add", {y, e});
  // Rename the last node's output to `output` (a Cast back to f16 in f16 graphs).
  if (f16) {
    b.node("Cast", {y}, {OnnxAttribute::of_int("to", static_cast<int64_t>(OnnxElemType::Float16))}, output);
  } else {
    b.node("Identity", {y}, {}, output);
  }
  b.need_opset(13);
  b.result().mapping = fmt::format("W8A8 {} MatMulInteger{}", mode, nk > 0 ? fmt::format(" + {} f16 columns", nk) : "");
}

kernels::NF4Matrix nf4_view(const OnnxPackedWeight& w, const std::string& where) {
  kernels::NF4Matrix m;
  try {
    m.double_quant = w.meta.at("double_quant").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    throw_input("[onnx] {}: nf4 layer meta needs double_quant: {}", where, e.what());
  }
  m.rows = w.out;
  m.cols = w.in;
  const TensorView* q = w.find("qweight");
  LLMOPT_CHECK_INPUT(q, "[onnx] {}: nf4 layer needs stored tensor qweight", where);
  m.codes = typed<uint8_t>(*q, DType::U8, m.rows * m.code_row_bytes(), where);
  const int64_t n_abs = m.rows * m.blocks_per_row();
  if (m.double_quant) {
    const TensorView* c = w.find("absmax_codes");
    const TensorView* sc = w.find("absmax_scales");
    const TensorView* off = w.find("absmax_offset");
    LLMOPT_CHECK_INPUT(c && sc && off, "[onnx] {}: double-quantized nf4 layer needs absmax_codes, absmax_scales, "
                       "absmax_offset", where);
    m.absmax_codes = typed<int8_t>(*c, DType::I8, n_abs, where);
    m.absmax_scales = typed<float>(*sc, DType::F32, (n_abs + kernels::kNF4DoubleQuantBlock - 1) /
                                                        kernels::kNF4DoubleQuantBlock, where);
    m.absmax_offset = *typed<float>(*off, DType::F32, 1, where);
  } else {
    const TensorView* a = w.find("absmax");
    LLMOPT_CHECK_INPUT(a, "[onnx] {}: nf4 layer needs stored tensor absmax", where);
    m.absmax = typed<float>(*a, DType::F32, n_abs, where);
  }
  return m;
}

// NF4 → com.microsoft.MatMulBnb4 (quant_type 1 = NF4, bitsandbytes' 16 values): B is the [N, K]
// weight's codes flattened, two per byte, first in the high nibble (llmopt's NF4 rows as stored,
// when K is a multiple of the block so row blocks are the flattened blocks); absmax [N·K/64] the
// decoded absmax of each block (double quantization decoded by the kernel's own block_absmax).
// ORT decodes f32(value·absmax), as the kernel does: exact.
void emit_nf4(Builder& b, const kernels::NF4Matrix& m, const std::string& input, const std::string& output) {
  const int64_t nb = m.blocks_per_row();
  std::vector<float> absmax(static_cast<size_t>(m.rows * nb));
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t blk = 0; blk < nb; ++blk) absmax[static_cast<size_t>(r * nb + blk)] = m.block_absmax(r, blk);
  const int64_t code_bytes = m.rows * m.code_row_bytes();
  std::vector<uint8_t> codes(m.codes, m.codes + code_bytes);
  const std::string q = b.init("qweight", OnnxElemType::Uint8, {code_bytes}, std::move(codes));
  const std::string a = b.init_float("absmax", {m.rows * nb}, absmax, b.opts().float_type);
  b.node("MatMulBnb4", {input, q, a},
         {OnnxAttribute::of_int("K", m.cols), OnnxAttribute::of_int("N", m.rows),
          OnnxAttribute::of_int("block_size", kernels::kNF4Block), OnnxAttribute::of_int("quant_type", 1)},
         output, kOnnxMsDomain);
  b.result().mapping = fmt::format("MatMulBnb4 NF4 block {}{}", kernels::kNF4Block,
                                   m.double_quant ? " (double-quantized absmax decoded)" : "");
}

std::optional<DType> packed_type(const OnnxPackedWeight& w) {
  if (!w.meta.contains("type") || !w.meta["type"].is_string()) return std::nullopt;
  return dtype_from_name(w.meta["type"].get<std::string>());
}

}  // namespace

std::string onnx_quant_unsupported(const OnnxPackedWeight& w, const OnnxQuantOptions& opts) {
  if (opts.float_type != OnnxElemType::Float && opts.float_type != OnnxElemType::Float16)
    return "the graph's float type must be float or float16";
  if (w.kind == "dense") return "not quantized";
  if (w.kind == "packed") {
    const auto t = packed_type(w);
    if (!t) return "packed layer without a known meta type";
    switch (*t) {
      case DType::F32:
      case DType::F16:
      case DType::BF16:
        return "not quantized";
      case DType::Q4_0:
      case DType::Q4_1:
      case DType::Q4_K:
      case DType::Q8_0:
        return {};
      default:
        return fmt::format(
            "ggml {} has no exact ONNX Runtime mapping (MatMulNBits runs 4- and 8-bit codes on the CPU; {}'s codes "
            "and grids do not fit them)",
            dtype_name(*t), dtype_name(*t));
    }
  }
  if (w.kind == "intn") {
    const kernels::IntNMatrix m = intn_view(w, "intn");
    return act_order_problem(m);
  }
  if (w.kind == "w8a8") return {};
  if (w.kind == "nf4") {
    const kernels::NF4Matrix m = nf4_view(w, "nf4");
    if (m.cols % kernels::kNF4Block != 0)
      return fmt::format("NF4 rows of {} columns end in a short block; MatMulBnb4 blocks the flattened weight "
                         "(bitsandbytes' layout), which only agrees for rows of whole blocks of {}",
                         m.cols, kernels::kNF4Block);
    return {};
  }
  return fmt::format("layer kind '{}' is not packed quantized storage", w.kind);
}

OnnxQuantProjection onnx_quant_projection(const OnnxPackedWeight& w, const std::string& prefix, const std::string& input,
                                          const std::string& output, const OnnxQuantOptions& opts) {
  const std::string why = onnx_quant_unsupported(w, opts);
  LLMOPT_CHECK_INPUT(why.empty(), "[onnx] {}: {}", prefix, why);
  Builder b(prefix, opts);
  if (w.kind == "w8a8") {
    emit_w8a8(b, w, input, output, prefix);
    return std::move(b.result());
  }
  if (w.kind == "nf4") {
    emit_nf4(b, nf4_view(w, prefix), input, output);
    return std::move(b.result());
  }
  BlockGrid g;
  if (w.kind == "packed") {
    const TensorView* t = w.find("weight");
    LLMOPT_CHECK_INPUT(t, "[onnx] {}: packed layer needs stored tensor 'weight'", prefix);
    g = grid_from_ggml(*t, *packed_type(w), w.out, w.in, prefix);
  } else {
    g = grid_from_intn(intn_view(w, prefix));
  }
  if (g.bits == 4) {
    emit_matmul_nbits(b, g, input, output);
  } else {
    emit_dequantized(b, g, input, output);
  }
  return std::move(b.result());
}

bool onnx_quant_check_mappable(const OnnxPackedWeight& w, const std::string& layer, const OnnxQuantOptions& opts,
                               bool dequantize_unmapped) {
  const std::string why = onnx_quant_unsupported(w, opts);
  if (why.empty()) return true;
  if (why == "not quantized") return false;
  LLMOPT_CHECK_INPUT(dequantize_unmapped,
                     "[onnx] {}: {}; export it dequantized ({}), or re-quantize to q4_0, q4_1, q4_k, q8_0, "
                     "int-N (4 or 8 bits) or w8a8",
                     layer, why, kOnnxDequantizeOption);
  log::warn("[onnx] {}: {}; written dequantized", layer, why);
  return false;
}

namespace {

OnnxPackedWeight packed_from_linear(const OnnxLinearWeight& w) {
  OnnxPackedWeight p;
  p.kind = w.kind;
  p.meta = w.meta;
  p.out = w.out;
  p.in = w.in;
  for (const auto& t : w.stored) {
    TensorView v;
    v.name = t.name;
    v.dtype = t.dtype;
    v.shape = t.shape;
    v.data = t.data;
    v.nbytes = t.nbytes;
    p.tensors.push_back(std::move(v));
  }
  return p;
}

// W [out, in] decoded from the stored tensors by the kernels (what the layer's dense_weight()
// gives), for layers of a registered kind that have no mapping.
std::vector<float> dequantized_weight(const OnnxPackedWeight& p, const std::string& where) {
  std::vector<float> w(static_cast<size_t>(p.out * p.in));
  if (p.kind == "packed") {
    const auto t = packed_type(p);
    const TensorView* v = p.find("weight");
    LLMOPT_CHECK_INPUT(t && v && v->dtype == *t && v->nbytes == p.out * dtype_bytes_for(*t, p.in),
                       "[onnx] {}: packed layer's stored weight does not match its type and shape [{}, {}]", where,
                       p.out, p.in);
    const int64_t row = dtype_bytes_for(*t, p.in);
    for (int64_t r = 0; r < p.out; ++r) kernels::dequantize_row(*t, v->data + r * row, w.data() + r * p.in, p.in);
  } else if (p.kind == "intn") {
    kernels::intn_dequantize_rows(intn_view(p, where), 0, p.out, w.data());
  } else if (p.kind == "nf4") {
    kernels::nf4_dequantize_rows(nf4_view(p, where), 0, p.out, w.data());
  } else {
    throw_input("[onnx] {}: layer kind '{}' cannot be dequantized here", where, p.kind);
  }
  return w;
}

std::string emit_registered(OnnxGraphBuilder& g, const std::string& x, const OnnxLinearWeight& w) {
  OnnxQuantOptions o;
  o.opset = static_cast<int>(g.opset());
  o.float_type = g.act_type() == static_cast<int32_t>(OnnxElemType::Float16) ? OnnxElemType::Float16 : OnnxElemType::Float;
  const OnnxPackedWeight p = packed_from_linear(w);
  if (!onnx_quant_check_mappable(p, w.path, o, !g.options().require_packed)) {
    const std::vector<float> dense = dequantized_weight(p, w.path);
    std::vector<float> t(dense.size());  // MatMul takes Wᵀ [in, out]
    for (int64_t r = 0; r < w.out; ++r)
      for (int64_t c = 0; c < w.in; ++c) t[static_cast<size_t>(c * w.out + r)] = dense[static_cast<size_t>(r * w.in + c)];
    return g.op("MatMul", {x, g.float_initializer(w.path + ".weight.T", {w.in, w.out}, t.data())});
  }
  const std::string y = g.fresh(w.path + ".out");
  const OnnxQuantProjection q = onnx_quant_projection(p, w.path, x, y, o);
  LLMOPT_CHECK_INPUT(q.min_opset <= o.opset, "[onnx] {}: {} needs opset {} or newer, the export asks for {}", w.path,
                     q.mapping, q.min_opset, o.opset);
  if (q.uses_ms_domain) g.use_domain(kOnnxMsDomain, 1);
  for (const auto& i : q.initializers)
    g.initializer(i.name, static_cast<int32_t>(i.type), i.dims, i.raw.data(), i.raw.size());
  for (const auto& n : q.nodes) {
    onnx::NodeProto& node = g.node(n.op_type, n.inputs, n.outputs, n.domain);
    for (const auto& a : n.attributes) {
      switch (a.kind) {
        case OnnxAttribute::Kind::Int: OnnxGraphBuilder::set_attr(node, a.name, a.i); break;
        case OnnxAttribute::Kind::Float: OnnxGraphBuilder::set_attr(node, a.name, a.f); break;
        case OnnxAttribute::Kind::Ints: OnnxGraphBuilder::set_attr(node, a.name, a.ints); break;
      }
    }
  }
  log::debug("[onnx] {}: {}", w.path, q.mapping);
  return y;
}

}  // namespace

void register_onnx_quant_kinds() {
  for (const char* kind : {"packed", "intn", "w8a8", "nf4"}) register_onnx_linear_kind(kind, emit_registered);
}

}  // namespace llmopt::io
