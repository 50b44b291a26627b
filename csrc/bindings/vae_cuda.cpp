// CUDA kernels of the vae family: checks, device guard, stream. The forward
// is the training family's reparameterize and KL ops (two kernels on the
// device); the backward is the one-pass kernel of csrc/cuda/vae.cu, reading
// grad_kl on the device (no sync). float32 / float16 / bfloat16 only.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/vae_args.h"
#include "cuda/vae.cuh"

namespace genfast::bindings {
namespace {

using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Triple reparameterize_kl_cuda(const at::Tensor& mu, const at::Tensor& logvar, int64_t seed,
                              int64_t stream, int64_t sample_offset, int64_t reduction) {
  static const auto reparam =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("genfast::training_reparameterize", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    c10::SymInt, c10::SymInt, c10::SymInt)>();
  static const auto kl = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("genfast::training_kl_divergence", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>();
  TORCH_CHECK(mu.is_cuda(), "genfast vae_reparameterize_kl (CUDA): mu must be a CUDA tensor");
  check_same("vae_reparameterize_kl", mu, "mu", logvar, "logvar");
  check_reduction("vae_reparameterize_kl", reduction);
  at::AutoDispatchBelowADInplaceOrView guard;
  auto [z, d] = reparam.call(mu, logvar, seed, stream, sample_offset);
  return {z, kl.call(mu, logvar, reduction), d};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_kl_backward_cuda(
    const std::optional<at::Tensor>& grad_z, const std::optional<at::Tensor>& grad_kl,
    const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& d, int64_t reduction) {
  TORCH_CHECK(mu.is_cuda(), "genfast vae_reparameterize_kl_backward (CUDA): mu must be a CUDA "
              "tensor");
  const int dt = training_dtype_code(mu.scalar_type(), false);
  check_vae_backward(grad_z, grad_kl, mu, logvar, d, reduction);
  const c10::cuda::CUDAGuard device(mu.device());
  const ItemLayout l = kl_layout(mu);
  const bool scalar = grad_z.has_value() && expanded_scalar(*grad_z);
  at::Tensor gz, gk;
  if (grad_z.has_value()) gz = scalar ? *grad_z : grad_z->contiguous();
  if (grad_kl.has_value()) gk = grad_kl->to(at::kFloat).contiguous();
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous(), dd = d.contiguous();
  at::Tensor gm = at::empty(mu.sizes(), mu.options()), gv = at::empty(mu.sizes(), mu.options());
  C10_CUDA_CHECK(cuda::launch_reparam_kl_backward(
      gz.defined() ? gz.const_data_ptr() : nullptr, !gz.defined() ? 0 : scalar ? 1 : 2,
      gk.defined() ? gk.const_data_ptr<float>() : nullptr, (int)reduction, m.const_data_ptr(),
      v.const_data_ptr(), dd.const_data_ptr(), gm.data_ptr(), gv.data_ptr(), dt, l.items,
      l.numel, c10::cuda::getCurrentCUDAStream().stream()));
  return {gm, gv};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  using namespace genfast::bindings;
  m.impl("vae_reparameterize_kl", &reparameterize_kl_cuda);
  m.impl("vae_reparameterize_kl_backward", &reparameterize_kl_backward_cuda);
}
