// CUDA kernels of the reverse steps. Per-step and per-element math:
// csrc/include/genfast/steps.h (shared with the CPU loops); noise: noise.h's
// normal4 with the genfast stream's counters, so in-kernel noise equals
// genfast.randn(dtype=sample.dtype) bit for bit. See steps.cuh for the sequence.
#include "steps.cuh"

#include <math.h>

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/noise.h"
#include "genfast/steps.h"
#include "genfast/training.h"
#include "storage.cuh"

namespace genfast::cuda {
namespace {

namespace sp = genfast::steps;
constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;

// Scratch layout: head (coefficients and flags), then g, r, lim, inv per item.
__device__ __forceinline__ float* item_g(float* s, int64_t n) { return s + kScratchHead; }
__device__ __forceinline__ float* item_r(float* s, int64_t n) { return s + kScratchHead + n; }
__device__ __forceinline__ float* item_lim(float* s, int64_t n) { return s + kScratchHead + 2 * n; }
__device__ __forceinline__ float* item_inv(float* s, int64_t n) { return s + kScratchHead + 3 * n; }

__device__ __forceinline__ int64_t step_index(const StepLaunch& a) {
  if (a.index == nullptr) return a.step;
  return a.index_is_int32 ? (int64_t) * static_cast<const int32_t*>(a.index)
                          : *static_cast<const int64_t*>(a.index);
}

__device__ __forceinline__ sp::CoefsF head_coefs(const float* s) {
  sp::CoefsF k;
  k.px = s[0]; k.pm = s[1]; k.pz = s[2]; k.ax = s[3]; k.am = s[4]; k.a0 = s[5]; k.az = s[6];
  k.dx = s[7]; k.d0 = s[8]; k.lv_a = s[9]; k.lv_b = s[10];
  return k;
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

#define GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void prepare_kernel(StepLaunch a, float* s) {
  const int64_t n = a.items;
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    const int64_t i = step_index(a);
    const bool ok = i >= 0 && i < a.rows;
    const sp::Coefs k = sp::step_coefs(a.sampler, a.prediction, a.variance, a.flags,
                                       a.plan + sp::kPlanCols * (ok ? i : 0), a.rows, a.params);
    const sp::CoefsF f = sp::to_float(k);
    const float bad = ok ? 1.0f : __int_as_float(0x7fc00000);  // NaN: index past the plan
    const float v[11] = {f.px, f.pm, f.pz, f.ax, f.am, f.a0, f.az, f.dx, f.d0, f.lv_a, f.lv_b};
    for (int j = 0; j < 11; ++j) s[j] = v[j] * bad;
    s[11] = k.noise ? 1.0f : 0.0f;
    s[12] = k.learned ? 1.0f : 0.0f;
    // the step's noise stream, stored as bits (a float holds only 24 of them)
    reinterpret_cast<uint32_t*>(s)[13] = a.stream + (uint32_t)(ok ? i : 0);
  }
  for (int64_t b = threadIdx.x; b < n; b += blockDim.x) {
    item_g(s, n)[b] = a.guidance != nullptr ? a.guidance[b] : (float)a.params[sp::kGuidanceScale];
    item_r(s, n)[b] = 1.0f;
    item_lim(s, n)[b] = (a.flags & sp::kClip) ? (float)a.params[sp::kClipRange] : INFINITY;
    item_inv(s, n)[b] = 1.0f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
moments_kernel(StepLaunch a, const float* s, int64_t chunks, double* partials) {
  __shared__ float sh[4][kThreads];
  const int64_t item = blockIdx.y, chunk = blockIdx.x;
  const int64_t begin = chunk * kChunk;
  const int64_t end = begin + kChunk < a.numel ? begin + kChunk : a.numel;
  const T* c = static_cast<const T*>(a.c) + item * a.m_stride;
  const T* u = static_cast<const T*>(a.u) + item * a.m_stride;
  const float g = item_g(const_cast<float*>(s), a.items)[item];
  float acc[4] = {0, 0, 0, 0};
  for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
    const float cv = ld(c, i);
    const float m = sp::guided(ld(u, i), cv, g, 1.0f);
    acc[0] += cv; acc[1] += cv * cv; acc[2] += m; acc[3] += m * m;
  }
  for (int j = 0; j < 4; ++j) sh[j][threadIdx.x] = acc[j];
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      for (int j = 0; j < 4; ++j) sh[j][threadIdx.x] += sh[j][threadIdx.x + w];
    }
    __syncthreads();
  }
  if (threadIdx.x < 4) partials[4 * (item * chunks + chunk) + threadIdx.x] = sh[threadIdx.x][0];
}

__global__ void rescale_kernel(StepLaunch a, float* s, int64_t chunks, const double* partials) {
  GRID_STRIDE(b, a.items) {
    double t[4] = {0, 0, 0, 0};
    for (int64_t c = 0; c < chunks; ++c) {
      for (int j = 0; j < 4; ++j) t[j] += partials[4 * (b * chunks + c) + j];
    }
    item_r(s, a.items)[b] = (float)sp::rescale_factor(a.params[sp::kGuidanceRescale], t[0], t[1],
                                                      t[2], t[3], (double)a.numel);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
abs_x0_kernel(StepLaunch a, const float* s, float* out) {
  const sp::CoefsF k = head_coefs(s);
  float* sm = const_cast<float*>(s);
  GRID_STRIDE(e, a.items * a.numel) {
    const int64_t item = e / a.numel, i = e - item * a.numel;
    const T* c = static_cast<const T*>(a.c) + item * a.m_stride;
    const float cv = ld(c, i);
    const float r = item_r(sm, a.items)[item];
    const float m = a.u != nullptr
                        ? sp::guided(ld(static_cast<const T*>(a.u) + item * a.m_stride, i), cv,
                                     item_g(sm, a.items)[item], r)
                        : r * cv;
    out[e] = fabsf(sp::x0_of(k, ld(static_cast<const T*>(a.x), e), m, 0.0f));
  }
}

__global__ void bounds_kernel(StepLaunch a, const float* sorted, float* s) {
  const double pos = a.params[sp::kThresholdRatio] * (double)(a.numel - 1);
  const int64_t lo = (int64_t)floor(pos);
  const int64_t hi = lo + 1 < a.numel ? lo + 1 : a.numel - 1;
  GRID_STRIDE(b, a.items) {
    const float* q = sorted + b * a.numel;
    const double bound = sp::threshold_bound(q[lo], q[hi], pos - (double)lo,
                                             a.params[sp::kSampleMax]);
    item_lim(s, a.items)[b] = (float)bound;
    item_inv(s, a.items)[b] = (float)(1.0 / bound);
  }
}

// One thread per quad (four elements of one item: one Philox call).
template <typename T>
__global__ void __launch_bounds__(kThreads)
apply_kernel(StepLaunch a, const float* s, int64_t qpi) {
  const sp::CoefsF k = head_coefs(s);
  const bool noise = s[11] != 0.0f, learned = s[12] != 0.0f;
  const uint32_t nstream = reinterpret_cast<const uint32_t*>(s)[13];
  float* sm = const_cast<float*>(s);
  GRID_STRIDE(g, a.items * qpi) {
    const int64_t item = g / qpi, q = g - item * qpi;
    float z[4] = {0, 0, 0, 0};
    if (noise && a.z == nullptr) {
      const F32x4 n4 = normal4((uint32_t)q, a.sample_offset + (uint32_t)item, nstream, a.k0, a.k1);
      z[0] = rounded(n4.x, (const T*)nullptr); z[1] = rounded(n4.y, (const T*)nullptr);
      z[2] = rounded(n4.z, (const T*)nullptr); z[3] = rounded(n4.w, (const T*)nullptr);
    }
    const float gs = item_g(sm, a.items)[item], r = item_r(sm, a.items)[item];
    const float lim = item_lim(sm, a.items)[item], inv = item_inv(sm, a.items)[item];
    const T* x = static_cast<const T*>(a.x) + item * a.numel;
    const T* c = static_cast<const T*>(a.c) + item * a.m_stride;
    const T* u = a.u != nullptr ? static_cast<const T*>(a.u) + item * a.m_stride : nullptr;
    for (int j = 0; j < 4; ++j) {
      const int64_t i = 4 * q + j;
      if (i >= a.numel) break;
      const float xv = ld(x, i), cv = ld(c, i);
      const float m = u != nullptr ? sp::guided(ld(u, i), cv, gs, r) : r * cv;
      float zv = z[j];
      if (noise && a.z != nullptr) zv = ld(static_cast<const T*>(a.z), item * a.numel + i);
      const float x0c = sp::clip_x0(sp::x0_of(k, xv, m, zv), lim, inv);
      float zs = k.az * zv;
      if (learned) {
        const float vv = ld(static_cast<const T*>(a.v) + item * a.m_stride, i);
        zs = training::exp_f(k.lv_a * vv + k.lv_b) * zv;
      }
      st(static_cast<T*>(a.prev), item * a.numel + i, sp::prev_of(k, xv, m, x0c, zs));
      if (a.out2 != nullptr) st(static_cast<T*>(a.out2), item * a.numel + i, k.dx * xv + k.d0 * x0c);
    }
  }
}

template <typename F>
cudaError_t by_dtype(int dtype, const F& f) {
  switch (dtype) {
    case kFloat16: f((Half*)nullptr); break;
    case kBFloat16: f((BFloat*)nullptr); break;
    default: f((float*)nullptr); break;
  }
  return cudaGetLastError();
}

}  // namespace

#define GENFAST_T std::remove_pointer_t<decltype(tag)>

cudaError_t launch_step_prepare(const StepLaunch& a, float* scratch, cudaStream_t stream) {
  prepare_kernel<<<1, kThreads, 0, stream>>>(a, scratch);
  return cudaGetLastError();
}

int64_t moment_chunks(int64_t numel) { return (numel + kChunk - 1) / kChunk; }

cudaError_t launch_cfg_moments(const StepLaunch& a, float* scratch, double* partials,
                               cudaStream_t stream) {
  const int64_t chunks = moment_chunks(a.numel);
  cudaError_t e = by_dtype(a.dtype, [&](auto* tag) {
    moments_kernel<GENFAST_T><<<dim3((unsigned)chunks, (unsigned)a.items), kThreads, 0, stream>>>(
        a, scratch, chunks, partials);
  });
  if (e != cudaSuccess) return e;
  rescale_kernel<<<grid_for(a.items), kThreads, 0, stream>>>(a, scratch, chunks, partials);
  return cudaGetLastError();
}

cudaError_t launch_abs_x0(const StepLaunch& a, const float* scratch, float* out,
                          cudaStream_t stream) {
  return by_dtype(a.dtype, [&](auto* tag) {
    abs_x0_kernel<GENFAST_T><<<grid_for(a.items * a.numel), kThreads, 0, stream>>>(a, scratch, out);
  });
}

cudaError_t launch_threshold_bounds(const StepLaunch& a, const float* sorted, float* scratch,
                                    cudaStream_t stream) {
  bounds_kernel<<<grid_for(a.items), kThreads, 0, stream>>>(a, sorted, scratch);
  return cudaGetLastError();
}

cudaError_t launch_step_apply(const StepLaunch& a, const float* scratch, cudaStream_t stream) {
  const int64_t qpi = (a.numel + 3) / 4;
  return by_dtype(a.dtype, [&](auto* tag) {
    apply_kernel<GENFAST_T><<<grid_for(a.items * qpi), kThreads, 0, stream>>>(a, scratch, qpi);
  });
}

}  // namespace genfast::cuda
