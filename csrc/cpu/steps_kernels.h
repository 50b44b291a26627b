// Torch-free CPU kernels of the reverse-step family, one copy per ISA level
// (csrc/cpu/steps.cpp). Tensors are contiguous; items along the leading
// dimension, `numel` elements per item of the sample. dtype: genfast::DType.
#pragma once
#include <stdint.h>

#include "genfast/steps.h"
#include "training_kernels.h"  // StreamArgs

namespace genfast::cpu {

struct StepArgs {
  const void* x;     // sample
  const void* c;     // (conditional) model output, item stride m_stride
  const void* u;     // unconditional output (item stride m_stride) or null: no CFG
  const void* v;     // learned variance channels (item stride m_stride) or null
  const void* z;     // given noise (like the sample) or null
  void* prev;
  void* out2;        // x0 / denoised, or null
  int dtype;
  int64_t numel;     // elements per item of the sample
  int64_t m_stride;  // elements per item of the model output
  const float* g;    // per-item guidance scale (CFG) or null
  const float* r;    // per-item rescale factor (1 without guidance_rescale)
  const float* lim;  // per-item clamp bound of x0 (+inf: none)
  const float* inv;  // per-item scale after the clamp
  steps::CoefsF k;
  bool learned;      // DDPM learned_range: per-element std from v
  bool seeded;       // z from the stream (StreamArgs) instead of the tensor
  bool noise;        // z contributes at all
};

#define GENFAST_DECLARE_STEPS_KERNELS(ISA)                                                    \
  namespace ISA {                                                                             \
  /* prev (and out2) for the elements [e_begin, e_end) of `item`, e a multiple of 4 */      \
  void step_apply(const StepArgs& a, const StreamArgs& s, int64_t item, int64_t e_begin,     \
                  int64_t e_end);                                                             \
  /* sums over [e_begin, e_end) of item: c, c^2, cfg, cfg^2 (guidance_rescale) */            \
  void cfg_moments(const StepArgs& a, int64_t item, int64_t e_begin, int64_t e_end,          \
                   double* out4);                                                             \
  /* |x0| (before clipping) of the elements of `item` into buf (thresholding) */             \
  void abs_x0(const StepArgs& a, int64_t item, float* buf);                                   \
  }

GENFAST_DECLARE_STEPS_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_STEPS_KERNELS(avx2)
GENFAST_DECLARE_STEPS_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
