// Launcher of the multistep reverse-step kernel: raw pointers and a stream,
// no torch (multistep.cu compiles with nvcc alone). dtype: genfast::DType.
// Codes and flags: csrc/include/genfast/multistep.h and steps.h.
//
// One launch per step (stage), no host sync: the first thread of every block
// reads the step index on the device and the plan rows, computes the step's
// coefficients (multistep.h step_coefs, float64) into shared memory; then
// one pass over the sample: CFG, x0, the history reads the coefficients
// need, in-kernel noise, out, x0 out and the in-place state update. An index
// past the plan makes every coefficient NaN (the CUDA form of the error), as
// does stage 1 of a step that has one model evaluation (the plan's NaNs).
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

namespace genfast::cuda {

struct MultistepLaunch {
  const void* x;
  const void* c;
  const void* u;  // null: no CFG
  const void* z;  // given noise or null
  void* prev;
  void* x0;       // null: not wanted
  void* state;    // slots x items x numel, the sample's dtype
  int dtype;
  int64_t items, numel;
  const double* plan;
  const double* stage_plan;
  int64_t rows;
  const void* index;  // 0-d integer tensor on the device, or null (then `step`)
  int index_is_int32;
  int64_t step;
  int sampler, stage, prediction, noise_given, noise_seeded;
  float guidance_scale;   // without a guidance tensor
  const float* guidance;  // (2, items): per-item scale and rescale factor, or null
  uint32_t k0, k1, stream, sample_offset;  // stream: the base; step i draws stream + i
};

cudaError_t launch_multistep(const MultistepLaunch& a, cudaStream_t stream);

}  // namespace genfast::cuda
