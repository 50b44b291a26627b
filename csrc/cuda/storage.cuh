// Element storage of the CUDA kernels: float32, float16 and bfloat16 tensors
// as raw pointers, loaded to and stored from float32 with the same
// conversions as the CPU loops (genfast/convert.h, genfast/training.h), so
// every family's kernels round alike, and the host-side dispatch on the dtype
// code. No torch.
#pragma once
#include <stdint.h>

#include "genfast/convert.h"
#include "genfast/training.h"

namespace genfast::cuda {

struct Half { uint16_t bits; };
struct BFloat { uint16_t bits; };

__device__ __forceinline__ float ld(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ld(const Half* p, int64_t i) {
  return training::f16_to_f32(p[i].bits);
}
__device__ __forceinline__ float ld(const BFloat* p, int64_t i) {
  return training::bf16_to_f32(p[i].bits);
}
__device__ __forceinline__ void st(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void st(Half* p, int64_t i, float v) { p[i].bits = f32_to_f16(v); }
__device__ __forceinline__ void st(BFloat* p, int64_t i, float v) { p[i].bits = f32_to_bf16(v); }
// v rounded to the storage type and back: a normal as genfast.randn(dtype=...)
// stores it.
__device__ __forceinline__ float rounded(float v, const float*) { return v; }
__device__ __forceinline__ float rounded(float v, const Half*) {
  return training::f16_to_f32(f32_to_f16(v));
}
__device__ __forceinline__ float rounded(float v, const BFloat*) {
  return training::bf16_to_f32(f32_to_bf16(v));
}

// Host: f(null pointer of `dtype`'s storage type), for launching a kernel
// template; cudaErrorInvalidValue for a code with no CUDA kernels.
template <typename F>
cudaError_t typed(int dtype, const F& f) {
  switch (dtype) {
    case kFloat32: return f(static_cast<float*>(nullptr));
    case kFloat16: return f(static_cast<Half*>(nullptr));
    case kBFloat16: return f(static_cast<BFloat*>(nullptr));
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace genfast::cuda
