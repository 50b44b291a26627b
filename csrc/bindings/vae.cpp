// CPU kernels of the vae family (genfast.vae.reparameterize_kl): checks,
// threads, ISA choice. The forward is one pass (noise, z, d, KL partial sums:
// csrc/cpu/vae.cpp) for inputs with a batch dimension; 0-d and 1-d inputs,
// whose noise items (one) and KL items (each element) differ, take the
// training family's two ops. The backward is one pass producing both
// gradients (each input's gradient once, so autograd accumulates nothing).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <vector>

#include "bindings/vae_args.h"
#include "cpu/isa.h"
#include "cpu/vae_kernels.h"
#include "genfast/training.h"
#include "genfast/vae.h"

namespace genfast::bindings {
namespace {

struct VaeKernels {
  decltype(&cpu::baseline::reparam_kl) forward;
  decltype(&cpu::baseline::reparam_kl_backward) backward;
};

VaeKernels kernels() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return {cpu::avx512::reparam_kl, cpu::avx512::reparam_kl_backward};
    case cpu::Isa::kAvx2: return {cpu::avx2::reparam_kl, cpu::avx2::reparam_kl_backward};
#endif
    default: return {cpu::baseline::reparam_kl, cpu::baseline::reparam_kl_backward};
  }
}

constexpr int64_t kElemGrain = 16384;
constexpr int64_t kChunk = 16384;  // the training family's KL chunk: the same sums

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The training family's two ops (0-d / 1-d inputs).
Triple two_ops(const at::Tensor& mu, const at::Tensor& logvar, int64_t seed, int64_t stream,
               int64_t sample_offset, int64_t reduction) {
  static const auto reparam =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("genfast::training_reparameterize", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    c10::SymInt, c10::SymInt, c10::SymInt)>();
  static const auto kl = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("genfast::training_kl_divergence", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  auto [z, d] = reparam.call(mu, logvar, seed, stream, sample_offset);
  return {z, kl.call(mu, logvar, reduction), d};
}

Triple reparameterize_kl_cpu(const at::Tensor& mu, const at::Tensor& logvar, int64_t seed,
                             int64_t stream, int64_t sample_offset, int64_t reduction) {
  const char* op = "vae_reparameterize_kl";
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_same(op, mu, "mu", logvar, "logvar");
  check_reduction(op, reduction);
  if (mu.dim() < 2) return two_ops(mu, logvar, seed, stream, sample_offset, reduction);
  const ItemLayout l = item_layout(mu);
  constexpr int64_t k32 = int64_t{1} << 32;
  TORCH_CHECK(stream >= 0 && stream < k32, "genfast ", op, ": stream must be in [0, 2**32), got ",
              stream);
  TORCH_CHECK(sample_offset >= 0 && sample_offset + l.items <= k32, "genfast ", op,
              ": sample_offset + batch size must be <= 2**32, got ", sample_offset, " + ",
              l.items);
  TORCH_CHECK((l.numel + 3) / 4 <= k32, "genfast ", op, ": at most 2**34 elements per item");
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous();
  at::Tensor z = at::empty(mu.sizes(), mu.options()), d = at::empty(mu.sizes(), mu.options());
  const int64_t chunks = (l.numel + kChunk - 1) / kChunk;
  std::vector<double> partials(l.items * chunks);
  const uint64_t s = static_cast<uint64_t>(seed);
  const cpu::VaeForwardArgs a{m.data_ptr(), v.data_ptr(), z.data_ptr(), d.data_ptr(), dt,
                              l.numel, kChunk, (l.numel + 3) / 4, static_cast<uint32_t>(s),
                              static_cast<uint32_t>(s >> 32), static_cast<uint32_t>(stream),
                              static_cast<uint32_t>(sample_offset)};
  const auto f = kernels().forward;
  at::parallel_for(0, l.items * chunks, 1,
                   [&](int64_t j0, int64_t j1) { f(a, partials.data(), j0, j1); });
  // per-item sums in chunk order, then the reduction: as the training family's KL
  at::Tensor kl = reduced_output(mu, l.items, reduction);
  double total = 0.0;
  const bool dbl = kl.scalar_type() == at::kDouble;
  for (int64_t i = 0; i < l.items; ++i) {
    double item = 0.0;
    for (int64_t c = 0; c < chunks; ++c) item += partials[i * chunks + c];
    total += item;
    if (reduction == training::kReduceNone) {
      if (dbl) kl.data_ptr<double>()[i] = item;
      else kl.data_ptr<float>()[i] = (float)item;
    }
  }
  if (reduction != training::kReduceNone) {
    if (reduction == training::kReduceMean) {
      total = l.items > 0 ? total / (double)l.items : total / 0.0;
    }
    if (dbl) *kl.data_ptr<double>() = total;
    else *kl.data_ptr<float>() = (float)total;
  }
  return {z, kl, d};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cpu(
    const std::optional<at::Tensor>& grad_z, const std::optional<at::Tensor>& grad_kl,
    const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& d, int64_t reduction) {
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_vae_backward(grad_z, grad_kl, mu, logvar, d, reduction);
  const ItemLayout l = kl_layout(mu);
  std::vector<double> scale(l.items, 0.0);
  if (grad_kl.has_value()) {  // host memory on the CPU: read here, no sync
    const at::Tensor g = grad_kl->to(at::kDouble).contiguous();
    for (int64_t i = 0; i < l.items; ++i) {
      scale[i] = vae::kl_item_grad(g.data_ptr<double>()[reduction == 0 ? i : 0], (int)reduction,
                                   l.items);
    }
  }
  const bool scalar = grad_z.has_value() && expanded_scalar(*grad_z);
  at::Tensor gz;
  if (grad_z.has_value()) gz = scalar ? *grad_z : grad_z->contiguous();
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous(), dd = d.contiguous();
  at::Tensor gm = at::empty(mu.sizes(), mu.options()), gv = at::empty(mu.sizes(), mu.options());
  const cpu::VaeBackwardArgs a{gz.defined() ? gz.const_data_ptr() : nullptr, scalar,
                               m.const_data_ptr(), v.const_data_ptr(), dd.const_data_ptr(),
                               gm.data_ptr(), gv.data_ptr(), scale.data(), dt, l.numel};
  const auto f = kernels().backward;
  at::parallel_for(0, mu.numel(), kElemGrain, [&](int64_t b, int64_t e) { f(a, b, e); });
  return {gm, gv};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  using namespace genfast::bindings;
  m.impl("vae_reparameterize_kl", &reparameterize_kl_cpu);
  m.impl("vae_reparameterize_kl_backward", &reparameterize_kl_backward_cpu);
}
