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
//
// On plain CPU tensors, the forwards of diffusion_loss and kl_divergence,
// when a gradient is wanted, also write it for an upstream grad of one in the
// same pass (training_args.h); the backward then hands that buffer on as is
// (grad one, the common `loss.backward()`) or scales it in place: no second
// pass over the inputs, no second exp, and one allocation fewer than a
// backward that allocates its result. reparameterize's backward writes into
// the saved d it owns. Everything else (other devices, tracing, create_graph,
// retain_graph) takes the backward ops as before. For float16 / bfloat16 and
// an upstream grad other than one the buffer is rounded twice (an ulp).
#include <ATen/ATen.h>
#include <ATen/TensorSubclassLikeUtils.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "bindings/training_args.h"

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

// A dense CPU tensor behind no wrapper (fake, functional, vmap, grad
// transform), with no such mode active: the fused CPU paths run on it.
bool plain_cpu(const at::Tensor& t) {
  if (!t.defined() || !t.is_cpu() || t.layout() != at::kStrided || at::isTensorSubclassLike(t)) {
    return false;
  }
  const c10::DispatchKeySet modes({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot,
                                   c10::DispatchKey::Functionalize,
                                   c10::DispatchKey::FuncTorchDynamicLayerFrontMode});
  return !c10::impl::tls_local_dispatch_key_set().included_.has_any(modes);
}

bool plain_cpu(std::initializer_list<at::Tensor> ts) {
  for (const auto& t : ts) {
    if (!plain_cpu(t)) return false;
  }
  return true;
}

// Will autograd record this call (grad mode on, an input requiring grad)?
bool wants_grad(std::initializer_list<at::Tensor> ts) {
  if (!at::GradMode::is_enabled()) return false;
  for (const auto& t : ts) {
    if (t.requires_grad()) return true;
  }
  return false;
}

// In a backward: may it overwrite its saved buffers and hand them out? Not
// when the graph is kept (a second backward reads them again) or when the
// backward itself is recorded (create_graph).
bool backward_owns_buffers() {
  return !at::GradMode::is_enabled() && !torch::autograd::get_current_graph_task_keep_graph();
}

// True when every element of `g` (a CPU tensor) is 1: checked only for one
// value, or one value expanded (the grad of a mean or a sum).
bool all_ones(const at::Tensor& g) {
  bool one_value = g.numel() > 0;
  for (int64_t d = 0; d < g.dim() && one_value; ++d) one_value = g.size(d) == 1 || g.stride(d) == 0;
  if (!one_value) return false;
  switch (g.scalar_type()) {
    case at::kFloat: return *static_cast<const float*>(g.const_data_ptr()) == 1.0f;
    case at::kDouble: return *static_cast<const double*>(g.const_data_ptr()) == 1.0;
    default: return false;
  }
}

// `buf`, the gradient for an upstream grad of one, for the upstream grad `g`
// (per item along dim 0 when `per_item`: reduction "none").
at::Tensor scale_buffer(at::Tensor buf, const at::Tensor& g, bool per_item) {
  at::Tensor s = g;
  if (per_item && buf.dim() >= 1) {
    std::vector<int64_t> shape(buf.dim(), 1);
    shape[0] = buf.size(0);
    s = g.reshape(shape);
  }
  if (backward_owns_buffers() && plain_cpu(g)) {
    if (all_ones(g)) return buf;
    return buf.mul_(s);
  }
  return at::mul(buf, s).to(buf.scalar_type());
}

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
    // noise is drawn from the stream: no input behind it; for epsilon the
    // target is empty (the caller's target is the noise)
    if (prediction == 0) {
      ctx->mark_non_differentiable({noise, target});
    } else {
      ctx->mark_non_differentiable({noise});
    }
    return {xt, noise, target};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    tensor_list out(8);
    const int64_t prediction = ctx->saved_data["prediction"].toInt();
    const at::Tensor g_target = prediction == 0 ? at::Tensor() : grads[2];  // epsilon: empty
    if (!ctx->needs_input_grad(0) || (!grads[0].defined() && !g_target.defined())) return out;
    const auto saved = ctx->get_saved_variables();
    out[0] = noise_grad(grads[0], g_target, saved[0], saved[1],
                        ctx->saved_data["kind"].toInt(), prediction, 0);
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
                             int64_t reduction, bool fuse) {
    static const auto h =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                      int64_t, int64_t, int64_t, double, double, int64_t)>(
            "genfast::training_diffusion_loss");
    if (fuse) {
      auto [loss, grad] = diffusion_loss_with_grad_cpu(pred, target, timesteps, table, kind,
                                                       weighting, prediction, gamma, sigma_data,
                                                       reduction);
      ctx->save_for_backward({grad});
      ctx->saved_data["reduction"] = reduction;
      return {loss};
    }
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
    tensor_list out(11);
    if (s.size() == 1) {  // the fused CPU forward's gradient
      const at::Tensor g = scale_buffer(s[0], grads[0], d["reduction"].toInt() == 0);
      if (ctx->needs_input_grad(1)) out[1] = -g;
      if (ctx->needs_input_grad(0)) out[0] = g;
      return out;
    }
    const at::Tensor g =
        h.call(grads[0], s[0], s[1], s[2], s[3], d["kind"].toInt(), d["weighting"].toInt(),
               d["prediction"].toInt(), d["gamma"].toDouble(), d["sigma_data"].toDouble(),
               d["reduction"].toInt());
    if (ctx->needs_input_grad(1)) out[1] = -g;
    if (ctx->needs_input_grad(0)) out[0] = g;
    return out;
  }
};

at::Tensor diffusion_loss_autograd(const at::Tensor& pred, const at::Tensor& target,
                                   const at::Tensor& timesteps, const at::Tensor& table,
                                   int64_t kind, int64_t weighting, int64_t prediction,
                                   double gamma, double sigma_data, int64_t reduction) {
  const bool fuse = wants_grad({pred, target}) && plain_cpu({pred, target, timesteps, table});
  return DiffusionLoss::apply(pred, target, timesteps, table, kind, weighting, prediction, gamma,
                              sigma_data, reduction, fuse)[0];
}

// ------------------------------------------------------------------ VAE

struct KlDivergence : torch::autograd::Function<KlDivergence> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                             int64_t reduction, bool fuse) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "genfast::training_kl_divergence");
    ctx->saved_data["reduction"] = reduction;
    if (fuse) {
      auto [kl, gm, gv] = kl_with_grad_cpu(mu, logvar, reduction);
      ctx->save_for_backward({gm, gv});
      ctx->saved_data["fused"] = true;
      return {kl};
    }
    ctx->save_for_backward({mu, logvar});
    at::AutoDispatchBelowADInplaceOrView guard;
    return {h.call(mu, logvar, reduction)};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h =
        op<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>(
            "genfast::training_kl_divergence_backward");
    const auto s = ctx->get_saved_variables();
    if (ctx->saved_data.count("fused")) {  // the fused CPU forward's gradients
      const bool per_item = ctx->saved_data["reduction"].toInt() == 0;
      return {ctx->needs_input_grad(0) ? scale_buffer(s[0], grads[0], per_item) : at::Tensor(),
              ctx->needs_input_grad(1) ? scale_buffer(s[1], grads[0], per_item) : at::Tensor(),
              at::Tensor(), at::Tensor()};
    }
    auto [gm, gv] = h.call(grads[0], s[0], s[1], ctx->saved_data["reduction"].toInt());
    return {ctx->needs_input_grad(0) ? gm : at::Tensor(),
            ctx->needs_input_grad(1) ? gv : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor kl_divergence_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                  int64_t reduction) {
  const bool fuse = wants_grad({mu, logvar}) && plain_cpu({mu, logvar});
  return KlDivergence::apply(mu, logvar, reduction, fuse)[0];
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

// training_reparameterize_sample, the wrappers' op: z alone, so what the
// backward needs stays private to the node. On plain CPU tensors that is
// dz/dlogvar = d / 2 * [lv inside], written by the forward's pass (the
// backward's result for a grad of one: handed on as is, or scaled in place);
// elsewhere d, from training_reparameterize, and the backward op.
struct ReparameterizeSample : torch::autograd::Function<ReparameterizeSample> {
  static tensor_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                             c10::SymInt seed, c10::SymInt stream, c10::SymInt sample_offset,
                             bool fuse) {
    static const auto h =
        op<Pair(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt, c10::SymInt)>(
            "genfast::training_reparameterize");
    ctx->set_materialize_grads(false);
    if (fuse) {
      auto [z, jac] = reparameterize_with_grad_cpu(mu, logvar, seed.expect_int(),
                                                   stream.expect_int(), sample_offset.expect_int());
      ctx->save_for_backward({jac});
      ctx->saved_data["fused"] = true;
      return {z};
    }
    at::Tensor z, d;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(z, d) = h.call(mu, logvar, std::move(seed), std::move(stream),
                              std::move(sample_offset));
    }
    ctx->save_for_backward({logvar, d});
    return {z};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    static const auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "genfast::training_reparameterize_backward");
    tensor_list out(6);
    if (!grads[0].defined()) return out;
    if (ctx->needs_input_grad(1)) {
      const auto s = ctx->get_saved_variables();
      out[1] = ctx->saved_data.count("fused") ? scale_buffer(s[0], grads[0], false)
                                              : h.call(grads[0], s[0], s[1]);
    }
    if (ctx->needs_input_grad(0)) out[0] = grads[0];
    return out;
  }
};

at::Tensor reparameterize_sample_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                          c10::SymInt seed, c10::SymInt stream,
                                          c10::SymInt sample_offset) {
  const bool fuse = wants_grad({mu, logvar}) && plain_cpu({mu, logvar}) && !seed.is_symbolic() &&
                    !stream.is_symbolic() && !sample_offset.is_symbolic();
  return ReparameterizeSample::apply(mu, logvar, std::move(seed), std::move(stream),
                                     std::move(sample_offset), fuse)[0];
}

// Below autograd (and with no grad wanted): training_reparameterize's z.
at::Tensor reparameterize_sample(const at::Tensor& mu, const at::Tensor& logvar, c10::SymInt seed,
                                 c10::SymInt stream, c10::SymInt sample_offset) {
  static const auto h =
      op<Pair(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt, c10::SymInt)>(
          "genfast::training_reparameterize");
  return std::get<0>(h.call(mu, logvar, std::move(seed), std::move(stream),
                            std::move(sample_offset)));
}

}  // namespace
}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CompositeExplicitAutograd, m) {
  m.impl("training_reparameterize_sample", TORCH_FN(genfast::bindings::reparameterize_sample));
}

TORCH_LIBRARY_IMPL(genfast, Autograd, m) {
  using namespace genfast::bindings;
  m.impl("training_reparameterize_sample", TORCH_FN(reparameterize_sample_autograd));
  m.impl("training_add_noise", TORCH_FN(add_noise_autograd));
  m.impl("training_add_noise_seeded", TORCH_FN(add_noise_seeded_autograd));
  m.impl("training_diffusion_loss", TORCH_FN(diffusion_loss_autograd));
  m.impl("training_kl_divergence", TORCH_FN(kl_divergence_autograd));
  m.impl("training_reparameterize", TORCH_FN(reparameterize_autograd));
}
