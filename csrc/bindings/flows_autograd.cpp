// Autograd of affine_coupling and rq_spline in C++ (one registration for every device), as
// bindings/vae_autograd.cpp does for vae_reparameterize_kl: the Python
// torch.library.register_autograd layer (its autograd.Function, setup_context
// and backward) cost more than the op itself on small couplings, such as a
// 2-D toy flow's 512 x 1 halves, where genfast.nflows then trained slower
// than nflows. The forward redispatches below autograd (the device kernels);
// the backward calls the op's fused backward through the dispatcher, with
// zeros for an upstream gradient autograd left undefined, as the Python
// layer did. The Triton ops (genfast/triton/flows.py) keep the Python layer
// (genfast/ops/flows.py).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <initializer_list>
#include <tuple>
#include <vector>

namespace genfast::bindings {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using Pair = std::tuple<at::Tensor, at::Tensor>;
using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// backward's result for a forward of n arguments: grads[i] where input i needs
// a gradient, undefined elsewhere (the non-tensor arguments included).
tensor_list needed(AutogradContext* ctx, size_t n, std::initializer_list<at::Tensor> grads) {
  tensor_list out(n);
  size_t i = 0;
  for (const at::Tensor& g : grads) {
    if (ctx->needs_input_grad(i)) out[i] = g;
    ++i;
  }
  return out;
}

struct AffineCoupling : torch::autograd::Function<AffineCoupling> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& inputs,
                             const at::Tensor& shift, const at::Tensor& u, int64_t activation,
                             double clamp, bool inverse) {
    static const auto h = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("genfast::affine_coupling", "")
                              .typed<Pair(const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, int64_t, double, bool)>();
    ctx->set_materialize_grads(false);
    at::Tensor y, lad;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(y, lad) = h.call(inputs, shift, u, activation, clamp, inverse);
    }
    ctx->save_for_backward({inputs, shift, u});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["inverse"] = inverse;
    return {y, lad};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("genfast::affine_coupling_backward", "")
            .typed<Triple(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, const at::Tensor&, int64_t, double, bool)>();
    if (!grads[0].defined() && !grads[1].defined()) return tensor_list(6);
    const auto s = ctx->get_saved_variables();
    const at::Tensor& x = s[0];
    const at::Tensor g_out = grads[0].defined() ? grads[0] : at::zeros_like(x);
    const at::Tensor g_lad =
        grads[1].defined() ? grads[1] : at::zeros({x.size(0)}, x.options());
    auto [gx, gs, gu] = h.call(g_out, g_lad, x, s[1], s[2],
                               ctx->saved_data["activation"].toInt(),
                               ctx->saved_data["clamp"].toDouble(),
                               ctx->saved_data["inverse"].toBool());
    return needed(ctx, 6, {gx, gs, gu});
  }
};

using Quad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

struct RqSpline : torch::autograd::Function<RqSpline> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& uw,
                             const at::Tensor& uh, const at::Tensor& ud, bool inverse,
                             bool linear_tails, double left, double right, double bottom,
                             double top, double min_w, double min_h, double min_d) {
    static const auto h =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("genfast::rq_spline", "")
            .typed<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, bool, bool, double, double, double, double, double,
                        double, double)>();
    ctx->set_materialize_grads(false);
    at::Tensor y, lad;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(y, lad) = h.call(x, uw, uh, ud, inverse, linear_tails, left, right, bottom, top,
                                min_w, min_h, min_d);
    }
    ctx->save_for_backward({x, uw, uh, ud});
    ctx->saved_data["inverse"] = inverse;
    ctx->saved_data["linear_tails"] = linear_tails;
    ctx->saved_data["bounds"] = std::vector<double>{left, right, bottom, top, min_w, min_h, min_d};
    return {y, lad};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        c10::Dispatcher::singleton()
            .findSchemaOrThrow("genfast::rq_spline_backward", "")
            .typed<Quad(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                        const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool,
                        double, double, double, double, double, double, double)>();
    if (!grads[0].defined() && !grads[1].defined()) return tensor_list(13);
    const auto s = ctx->get_saved_variables();
    const at::Tensor& x = s[0];
    const at::Tensor g_out = grads[0].defined() ? grads[0] : at::zeros_like(x);
    const at::Tensor g_lad = grads[1].defined() ? grads[1] : at::zeros_like(x);
    const auto b = ctx->saved_data["bounds"].toDoubleVector();
    auto [gx, gw, gh, gd] =
        h.call(g_out, g_lad, x, s[1], s[2], s[3], ctx->saved_data["inverse"].toBool(),
               ctx->saved_data["linear_tails"].toBool(), b[0], b[1], b[2], b[3], b[4], b[5], b[6]);
    return needed(ctx, 13, {gx, gw, gh, gd});
  }
};

Pair rq_spline_autograd(const at::Tensor& x, const at::Tensor& uw, const at::Tensor& uh,
                        const at::Tensor& ud, bool inverse, bool linear_tails, double left,
                        double right, double bottom, double top, double min_w, double min_h,
                        double min_d) {
  auto r = RqSpline::apply(x, uw, uh, ud, inverse, linear_tails, left, right, bottom, top, min_w,
                           min_h, min_d);
  return {r[0], r[1]};
}

Pair affine_coupling_autograd(const at::Tensor& inputs, const at::Tensor& shift,
                              const at::Tensor& u, int64_t activation, double clamp,
                              bool inverse) {
  auto r = AffineCoupling::apply(inputs, shift, u, activation, clamp, inverse);
  return {r[0], r[1]};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, Autograd, m) {
  m.impl("affine_coupling", TORCH_FN(genfast::bindings::affine_coupling_autograd));
  m.impl("rq_spline", TORCH_FN(genfast::bindings::rq_spline_autograd));
}
