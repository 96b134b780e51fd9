#include "io/llama2c.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/byte_reader.h"
#include "io/architecture.h"
#include "io/checkpoint_tensors.h"

namespace llmopt::io {
namespace {

constexpr uint64_t kV1HeaderBytes = 256;
constexpr int64_t kMaxDim = int64_t{1} << 24;  // sanity bound for every header field

// Tensor kinds in the order the files stack them; each is one tensor per layer except the globals.
enum class Kind {
  Embed,
  AttnNorm,
  Wq,
  Wk,
  Wv,
  Wo,
  FfnNorm,
  W1,
  W2,
  W3,
  FinalNorm,
  FreqCis,
  Classifier
};

struct Geometry {
  int64_t dim, hidden, layers, heads, kv_heads, vocab, seq, head_size, kv_dim;
};

Geometry geometry(const Llama2cHeader& h) {
  Geometry g{h.dim,        h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads,
             h.vocab_size, h.seq_len,    0,          0};
  g.head_size = g.dim / g.heads;
  g.kv_dim = g.kv_heads * g.head_size;
  return g;
}

// Elements of one tensor of `kind` (per layer for stacked kinds).
int64_t per_tensor_elems(Kind k, const Geometry& g) {
  switch (k) {
    case Kind::Embed:
    case Kind::Classifier:
      return g.vocab * g.dim;
    case Kind::AttnNorm:
    case Kind::FfnNorm:
    case Kind::FinalNorm:
      return g.dim;
    case Kind::Wq:
    case Kind::Wo:
      return g.dim * g.dim;
    case Kind::Wk:
    case Kind::Wv:
      return g.kv_dim * g.dim;
    case Kind::W1:
    case Kind::W2:
    case Kind::W3:
      return g.hidden * g.dim;
    case Kind::FreqCis:
      return g.seq * g.head_size;  // cos and sin, seq x head_size/2 each
  }
  return 0;
}

bool stacked(Kind k) {
  return k != Kind::Embed && k != Kind::FinalNorm && k != Kind::Classifier && k != Kind::FreqCis;
}

std::vector<Kind> fp32_order(int version, bool shared) {
  std::vector<Kind> order;
  if (version == 0) {
    order = {Kind::Embed,   Kind::AttnNorm, Kind::Wq, Kind::Wk, Kind::Wv,        Kind::Wo,
             Kind::FfnNorm, Kind::W1,       Kind::W2, Kind::W3, Kind::FinalNorm, Kind::FreqCis};
  } else {
    order = {Kind::AttnNorm, Kind::FfnNorm, Kind::FinalNorm, Kind::Embed, Kind::Wq, Kind::Wk,
             Kind::Wv,       Kind::Wo,      Kind::W1,        Kind::W2,    Kind::W3};
  }
  if (!shared) order.push_back(Kind::Classifier);
  return order;
}

// v2: the norms in fp32, then these quantized.
std::vector<Kind> quantized_order(bool shared) {
  std::vector<Kind> order = {Kind::Embed, Kind::Wq, Kind::Wk, Kind::Wv,
                             Kind::Wo,    Kind::W1, Kind::W2, Kind::W3};
  if (!shared) order.push_back(Kind::Classifier);
  return order;
}

// Canonical name and shape of tensor `kind` of layer `l`.
std::pair<std::string, std::vector<int64_t>> canonical(Kind k, int64_t l, const Geometry& g) {
  switch (k) {
    case Kind::Embed:
      return {arch::hf_name(arch::Role::TokenEmbd), {g.vocab, g.dim}};
    case Kind::Classifier:
      return {arch::hf_name(arch::Role::Output), {g.vocab, g.dim}};
    case Kind::AttnNorm:
      return {arch::hf_name(arch::Role::AttnNorm, l), {g.dim}};
    case Kind::FfnNorm:
      return {arch::hf_name(arch::Role::FfnNorm, l), {g.dim}};
    case Kind::FinalNorm:
      return {arch::hf_name(arch::Role::OutputNorm), {g.dim}};
    case Kind::Wq:
      return {arch::hf_name(arch::Role::AttnQ, l), {g.dim, g.dim}};
    case Kind::Wk:
      return {arch::hf_name(arch::Role::AttnK, l), {g.kv_dim, g.dim}};
    case Kind::Wv:
      return {arch::hf_name(arch::Role::AttnV, l), {g.kv_dim, g.dim}};
    case Kind::Wo:
      return {arch::hf_name(arch::Role::AttnOut, l), {g.dim, g.dim}};
    case Kind::W1:
      return {arch::hf_name(arch::Role::FfnGate, l), {g.hidden, g.dim}};
    case Kind::W2:
      return {arch::hf_name(arch::Role::FfnDown, l), {g.dim, g.hidden}};
    case Kind::W3:
      return {arch::hf_name(arch::Role::FfnUp, l), {g.hidden, g.dim}};
    case Kind::FreqCis:
      break;
  }
  return {};
}

// Bytes the weights of a file with this header occupy (after the header). 128-bit arithmetic:
// header fields are only bounded by 2^24, so products can exceed 64 bits on hostile input.
unsigned __int128 payload_bytes(const Llama2cHeader& h) {
  using u128 = unsigned __int128;
  const Geometry g = geometry(h);
  u128 total = 0;
  auto count = [&](Kind k) { return static_cast<u128>(stacked(k) ? g.layers : 1); };
  if (h.version == 2) {
    for (Kind k : {Kind::AttnNorm, Kind::FfnNorm, Kind::FinalNorm})
      total += 4 * static_cast<u128>(per_tensor_elems(k, g)) * count(k);
    for (Kind k : quantized_order(h.shared_classifier)) {
      const u128 n = static_cast<u128>(per_tensor_elems(k, g));
      total += (n + 4 * (n / static_cast<u128>(h.group_size))) * count(k);
    }
  } else {
    for (Kind k : fp32_order(h.version, h.shared_classifier))
      total += 4 * static_cast<u128>(per_tensor_elems(k, g)) * count(k);
  }
  return total;
}

Llama2cHeader parse_header(const MappedFile& f) {
  ByteReader r(f.data(), f.size(), "llama2c", f.path());
  Llama2cHeader h;
  r.need(4, "header");
  uint32_t magic;
  std::memcpy(&magic, f.data(), 4);
  if (magic == kLlama2cMagic) {
    r.skip(4, "magic");
    h.version = r.read<int32_t>("version");
    LLMOPT_CHECK_INPUT(h.version == 1 || h.version == 2,
                       "[llama2c] {}: unsupported version {} (expected 1 or 2)", f.path(),
                       h.version);
    r.need(kV1HeaderBytes - 8, "256-byte header");
  }
  h.dim = r.read<int32_t>("dim");
  h.hidden_dim = r.read<int32_t>("hidden_dim");
  h.n_layers = r.read<int32_t>("n_layers");
  h.n_heads = r.read<int32_t>("n_heads");
  h.n_kv_heads = r.read<int32_t>("n_kv_heads");
  h.vocab_size = r.read<int32_t>("vocab_size");
  h.seq_len = r.read<int32_t>("seq_len");
  if (h.version == 0) {
    // Legacy flag: negative vocab_size = the classifier is stored separately.
    h.shared_classifier = h.vocab_size > 0;
    if (h.vocab_size < 0) h.vocab_size = -h.vocab_size;
    h.weights_offset = 28;
  } else {
    const auto flag = r.read<uint8_t>("shared_classifier");
    LLMOPT_CHECK_INPUT(flag <= 1, "[llama2c] {}: shared_classifier flag must be 0 or 1, found {}",
                       f.path(), flag);
    h.shared_classifier = flag == 1;
    if (h.version == 2) h.group_size = r.read<int32_t>("group_size");
    h.weights_offset = kV1HeaderBytes;
  }
  auto check = [&](int64_t v, const char* name) {
    LLMOPT_CHECK_INPUT(v > 0 && v <= kMaxDim,
                       "[llama2c] {}: header field {} = {} out of range (1..{})", f.path(), name, v,
                       kMaxDim);
  };
  check(h.dim, "dim");
  check(h.hidden_dim, "hidden_dim");
  check(h.n_layers, "n_layers");
  check(h.n_heads, "n_heads");
  check(h.n_kv_heads, "n_kv_heads");
  check(h.vocab_size, "vocab_size");
  check(h.seq_len, "seq_len");
  LLMOPT_CHECK_INPUT(h.dim % h.n_heads == 0 && (h.dim / h.n_heads) % 2 == 0,
                     "[llama2c] {}: dim {} is not a multiple of 2 x n_heads {}", f.path(), h.dim,
                     h.n_heads);
  LLMOPT_CHECK_INPUT(h.n_heads % h.n_kv_heads == 0,
                     "[llama2c] {}: n_heads {} is not a multiple of n_kv_heads {}", f.path(),
                     h.n_heads, h.n_kv_heads);
  if (h.version == 2) {
    LLMOPT_CHECK_INPUT(h.group_size > 0 && h.group_size <= kMaxDim,
                       "[llama2c] {}: group_size {} out of range", f.path(), h.group_size);
    const Geometry g = geometry(h);
    for (Kind k : quantized_order(h.shared_classifier))
      LLMOPT_CHECK_INPUT(per_tensor_elems(k, g) % h.group_size == 0,
                         "[llama2c] {}: tensor of {} elements is not a multiple of group_size {}",
                         f.path(), per_tensor_elems(k, g), h.group_size);
  }
  return h;
}

}  // namespace

Llama2cHeader parse_llama2c_header(const MappedFile& f) { return parse_header(f); }

uint64_t llama2c_file_size(const Llama2cHeader& h) {
  const unsigned __int128 implied = h.weights_offset + payload_bytes(h);
  return implied > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(implied);
}

Llama2cHeader read_llama2c_header(const MappedFile& f) {
  Llama2cHeader h = parse_header(f);
  const uint64_t expected = llama2c_file_size(h);
  LLMOPT_CHECK_INPUT(
      f.size() == expected && expected != UINT64_MAX,
      "[llama2c] {}: file is {} bytes but a version {} header (dim {}, hidden {}, layers {}, "
      "heads {}/{}, vocab {}, seq {}) implies {} bytes",
      f.path(), f.size(), h.version, h.dim, h.hidden_dim, h.n_layers, h.n_heads, h.n_kv_heads,
      h.vocab_size, h.seq_len, expected);
  return h;
}

bool looks_like_llama2c(const MappedFile& f) {
  if (f.size() >= 4) {
    uint32_t magic;
    std::memcpy(&magic, f.data(), 4);
    if (magic == kLlama2cMagic) return true;
  }
  try {
    read_llama2c_header(f);
    return true;
  } catch (const InputError&) {
    return false;
  }
}

Checkpoint load_llama2c(const std::string& path) {
  return llama2c_to_checkpoint(MappedFile::open(path));
}

Checkpoint llama2c_to_checkpoint(std::shared_ptr<const MappedFile> file) {
  const Llama2cHeader h = read_llama2c_header(*file);
  const Geometry g = geometry(h);
  Checkpoint ckpt;
  ckpt.format = ModelFormat::Llama2c;
  ckpt.path = file->path();
  ckpt.storage.push_back(std::static_pointer_cast<const void>(file));
  ModelConfig& c = ckpt.config;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = g.dim;
  c.intermediate_size = g.hidden;
  c.num_hidden_layers = g.layers;
  c.num_attention_heads = g.heads;
  c.num_key_value_heads = g.kv_heads;
  c.head_dim = g.head_size;
  c.vocab_size = g.vocab;
  c.max_position_embeddings = g.seq;
  c.rms_norm_eps = 1e-5;  // llama2.c's rmsnorm hard-codes 1e-5
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = h.shared_classifier;
  c.validate(file->path());

  const uint8_t* p = file->data() + h.weights_offset;
  auto add_view = [&](Kind k, int64_t l, const uint8_t* data) {
    auto [name, shape] = canonical(k, l, g);
    TensorView v;
    v.name = std::move(name);
    v.dtype = DType::F32;
    v.shape = std::move(shape);
    v.data = data;
    v.nbytes = 4 * per_tensor_elems(k, g);
    ckpt.tensors.push_back(std::move(v));
  };
  if (h.version == 2) {
    for (Kind k : {Kind::AttnNorm, Kind::FfnNorm, Kind::FinalNorm}) {
      const int64_t n = per_tensor_elems(k, g);
      for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l, p += 4 * n) add_view(k, l, p);
    }
    for (Kind k : quantized_order(h.shared_classifier)) {
      const int64_t n = per_tensor_elems(k, g), groups = n / h.group_size;
      for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l) {
        const auto* q = reinterpret_cast<const int8_t*>(p);
        const uint8_t* scales = p + n;
        auto* out = reinterpret_cast<float*>(own_buffer(ckpt, static_cast<size_t>(4 * n)));
        for (int64_t gi = 0; gi < groups; ++gi) {
          float s;
          std::memcpy(&s, scales + 4 * gi, 4);
          for (int64_t j = 0; j < h.group_size; ++j) {
            const int64_t idx = gi * h.group_size + j;
            out[idx] = static_cast<float>(q[idx]) * s;
          }
        }
        add_view(k, l, reinterpret_cast<const uint8_t*>(out));
        p += n + 4 * groups;
      }
    }
  } else {
    for (Kind k : fp32_order(h.version, h.shared_classifier)) {
      const int64_t n = per_tensor_elems(k, g);
      if (k == Kind::FreqCis) {  // unused: RoPE is recomputed from rope_theta
        p += 4 * n;
        continue;
      }
      for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l, p += 4 * n) add_view(k, l, p);
    }
  }
  LLMOPT_ASSERT(p == file->data() + file->size(), "llama2c layout walk ended at {} of {}",
                p - file->data(), file->size());
  for (auto& v : ckpt.tensors) {
    const auto t = arch::parse_hf_name(v.name);
    if (const int64_t heads = t ? arch::permute_heads(t->role, ckpt.config) : 0; heads > 0)
      permute_view_in_checkpoint(ckpt, v, heads, true);
  }
  validate_checkpoint_tensors(ckpt, "llama2c");
  ckpt.metadata["llama2c_version"] = h.version;
  ckpt.metadata["shared_classifier"] = h.shared_classifier;
  if (h.version == 2) ckpt.metadata["group_size"] = h.group_size;
  return ckpt;
}

namespace {

// F32 values of tensor `kind`/`layer` in llama2.c layout (q/k rows interleaved).
std::vector<float> llama2c_tensor(const Checkpoint& ckpt, Kind k, int64_t l, const Geometry& g) {
  const auto [name, shape] = canonical(k, l, g);
  const TensorView& t = ckpt.get(name);
  LLMOPT_CHECK_INPUT(t.shape == shape,
                     "[llama2c] {}: tensor '{}' does not have the shape the config implies",
                     ckpt.path, name);
  std::vector<float> f = tensor_to_f32(t);
  const auto role = arch::parse_hf_name(name);
  if (const int64_t heads = role ? arch::permute_heads(role->role, ckpt.config) : 0; heads > 0) {
    std::vector<float> permuted(f.size());
    permute_rope_rows(reinterpret_cast<const uint8_t*>(f.data()),
                      reinterpret_cast<uint8_t*>(permuted.data()), shape[0], 4 * shape[1], heads, false);
    return permuted;
  }
  return f;
}

Geometry writer_geometry(const Checkpoint& ckpt, const std::string& path) {
  const ModelConfig& c = ckpt.config;
  LLMOPT_CHECK_INPUT(
      c.head_dim * c.num_attention_heads == c.hidden_size,
      "[llama2c] {}: head_dim {} x heads {} != hidden_size {}; llama2.c cannot express it", path,
      c.head_dim, c.num_attention_heads, c.hidden_size);
  LLMOPT_CHECK_INPUT(!c.attention_bias, "[llama2c] {}: llama2.c has no attention biases", path);
  LLMOPT_CHECK_INPUT(
      c.rope_scaling.type == "none" && c.rope_theta == 10000.0,
      "[llama2c] {}: llama2.c fixes rope_theta = 10000 without scaling (model has {}, {})", path,
      c.rope_theta, c.rope_scaling.type);
  for (int64_t v : {c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads,
                    c.num_key_value_heads, c.vocab_size, c.max_position_embeddings})
    LLMOPT_CHECK_INPUT(v > 0 && v <= kMaxDim,
                       "[llama2c] {}: config value {} does not fit the int32 header", path, v);
  return Geometry{c.hidden_size,
                  c.intermediate_size,
                  c.num_hidden_layers,
                  c.num_attention_heads,
                  c.num_key_value_heads,
                  c.vocab_size,
                  c.max_position_embeddings,
                  c.head_dim,
                  c.num_key_value_heads * c.head_dim};
}

void write_config_ints(AtomicFile& f, const Geometry& g, int32_t vocab_field) {
  for (int64_t v : {g.dim, g.hidden, g.layers, g.heads, g.kv_heads})
    f.write_pod(static_cast<int32_t>(v));
  f.write_pod(vocab_field);
  f.write_pod(static_cast<int32_t>(g.seq));
}

void write_floats(AtomicFile& f, const std::vector<float>& v) {
  f.write(v.data(), v.size() * sizeof(float));
}

void write_fp32(const std::string& path, const Checkpoint& ckpt, int version) {
  const Geometry g = writer_geometry(ckpt, path);
  const bool shared = ckpt.config.tie_word_embeddings;
  AtomicFile f(path);
  if (version == 0) {
    write_config_ints(f, g, static_cast<int32_t>(shared ? g.vocab : -g.vocab));
  } else {
    f.write_pod(kLlama2cMagic);
    f.write_pod<int32_t>(1);
    write_config_ints(f, g, static_cast<int32_t>(g.vocab));
    f.write_pod<uint8_t>(shared ? 1 : 0);
    f.write_zeros(kV1HeaderBytes - f.bytes_written());
  }
  for (Kind k : fp32_order(version, shared)) {
    if (k == Kind::FreqCis) {
      // model.py precompute_freqs_cis(head_size, 2 * seq_len)[:seq_len]: cos then sin tables.
      const int64_t half = g.head_size / 2;
      std::vector<float> cos_t, sin_t;
      for (int64_t t = 0; t < g.seq; ++t) {
        for (int64_t i = 0; i < half; ++i) {
          const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) /
                                                           static_cast<float>(g.head_size));
          const float angle = static_cast<float>(t) * freq;
          cos_t.push_back(std::cos(angle));
          sin_t.push_back(std::sin(angle));
        }
      }
      write_floats(f, cos_t);
      write_floats(f, sin_t);
      continue;
    }
    for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l) {
      const Kind src = (k == Kind::Classifier) ? Kind::Classifier : k;
      write_floats(f, llama2c_tensor(ckpt, src, l, g));
    }
  }
  f.commit();
}

}  // namespace

void write_llama2c_legacy(const std::string& path, const Checkpoint& ckpt) {
  write_fp32(path, ckpt, 0);
}
void write_llama2c_v1(const std::string& path, const Checkpoint& ckpt) {
  write_fp32(path, ckpt, 1);
}

void write_llama2c_v2(const std::string& path, const Checkpoint& ckpt, int32_t group_size) {
  const Geometry g = writer_geometry(ckpt, path);
  const bool shared = ckpt.config.tie_word_embeddings;
  LLMOPT_CHECK_INPUT(group_size > 0, "[llama2c] {}: group size must be positive, found {}", path,
                     group_size);
  while (g.dim % group_size != 0) group_size /= 2;  // export.py's back-off
  for (Kind k : quantized_order(shared))
    LLMOPT_CHECK_INPUT(per_tensor_elems(k, g) % group_size == 0,
                       "[llama2c] {}: a tensor of {} elements is not a multiple of group size {}",
                       path, per_tensor_elems(k, g), group_size);
  AtomicFile f(path);
  f.write_pod(kLlama2cMagic);
  f.write_pod<int32_t>(2);
  write_config_ints(f, g, static_cast<int32_t>(g.vocab));
  f.write_pod<uint8_t>(shared ? 1 : 0);
  f.write_pod<int32_t>(group_size);  // unaligned at offset 37, as struct.pack('i') appends it
  f.write_zeros(kV1HeaderBytes - f.bytes_written());
  for (Kind k : {Kind::AttnNorm, Kind::FfnNorm, Kind::FinalNorm})
    for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l)
      write_floats(f, llama2c_tensor(ckpt, k, l, g));
  for (Kind k : quantized_order(shared)) {
    for (int64_t l = 0; l < (stacked(k) ? g.layers : 1); ++l) {
      const std::vector<float> w = llama2c_tensor(ckpt, k, l, g);
      const size_t groups = w.size() / static_cast<size_t>(group_size);
      std::vector<int8_t> q(w.size());
      std::vector<float> scales(groups);
      for (size_t gi = 0; gi < groups; ++gi) {
        const float* x = w.data() + gi * group_size;
        float wmax = 0.0f;
        for (int32_t j = 0; j < group_size; ++j) wmax = std::max(wmax, std::fabs(x[j]));
        // float32 arithmetic as torch does it: scale = wmax / 127, q = round_half_even(w / scale).
        const float scale = wmax / 127.0f;
        scales[gi] = scale;
        for (int32_t j = 0; j < group_size; ++j) {
          const float r = scale > 0.0f ? std::nearbyint(x[j] / scale) : 0.0f;
          q[gi * group_size + j] = static_cast<int8_t>(r);
        }
      }
      f.write(q.data(), q.size());
      write_floats(f, scales);
    }
  }
  f.commit();
}

}  // namespace llmopt::io
