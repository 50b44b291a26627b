// CUDA kernels of the noise family. The math is csrc/include/genfast/noise.h,
// shared with the CPU loops; built with --fmad=false so the bits match them.
#include "noise.cuh"

#include "genfast/convert.h"
#include "genfast/noise.h"
#include "storage.cuh"

namespace genfast::cuda {
namespace {

constexpr int kThreads = 256;


// One thread per Philox call (four normals). Grid-stride over the global quad
// index g = item * quads_per_item + quad, 64-bit so huge tensors are safe.
template <typename T>
__global__ void __launch_bounds__(kThreads)
noise_normal_kernel(T* __restrict__ out, int64_t total_quads, int64_t item_numel,
                    int64_t quads_per_item, uint32_t k0, uint32_t k1, uint32_t stream,
                    uint32_t sample_offset) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total_quads;
       g += step) {
    const int64_t item = g / quads_per_item;
    const int64_t q = g - item * quads_per_item;
    const F32x4 n = normal4(static_cast<uint32_t>(q), sample_offset + static_cast<uint32_t>(item),
                            stream, k0, k1);
    T* dst = out + item * item_numel + 4 * q;
    const int64_t left = item_numel - 4 * q;  // >= 1
    st(dst, 0, n.x);
    if (left > 1) st(dst, 1, n.y);
    if (left > 2) st(dst, 2, n.z);
    if (left > 3) st(dst, 3, n.w);
  }
}

// kVector: counters and words are 16-byte aligned, so each thread moves its
// four words in one 128-bit access. A tensor view starting at an odd word
// (e.g. counter[1:] of a flat buffer) is not, and a 128-bit load from it
// faults with a misaligned address: such calls take the word-by-word kernel.
template <bool kVector>
__global__ void __launch_bounds__(kThreads)
noise_philox_kernel(const uint32_t* __restrict__ counters, uint32_t* __restrict__ words,
                    int64_t n, uint32_t k0, uint32_t k1) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += step) {
    U32x4 c;
    if (kVector) {
      const uint4 v = reinterpret_cast<const uint4*>(counters)[i];
      c = U32x4{v.x, v.y, v.z, v.w};
    } else {
      c = U32x4{counters[4 * i], counters[4 * i + 1], counters[4 * i + 2], counters[4 * i + 3]};
    }
    const U32x4 w = philox4x32_10(c, k0, k1);
    if (kVector) {
      reinterpret_cast<uint4*>(words)[i] = make_uint4(w.x, w.y, w.z, w.w);
    } else {
      words[4 * i] = w.x;
      words[4 * i + 1] = w.y;
      words[4 * i + 2] = w.z;
      words[4 * i + 3] = w.w;
    }
  }
}

unsigned grid_for(int64_t n) {
  // Enough blocks to fill any current GPU several times over; the grid-stride
  // loop covers the rest.
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

template <typename T>
cudaError_t launch_normal(void* out, int64_t items, int64_t item_numel, uint32_t k0, uint32_t k1,
                          uint32_t stream, uint32_t sample_offset, cudaStream_t s) {
  const int64_t qpi = (item_numel + 3) / 4;
  const int64_t total = items * qpi;
  if (total == 0) return cudaSuccess;
  noise_normal_kernel<T><<<grid_for(total), kThreads, 0, s>>>(
      static_cast<T*>(out), total, item_numel, qpi, k0, k1, stream, sample_offset);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_noise_normal(void* out, int dtype, int64_t items, int64_t item_numel,
                                uint32_t k0, uint32_t k1, uint32_t stream,
                                uint32_t sample_offset, cudaStream_t cuda_stream) {
  switch (dtype) {
    case kFloat32:
      return launch_normal<float>(out, items, item_numel, k0, k1, stream, sample_offset,
                                  cuda_stream);
    case kFloat16:
      return launch_normal<Half>(out, items, item_numel, k0, k1, stream, sample_offset,
                                 cuda_stream);
    case kBFloat16:
      return launch_normal<BFloat>(out, items, item_numel, k0, k1, stream, sample_offset,
                                   cuda_stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t launch_noise_philox(const uint32_t* counters, uint32_t* words, int64_t n,
                                uint32_t k0, uint32_t k1, cudaStream_t cuda_stream) {
  if (n == 0) return cudaSuccess;
  const bool aligned =
      ((reinterpret_cast<uintptr_t>(counters) | reinterpret_cast<uintptr_t>(words)) % 16) == 0;
  if (aligned) {
    noise_philox_kernel<true><<<grid_for(n), kThreads, 0, cuda_stream>>>(counters, words, n, k0,
                                                                         k1);
  } else {
    noise_philox_kernel<false><<<grid_for(n), kThreads, 0, cuda_stream>>>(counters, words, n, k0,
                                                                          k1);
  }
  return cudaGetLastError();
}

}  // namespace genfast::cuda
