// Launchers of the noise family's CUDA kernels: raw pointers and a stream, no
// torch, so this header and noise.cu compile with nvcc alone.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

// Normals of items [0, items) x elements [0, item_numel) into contiguous `out`
// (dtype: genfast::DType). Same numbers as the CPU kernels, bit for bit.
cudaError_t launch_noise_normal(void* out, int dtype, int64_t items, int64_t item_numel,
                                uint32_t k0, uint32_t k1, uint32_t stream,
                                uint32_t sample_offset, cudaStream_t cuda_stream);

// Philox4x32-10 of n counters (4 words each) under key (k0, k1). Any 4-byte
// aligned pointers: 128-bit accesses are used only where both are 16-byte
// aligned.
cudaError_t launch_noise_philox(const uint32_t* counters, uint32_t* words, int64_t n,
                                uint32_t k0, uint32_t k1, cudaStream_t cuda_stream);

}  // namespace genfast::cuda
