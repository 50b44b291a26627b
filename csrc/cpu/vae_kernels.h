// Torch-free CPU kernels of the vae family (csrc/cpu/vae.cpp), one copy per
// ISA level. dtype: genfast::DType, plus 3 for float64 (gradcheck); fp16 /
// bf16 / fp32 compute in float32. Tensors contiguous, items along dim 0.
#pragma once
#include <stdint.h>

namespace genfast::cpu {

// Forward of reparameterize_kl over tasks of `chunk` elements (task j: item
// j / chunks, chunk j % chunks; chunk a multiple of 64): the stream's normals
// into d, then z = mu + d with d = exp(clamp(lv) / 2) eps replacing them, and
// the chunk's KL sum in partials[j]. The same terms, lanes and order as the
// training family's kl_partials with the same chunk, the same z and d bits
// as its reparameterize: one pass where those are two.
struct VaeForwardArgs {
  const void* mu;
  const void* logvar;
  void* z;
  void* d;
  int dtype;
  int64_t numel;  // elements per item
  int64_t chunk;
  int64_t quads_per_item;
  uint32_t k0, k1, stream, sample_offset;
};

// Backward over elements: g_mu = gz + s mu, g_lv = (gz d + s (exp(clamp lv)
// - 1)) / 2 inside the clamp, s = scale[item] (item = element / numel).
// gz: null (no grad of z: 0), one value for every element (gz_scalar: the
// expanded grad of z.sum()), or one per element.
struct VaeBackwardArgs {
  const void* gz;
  bool gz_scalar;
  const void* mu;
  const void* logvar;
  const void* d;
  void* g_mu;
  void* g_lv;
  const double* scale;
  int dtype;
  int64_t numel;
};

#define GENFAST_DECLARE_VAE_KERNELS(ISA)                                                 \
  namespace ISA {                                                                        \
  void reparam_kl(const VaeForwardArgs& a, double* partials, int64_t task_begin,         \
                  int64_t task_end);                                                     \
  void reparam_kl_backward(const VaeBackwardArgs& a, int64_t e_begin, int64_t e_end);   \
  }

GENFAST_DECLARE_VAE_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_VAE_KERNELS(avx2)
GENFAST_DECLARE_VAE_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
