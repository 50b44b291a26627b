// CUDA kernels of the noise family: argument checks, device guard, stream.
// Only the c10/cuda headers this file uses: ATen/cuda/CUDAContext.h would
// pull in cuBLAS, cuSPARSE and cuSOLVER headers, which a CUDA toolkit
// without those libraries cannot provide.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/noise_args.h"
#include "cuda/noise.cuh"

namespace genfast::bindings {
namespace {

void fill_contiguous(at::Tensor& out, const NoiseLayout& l) {
  C10_CUDA_CHECK(cuda::launch_noise_normal(out.data_ptr(), dtype_code(out.scalar_type()),
                                           l.items, l.item_numel, l.k0, l.k1, l.stream,
                                           l.sample_offset,
                                           c10::cuda::getCurrentCUDAStream().stream()));
}

void noise_normal_cuda(at::Tensor out, int64_t seed, int64_t stream, int64_t sample_offset) {
  TORCH_CHECK(out.is_cuda(), "genfast noise_normal (CUDA): out must be a CUDA tensor");
  dtype_code(out.scalar_type());
  const NoiseLayout l = noise_layout(out, seed, stream, sample_offset);
  if (out.numel() == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  fill_in_logical_order(out, [&](at::Tensor& t) { fill_contiguous(t, l); });
}

at::Tensor noise_philox_cuda(const at::Tensor& counter, int64_t seed) {
  check_counter(counter);
  TORCH_CHECK(counter.is_cuda(), "genfast noise_philox (CUDA): counter must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(counter.device());
  const at::Tensor c = counter.contiguous();
  at::Tensor words = at::empty_like(c);
  const uint64_t s = static_cast<uint64_t>(seed);
  C10_CUDA_CHECK(cuda::launch_noise_philox(
      reinterpret_cast<const uint32_t*>(c.data_ptr<int32_t>()),
      reinterpret_cast<uint32_t*>(words.data_ptr<int32_t>()), c.numel() / 4,
      static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32),
      c10::cuda::getCurrentCUDAStream().stream()));
  return words;
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  m.impl("noise_normal", &genfast::bindings::noise_normal_cuda);
  m.impl("noise_philox", &genfast::bindings::noise_philox_cuda);
}
