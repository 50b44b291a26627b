// Autograd of the training ops, in C++ (one registration for every device):
// each forward op is a torch::autograd::Function whose backward calls the
// family's fused backward op through the dispatcher. The Python
// torch.library.register_autograd layer this replaces cost ~10 us a call
// (a Python autograd.Function, its setup_context and backward); the Triton
// ops (genfast/triton/training.py) keep that layer.
//
// Forwards redispatch below autograd (the device kernels); backwards call the
// backward ops normally, so create_graph sees them (they have no derivative
// of their own, as before).
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

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

using Pair = std::tuple<at::Tensor, at::Tensor>;
using Triple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

const c10::TypedOperatorHandle<at::Tensor(const std::optional<at::Tensor>&,
                                          const std::optional<at::Tensor>&, const at::Tensor&,
                                          const at::Tensor&, int64_t, int64_t, int64_t)>&
add_noise_backward_op() {
  static const auto h = op<at::Tensor(const std::optional<at::Tensor>&,
                                      const std::optional<at::Tensor>&, const at::Tensor&,
                                      const at::Tensor&, int64_t, int64_t, int64_t)>(
      "genfast::training_add_noise_backward");
  return h;
}

std::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// Gradients of (x_t, target) to x0 (wrt 0) or the noise (wrt 1).
at::Tensor noise_grad(const at::Tensor& g_xt, const at::Tensor& g_target,
                      const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
                      int64_t prediction, int64_t wrt) {
  return add_noise_backward_op().call(opt(g_xt), opt(g_target), timesteps, table, kind,
                                      prediction, wrt);
}

// ------------------------------------------------------------------ add_noise (given noise)

struct AddNoise : torch::autograd::Function<AddNoise> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x0, const at::Tensor& noise,
                             const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
                             int64_t prediction) {
    static const auto h = op<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  const at::Tensor&, int64_t, int64_t)>(
        "genfast::training_add_noise");
    ctx->save_for_backward({timesteps, table});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["prediction"] = prediction;
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [xt, target] = h.call(x0, noise, timesteps, table, kind, prediction);
    return {xt, target};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const int64_t kind = ctx->saved_data["kind"].toInt();
    const int64_t pred = ctx->saved_data["prediction"].toInt();
    tensor_list out(6);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    for (int64_t wrt = 0; wrt < 2; ++wrt) {
      if (ctx->needs_input_grad(wrt)) {
        out[wrt] = noise_grad(grads[0], grads[1], saved[0], saved[1], kind, pred, wrt);
      }
    }
    return out;
  }
};

Pair add_noise_autograd(const at::Tensor& x0, const at::Tensor& noise, const at::Tensor& timesteps,
                        const at::Tensor& table, int64_t kind, int64_t prediction) {
  auto r = AddNoise::apply(x0, noise, timesteps, table, kind, prediction);
  return {r[0], r[1]};
}

// ------------------------------------------------------------------ add_noise (in-kernel noise)

struct AddNoiseSeeded : torch::autograd::Function<AddNoiseSeeded> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& x0,
                             const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
                             int64_t prediction, c10::SymInt seed, c10::SymInt stream,
                             c10::SymInt sample_offset) {
    static const auto h =
        op<Triple(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                  c10::SymInt, c10::SymInt, c10::SymInt)>("genfast::training_add_noise_seeded");
    ctx->save_for_backward({timesteps, table});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["prediction"] = prediction;
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [xt, noise, target] = h.call(x0, timesteps, table, kind, prediction, std::move(seed),
                                      std::move(stream), std::move(sample_offset));
    ctx->mark_non_differentiable({noise});  // drawn from the stream: no input behind it
    return {xt, noise, target};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    tensor_list out(8);
    if (!ctx->needs_input_grad(0) || (!grads[0].defined() && !grads[2].defined())) return out;
    const auto saved = ctx->get_saved_variables();
    out[0] = noise_grad(grads[0], grads[2], saved[0], saved[1],
                        ctx->saved_data["kind"].toInt(), ctx->saved_data["prediction"].toInt(), 0);
    return out;
  }
};

Triple add_noise_seeded_autograd(const at::Tensor& x0, const at::Tensor& timesteps,
                                 const at::Tensor& table, int64_t kind, int64_t prediction,
                                 c10::SymInt seed, c10::SymInt stream, c10::SymInt sample_offset) {
  auto r = AddNoiseSeeded::apply(x0, timesteps, table, kind, prediction, std::move(seed),
                                 std::move(stream), std::move(sample_offset));
  return {r[0], r[1], r[2]};
}

// ------------------------------------------------------------------ diffusion_loss

struct DiffusionLoss : torch::autograd::Function<DiffusionLoss> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& pred,
                             const at::Tensor& target, const at::Tensor& timesteps,
                             const at::Tensor& table, int64_t kind, int64_t weighting,
                             int64_t prediction, double gamma, double sigma_data,
                             int64_t reduction) {
    static const auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      int64_t, int64_t, int64_t, double, double, int64_t)>(
            "genfast::training_diffusion_loss");
    ctx->save_for_backward({pred, target, timesteps, table});
    ctx->saved_data["kind"] = kind;
    ctx->saved_data["weighting"] = weighting;
    ctx->saved_data["prediction"] = prediction;
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["sigma_data"] = sigma_data;
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView guard;
    return {h.call(pred, target, timesteps, table, kind, weighting, prediction, gamma, sigma_data,
                   reduction)};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      const at::Tensor&, int64_t, int64_t, int64_t, double, double, int64_t)>(
            "genfast::training_diffusion_loss_backward");
    const auto s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const at::Tensor g =
        h.call(grads[0], s[0], s[1], s[2], s[3], d["kind"].toInt(), d["weighting"].toInt(),
               d["prediction"].toInt(), d["gamma"].toDouble(), d["sigma_data"].toDouble(),
               d["reduction"].toInt());
    tensor_list out(10);
    if (ctx->needs_input_grad(1)) out[1] = -g;
    if (ctx->needs_input_grad(0)) out[0] = g;
    return out;
  }
};

at::Tensor diffusion_loss_autograd(const at::Tensor& pred, const at::Tensor& target,
                                   const at::Tensor& timesteps, const at::Tensor& table,
                                   int64_t kind, int64_t weighting, int64_t prediction,
                                   double gamma, double sigma_data, int64_t reduction) {
  return DiffusionLoss::apply(pred, target, timesteps, table, kind, weighting, prediction, gamma,
                              sigma_data, reduction)[0];
}

// ------------------------------------------------------------------ VAE

struct KlDivergence : torch::autograd::Function<KlDivergence> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                             int64_t reduction) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "genfast::training_kl_divergence");
    ctx->save_for_backward({mu, logvar});
    ctx->saved_data["reduction"] = reduction;
    at::AutoDispatchBelowADInplaceOrView guard;
    return {h.call(mu, logvar, reduction)};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        op<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>(
            "genfast::training_kl_divergence_backward");
    const auto s = ctx->get_saved_variables();
    auto [gm, gv] = h.call(grads[0], s[0], s[1], ctx->saved_data["reduction"].toInt());
    return {ctx->needs_input_grad(0) ? gm : at::Tensor(),
            ctx->needs_input_grad(1) ? gv : at::Tensor(), at::Tensor()};
  }
};

at::Tensor kl_divergence_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                  int64_t reduction) {
  return KlDivergence::apply(mu, logvar, reduction)[0];
}

struct Reparameterize : torch::autograd::Function<Reparameterize> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                             c10::SymInt seed, c10::SymInt stream, c10::SymInt sample_offset) {
    static const auto h =
        op<Pair(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt, c10::SymInt)>(
            "genfast::training_reparameterize");
    ctx->set_materialize_grads(false);
    at::Tensor z, d;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(z, d) = h.call(mu, logvar, std::move(seed), std::move(stream),
                              std::move(sample_offset));
    }
    // d = exp(logvar / 2) eps: the backward to logvar is g d / 2 inside the
    // clamp (one elementwise pass: no second run of Philox, no exp).
    ctx->mark_non_differentiable({d});
    ctx->save_for_backward({logvar, d});
    return {z, d};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "genfast::training_reparameterize_backward");
    tensor_list out(5);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(1)) {
      const auto s = ctx->get_saved_variables();
      out[1] = h.call(grads[0], s[0], s[1]);
    }
    if (ctx->needs_input_grad(0)) out[0] = grads[0];
    return out;
  }
};

Pair reparameterize_autograd(const at::Tensor& mu, const at::Tensor& logvar, c10::SymInt seed,
                             c10::SymInt stream, c10::SymInt sample_offset) {
  auto r = Reparameterize::apply(mu, logvar, std::move(seed), std::move(stream),
                                 std::move(sample_offset));
  return {r[0], r[1]};
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, Autograd, m) {
  using namespace genfast::bindings;
  m.impl("training_add_noise", TORCH_FN(add_noise_autograd));
  m.impl("training_add_noise_seeded", TORCH_FN(add_noise_seeded_autograd));
  m.impl("training_diffusion_loss", TORCH_FN(diffusion_loss_autograd));
  m.impl("training_kl_divergence", TORCH_FN(kl_divergence_autograd));
  m.impl("training_reparameterize", TORCH_FN(reparameterize_autograd));
}
