// Launchers of the reverse-step kernels: raw pointers and a stream, no torch
// (steps.cu compiles with nvcc alone). dtype: genfast::DType. Codes, flags and
// params: csrc/include/genfast/steps.h.
//
// One step is a short sequence on one stream, with no host sync:
//   prepare   (1 block)  reads the step index on the device, the plan row, and
//                        writes the step's coefficients and the per-item g, r,
//                        lim, inv into `scratch` (kScratchHead + 4 items floats);
//                        an index past the plan makes every coefficient NaN, so
//                        the step's output is NaN (the CUDA form of the error);
//   moments   (optional) guidance_rescale: per-item sums -> r;
//   abs_x0 + the caller's per-item sort + bounds (optional) thresholding -> lim, inv;
//   apply     one pass over the sample: noise (the genfast stream, in-kernel),
//             CFG, x0, clip, prev and x0 out.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

constexpr int kScratchHead = 16;  // CoefsF (11 floats), noise flag, learned flag, pad

struct StepLaunch {
  const void* x;
  const void* c;
  const void* u;  // null: no CFG
  const void* v;  // learned variance channels or null
  const void* z;  // given noise or null
  void* prev;
  void* out2;     // null: not wanted
  int dtype;
  int64_t items, numel, m_stride;
  const double* plan;
  int64_t rows;
  const void* index;  // 0-d integer tensor on the device, or null (then `step`)
  int index_is_int32;
  int64_t step;
  int sampler, prediction, variance, flags;
  double params[11];
  const float* guidance;  // per-item scales (float32) or null
  uint32_t k0, k1, stream, sample_offset;  // stream: the base; step i draws stream + i
};

cudaError_t launch_step_prepare(const StepLaunch& a, float* scratch, cudaStream_t stream);
// partials: items * chunks * 4 doubles; chunks = moment_chunks(numel)
int64_t moment_chunks(int64_t numel);
cudaError_t launch_cfg_moments(const StepLaunch& a, float* scratch, double* partials,
                               cudaStream_t stream);
// |x0| before clipping, (items, numel) float32
cudaError_t launch_abs_x0(const StepLaunch& a, const float* scratch, float* out,
                          cudaStream_t stream);
// `sorted`: the per-item ascending sort of abs_x0's output
cudaError_t launch_threshold_bounds(const StepLaunch& a, const float* sorted, float* scratch,
                                    cudaStream_t stream);
cudaError_t launch_step_apply(const StepLaunch& a, const float* scratch, cudaStream_t stream);

}  // namespace genfast::cuda
