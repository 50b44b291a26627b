// Argument checks and batch layout shared by the CPU and CUDA noise bindings.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace genfast::bindings {

struct NoiseLayout {
  int64_t items;           // leading dimension; 0-d and 1-d tensors are one item
  int64_t item_numel;      // elements per item
  int64_t quads_per_item;  // Philox calls per item
  uint32_t k0, k1, stream, sample_offset;
};

inline int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kHalf: return 1;
    case at::kBFloat16: return 2;
    default:
      TORCH_CHECK(false, "genfast noise: out must be float32, float16 or bfloat16, got ", t);
  }
}

inline NoiseLayout noise_layout(const at::Tensor& out, int64_t seed, int64_t stream,
                                int64_t sample_offset) {
  constexpr int64_t k32 = int64_t{1} << 32;
  TORCH_CHECK(stream >= 0 && stream < k32, "genfast noise: stream must be in [0, 2**32), got ",
              stream);
  TORCH_CHECK(sample_offset >= 0 && sample_offset < k32,
              "genfast noise: sample_offset must be in [0, 2**32), got ", sample_offset);
  NoiseLayout l;
  l.items = out.dim() <= 1 ? 1 : out.size(0);
  l.item_numel = 1;
  for (int64_t d = out.dim() <= 1 ? 0 : 1; d < out.dim(); ++d) l.item_numel *= out.size(d);
  l.quads_per_item = (l.item_numel + 3) / 4;
  TORCH_CHECK(l.quads_per_item <= k32, "genfast noise: at most 2**34 elements per item, got ",
              l.item_numel);
  TORCH_CHECK(l.items == 0 || sample_offset + l.items <= k32,
              "genfast noise: sample_offset + batch size must be <= 2**32, got sample_offset=",
              sample_offset, " with ", l.items, " items");
  const uint64_t s = static_cast<uint64_t>(seed);  // the int64 carries the uint64's bits
  l.k0 = static_cast<uint32_t>(s);
  l.k1 = static_cast<uint32_t>(s >> 32);
  l.stream = static_cast<uint32_t>(stream);
  l.sample_offset = static_cast<uint32_t>(sample_offset);
  return l;
}

// Elements are numbered in logical row-major order whatever out's strides:
// a non-contiguous out is filled through a contiguous temporary.
template <typename Fill>
void fill_in_logical_order(at::Tensor& out, const Fill& fill) {
  if (out.is_contiguous()) {
    fill(out);
    return;
  }
  at::Tensor tmp = at::empty(out.sizes(), out.options());
  fill(tmp);
  out.copy_(tmp);
}

inline void check_counter(const at::Tensor& counter) {
  TORCH_CHECK(counter.scalar_type() == at::kInt,
              "genfast noise_philox: counter must be int32, got ", counter.scalar_type());
  TORCH_CHECK(counter.dim() >= 1 && counter.size(-1) == 4,
              "genfast noise_philox: counter must have shape (..., 4), got ", counter.sizes());
}

}  // namespace genfast::bindings
