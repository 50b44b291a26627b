// Launchers of the vae family's CUDA kernels: raw pointers and a stream, no
// torch (vae.cu compiles with nvcc alone). dtype: genfast::DType.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

// Backward of reparameterize_kl, one pass: g_mu = gz + s mu,
// g_lv = (gz d + s (exp(clamp lv) - 1)) / 2 inside the clamp, with
// s = grad_kl[item] ("none"), grad_kl[0] ("sum") or grad_kl[0] / items
// ("mean"), read on the device (no sync). gz_mode: 0 no gz (zero), 1 one
// value for every element (the expanded grad of z.sum()), 2 one per element.
// grad_kl (float32) may be null (zero). Items along dim 0, numel per item.
cudaError_t launch_reparam_kl_backward(const void* gz, int gz_mode, const float* grad_kl,
                                       int reduction, const void* mu, const void* logvar,
                                       const void* d, void* g_mu, void* g_lv, int dtype,
                                       int64_t items, int64_t numel, cudaStream_t stream);

}  // namespace genfast::cuda
