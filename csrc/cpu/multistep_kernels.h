// Torch-free CPU kernels of the multistep family, one copy per ISA level
// (csrc/cpu/multistep.cpp). Tensors are contiguous; items along the leading
// dimension, `numel` elements per item. dtype: genfast::DType.
#pragma once
#include <stdint.h>

#include "genfast/multistep.h"
#include "training_kernels.h"  // StreamArgs

namespace genfast::cpu {

struct MultistepArgs {
  const void* x;     // sample
  const void* c;     // (conditional) model output
  const void* u;     // unconditional output or null: no CFG
  const void* z;     // given noise or null
  void* prev;
  void* x0;          // x0 out or null
  void* state;       // slots x (items x numel), the sample's dtype
  int64_t slot_stride;      // items * numel
  int h_slot[3];     // ring slots of h0, h1, h2; -1: not read (zero coefficients)
  int d_slot;        // slot D is written to, or -1
  bool write_dx;     // that slot gets k.hx x + k.hd D (lms's derivative), not D
  int p_slot;        // slot of P, or -1
  bool read_p, write_p;
  int dtype;
  int64_t numel;     // elements per item
  const float* g;    // per-item guidance scale (CFG) or null
  const float* r;    // per-item rescale factor
  multistep::CoefsF k;
  bool seeded;       // z from the stream
  bool noise;        // z contributes
  // float32 outputs with non-temporal stores (every output 32-byte aligned,
  // numel a multiple of 8): a step whose streams outgrow the last-level
  // cache saves the write-allocate reads and keeps its inputs cached
  bool stream_stores;
};

#define GENFAST_DECLARE_MULTISTEP_KERNELS(ISA)                                            \
  namespace ISA {                                                                         \
  /* out, x0 and the state for elements [e_begin, e_end) of `item` (multiples of 4) */   \
  void multistep_apply(const MultistepArgs& a, const StreamArgs& s, int64_t item,         \
                       int64_t e_begin, int64_t e_end);                                   \
  }

GENFAST_DECLARE_MULTISTEP_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_MULTISTEP_KERNELS(avx2)
GENFAST_DECLARE_MULTISTEP_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
