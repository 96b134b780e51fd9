#include "io/checkpoint_tensors.h"

#include <cmath>
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "io/mapped_file.h"
#include "core/half.h"
#include "kernels/convert.h"
#include "kernels/quant_formats.h"
#include "io/architecture.h"
#include "io/gptq.h"

namespace llmopt::io {

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  std::vector<ExpectedTensor> out;
  for_each_expected_tensor(c, [&](const ExpectedTensor& e) { out.push_back(e); });
  return out;
}

void for_each_expected_tensor(const ModelConfig& c,
                              const std::function<void(const ExpectedTensor&)>& fn) {
  arch::for_each_tensor(c, [&](const arch::TensorInfo& t) { fn({t.hf_name, t.shape}); });
}

namespace {
std::string shape_string(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t k = 0; k < s.size(); ++k) r += (k ? ", " : "") + std::to_string(s[k]);
  return r + "]";
}
}  // namespace

void validate_checkpoint_tensors(const Checkpoint& ckpt, const char* component) {
  for (const auto& t : ckpt.tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      LLMOPT_CHECK_INPUT(d >= 0, "[{}] {}: tensor '{}' has a negative dimension", component,
                         ckpt.path, t.name);
      numel *= d;
    }
    const int64_t block = dtype_block_elems(t.dtype);
    const int64_t row = t.shape.empty() ? 1 : t.shape.back();
    LLMOPT_CHECK_INPUT(
        row % block == 0,
        "[{}] {}: tensor '{}' row length {} is not a multiple of the {} block size {}", component,
        ckpt.path, t.name, row, dtype_name(t.dtype), block);
    LLMOPT_CHECK_INPUT(t.nbytes == numel / block * dtype_block_bytes(t.dtype),
                       "[{}] {}: tensor '{}' holds {} bytes, shape {} of {} needs {}", component,
                       ckpt.path, t.name, t.nbytes, shape_string(t.shape), dtype_name(t.dtype),
                       numel / block * dtype_block_bytes(t.dtype));
  }
  // Lazily, so a hostile layer count fails at the first missing layer instead of listing 2^31.
  std::unordered_map<std::string_view, const TensorView*> by_name;
  for (const auto& t : ckpt.tensors) by_name.emplace(t.name, &t);
  for_each_expected_tensor(ckpt.config, [&](const ExpectedTensor& e) {
    const auto it = by_name.find(e.name);
    const TensorView* t = it == by_name.end() ? nullptr : it->second;
    // A projection stored in GPTQ's layout (io/gptq.h) has qweight/qzeros/scales/g_idx instead.
    if (t == nullptr && e.name.ends_with(".weight") && e.shape.size() == 2) {
      const std::string module = e.name.substr(0, e.name.size() - 7);
      if (has_gptq_module(ckpt, module)) {
        check_gptq_module(ckpt, module, e.shape[0], e.shape[1], component);
        return;
      }
      // llmopt's own packed layers (int-N, NF4) as stored: `<module>#<tensor>` with the layer's
      // kind under metadata "llmopt_layers"; the native engine checks them (infer/packed_layers.h).
      if (const auto it = ckpt.metadata.find("llmopt_layers"); it != ckpt.metadata.end() && it->contains(module))
        return;
    }
    LLMOPT_CHECK_INPUT(t != nullptr, "[{}] {}: missing tensor '{}' (expected shape {})", component,
                       ckpt.path, e.name, shape_string(e.shape));
    LLMOPT_CHECK_INPUT(t->shape == e.shape,
                       "[{}] {}: tensor '{}' shape mismatch: config implies {}, file has {}",
                       component, ckpt.path, e.name, shape_string(e.shape), shape_string(t->shape));
  });
}

void check_tensors_finite(const Checkpoint& ckpt) {
  for (const auto& t : ckpt.tensors) {
    const int64_t n = t.numel();
    int64_t bad = -1;
    float value = 0;
    if (t.dtype == DType::F32) {
      for (int64_t k = 0; k < n && bad < 0; ++k) {
        float v;
        std::memcpy(&v, t.data + 4 * k, 4);
        if (!std::isfinite(v)) bad = k, value = v;
      }
    } else if (t.dtype == DType::F16 || t.dtype == DType::BF16) {
      // An exponent field of all ones is Inf or NaN in both formats.
      const uint16_t exp_mask = t.dtype == DType::F16 ? 0x7c00 : 0x7f80;
      for (int64_t k = 0; k < n && bad < 0; ++k) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * k, 2);
        if ((h & exp_mask) == exp_mask) {
          bad = k;
          value = t.dtype == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
      }
    }
    if (bad >= 0)
      throw_input("[io] {}: tensor '{}' has a non-finite value ({}) at element {}", ckpt.path,
                  t.name, value, bad);
    release_mapped_pages(t.data, static_cast<size_t>(t.nbytes));  // scanned: not resident for nothing
  }
}

uint8_t* own_buffer(Checkpoint& ckpt, size_t nbytes) {
  auto buf = std::make_shared<std::vector<uint8_t>>(nbytes);
  uint8_t* p = buf->data();
  ckpt.storage.push_back(std::static_pointer_cast<const void>(buf));
  return p;
}

void permute_rope_rows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes,
                       int64_t n_head, bool to_rotate_half) {
  LLMOPT_ASSERT(n_head > 0 && rows % n_head == 0 && (rows / n_head) % 2 == 0, "rows {} n_head {}",
                rows, n_head);
  const int64_t head_dim = rows / n_head, half = head_dim / 2;
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      for (int64_t s = 0; s < 2; ++s) {
        const int64_t rotate_half_row = h * head_dim + s * half + i;
        const int64_t interleaved_row = h * head_dim + 2 * i + s;
        const int64_t from = to_rotate_half ? interleaved_row : rotate_half_row;
        const int64_t to = to_rotate_half ? rotate_half_row : interleaved_row;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, static_cast<size_t>(row_bytes));
      }
    }
  }
}

void permute_view_in_checkpoint(Checkpoint& ckpt, TensorView& view, int64_t n_head,
                                bool to_rotate_half) {
  LLMOPT_CHECK_INPUT(
      !view.shape.empty() && view.shape[0] % n_head == 0 && (view.shape[0] / n_head) % 2 == 0,
      "[io] {}: tensor '{}' has {} rows, not a multiple of 2 x {} heads", ckpt.path, view.name,
      view.shape.empty() ? 0 : view.shape[0], n_head);
  const int64_t rows = view.shape[0];
  uint8_t* dst = own_buffer(ckpt, static_cast<size_t>(view.nbytes));
  permute_rope_rows(view.data, dst, rows, view.nbytes / rows, n_head, to_rotate_half);
  view.data = dst;
}

void tensor_to_f32_into(const TensorView& t, float* out) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out, t.data, static_cast<size_t>(n) * 4);
      break;
    case DType::F16:
    case DType::BF16: {
      std::vector<uint16_t> raw(static_cast<size_t>(n));
      std::memcpy(raw.data(), t.data, static_cast<size_t>(n) * 2);
      if (t.dtype == DType::F16) {
        kernels::convert_f16_to_f32(raw.data(), out, n);
      } else {
        kernels::convert_bf16_to_f32(raw.data(), out, n);
      }
      break;
    }
    default:
      LLMOPT_CHECK_INPUT(dtype_is_block_quantized(t.dtype),
                         "[io] tensor '{}': converting {} to f32 is not supported", t.name,
                         dtype_name(t.dtype));
      kernels::dequantize_row(t.dtype, t.data, out, n);
  }
}

std::vector<float> tensor_to_f32(const TensorView& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  tensor_to_f32_into(t, out.data());
  return out;
}

std::vector<uint8_t> convert_tensor_bytes(const TensorView& t, DType out) {
  if (t.dtype == out) {
    return std::vector<uint8_t>(t.data, t.data + t.nbytes);
  }
  const bool block_target = dtype_is_block_quantized(out) && kernels::has_quantize_ref(out);
  LLMOPT_CHECK_INPUT(
      out == DType::F32 || out == DType::F16 || out == DType::BF16 || block_target,
      "[io] tensor '{}': cannot convert {} to {} (supported targets: f32, f16, bf16 and block "
      "formats with a reference quantizer)",
      t.name, dtype_name(t.dtype), dtype_name(out));
  const std::vector<float> f = tensor_to_f32(t);
  const int64_t n = static_cast<int64_t>(f.size());
  if (block_target) {
    const int64_t row = t.shape.empty() ? 1 : t.shape.back();
    LLMOPT_CHECK_INPUT(row % dtype_block_elems(out) == 0,
                       "[io] tensor '{}': row length {} is not a multiple of the {} block size {}",
                       t.name, row, dtype_name(out), dtype_block_elems(out));
    std::vector<uint8_t> bytes(static_cast<size_t>(dtype_bytes_for(out, n)));
    kernels::quantize_row_ref(out, f.data(), bytes.data(), n);
    return bytes;
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * static_cast<size_t>(dtype_block_bytes(out)));
  if (out == DType::F32) {
    std::memcpy(bytes.data(), f.data(), bytes.size());
  } else {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    if (out == DType::F16) {
      kernels::convert_f32_to_f16(f.data(), h.data(), n);
    } else {
      kernels::convert_f32_to_bf16(f.data(), h.data(), n);
    }
    std::memcpy(bytes.data(), h.data(), bytes.size());
  }
  return bytes;
}

}  // namespace llmopt::io
