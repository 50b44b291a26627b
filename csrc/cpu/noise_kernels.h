// Torch-free CPU kernels of the noise family, one copy per ISA level.
#pragma once
#include <stdint.h>

namespace genfast::cpu {

struct NormalFillArgs {
  void* out;               // contiguous, items * item_numel elements
  int dtype;               // genfast::DType
  int64_t item_numel;      // elements per item (row-major)
  int64_t quads_per_item;  // ceil(item_numel / 4): Philox calls per item
  uint32_t k0, k1, stream, sample_offset;
};

// Kernels for one ISA level. normal_fill writes the normals of global quads
// [quad_begin, quad_end), a quad g being Philox call (g % qpi) of item
// (g / qpi); any split of the quad range gives the same bits.
#define GENFAST_DECLARE_NOISE_KERNELS(ISA)                                          \
  namespace ISA {                                                                   \
  void normal_fill(const NormalFillArgs& args, int64_t quad_begin, int64_t quad_end); \
  void philox(const uint32_t* counters, uint32_t* words, int64_t n, uint32_t k0,    \
              uint32_t k1);                                                         \
  }

GENFAST_DECLARE_NOISE_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_NOISE_KERNELS(avx2)
GENFAST_DECLARE_NOISE_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
