// CUDA kernels of the training family. Per-element math: csrc/include/genfast/
// training.h (shared with the CPU loops); noise: noise.h's normal4, the same
// counters as genfast.randn, so in-kernel noise equals it bit for bit.
#include "training.cuh"

#include <type_traits>

#include "genfast/convert.h"
#include "genfast/noise.h"
#include "genfast/training.h"
#include "storage.cuh"

namespace genfast::cuda {
namespace {

namespace tr = genfast::training;
constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;

__device__ __forceinline__ double timestep(const TimestepArgs& ts, int64_t item) {
  switch (ts.t_dtype) {
    case 0: return (double)static_cast<const int64_t*>(ts.t)[item];
    case 1: return (double)static_cast<const int32_t*>(ts.t)[item];
    case 2: return (double)static_cast<const float*>(ts.t)[item];
    default: return static_cast<const double*>(ts.t)[item];
  }
}

__device__ __forceinline__ tr::NoiseCoefs coefs(const TimestepArgs& ts, int prediction,
                                               int64_t item) {
  return tr::add_noise_coefs(ts.kind, prediction, timestep(ts, item), ts.table, ts.rows);
}

unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

#define GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void __launch_bounds__(kThreads)
add_noise_kernel(const T* x, const T* y, T* o1, T* o2, int64_t total, int64_t numel,
                 TimestepArgs ts, int prediction, int wrt) {
  GRID_STRIDE(i, total) {
    const tr::NoiseCoefs k = coefs(ts, prediction, i / numel);
    // forward: (a, b | c, d); backward wrt x0: (a, c); wrt noise: (b, d)
    const float k0 = (float)(wrt < 0 ? k.a : wrt == 0 ? k.a : k.b);
    const float k1 = (float)(wrt < 0 ? k.b : wrt == 0 ? k.c : k.d);
    const float xv = ld(x, i);
    const float yv = y != nullptr ? ld(y, i) : 0.0f;
    if (wrt < 0) {
      st(o1, i, k0 * xv + k1 * yv);
      if (o2 != nullptr) st(o2, i, (float)k.c * xv + (float)k.d * yv);
    } else if (x != nullptr) {
      st(o1, i, k0 * xv + k1 * yv);
    }
  }
}

// Backward with only grad_target given: out = k' g_target.
template <typename T>
__global__ void __launch_bounds__(kThreads)
add_noise_target_only_kernel(const T* g, T* out, int64_t total, int64_t numel, TimestepArgs ts,
                             int prediction, int wrt) {
  GRID_STRIDE(i, total) {
    const tr::NoiseCoefs k = coefs(ts, prediction, i / numel);
    st(out, i, (float)(wrt == 0 ? k.c : k.d) * ld(g, i));
  }
}

// One thread per Philox call: four normals of one item.
template <typename T>
__global__ void __launch_bounds__(kThreads)
add_noise_seeded_kernel(const T* x0, T* xt, T* noise, T* target, int64_t total_quads,
                        int64_t numel, int64_t qpi, TimestepArgs ts, int prediction, uint32_t k0,
                        uint32_t k1, uint32_t stream, uint32_t sample_offset) {
  GRID_STRIDE(g, total_quads) {
    const int64_t item = g / qpi;
    const int64_t q = g - item * qpi;
    const F32x4 n4 = normal4(static_cast<uint32_t>(q), sample_offset + static_cast<uint32_t>(item),
                             stream, k0, k1);
    const float n[4] = {n4.x, n4.y, n4.z, n4.w};
    const tr::NoiseCoefs k = coefs(ts, prediction, item);
    const int64_t base = item * numel + 4 * q;
    const int64_t left = numel - 4 * q;
    for (int j = 0; j < 4; ++j) {
      if (j < left) {
        const float e = rounded(n[j], noise);
        const float xv = ld(x0, base + j);
        st(noise, base + j, e);
        st(xt, base + j, (float)k.a * xv + (float)k.b * e);
        if (target != nullptr) st(target, base + j, (float)k.c * xv + (float)k.d * e);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
partials_kernel(const T* a, const T* b, int64_t numel, int64_t chunks, bool kl, double* partials) {
  __shared__ float shared[kThreads];
  const int64_t item = blockIdx.y, chunk = blockIdx.x;
  const int64_t begin = item * numel + chunk * kChunk;
  const int64_t n = (chunk + 1) * kChunk < numel ? kChunk : numel - chunk * kChunk;
  float acc = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float av = ld(a, begin + i), bv = ld(b, begin + i);
    acc += kl ? tr::kl_element(av, bv) : (av - bv) * (av - bv);
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {  // fixed tree: deterministic
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[item * chunks + chunk] = (double)shared[0];
}

__device__ double item_factor(const TimestepArgs* ts, bool kl, int weighting, int prediction,
                              double gamma, double sigma_data, int64_t item, int64_t numel) {
  if (kl) return 1.0;
  const double w = tr::loss_weight(ts->kind, weighting, prediction, timestep(*ts, item),
                                   ts->table, ts->rows, gamma, sigma_data);
  return w / (double)(numel > 0 ? numel : 1);
}

// One thread: items are few (a batch), and a fixed order keeps it deterministic.
__global__ void finalize_kernel(const double* partials, int64_t items, int64_t chunks,
                                int64_t numel, bool kl, TimestepArgs ts, bool has_ts,
                                int weighting, int prediction, double gamma, double sigma_data,
                                int reduction, float* out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double total = 0.0;
  for (int64_t i = 0; i < items; ++i) {
    double s = 0.0;
    for (int64_t c = 0; c < chunks; ++c) s += partials[i * chunks + c];
    s *= item_factor(has_ts ? &ts : nullptr, kl, weighting, prediction, gamma, sigma_data, i,
                     numel);
    if (reduction == tr::kReduceNone) out[i] = (float)s;
    total += s;
  }
  if (reduction == tr::kReduceMean) out[0] = (float)(total / (double)items);
  if (reduction == tr::kReduceSum) out[0] = (float)total;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
reduce_backward_kernel(const float* g, const T* a, const T* b, T* o1, T* o2, int64_t items,
                       int64_t numel, bool kl, TimestepArgs ts, int weighting, int prediction,
                       double gamma, double sigma_data, int reduction) {
  GRID_STRIDE(i, items * numel) {
    const int64_t item = i / numel;
    double s = reduction == tr::kReduceNone ? (double)g[item] : (double)g[0];
    if (reduction == tr::kReduceMean) s /= (double)items;
    if (!kl) s *= 2.0 * item_factor(&ts, false, weighting, prediction, gamma, sigma_data, item, numel);
    const float sf = (float)s;
    const float av = ld(a, i), bv = ld(b, i);
    if (kl) {
      st(o1, i, sf * av);
      st(o2, i, sf * 0.5f * (tr::var_lv(tr::clamp_logvar(bv)) - 1.0f) * tr::logvar_inside(bv));
    } else {
      st(o1, i, sf * (av - bv));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
reparam_kernel(const T* mu, const T* lv, T* z, T* eps, int64_t total_quads, int64_t numel,
               int64_t qpi, uint32_t k0, uint32_t k1, uint32_t stream, uint32_t sample_offset) {
  GRID_STRIDE(g, total_quads) {
    const int64_t item = g / qpi;
    const int64_t q = g - item * qpi;
    const F32x4 n4 = normal4(static_cast<uint32_t>(q), sample_offset + static_cast<uint32_t>(item),
                             stream, k0, k1);
    const float n[4] = {n4.x, n4.y, n4.z, n4.w};
    const int64_t base = item * numel + 4 * q;
    const int64_t left = numel - 4 * q;
    for (int j = 0; j < 4; ++j) {
      if (j < left) {
        // d = std * eps (eps rounded to the dtype first, as genfast.randn stores it)
        const float d = tr::exp_lv(0.5f * tr::clamp_logvar(ld(lv, base + j))) * rounded(n[j], eps);
        st(eps, base + j, d);
        st(z, base + j, ld(mu, base + j) + d);
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
reparam_backward_kernel(const T* g, const T* lv, const T* eps, T* out, int64_t total) {
  GRID_STRIDE(i, total) {
    st(out, i, ld(g, i) * 0.5f * ld(eps, i) * tr::logvar_inside(ld(lv, i)));
  }
}

#define GENFAST_T typename std::remove_pointer<decltype(tag)>::type

}  // namespace

cudaError_t launch_add_noise(const void* x, const void* y, void* out1, void* out2, int dtype,
                             int64_t items, int64_t numel, const TimestepArgs& ts, int prediction,
                             int wrt, cudaStream_t stream) {
  const int64_t total = items * numel;
  if (total == 0) return cudaSuccess;
  return typed(dtype, [&](auto* tag) {
    using T = GENFAST_T;
    if (wrt >= 0 && x == nullptr) {
      add_noise_target_only_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
          static_cast<const T*>(y), static_cast<T*>(out1), total, numel, ts, prediction, wrt);
    } else {
      add_noise_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
          static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(out1),
          static_cast<T*>(out2), total, numel, ts, prediction, wrt);
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_add_noise_seeded(const void* x0, void* x_t, void* noise, void* target,
                                    int dtype, int64_t items, int64_t numel,
                                    const TimestepArgs& ts, int prediction, uint32_t k0,
                                    uint32_t k1, uint32_t noise_stream, uint32_t sample_offset,
                                    cudaStream_t stream) {
  const int64_t qpi = (numel + 3) / 4;
  const int64_t total = items * qpi;
  if (total == 0) return cudaSuccess;
  return typed(dtype, [&](auto* tag) {
    using T = GENFAST_T;
    add_noise_seeded_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(x0), static_cast<T*>(x_t), static_cast<T*>(noise),
        static_cast<T*>(target), total, numel, qpi, ts, prediction, k0, k1, noise_stream,
        sample_offset);
    return cudaGetLastError();
  });
}

int64_t reduce_chunks(int64_t numel) { return numel == 0 ? 1 : (numel + kChunk - 1) / kChunk; }

cudaError_t launch_item_reduce(const void* a, const void* b, int dtype, int64_t items,
                               int64_t numel, bool kl, const TimestepArgs* ts, int weighting,
                               int prediction, double gamma, double sigma_data, int reduction,
                               double* partials, float* out, cudaStream_t stream) {
  const int64_t chunks = reduce_chunks(numel);
  if (items > 0) {
    if (numel == 0) {
      cudaError_t e = cudaMemsetAsync(partials, 0, sizeof(double) * items * chunks, stream);
      if (e != cudaSuccess) return e;
    } else {
      const cudaError_t e = typed(dtype, [&](auto* tag) {
        using T = GENFAST_T;
        partials_kernel<T><<<dim3((unsigned)chunks, (unsigned)items), kThreads, 0, stream>>>(
            static_cast<const T*>(a), static_cast<const T*>(b), numel, chunks, kl, partials);
        return cudaGetLastError();
      });
      if (e != cudaSuccess) return e;
    }
  }
  TimestepArgs none{nullptr, 0, nullptr, 0, 0};
  finalize_kernel<<<1, 1, 0, stream>>>(partials, items, chunks, numel, kl,
                                       ts != nullptr ? *ts : none, ts != nullptr, weighting,
                                       prediction, gamma, sigma_data, reduction, out);
  return cudaGetLastError();
}

cudaError_t launch_item_reduce_backward(const float* g, const void* a, const void* b, void* out1,
                                        void* out2, int dtype, int64_t items, int64_t numel,
                                        bool kl, const TimestepArgs* ts, int weighting,
                                        int prediction, double gamma, double sigma_data,
                                        int reduction, cudaStream_t stream) {
  const int64_t total = items * numel;
  if (total == 0) return cudaSuccess;
  TimestepArgs none{nullptr, 0, nullptr, 0, 0};
  return typed(dtype, [&](auto* tag) {
    using T = GENFAST_T;
    reduce_backward_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out1),
        static_cast<T*>(out2), items, numel, kl, ts != nullptr ? *ts : none, weighting,
        prediction, gamma, sigma_data, reduction);
    return cudaGetLastError();
  });
}

cudaError_t launch_reparameterize(const void* mu, const void* logvar, void* z, void* eps,
                                  int dtype, int64_t items, int64_t numel, uint32_t k0,
                                  uint32_t k1, uint32_t noise_stream, uint32_t sample_offset,
                                  cudaStream_t stream) {
  const int64_t qpi = (numel + 3) / 4;
  const int64_t total = items * qpi;
  if (total == 0) return cudaSuccess;
  return typed(dtype, [&](auto* tag) {
    using T = GENFAST_T;
    reparam_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(mu), static_cast<const T*>(logvar), static_cast<T*>(z),
        static_cast<T*>(eps), total, numel, qpi, k0, k1, noise_stream, sample_offset);
    return cudaGetLastError();
  });
}

cudaError_t launch_reparameterize_backward(const void* g, const void* logvar, const void* eps,
                                           void* out, int dtype, int64_t total,
                                           cudaStream_t stream) {
  if (total == 0) return cudaSuccess;
  return typed(dtype, [&](auto* tag) {
    using T = GENFAST_T;
    reparam_backward_kernel<T><<<grid_for(total), kThreads, 0, stream>>>(
        static_cast<const T*>(g), static_cast<const T*>(logvar), static_cast<const T*>(eps),
        static_cast<T*>(out), total);
    return cudaGetLastError();
  });
}

}  // namespace genfast::cuda
