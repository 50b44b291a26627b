// Autograd of vae_reparameterize_kl in C++ (one registration for every
// device), as bindings/training_autograd.cpp does for the training ops: a
// Python torch.library.register_autograd layer costs ~0.1 ms a step (its
// autograd.Function, setup_context and backward), a fifth of the whole step
// at 64K elements. The forward redispatches below autograd (the device
// kernels); the backward calls the one-pass backward op through the
// dispatcher. The Triton op (genfast/triton/vae.py) keeps the Python layer.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace genfast::bindings {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
using Pair = std::tuple<at::Tensor, at::Tensor>;

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

struct ReparameterizeKl : torch::autograd::Function<ReparameterizeKl> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                             c10::SymInt seed, c10::SymInt stream, c10::SymInt sample_offset,
                             int64_t reduction) {
    static const auto h =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("genfast::vae_reparameterize_kl", "")
            .typed<Triple(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt,
                          c10::SymInt, int64_t)>();
    ctx->set_materialize_grads(false);
    at::Tensor z, kl, d;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(z, kl, d) = h.call(mu, logvar, std::move(seed), std::move(stream),
                                  std::move(sample_offset), reduction);
    }
    // d = exp(logvar / 2) eps: drawn from the stream, no gradient of its own
    ctx->mark_non_differentiable({d});
    ctx->save_for_backward({mu, logvar, d});
    ctx->saved_data["reduction"] = reduction;
    return {z, kl, d};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("genfast::vae_reparameterize_kl_backward", "")
            .typed<Pair(const std::optional<at::Tensor>&, const std::optional<at::Tensor>&,
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
    tensor_list out(6);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    if (!ctx->needs_input_grad(0) && !ctx->needs_input_grad(1)) return out;
    const auto s = ctx->get_saved_variables();
    auto [gm, gv] = h.call(opt(grads[0]), opt(grads[1]), s[0], s[1], s[2],
                           ctx->saved_data["reduction"].toInt());
    if (ctx->needs_input_grad(0)) out[0] = gm;
    if (ctx->needs_input_grad(1)) out[1] = gv;
    return out;
  }
};

Triple reparameterize_kl_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                  c10::SymInt seed, c10::SymInt stream, c10::SymInt sample_offset,
                                  int64_t reduction) {
  auto r = ReparameterizeKl::apply(mu, logvar, std::move(seed), std::move(stream),
                                   std::move(sample_offset), reduction);
  return {r[0], r[1], r[2]};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, Autograd, m) {
  m.impl("vae_reparameterize_kl", TORCH_FN(genfast::bindings::reparameterize_kl_autograd));
}
