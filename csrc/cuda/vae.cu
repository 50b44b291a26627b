// CUDA kernels of the vae family. Per-element math: csrc/include/genfast/vae.h
// (shared with the CPU loops). The forward is the training family's two
// kernels (bindings/vae_cuda.cpp); the backward is one pass here.
#include "vae.cuh"

#include <type_traits>

#include "genfast/training.h"
#include "genfast/vae.h"
#include "storage.cuh"

namespace genfast::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
reparam_kl_backward_kernel(const T* gz, int gz_mode, const float* grad_kl, int reduction,
                           const T* mu, const T* lv, const T* d, T* gm, T* gv, int64_t items,
                           int64_t numel) {
  const int64_t total = items * numel;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t item = i / numel;
    double s = 0.0;
    if (grad_kl != nullptr) {
      s = vae::kl_item_grad((double)grad_kl[reduction == training::kReduceNone ? item : 0],
                            reduction, items);
    }
    const float g = gz_mode == 0 ? 0.0f : ld(gz, gz_mode == 1 ? 0 : i);
    float om, ov;
    vae::reparam_kl_grads<float>(g, (float)s, ld(mu, i), ld(lv, i), ld(d, i), om, ov);
    st(gm, i, om);
    st(gv, i, ov);
  }
}

}  // namespace

cudaError_t launch_reparam_kl_backward(const void* gz, int gz_mode, const float* grad_kl,
                                       int reduction, const void* mu, const void* logvar,
                                       const void* d, void* g_mu, void* g_lv, int dtype,
                                       int64_t items, int64_t numel, cudaStream_t stream) {
  const int64_t total = items * numel;
  if (total == 0) return cudaSuccess;
  return typed(dtype, [&](auto* tag) {
    using T = typename std::remove_pointer<decltype(tag)>::type;
    reparam_kl_backward_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(gz), gz_mode, grad_kl, reduction, static_cast<const T*>(mu),
        static_cast<const T*>(logvar), static_cast<const T*>(d), static_cast<T*>(g_mu),
        static_cast<T*>(g_lv), items, numel);
    return cudaGetLastError();
  });
}

}  // namespace genfast::cuda
