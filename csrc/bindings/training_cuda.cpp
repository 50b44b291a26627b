// CUDA kernels of the training family: checks, device guard, stream. Timesteps
// stay on the device (no sync): out-of-range ones poison their item with NaN
// in the kernel (csrc/include/genfast/training.h). float32 / float16 /
// bfloat16 only (float64 gradchecks run on the CPU kernels).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bindings/training_args.h"
#include "cuda/training.cuh"

namespace genfast::bindings {
namespace {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

void check_cuda(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "genfast ", op, " (CUDA): tensors must be CUDA tensors");
}

cuda::TimestepArgs ts_args(const char* op, const at::Tensor& x, const at::Tensor& t,
                           const at::Tensor& table, int64_t kind, at::Tensor& t_keep,
                           at::Tensor& table_keep) {
  check_timesteps(op, x, t, table, kind);
  t_keep = t.contiguous();
  table_keep = table.contiguous();
  return cuda::TimestepArgs{t_keep.data_ptr(), (int)timestep_dtype_code(t_keep),
                            table_keep.data_ptr<double>(), table_keep.size(0), (int)kind};
}

struct Seed {
  uint32_t k0, k1, stream, offset;
};

Seed seed_args(int64_t seed, int64_t stream, int64_t sample_offset, int64_t items, int64_t numel) {
  constexpr int64_t k32 = int64_t{1} << 32;
  TORCH_CHECK(stream >= 0 && stream < k32, "genfast: stream must be in [0, 2**32), got ", stream);
  TORCH_CHECK(sample_offset >= 0 && sample_offset + items <= k32,
              "genfast: sample_offset + batch size must be <= 2**32");
  TORCH_CHECK((numel + 3) / 4 <= k32, "genfast: at most 2**34 elements per item");
  const uint64_t s = static_cast<uint64_t>(seed);
  return {static_cast<uint32_t>(s), static_cast<uint32_t>(s >> 32),
          static_cast<uint32_t>(stream), static_cast<uint32_t>(sample_offset)};
}

std::tuple<at::Tensor, at::Tensor> add_noise_cuda(const at::Tensor& x0, const at::Tensor& noise,
                                                  const at::Tensor& timesteps,
                                                  const at::Tensor& table, int64_t kind,
                                                  int64_t prediction) {
  check_cuda("add_noise", x0);
  const int dt = training_dtype_code(x0.scalar_type(), false);
  check_same("add_noise", x0, "x0", noise, "noise");
  TORCH_CHECK(x0.dim() >= 2, "genfast add_noise: x0 needs a batch dimension, got ", x0.sizes());
  const c10::cuda::CUDAGuard guard(x0.device());
  at::Tensor tk, tabk;
  const auto ts = ts_args("add_noise", x0, timesteps, table, kind, tk, tabk);
  const at::Tensor x = x0.contiguous(), n = noise.contiguous();
  at::Tensor xt = at::empty(x0.sizes(), x0.options()), target = at::empty(x0.sizes(), x0.options());
  const ItemLayout l = item_layout(x0);
  C10_CUDA_CHECK(cuda::launch_add_noise(x.data_ptr(), n.data_ptr(), xt.data_ptr(),
                                        target.data_ptr(), dt, l.items, l.numel, ts,
                                        (int)prediction, -1, current_stream()));
  return {xt, target};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_noise_seeded_cuda(
    const at::Tensor& x0, const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
    int64_t prediction, int64_t seed, int64_t stream, int64_t sample_offset) {
  check_cuda("add_noise", x0);
  const int dt = training_dtype_code(x0.scalar_type(), false);
  TORCH_CHECK(x0.dim() >= 2, "genfast add_noise: x0 needs a batch dimension, got ", x0.sizes());
  const c10::cuda::CUDAGuard guard(x0.device());
  at::Tensor tk, tabk;
  const auto ts = ts_args("add_noise", x0, timesteps, table, kind, tk, tabk);
  const ItemLayout l = item_layout(x0);
  const Seed s = seed_args(seed, stream, sample_offset, l.items, l.numel);
  const at::Tensor x = x0.contiguous();
  // epsilon: the target is the noise; no third output written (see the schema in ops.cpp)
  const bool eps = prediction == 0;
  at::Tensor xt = at::empty(x0.sizes(), x0.options()), noise = at::empty(x0.sizes(), x0.options()),
             target = eps ? at::empty({0}, x0.options()) : at::empty(x0.sizes(), x0.options());
  C10_CUDA_CHECK(cuda::launch_add_noise_seeded(x.data_ptr(), xt.data_ptr(), noise.data_ptr(),
                                               eps ? nullptr : target.data_ptr(), dt, l.items,
                                               l.numel, ts, (int)prediction, s.k0, s.k1, s.stream,
                                               s.offset, current_stream()));
  return {xt, noise, target};
}

at::Tensor add_noise_backward_cuda(const std::optional<at::Tensor>& grad_xt,
                                   const std::optional<at::Tensor>& grad_target,
                                   const at::Tensor& timesteps, const at::Tensor& table,
                                   int64_t kind, int64_t prediction, int64_t wrt) {
  TORCH_CHECK(grad_xt.has_value() || grad_target.has_value(),
              "genfast add_noise_backward: needs grad_x_t or grad_target");
  TORCH_CHECK(wrt == 0 || wrt == 1, "genfast add_noise_backward: wrt must be 0 or 1");
  const at::Tensor& like = grad_xt.has_value() ? *grad_xt : *grad_target;
  check_cuda("add_noise_backward", like);
  if (grad_xt.has_value() && grad_target.has_value()) {
    check_same("add_noise_backward", *grad_xt, "grad_x_t", *grad_target, "grad_target");
  }
  const int dt = training_dtype_code(like.scalar_type(), false);
  const c10::cuda::CUDAGuard guard(like.device());
  at::Tensor tk, tabk;
  const auto ts = ts_args("add_noise_backward", like, timesteps, table, kind, tk, tabk);
  const at::Tensor gx = grad_xt.has_value() ? grad_xt->contiguous() : at::Tensor();
  const at::Tensor gt = grad_target.has_value() ? grad_target->contiguous() : at::Tensor();
  at::Tensor out = at::empty(like.sizes(), like.options());
  const ItemLayout l = item_layout(like);
  C10_CUDA_CHECK(cuda::launch_add_noise(gx.defined() ? gx.data_ptr() : nullptr,
                                        gt.defined() ? gt.data_ptr() : nullptr, out.data_ptr(),
                                        nullptr, dt, l.items, l.numel, ts, (int)prediction,
                                        (int)wrt, current_stream()));
  return out;
}

ItemLayout reduce_layout(const at::Tensor& x) {
  if (x.dim() == 0) return {1, 1};
  return {x.size(0), x.size(0) == 0 ? 0 : x.numel() / x.size(0)};
}

at::Tensor reduce_cuda(const char* op, const at::Tensor& a, const at::Tensor& b,
                       const cuda::TimestepArgs* ts, bool kl, int64_t weighting,
                       int64_t prediction, double gamma, double sigma_data, int64_t reduction) {
  const int dt = training_dtype_code(a.scalar_type(), false);
  const ItemLayout l = reduce_layout(a);
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor out = reduced_output(a, l.items, reduction);
  at::Tensor partials = at::empty({l.items * cuda::reduce_chunks(l.numel)},
                                  a.options().dtype(at::kDouble));
  (void)op;
  C10_CUDA_CHECK(cuda::launch_item_reduce(ac.data_ptr(), bc.data_ptr(), dt, l.items, l.numel, kl,
                                          ts, (int)weighting, (int)prediction, gamma, sigma_data,
                                          (int)reduction, partials.data_ptr<double>(),
                                          out.data_ptr<float>(), current_stream()));
  return out;
}

at::Tensor diffusion_loss_cuda(const at::Tensor& pred, const at::Tensor& target,
                               const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
                               int64_t weighting, int64_t prediction, double gamma,
                               double sigma_data, int64_t reduction) {
  check_cuda("diffusion_loss", pred);
  check_same("diffusion_loss", pred, "pred", target, "target");
  check_reduction("diffusion_loss", reduction);
  const c10::cuda::CUDAGuard guard(pred.device());
  at::Tensor tk, tabk;
  const auto ts = ts_args("diffusion_loss", pred, timesteps, table, kind, tk, tabk);
  return reduce_cuda("diffusion_loss", pred, target, &ts, false, weighting, prediction, gamma,
                     sigma_data, reduction);
}

at::Tensor diffusion_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& pred,
                                        const at::Tensor& target, const at::Tensor& timesteps,
                                        const at::Tensor& table, int64_t kind, int64_t weighting,
                                        int64_t prediction, double gamma, double sigma_data,
                                        int64_t reduction) {
  check_cuda("diffusion_loss_backward", pred);
  check_same("diffusion_loss_backward", pred, "pred", target, "target");
  check_reduction("diffusion_loss_backward", reduction);
  const int dt = training_dtype_code(pred.scalar_type(), false);
  const c10::cuda::CUDAGuard guard(pred.device());
  at::Tensor tk, tabk;
  const auto ts = ts_args("diffusion_loss_backward", pred, timesteps, table, kind, tk, tabk);
  const ItemLayout l = reduce_layout(pred);
  const at::Tensor g = grad.to(at::kFloat).contiguous();
  TORCH_CHECK(g.numel() == (reduction == 0 ? l.items : 1), "genfast diffusion_loss_backward: "
              "grad has ", g.numel(), " elements for ", l.items, " items");
  const at::Tensor p = pred.contiguous(), t = target.contiguous();
  at::Tensor out = at::empty(pred.sizes(), pred.options());
  C10_CUDA_CHECK(cuda::launch_item_reduce_backward(
      g.data_ptr<float>(), p.data_ptr(), t.data_ptr(), out.data_ptr(), nullptr, dt, l.items,
      l.numel, false, &ts, (int)weighting, (int)prediction, gamma, sigma_data, (int)reduction,
      current_stream()));
  return out;
}

at::Tensor kl_cuda(const at::Tensor& mu, const at::Tensor& logvar, int64_t reduction) {
  check_cuda("kl_divergence", mu);
  check_same("kl_divergence", mu, "mu", logvar, "logvar");
  check_reduction("kl_divergence", reduction);
  const c10::cuda::CUDAGuard guard(mu.device());
  return reduce_cuda("kl_divergence", mu, logvar, nullptr, true, 0, 0, 0.0, 0.0, reduction);
}

std::tuple<at::Tensor, at::Tensor> kl_backward_cuda(const at::Tensor& grad, const at::Tensor& mu,
                                                    const at::Tensor& logvar, int64_t reduction) {
  check_cuda("kl_divergence_backward", mu);
  check_same("kl_divergence_backward", mu, "mu", logvar, "logvar");
  check_reduction("kl_divergence_backward", reduction);
  const int dt = training_dtype_code(mu.scalar_type(), false);
  const c10::cuda::CUDAGuard guard(mu.device());
  const ItemLayout l = reduce_layout(mu);
  const at::Tensor g = grad.to(at::kFloat).contiguous();
  TORCH_CHECK(g.numel() == (reduction == 0 ? l.items : 1), "genfast kl_divergence_backward: "
              "grad has ", g.numel(), " elements for ", l.items, " items");
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous();
  at::Tensor gm = at::empty(mu.sizes(), mu.options()), gv = at::empty(mu.sizes(), mu.options());
  C10_CUDA_CHECK(cuda::launch_item_reduce_backward(
      g.data_ptr<float>(), m.data_ptr(), v.data_ptr(), gm.data_ptr(), gv.data_ptr(), dt, l.items,
      l.numel, true, nullptr, 0, 0, 0.0, 0.0, (int)reduction, current_stream()));
  return {gm, gv};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_cuda(const at::Tensor& mu,
                                                       const at::Tensor& logvar, int64_t seed,
                                                       int64_t stream, int64_t sample_offset) {
  check_cuda("reparameterize", mu);
  check_same("reparameterize", mu, "mu", logvar, "logvar");
  const int dt = training_dtype_code(mu.scalar_type(), false);
  const c10::cuda::CUDAGuard guard(mu.device());
  const ItemLayout l = item_layout(mu);
  const Seed s = seed_args(seed, stream, sample_offset, l.items, l.numel);
  const at::Tensor m = mu.contiguous(), v = logvar.contiguous();
  at::Tensor z = at::empty(mu.sizes(), mu.options()), eps = at::empty(mu.sizes(), mu.options());
  C10_CUDA_CHECK(cuda::launch_reparameterize(m.data_ptr(), v.data_ptr(), z.data_ptr(),
                                             eps.data_ptr(), dt, l.items, l.numel, s.k0, s.k1,
                                             s.stream, s.offset, current_stream()));
  return {z, eps};
}

at::Tensor reparameterize_backward_cuda(const at::Tensor& grad, const at::Tensor& logvar,
                                        const at::Tensor& eps) {
  check_cuda("reparameterize_backward", grad);
  check_same("reparameterize_backward", logvar, "logvar", grad, "grad");
  check_same("reparameterize_backward", logvar, "logvar", eps, "eps");
  const int dt = training_dtype_code(grad.scalar_type(), false);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.contiguous(), v = logvar.contiguous(), e = eps.contiguous();
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  C10_CUDA_CHECK(cuda::launch_reparameterize_backward(g.data_ptr(), v.data_ptr(), e.data_ptr(),
                                                      out.data_ptr(), dt, grad.numel(),
                                                      current_stream()));
  return out;
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CUDA, m) {
  using namespace genfast::bindings;
  m.impl("training_add_noise", &add_noise_cuda);
  m.impl("training_add_noise_seeded", &add_noise_seeded_cuda);
  m.impl("training_add_noise_backward", &add_noise_backward_cuda);
  m.impl("training_diffusion_loss", &diffusion_loss_cuda);
  m.impl("training_diffusion_loss_backward", &diffusion_loss_backward_cuda);
  m.impl("training_kl_divergence", &kl_cuda);
  m.impl("training_kl_divergence_backward", &kl_backward_cuda);
  m.impl("training_reparameterize", &reparameterize_cuda);
  m.impl("training_reparameterize_backward", &reparameterize_backward_cuda);
}
