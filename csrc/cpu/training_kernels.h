// Torch-free CPU kernels of the training family, one copy per ISA level
// (csrc/cpu/training.cpp). Tensors are contiguous; `items` is the leading
// dimension and `numel` the elements per item. dtype: genfast::DType, plus
// kFloat64Code for double (gradcheck); fp16 / bf16 / fp32 compute in float32.
#pragma once
#include <stdint.h>

namespace genfast::cpu {

constexpr int kFloat64Code = 3;

// out1 = k[0] x + k[1] y, out2 = k[2] x + k[3] y with k = coefs + 4 * item.
// y, out2 may be null (then the y terms / out2 are skipped). add_noise's
// forward (x0, noise) -> (x_t, target) and its backward (g_xt, g_target) ->
// (g_x0, g_noise) are both this.
struct Affine2Args {
  const void* x;
  const void* y;
  void* out1;
  void* out2;
  const double* coefs;
  int dtype;
  int64_t numel;
};

// Counter-based noise of the genfast stream (noise.h numbering).
struct StreamArgs {
  int64_t quads_per_item;
  uint32_t k0, k1, stream, sample_offset;
};

// (p - t)^2 or the KL element summed over one chunk of one item. The *_grad
// kernels also write, in the same pass, the gradient for an upstream grad of
// one with the per-item `scale` (the loss: out1 = s (p - t); the KL:
// out1 = s mu, out2 = s (exp(clamp lv) - 1) / 2 * [lv inside]), so the
// backward has no pass of its own (see bindings/training_autograd.cpp).
struct ReduceArgs {
  const void* a;
  const void* b;
  int dtype;
  int64_t numel;
  int64_t chunk;  // elements per task; task j: item j / chunks, chunk j % chunks
  void* out1 = nullptr;
  void* out2 = nullptr;
  const double* scale = nullptr;
};

// Elementwise backward with a per-item scale s:
//   scaled_diff: out1 = s (a - b), out2 = -s (a - b)   (out2 may be null)
//   kl_backward: out1 = s mu, out2 = s (exp(clamp lv) - 1) / 2 * [lv inside]
struct ScaleArgs {
  const void* a;
  const void* b;
  void* out1;
  void* out2;
  const double* scale;
  int dtype;
  int64_t numel;
};

// reparameterize: z = mu + d, d = exp(clamp(lv) / 2) eps with eps from the
// stream (forward, over quads; d is written to `eps` for the backward, or
// with `jacobian` set dz/dlv = d / 2 * [lv inside] instead);
// backward g_lv = g d / 2 * inside (over elements; numel < 0 there: g is one
// value for every element, as the expanded grad of a sum).
struct ReparamArgs {
  const void* mu_or_grad;
  const void* logvar;
  void* out;
  void* eps;
  int dtype;
  int64_t numel;
  bool jacobian = false;
};

#define GENFAST_DECLARE_TRAINING_KERNELS(ISA)                                                  \
  namespace ISA {                                                                              \
  void affine2(const Affine2Args& a, int64_t e_begin, int64_t e_end);                          \
  /* writes the stream's normals into `noise` (the y of `a`), then affine2 */                 \
  void add_noise_seeded(const Affine2Args& a, void* noise, const StreamArgs& s,               \
                        int64_t quad_begin, int64_t quad_end);                                 \
  void sqdiff_partials(const ReduceArgs& a, double* partials, int64_t task_begin,             \
                       int64_t task_end);                                                      \
  void kl_partials(const ReduceArgs& a, double* partials, int64_t task_begin, int64_t task_end); \
  void sqdiff_partials_grad(const ReduceArgs& a, double* partials, int64_t task_begin,        \
                            int64_t task_end);                                                 \
  void kl_partials_grad(const ReduceArgs& a, double* partials, int64_t task_begin,            \
                        int64_t task_end);                                                     \
  void scaled_diff(const ScaleArgs& a, int64_t e_begin, int64_t e_end);                        \
  void kl_backward(const ScaleArgs& a, int64_t e_begin, int64_t e_end);                        \
  void reparameterize(const ReparamArgs& a, const StreamArgs& s, int64_t quad_begin,          \
                      int64_t quad_end);                                                       \
  void reparameterize_backward(const ReparamArgs& a, int64_t e_begin, int64_t e_end);          \
  }

GENFAST_DECLARE_TRAINING_KERNELS(baseline)
#if defined(GENFAST_HAVE_X86_ISAS)
GENFAST_DECLARE_TRAINING_KERNELS(avx2)
GENFAST_DECLARE_TRAINING_KERNELS(avx512)
#endif

}  // namespace genfast::cpu
