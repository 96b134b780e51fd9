// ONNX mappings of packed projections (io/onnx_quant.h), checked by running the emitted nodes in
// a small float64 interpreter written here from the operator specifications (ONNX's
// DequantizeLinear/MatMulInteger/..., ONNX Runtime's com.microsoft.MatMulNBits: B [N, n_blocks,
// blob] with element 2i of a block in the low nibble of byte i, scales [N·n_blocks], zero points
// u8 packed the same way or float, default 2^(bits−1); W = (q − zp)·scale), never with the code
// under test. The effective weight is read back by feeding the identity matrix (y = x·Wᵀ with
// x = I gives Wᵀ exactly in float64) and compared with the kernels' own dequantizers
// (kernels::dequantize_row, kernels::intn_dequantize_rows) of the same stored blocks.
//
// Tolerances:
//   exact mappings (q4_0, q8_0, int-N): 0 — every decoded weight is an 11-bit f16 significand
//     times an integer of ≤ 9 bits, exact in f32 and f64 alike.
//   float zero points (q4_1, q4_k): ONNX decodes (q − zp)·s with zp = −offset/s rounded to f32
//     (|Δzp·s| ≤ 2⁻²⁴·|offset|), the kernel rounds s·q + offset to f32 once (≤ 2⁻²⁴·|w|):
//     |Δw| ≤ 2⁻²⁴·(|offset| + |w|), with the block's offset read from the block here.
//   W8A8: the interpreter and the reference formula below both run in float64 on the same
//     integers; only summation order differs: 1e-12 relative to Σ|x|·|w|.
#include "io/onnx_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <functional>
#include <map>
#include <numeric>
#include <random>

#include "core/dtype.h"
#include "core/error.h"
#include "core/half.h"
#include "kernels/intn.h"
#include "kernels/nf4.h"
#include "kernels/quant_formats.h"

namespace llmopt::io {
namespace {

// ---------------------------------------------------------------------------------------------
// A float64 interpreter of the nodes the mappings use.

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> v;
  OnnxElemType type = OnnxElemType::Float;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

Tensor from_initializer(const OnnxInitializer& in) {
  Tensor t;
  t.shape = in.dims;
  t.type = in.type;
  const int64_t n = t.numel();
  t.v.resize(static_cast<size_t>(n));
  const uint8_t* p = in.raw.data();
  size_t width = 0;
  switch (in.type) {
    case OnnxElemType::Float: width = 4; break;
    case OnnxElemType::Float16: width = 2; break;
    case OnnxElemType::Uint8:
    case OnnxElemType::Int8: width = 1; break;
    case OnnxElemType::Int32: width = 4; break;
    case OnnxElemType::Int64: width = 8; break;
  }
  EXPECT_EQ(in.raw.size(), static_cast<size_t>(n) * width) << in.name;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* e = p + i * static_cast<int64_t>(width);
    switch (in.type) {
      case OnnxElemType::Float: {
        float f;
        std::memcpy(&f, e, 4);
        t.v[i] = f;
        break;
      }
      case OnnxElemType::Float16: {
        uint16_t h;
        std::memcpy(&h, e, 2);
        t.v[i] = f16_to_f32(h);
        break;
      }
      case OnnxElemType::Uint8: t.v[i] = *e; break;
      case OnnxElemType::Int8: t.v[i] = static_cast<int8_t>(*e); break;
      case OnnxElemType::Int32: {
        int32_t x;
        std::memcpy(&x, e, 4);
        t.v[i] = x;
        break;
      }
      case OnnxElemType::Int64: {
        int64_t x;
        std::memcpy(&x, e, 8);
        t.v[i] = static_cast<double>(x);
        break;
      }
    }
  }
  return t;
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& s) {
  std::vector<int64_t> st(s.size(), 1);
  for (int64_t i = static_cast<int64_t>(s.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * s[i + 1];
  return st;
}

// numpy broadcasting of a binary op
Tensor broadcast(const Tensor& a, const Tensor& b, const std::function<double(double, double)>& f) {
  const size_t r = std::max(a.shape.size(), b.shape.size());
  std::vector<int64_t> sa(r, 1), sb(r, 1), so(r, 1);
  for (size_t i = 0; i < a.shape.size(); ++i) sa[r - a.shape.size() + i] = a.shape[i];
  for (size_t i = 0; i < b.shape.size(); ++i) sb[r - b.shape.size() + i] = b.shape[i];
  for (size_t i = 0; i < r; ++i) {
    EXPECT_TRUE(sa[i] == sb[i] || sa[i] == 1 || sb[i] == 1) << "broadcast mismatch";
    so[i] = std::max(sa[i], sb[i]);
  }
  Tensor o;
  o.shape = so;
  o.type = a.type;
  o.v.resize(static_cast<size_t>(o.numel()));
  const auto sta = strides_of(sa), stb = strides_of(sb), sto = strides_of(so);
  for (int64_t i = 0; i < o.numel(); ++i) {
    int64_t ia = 0, ib = 0, rem = i;
    for (size_t d = 0; d < r; ++d) {
      const int64_t c = rem / sto[d];
      rem %= sto[d];
      if (sa[d] != 1) ia += c * sta[d];
      if (sb[d] != 1) ib += c * stb[d];
    }
    o.v[i] = f(a.v[ia], b.v[ib]);
  }
  return o;
}

// a [..., K] · b [K, N]
Tensor matmul(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(b.shape.size(), 2u);
  const int64_t k = b.shape[0], n = b.shape[1];
  EXPECT_EQ(a.shape.back(), k);
  const int64_t m = a.numel() / k;
  Tensor o;
  o.shape = a.shape;
  o.shape.back() = n;
  o.v.assign(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const double x = a.v[i * k + j];
      if (x == 0) continue;
      for (int64_t c = 0; c < n; ++c) o.v[i * n + c] += x * b.v[j * n + c];
    }
  return o;
}

int64_t attr_i(const OnnxNode& n, const char* name, int64_t dflt) {
  const OnnxAttribute* a = n.attribute(name);
  return a ? a->i : dflt;
}

// MatMulNBits from ONNX Runtime's ContribOperators.md.
Tensor matmul_nbits(const OnnxNode& node, const std::vector<const Tensor*>& in) {
  const int64_t K = attr_i(node, "K", -1), N = attr_i(node, "N", -1), bits = attr_i(node, "bits", -1),
                bs = attr_i(node, "block_size", -1);
  EXPECT_EQ(bits, 4);
  EXPECT_TRUE(bs >= 16 && (bs & (bs - 1)) == 0) << bs;
  const int64_t nb = (K + bs - 1) / bs, blob = bs * bits / 8;
  const Tensor& B = *in[1];
  EXPECT_EQ(B.shape, (std::vector<int64_t>{N, nb, blob}));
  EXPECT_EQ(in[2]->numel(), N * nb);
  Tensor wt;  // Wᵀ [K, N]
  wt.shape = {K, N};
  wt.v.resize(static_cast<size_t>(K * N));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t blk = k / bs, e = k % bs;
      const int byte = static_cast<int>(B.v[(n * nb + blk) * blob + e / 2]);
      const int q = (e % 2 == 0) ? (byte & 15) : (byte >> 4);
      double zp = 8;
      if (in.size() > 3 && in[3]) {
        const Tensor& Z = *in[3];
        if (Z.type == OnnxElemType::Uint8) {
          const int64_t zrow = (nb * bits + 7) / 8;
          EXPECT_EQ(Z.numel(), N * zrow);
          const int zb = static_cast<int>(Z.v[n * zrow + blk / 2]);
          zp = (blk % 2 == 0) ? (zb & 15) : (zb >> 4);
        } else {
          EXPECT_EQ(Z.numel(), N * nb);
          zp = Z.v[n * nb + blk];
        }
      }
      wt.v[k * N + n] = (q - zp) * in[2]->v[n * nb + blk];
    }
  return matmul(*in[0], wt);
}

// MatMulBnb4 (ContribOperators.md; bitsandbytes' NF4): B holds the [N, K] weight's 4-bit codes
// flattened, two per byte, the first in the HIGH nibble; absmax one per block_size flattened
// elements; W[n, k] = NF4[code]·absmax. NF4 values as bitsandbytes' create_normal_map lists them.
Tensor matmul_bnb4(const OnnxNode& node, const std::vector<const Tensor*>& in) {
  static const double kNF4[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                                  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                                  0.44070982933044434, 0.5626170039176941, 0.7229568362236328, 1.0};
  const int64_t K = attr_i(node, "K", -1), N = attr_i(node, "N", -1), bs = attr_i(node, "block_size", -1);
  EXPECT_EQ(attr_i(node, "quant_type", -1), 1);
  EXPECT_EQ(in[1]->numel(), (N * K + 1) / 2);
  EXPECT_EQ(in[2]->numel(), (N * K + bs - 1) / bs);
  Tensor wt;
  wt.shape = {K, N};
  wt.v.resize(static_cast<size_t>(K * N));
  for (int64_t i = 0; i < N * K; ++i) {
    const int byte = static_cast<int>(in[1]->v[i / 2]);
    const int code = i % 2 == 0 ? byte >> 4 : byte & 15;
    wt.v[(i % K) * N + i / K] = kNF4[code] * in[2]->v[i / bs];
  }
  return matmul(*in[0], wt);
}

// Runs the projection on x; returns y (the output named `out`).
Tensor run(const OnnxQuantProjection& p, const std::string& in_name, const Tensor& x, const std::string& out,
           const OnnxQuantOptions& o) {
  std::map<std::string, Tensor> env;
  for (const auto& i : p.initializers) {
    EXPECT_FALSE(env.count(i.name)) << "duplicate initializer " << i.name;
    env[i.name] = from_initializer(i);
  }
  env[in_name] = x;
  for (const auto& n : p.nodes) {
    std::vector<const Tensor*> in;
    for (const auto& name : n.inputs) {
      if (name.empty()) {
        in.push_back(nullptr);
        continue;
      }
      auto it = env.find(name);
      EXPECT_TRUE(it != env.end()) << n.op_type << " reads undefined " << name;
      if (it == env.end()) return {};
      in.push_back(&it->second);
    }
    const bool contrib = n.op_type == "MatMulNBits" || n.op_type == "MatMulBnb4";
    EXPECT_EQ(n.domain, contrib ? std::string(kOnnxMsDomain) : std::string()) << n.op_type;
    const std::string& op = n.op_type;
    Tensor y;
    auto bin = [&](const std::function<double(double, double)>& f) { return broadcast(*in[0], *in[1], f); };
    if (op == "MatMulNBits") {
      y = matmul_nbits(n, in);
    } else if (op == "MatMulBnb4") {
      y = matmul_bnb4(n, in);
    } else if (op == "MatMul" || op == "MatMulInteger") {
      y = matmul(*in[0], *in[1]);
    } else if (op == "Gather") {
      EXPECT_EQ(attr_i(n, "axis", 0), -1);
      const Tensor& a = *in[0];
      const int64_t k = a.shape.back(), m = a.numel() / k, g = in[1]->numel();
      y.shape = a.shape;
      y.shape.back() = g;
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < g; ++j) y.v.push_back(a.v[i * k + static_cast<int64_t>(in[1]->v[j])]);
    } else if (op == "DequantizeLinear") {
      // blocked along axis 0: x [K, N], scale/zero [ceil(K/B), N]
      EXPECT_EQ(attr_i(n, "axis", 1), 0);
      const int64_t B = attr_i(n, "block_size", 0);
      const Tensor& q = *in[0];
      const int64_t K = q.shape[0], N = q.shape[1];
      EXPECT_EQ(in[1]->shape, (std::vector<int64_t>{(K + B - 1) / B, N}));
      y.shape = q.shape;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < N; ++c) {
          const double zp = in.size() > 2 && in[2] ? in[2]->v[(k / B) * N + c] : 0.0;
          y.v.push_back((q.v[k * N + c] - zp) * in[1]->v[(k / B) * N + c]);
        }
    } else if (op == "Cast") {
      y = *in[0];
      y.type = static_cast<OnnxElemType>(attr_i(n, "to", 1));
      if (y.type != OnnxElemType::Float && y.type != OnnxElemType::Float16)
        for (auto& v : y.v) v = std::trunc(v);
    } else if (op == "Sub") {
      y = bin([](double a, double b) { return a - b; });
    } else if (op == "Add") {
      y = bin([](double a, double b) { return a + b; });
    } else if (op == "Mul") {
      y = bin([](double a, double b) { return a * b; });
    } else if (op == "Div") {
      y = bin([](double a, double b) { return a / b; });
    } else if (op == "Greater") {
      y = bin([](double a, double b) { return a > b ? 1.0 : 0.0; });
    } else if (op == "Abs" || op == "Round" || op == "Identity") {
      y = *in[0];
      for (auto& v : y.v) v = op == "Abs" ? std::fabs(v) : op == "Round" ? std::nearbyint(v) : v;  // half to even
    } else if (op == "Clip") {
      y = *in[0];
      for (auto& v : y.v) v = std::min(std::max(v, in[1]->v[0]), in[2]->v[0]);
    } else if (op == "Where") {
      const Tensor t = broadcast(*in[0], *in[1], [](double c, double a) { return c != 0 ? a : NAN; });
      y = broadcast(t, *in[2], [](double a, double b) { return std::isnan(a) ? b : a; });
    } else if (op == "Reshape") {
      y = *in[0];
      std::vector<int64_t> s(in[1]->v.begin(), in[1]->v.end());
      int64_t known = 1, free = -1;
      for (size_t i = 0; i < s.size(); ++i) s[i] == -1 ? free = static_cast<int64_t>(i) : known *= s[i];
      if (free >= 0) s[free] = y.numel() / known;
      y.shape = s;
      EXPECT_EQ(y.numel(), static_cast<int64_t>(y.v.size()));
    } else if (op == "Slice") {
      EXPECT_EQ(in[3]->v[0], 0.0);  // axis 0
      const Tensor& a = *in[0];
      const int64_t row = a.numel() / a.shape[0], s = static_cast<int64_t>(in[1]->v[0]),
                    e = static_cast<int64_t>(in[2]->v[0]);
      y.shape = a.shape;
      y.shape[0] = e - s;
      y.v.assign(a.v.begin() + s * row, a.v.begin() + e * row);
    } else if (op == "ReduceMax") {
      std::vector<int64_t> axes;
      if (in.size() > 1 && in[1]) axes.assign(in[1]->v.begin(), in[1]->v.end());
      else if (const OnnxAttribute* a = n.attribute("axes")) axes = a->ints;
      EXPECT_EQ(axes.size(), 1u);
      const Tensor& a = *in[0];
      const int64_t r = static_cast<int64_t>(a.shape.size()), ax = axes[0] < 0 ? axes[0] + r : axes[0];
      int64_t outer = 1, inner = 1;
      for (int64_t i = 0; i < ax; ++i) outer *= a.shape[i];
      for (int64_t i = ax + 1; i < r; ++i) inner *= a.shape[i];
      const int64_t len = a.shape[ax];
      y.shape = a.shape;
      if (attr_i(n, "keepdims", 1)) y.shape[ax] = 1;
      else y.shape.erase(y.shape.begin() + ax);
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < inner; ++i) {
          double m = -INFINITY;
          for (int64_t l = 0; l < len; ++l) m = std::max(m, a.v[(o * len + l) * inner + i]);
          y.v.push_back(m);
        }
    } else {
      ADD_FAILURE() << "interpreter has no op " << op;
      return {};
    }
    EXPECT_EQ(n.outputs.size(), 1u);
    env[n.outputs[0]] = std::move(y);
  }
  auto it = env.find(out);
  EXPECT_TRUE(it != env.end()) << "no node writes " << out;
  (void)o;
  return it == env.end() ? Tensor{} : it->second;
}

// Wᵀ [K, N] as the graph computes it: y for x = I_K.
std::vector<double> effective_weight_t(const OnnxQuantProjection& p, int64_t k, const OnnxQuantOptions& o) {
  Tensor x;
  x.shape = {k, k};
  x.v.assign(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i) x.v[i * k + i] = 1.0;
  return run(p, "x", x, "y", o).v;
}

// ---------------------------------------------------------------------------------------------

std::vector<float> random_weights(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> w(static_cast<size_t>(n));
  for (auto& v : w) v = d(rng);
  return w;
}

struct GgmlLayer {
  std::vector<uint8_t> blocks;
  OnnxPackedWeight w;
};

GgmlLayer ggml_layer(DType t, int64_t out, int64_t in, const std::vector<float>& dense) {
  GgmlLayer g;
  const int64_t row_bytes = in / dtype_block_elems(t) * dtype_block_bytes(t);
  g.blocks.resize(static_cast<size_t>(out * row_bytes));
  for (int64_t r = 0; r < out; ++r) kernels::quantize_row_ref(t, dense.data() + r * in, g.blocks.data() + r * row_bytes, in);
  g.w.kind = "packed";
  std::string name(dtype_name(t));
  for (auto& c : name) c = static_cast<char>(std::tolower(c));
  g.w.meta = {{"type", name}};
  g.w.out = out;
  g.w.in = in;
  TensorView v;
  v.name = "weight";
  v.dtype = t;
  v.shape = {out, in};
  v.data = g.blocks.data();
  v.nbytes = static_cast<int64_t>(g.blocks.size());
  g.w.tensors = {v};
  return g;
}

// Kernel dequantization of the stored rows.
std::vector<float> ggml_reference(const GgmlLayer& g, DType t) {
  const int64_t out = g.w.out, in = g.w.in, row_bytes = in / dtype_block_elems(t) * dtype_block_bytes(t);
  std::vector<float> w(static_cast<size_t>(out * in));
  for (int64_t r = 0; r < out; ++r) kernels::dequantize_row(t, g.blocks.data() + r * row_bytes, w.data() + r * in, in);
  return w;
}

// The float offset of the 32-element block holding element j of row r (q4_1: m; q4_k: −dmin·min),
// from the layouts in ggml-common.h.
double block_offset(const GgmlLayer& g, DType t, int64_t r, int64_t j) {
  const int64_t in = g.w.in;
  if (t == DType::Q4_1) {
    const uint8_t* blk = g.blocks.data() + (r * (in / 32) + j / 32) * 20;
    uint16_t m;
    std::memcpy(&m, blk + 2, 2);
    return f16_to_f32(m);
  }
  const uint8_t* blk = g.blocks.data() + (r * (in / 256) + j / 256) * 144;
  uint16_t dmin;
  std::memcpy(&dmin, blk + 2, 2);
  const uint8_t* sc = blk + 4;
  const int s = static_cast<int>((j % 256) / 32);
  const int mn = s < 4 ? (sc[s + 4] & 63) : ((sc[s + 4] >> 4) | ((sc[s] >> 6) << 4));
  return -static_cast<double>(f16_to_f32(dmin)) * mn;
}

void expect_weights(const std::vector<double>& wt, const std::vector<float>& ref, int64_t out, int64_t in,
                    const std::function<double(int64_t, int64_t)>& tol, const std::string& what) {
  ASSERT_EQ(wt.size(), ref.size()) << what;
  int bad = 0;
  for (int64_t r = 0; r < out && bad < 5; ++r)
    for (int64_t j = 0; j < in && bad < 5; ++j) {
      const double got = wt[j * out + r], want = ref[r * in + j];
      if (std::fabs(got - want) > tol(r, j)) {
        ADD_FAILURE() << what << ": W[" << r << ", " << j << "] = " << got << ", kernel " << want << ", tolerance "
                      << tol(r, j);
        ++bad;
      }
    }
}

const OnnxNode* find_node(const OnnxQuantProjection& p, const std::string& op) {
  for (const auto& n : p.nodes)
    if (n.op_type == op) return &n;
  return nullptr;
}

TEST(OnnxQuant, Q4_0IsMatMulNBitsExactly) {
  const int64_t out = 7, in = 96;
  const auto g = ggml_layer(DType::Q4_0, out, in, random_weights(out * in, 1));
  OnnxQuantOptions o;
  ASSERT_EQ(onnx_quant_unsupported(g.w, o), "");
  const auto p = onnx_quant_projection(g.w, "m.q_proj", "x", "y", o);
  EXPECT_TRUE(p.uses_ms_domain);
  const OnnxNode* n = find_node(p, "MatMulNBits");
  ASSERT_NE(n, nullptr);
  EXPECT_EQ(n->attribute("K")->i, in);
  EXPECT_EQ(n->attribute("N")->i, out);
  EXPECT_EQ(n->attribute("bits")->i, 4);
  EXPECT_EQ(n->attribute("block_size")->i, 32);
  EXPECT_EQ(n->inputs.size(), 3u);  // default zero point 8 = q4_0's
  EXPECT_EQ(n->attribute("accuracy_level"), nullptr);
  expect_weights(effective_weight_t(p, in, o), ggml_reference(g, DType::Q4_0), out, in,
                 [](int64_t, int64_t) { return 0.0; }, "q4_0");
}

TEST(OnnxQuant, Q4_0HandBuiltBlockNibbleOrder) {
  // One block: d = 0.5, ggml nibble j → element j (low) and j + 16 (high). Element e has code
  // e % 16, so W[e] = (e % 16 − 8)·0.5 — worked out from ggml's layout, not from the kernel.
  std::vector<uint8_t> blk(18);
  const uint16_t d = f32_to_f16(0.5f);
  std::memcpy(blk.data(), &d, 2);
  for (int j = 0; j < 16; ++j) blk[2 + j] = static_cast<uint8_t>((j % 16) | (((j + 16) % 16) << 4));
  OnnxPackedWeight w;
  w.kind = "packed";
  w.meta = {{"type", "q4_0"}};
  w.out = 1;
  w.in = 32;
  TensorView v;
  v.name = "weight";
  v.dtype = DType::Q4_0;
  v.shape = {1, 32};
  v.data = blk.data();
  v.nbytes = 18;
  w.tensors = {v};
  OnnxQuantOptions o;
  const auto p = onnx_quant_projection(w, "m", "x", "y", o);
  const auto wt = effective_weight_t(p, 32, o);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(wt[e], (e % 16 - 8) * 0.5) << e;
  // ORT's blob: element 2i low nibble, 2i+1 high nibble of byte i.
  const OnnxInitializer* B = nullptr;
  for (const auto& i : p.initializers)
    if (i.name == "m.qweight") B = &i;
  ASSERT_NE(B, nullptr);
  ASSERT_EQ(B->raw.size(), 16u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(B->raw[i], ((2 * i) % 16) | (((2 * i + 1) % 16) << 4)) << i;
}

TEST(OnnxQuant, Q4_1AndQ4_KFloatZeroPointsWithinDerivedBound) {
  for (DType t : {DType::Q4_1, DType::Q4_K}) {
    const int64_t out = 5, in = 512;
    // An offset weight distribution so the mins matter.
    auto dense = random_weights(out * in, 2);
    for (auto& v : dense) v += 0.3f;
    const auto g = ggml_layer(t, out, in, dense);
    OnnxQuantOptions o;
    const auto p = onnx_quant_projection(g.w, "m", "x", "y", o);
    const OnnxNode* n = find_node(p, "MatMulNBits");
    ASSERT_NE(n, nullptr);
    EXPECT_EQ(n->attribute("block_size")->i, 32);
    ASSERT_EQ(n->inputs.size(), 4u);
    const auto ref = ggml_reference(g, t);
    expect_weights(
        effective_weight_t(p, in, o), ref, out, in,
        [&](int64_t r, int64_t j) {
          return std::ldexp(std::fabs(block_offset(g, t, r, j)) + std::fabs(ref[r * in + j]), -24);
        },
        std::string(dtype_name(t)));
  }
}

TEST(OnnxQuant, ConstantBlocksStayExact) {
  // q4_1 with d = 0 (every element = m) and q4_k with a zero sub-block scale (every element =
  // −dmin·min): codes are irrelevant there, the mapping must still give the constant.
  std::vector<uint8_t> q41(20);
  const uint16_t zero = 0, m = f32_to_f16(-0.75f);
  std::memcpy(q41.data(), &zero, 2);
  std::memcpy(q41.data() + 2, &m, 2);
  for (int j = 0; j < 16; ++j) q41[4 + j] = static_cast<uint8_t>(j * 17);
  OnnxPackedWeight w;
  w.kind = "packed";
  w.meta = {{"type", "q4_1"}};
  w.out = 1;
  w.in = 32;
  TensorView v;
  v.name = "weight";
  v.dtype = DType::Q4_1;
  v.shape = {1, 32};
  v.data = q41.data();
  v.nbytes = 20;
  w.tensors = {v};
  OnnxQuantOptions o;
  auto wt = effective_weight_t(onnx_quant_projection(w, "m", "x", "y", o), 32, o);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(wt[e], -0.75) << e;

  kernels::BlockQ4_K k{};
  k.d = f32_to_f16(0.25f);
  k.dmin = f32_to_f16(0.125f);
  // sub-block 0: scale 0, min 3; sub-blocks 1..7: scale 5, min 1 (j < 4: low 6 bits of bytes j, j+4;
  // j >= 4: nibbles of byte j+4, high bits zero).
  for (int j = 0; j < 4; ++j) {
    k.scales[j] = j == 0 ? 0 : 5;
    k.scales[j + 4] = j == 0 ? 3 : 1;
  }
  for (int j = 4; j < 8; ++j) k.scales[j + 4] = static_cast<uint8_t>(5 | (1 << 4));
  for (int l = 0; l < 128; ++l) k.qs[l] = static_cast<uint8_t>((l * 7) & 0xff);
  std::vector<uint8_t> kb(sizeof k);
  std::memcpy(kb.data(), &k, sizeof k);
  w.meta = {{"type", "q4_k"}};
  w.in = 256;
  v.dtype = DType::Q4_K;
  v.shape = {1, 256};
  v.data = kb.data();
  v.nbytes = static_cast<int64_t>(kb.size());
  w.tensors = {v};
  wt = effective_weight_t(onnx_quant_projection(w, "m", "x", "y", o), 256, o);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(wt[e], -0.125 * 3) << e;
  std::vector<float> ref(256);
  kernels::dequantize_row(DType::Q4_K, kb.data(), ref.data(), 256);
  for (int e = 0; e < 256; ++e) EXPECT_NEAR(wt[e], ref[e], std::ldexp(0.125 + std::fabs(ref[e]), -24)) << e;
}

TEST(OnnxQuant, Q8_0DequantizedExactlyAtEveryOpset) {
  const int64_t out = 6, in = 64;
  const auto g = ggml_layer(DType::Q8_0, out, in, random_weights(out * in, 3));
  const auto ref = ggml_reference(g, DType::Q8_0);
  for (int opset : {14, 17, 21}) {
    OnnxQuantOptions o;
    o.opset = opset;
    const auto p = onnx_quant_projection(g.w, "m", "x", "y", o);
    EXPECT_FALSE(p.uses_ms_domain);
    EXPECT_EQ(find_node(p, "DequantizeLinear") != nullptr, opset >= 21) << opset;
    EXPECT_EQ(p.min_opset, opset >= 21 ? 21 : 13);
    expect_weights(effective_weight_t(p, in, o), ref, out, in, [](int64_t, int64_t) { return 0.0; },
                   "q8_0 opset " + std::to_string(opset));
  }
}

struct IntNLayer {
  kernels::IntNStorage s;
  OnnxPackedWeight w;
};

IntNLayer intn_layer(kernels::IntNStorage s) {
  IntNLayer l;
  l.s = std::move(s);
  const auto v = l.s.view();
  l.w.kind = "intn";
  l.w.meta = {{"bits", l.s.bits}, {"group_size", l.s.group}, {"sym", l.s.sym}, {"act_order", !l.s.g_idx.empty()},
              {"in_features", l.s.cols}};
  l.w.out = l.s.rows;
  l.w.in = l.s.cols;
  auto view = [](const char* name, DType t, std::vector<int64_t> shape, const void* data, size_t bytes) {
    TensorView tv;
    tv.name = name;
    tv.dtype = t;
    tv.shape = std::move(shape);
    tv.data = static_cast<const uint8_t*>(data);
    tv.nbytes = static_cast<int64_t>(bytes);
    return tv;
  };
  l.w.tensors.push_back(view("qweight", DType::U8, {l.s.rows, v.code_row_bytes()}, l.s.codes.data(), l.s.codes.size()));
  l.w.tensors.push_back(view("scales", DType::F16, {l.s.rows, v.groups()}, l.s.scales.data(), 2 * l.s.scales.size()));
  if (!l.s.sym)
    l.w.tensors.push_back(view("qzeros", DType::U8, {l.s.rows, v.zero_row_bytes()}, l.s.zeros.data(), l.s.zeros.size()));
  if (!l.s.g_idx.empty())
    l.w.tensors.push_back(view("g_idx", DType::I32, {l.s.cols}, l.s.g_idx.data(), 4 * l.s.g_idx.size()));
  return l;
}

std::vector<float> intn_reference(const IntNLayer& l) {
  std::vector<float> w(static_cast<size_t>(l.s.rows * l.s.cols));
  kernels::intn_dequantize_rows(l.s.view(), 0, l.s.rows, w.data());
  return w;
}

TEST(OnnxQuant, IntNFourBitGroupsTailsAndWholeRowsExactly) {
  struct Case {
    int64_t in, group;
    bool sym;
  };
  // 200 = 6·32 + 8 and 128 + 72: tail groups; 172 with group −1 (one group per row, not a power
  // of two); 96 with group 128 ≥ in (one group).
  for (const Case c : {Case{200, 32, true}, Case{200, 128, false}, Case{256, 64, false}, Case{172, -1, false},
                       Case{172, -1, true}, Case{96, 128, false}}) {
    const int64_t out = 9;
    auto dense = random_weights(out * c.in, 4);
    for (auto& v : dense) v += 0.2f;
    const auto l = intn_layer(kernels::intn_quantize(dense.data(), out, c.in, 4, c.group, c.sym));
    const std::string what = "int4 in " + std::to_string(c.in) + " g" + std::to_string(c.group) + (c.sym ? " sym" : " asym");
    OnnxQuantOptions o;
    ASSERT_EQ(onnx_quant_unsupported(l.w, o), "") << what;
    const auto p = onnx_quant_projection(l.w, "m", "x", "y", o);
    const OnnxNode* n = find_node(p, "MatMulNBits");
    ASSERT_NE(n, nullptr) << what;
    EXPECT_EQ(n->attribute("K")->i, c.in);
    EXPECT_EQ(n->inputs.size(), c.sym ? 3u : 4u) << what;
    expect_weights(effective_weight_t(p, c.in, o), intn_reference(l), out, c.in, [](int64_t, int64_t) { return 0.0; },
                   what);
  }
}

TEST(OnnxQuant, IntNActOrderGathersColumnsIntoBlocks) {
  // GPTQ act-order: column j belongs to group rank(j) / group for a permutation rank.
  const int64_t out = 6, in = 80, group = 32, groups = 3;
  std::mt19937 rng(5);
  std::vector<int64_t> order(in);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> g_idx(in);
  for (int64_t p = 0; p < in; ++p) g_idx[order[p]] = static_cast<int32_t>(p / group);
  std::vector<uint8_t> codes(out * in);
  for (auto& c : codes) c = static_cast<uint8_t>(rng() % 16);
  std::vector<kernels::IntNGrid> grids(out * groups);
  for (size_t i = 0; i < grids.size(); ++i) grids[i] = {f16_to_f32(f32_to_f16(0.01f * (1 + i % 7))), static_cast<float>(i % 16)};
  const auto l = intn_layer(kernels::intn_from_codes(codes.data(), grids.data(), out, in, 4, group, false, g_idx.data()));
  OnnxQuantOptions o;
  const auto p = onnx_quant_projection(l.w, "m", "x", "y", o);
  ASSERT_NE(find_node(p, "Gather"), nullptr);
  expect_weights(effective_weight_t(p, in, o), intn_reference(l), out, in, [](int64_t, int64_t) { return 0.0; },
                 "int4 act-order");

  // A g_idx whose groups are not all full cannot be gathered into blocks: named, not guessed.
  auto uneven = g_idx;
  uneven[order[0]] = 1;  // group 0 now holds 31 columns, group 1 holds 33
  const auto bad = intn_layer(kernels::intn_from_codes(codes.data(), grids.data(), out, in, 4, group, false, uneven.data()));
  EXPECT_NE(onnx_quant_unsupported(bad.w, o).find("act-order group 0 holds 31 columns"), std::string::npos)
      << onnx_quant_unsupported(bad.w, o);
  EXPECT_THROW(onnx_quant_projection(bad.w, "m", "x", "y", o), InputError);
}

TEST(OnnxQuant, IntNEightAndOtherBitsDequantizedExactly) {
  struct Case {
    int bits;
    int64_t in, group;
    bool sym;
  };
  for (const Case c : {Case{8, 200, 128, false}, Case{8, 172, -1, true}, Case{8, 96, 32, true}, Case{3, 100, 32, false},
                       Case{2, 64, 64, true}}) {
    const int64_t out = 5;
    const auto l = intn_layer(kernels::intn_quantize(random_weights(out * c.in, 6).data(), out, c.in, c.bits, c.group, c.sym));
    const auto ref = intn_reference(l);
    for (int opset : {17, 21}) {
      OnnxQuantOptions o;
      o.opset = opset;
      const std::string what = "int" + std::to_string(c.bits) + " g" + std::to_string(c.group) + " opset " +
                               std::to_string(opset);
      const auto p = onnx_quant_projection(l.w, "m", "x", "y", o);
      EXPECT_EQ(find_node(p, "MatMulNBits"), nullptr) << what;
      expect_weights(effective_weight_t(p, c.in, o), ref, out, c.in, [](int64_t, int64_t) { return 0.0; }, what);
    }
  }
}

TEST(OnnxQuant, Float16GraphsStoreFloat16Scales) {
  const int64_t out = 4, in = 64;
  const auto g = ggml_layer(DType::Q4_0, out, in, random_weights(out * in, 7));
  OnnxQuantOptions o;
  o.float_type = OnnxElemType::Float16;
  o.accuracy_level = 4;
  const auto p = onnx_quant_projection(g.w, "m", "x", "y", o);
  for (const auto& i : p.initializers)
    if (i.name == "m.scales") EXPECT_EQ(i.type, OnnxElemType::Float16);
  EXPECT_EQ(find_node(p, "MatMulNBits")->attribute("accuracy_level")->i, 4);
  // q4_0's d is an f16 value: still exact.
  expect_weights(effective_weight_t(p, in, o), ggml_reference(g, DType::Q4_0), out, in,
                 [](int64_t, int64_t) { return 0.0; }, "q4_0 f16");
}

struct NF4Layer {
  kernels::NF4Storage s;
  float offset = 0;
  OnnxPackedWeight w;
};

NF4Layer nf4_layer(int64_t out, int64_t in, bool double_quant, uint32_t seed) {
  NF4Layer l;
  l.s = kernels::nf4_quantize(random_weights(out * in, seed).data(), out, in, double_quant);
  l.offset = l.s.absmax_offset;
  l.w.kind = "nf4";
  l.w.meta = {{"double_quant", double_quant}, {"in_features", in}};
  l.w.out = out;
  l.w.in = in;
  auto view = [](const char* name, DType t, const void* data, size_t bytes) {
    TensorView tv;
    tv.name = name;
    tv.dtype = t;
    tv.data = static_cast<const uint8_t*>(data);
    tv.nbytes = static_cast<int64_t>(bytes);
    return tv;
  };
  l.w.tensors.push_back(view("qweight", DType::U8, l.s.codes.data(), l.s.codes.size()));
  if (double_quant) {
    l.w.tensors.push_back(view("absmax_codes", DType::I8, l.s.absmax_codes.data(), l.s.absmax_codes.size()));
    l.w.tensors.push_back(view("absmax_scales", DType::F32, l.s.absmax_scales.data(), 4 * l.s.absmax_scales.size()));
    l.w.tensors.push_back(view("absmax_offset", DType::F32, &l.offset, 4));
  } else {
    l.w.tensors.push_back(view("absmax", DType::F32, l.s.absmax.data(), 4 * l.s.absmax.size()));
  }
  return l;
}

TEST(OnnxQuant, NF4IsMatMulBnb4WithinOneRounding) {
  // The kernel rounds value·absmax to f32 once; the interpreter keeps it in float64: ≤ 2⁻²⁴·|w|.
  for (bool dq : {false, true}) {
    const int64_t out = 6, in = 192;
    const auto l = nf4_layer(out, in, dq, 13);
    OnnxQuantOptions o;
    ASSERT_EQ(onnx_quant_unsupported(l.w, o), "");
    const auto p = onnx_quant_projection(l.w, "m", "x", "y", o);
    ASSERT_NE(find_node(p, "MatMulBnb4"), nullptr);
    EXPECT_TRUE(p.uses_ms_domain);
    std::vector<float> ref(static_cast<size_t>(out * in));
    kernels::nf4_dequantize_rows(l.s.view(), 0, out, ref.data());
    expect_weights(effective_weight_t(p, in, o), ref, out, in,
                   [&](int64_t r, int64_t j) { return std::ldexp(std::fabs(ref[r * in + j]), -24); },
                   dq ? "nf4 double-quant" : "nf4");
  }
  // Rows ending in a short block: bitsandbytes' flattened blocks differ from llmopt's row blocks.
  const auto tail = nf4_layer(3, 100, false, 14);
  EXPECT_NE(onnx_quant_unsupported(tail.w, OnnxQuantOptions{}).find("short block"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// W8A8 against its definition (model/w8a8_linear.h), written out here in float64.

struct W8A8Layer {
  std::vector<int8_t> q;        // [out, in]
  std::vector<float> ws;        // [out]
  std::vector<int64_t> cols;    // calibrated outlier columns
  std::vector<uint16_t> colw;   // [out, k] f16
  float act_scale = 0;
  std::string mode;
  double threshold = 0;
  OnnxPackedWeight w;
};

W8A8Layer w8a8_layer(const std::string& mode, double threshold, int64_t out, int64_t in, std::vector<int64_t> cols) {
  W8A8Layer l;
  std::mt19937 rng(11);
  l.q.resize(out * in);
  for (auto& v : l.q) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - 127);
  l.ws.resize(out);
  for (auto& v : l.ws) v = 0.001f * (1 + rng() % 50);
  l.cols = std::move(cols);
  for (int64_t r = 0; r < out; ++r)
    for (size_t i = 0; i < l.cols.size(); ++i) l.colw.push_back(f32_to_f16(0.01f * static_cast<float>(static_cast<int>(rng() % 200) - 100)));
  l.act_scale = 0.02f;
  l.mode = mode;
  l.threshold = threshold;
  l.w.kind = "w8a8";
  l.w.meta = {{"mode", mode}, {"threshold", threshold}, {"in_features", in}};
  l.w.out = out;
  l.w.in = in;
  auto view = [](const char* name, DType t, std::vector<int64_t> shape, const void* data, size_t bytes) {
    TensorView tv;
    tv.name = name;
    tv.dtype = t;
    tv.shape = std::move(shape);
    tv.data = static_cast<const uint8_t*>(data);
    tv.nbytes = static_cast<int64_t>(bytes);
    return tv;
  };
  l.w.tensors.push_back(view("qweight", DType::I8, {out, in}, l.q.data(), l.q.size()));
  l.w.tensors.push_back(view("wscale", DType::F32, {out}, l.ws.data(), 4 * l.ws.size()));
  if (mode == "static") l.w.tensors.push_back(view("act_scale", DType::F32, {1}, &l.act_scale, 4));
  if (!l.cols.empty()) {
    const int64_t k = static_cast<int64_t>(l.cols.size());
    l.w.tensors.push_back(view("outlier_cols", DType::I64, {k}, l.cols.data(), 8 * l.cols.size()));
    l.w.tensors.push_back(view("outlier_w", DType::F16, {out, k}, l.colw.data(), 2 * l.colw.size()));
  }
  return l;
}

// y for x [m, in]: calibrated columns (and, dynamic, columns with |x| > threshold in any row) in
// float, the rest quantized (per-row absmax/127 or act_scale, round half to even, clamp ±127) and
// multiplied in integers.
std::vector<double> w8a8_reference(const W8A8Layer& l, const std::vector<double>& x, int64_t m) {
  const int64_t out = l.w.out, in = l.w.in, k = static_cast<int64_t>(l.cols.size());
  std::vector<int> calib(in, -1), runtime(in, 0);
  for (int64_t i = 0; i < k; ++i) calib[l.cols[i]] = static_cast<int>(i);
  if (l.mode == "dynamic" && l.threshold > 0)
    for (int64_t j = 0; j < in; ++j)
      for (int64_t r = 0; r < m; ++r)
        if (calib[j] < 0 && std::fabs(x[r * in + j]) > l.threshold) runtime[j] = 1;
  std::vector<double> y(out * m, 0.0);
  for (int64_t r = 0; r < m; ++r) {
    std::vector<double> xi(in);
    double amax = 0;
    for (int64_t j = 0; j < in; ++j) {
      xi[j] = (calib[j] >= 0 || runtime[j]) ? 0.0 : x[r * in + j];
      amax = std::max(amax, std::fabs(xi[j]));
    }
    const double sx = l.mode == "static" ? static_cast<double>(l.act_scale) : (amax > 0 ? amax / 127.0 : 1.0);
    for (int64_t o = 0; o < out; ++o) {
      double acc = 0, fl = 0;
      for (int64_t j = 0; j < in; ++j) {
        const double xq = std::min(127.0, std::max(-127.0, std::nearbyint(xi[j] / sx)));
        acc += xq * l.q[o * in + j];
        if (calib[j] >= 0) fl += x[r * in + j] * f16_to_f32(l.colw[o * k + calib[j]]);
        if (runtime[j]) fl += x[r * in + j] * l.q[o * in + j] * static_cast<double>(l.ws[o]);
      }
      y[r * out + o] = acc * sx * l.ws[o] + fl;
    }
  }
  return y;
}

TEST(OnnxQuant, W8A8StaticAndDynamicFollowTheLayerDefinition) {
  const int64_t out = 6, in = 40, m = 5;
  std::mt19937 rng(12);
  std::normal_distribution<double> d(0.0, 1.0);
  std::vector<double> x(m * in);
  for (auto& v : x) v = d(rng);
  x[2 * in + 7] = 9.0;    // beyond the threshold: a runtime outlier column in dynamic mode
  x[1 * in + 3] = -12.0;  // a calibrated column (3) that is also large: stays calibrated
  for (const char* mode : {"static", "dynamic"})
    for (double thr : {0.0, 6.0})
      for (int opset : {17, 18}) {
        const auto l = w8a8_layer(mode, thr, out, in, {3, 21});
        OnnxQuantOptions o;
        o.opset = opset;
        ASSERT_EQ(onnx_quant_unsupported(l.w, o), "");
        const auto p = onnx_quant_projection(l.w, "m", "x", "y", o);
        ASSERT_NE(find_node(p, "MatMulInteger"), nullptr);
        Tensor xt;
        xt.shape = {1, m, in};  // [batch, seq, in] as the decoder feeds it
        xt.v = x;
        const Tensor y = run(p, "x", xt, "y", o);
        EXPECT_EQ(y.shape, (std::vector<int64_t>{1, m, out}));
        const auto ref = w8a8_reference(l, x, m);
        ASSERT_EQ(y.v.size(), ref.size());
        double scale = 0;
        for (int64_t j = 0; j < in; ++j) scale += 12.0 * 127 * 0.05;
        for (size_t i = 0; i < ref.size(); ++i)
          EXPECT_NEAR(y.v[i], ref[i], 1e-12 * scale) << mode << " threshold " << thr << " opset " << opset << " @" << i;
      }
}

// ---------------------------------------------------------------------------------------------

TEST(OnnxQuant, UnmappedFormatsAreNamedAndRefusedUnlessDequantized) {
  OnnxQuantOptions o;
  const auto q6 = ggml_layer(DType::Q6_K, 2, 256, random_weights(512, 8));
  const std::string why = onnx_quant_unsupported(q6.w, o);
  EXPECT_NE(why.find("Q6_K"), std::string::npos) << why;
  EXPECT_THROW(onnx_quant_projection(q6.w, "m", "x", "y", o), InputError);
  try {
    onnx_quant_check_mappable(q6.w, "model.layers.0.mlp.down_proj", o, false);
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers.0.mlp.down_proj"), std::string::npos) << msg;
    EXPECT_NE(msg.find(kOnnxDequantizeOption), std::string::npos) << msg;
  }
  EXPECT_FALSE(onnx_quant_check_mappable(q6.w, "m", o, true));

  OnnxPackedWeight lora;
  lora.kind = "lora";
  EXPECT_NE(onnx_quant_unsupported(lora, o), "");
  OnnxPackedWeight dense;
  dense.kind = "dense";
  EXPECT_EQ(onnx_quant_unsupported(dense, o), "not quantized");
  EXPECT_FALSE(onnx_quant_check_mappable(dense, "m", o, false));  // dense is the writer's own path

  const auto q4 = ggml_layer(DType::Q4_0, 2, 64, random_weights(128, 9));
  EXPECT_TRUE(onnx_quant_check_mappable(q4.w, "m", o, false));
  // Stored bytes that do not match the shape are named.
  auto broken = q4.w;
  broken.tensors[0].nbytes -= 1;
  EXPECT_THROW(onnx_quant_projection(broken, "m", "x", "y", o), InputError);
}

}  // namespace
}  // namespace llmopt::io
