// CPU kernels of the training family: checks, per-item coefficients (host,
// float64, from csrc/include/genfast/training.h), threads, ISA choice.
// On the CPU the timesteps are host memory, so every one is range-checked here
// (a clear error, also under torch.compile) at no cost of a device sync.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "bindings/training_args.h"
#include "cpu/isa.h"
#include "cpu/training_kernels.h"
#include "genfast/training.h"

namespace genfast::bindings {
namespace {

namespace tr = genfast::training;

struct TrainingKernels {
  decltype(&cpu::baseline::affine2) affine2;
  decltype(&cpu::baseline::add_noise_seeded) add_noise_seeded;
  decltype(&cpu::baseline::sqdiff_partials) sqdiff_partials;
  decltype(&cpu::baseline::kl_partials) kl_partials;
  decltype(&cpu::baseline::sqdiff_partials_grad) sqdiff_partials_grad;
  decltype(&cpu::baseline::kl_partials_grad) kl_partials_grad;
  decltype(&cpu::baseline::scaled_diff) scaled_diff;
  decltype(&cpu::baseline::kl_backward) kl_backward;
  decltype(&cpu::baseline::reparameterize) reparameterize;
  decltype(&cpu::baseline::reparameterize_backward) reparameterize_backward;
};

#define GENFAST_TRAINING_TABLE(ISA)                                                         \
  TrainingKernels {                                                                        \
    cpu::ISA::affine2, cpu::ISA::add_noise_seeded, cpu::ISA::sqdiff_partials,              \
        cpu::ISA::kl_partials, cpu::ISA::sqdiff_partials_grad, cpu::ISA::kl_partials_grad,  \
        cpu::ISA::scaled_diff, cpu::ISA::kl_backward,                                      \
        cpu::ISA::reparameterize, cpu::ISA::reparameterize_backward                        \
  }

TrainingKernels kernels() {
  switch (cpu::active_isa()) {
#if defined(GENFAST_HAVE_X86_ISAS)
    case cpu::Isa::kAvx512: return GENFAST_TRAINING_TABLE(avx512);
    case cpu::Isa::kAvx2: return GENFAST_TRAINING_TABLE(avx2);
#endif
    default: return GENFAST_TRAINING_TABLE(baseline);
  }
}

constexpr int64_t kElemGrain = 16384;  // below this a second thread costs more than it saves
constexpr int64_t kQuadGrain = 4096;
constexpr int64_t kChunk = 16384;      // elements per partial sum (fixed: thread-count invariant)

const char* kKindNames[] = {"vp", "sigma", "flow"};

// Timestep b as a double, range-checked against the schedule.
std::vector<double> host_timesteps(const char* op, const at::Tensor& timesteps, int64_t kind,
                                   int64_t rows) {
  const at::Tensor t = timesteps.contiguous();
  const int64_t n = t.numel();
  std::vector<double> out(n);
  for (int64_t b = 0; b < n; ++b) {
    switch (t.scalar_type()) {
      case at::kLong: out[b] = (double)t.data_ptr<int64_t>()[b]; break;
      case at::kInt: out[b] = (double)t.data_ptr<int32_t>()[b]; break;
      case at::kFloat: out[b] = (double)t.data_ptr<float>()[b]; break;
      default: out[b] = t.data_ptr<double>()[b]; break;
    }
    if (!tr::timestep_valid((int)kind, out[b], rows)) {
      if (kind == tr::kVP) {
        TORCH_CHECK_VALUE(false, "genfast ", op, ": timesteps[", b, "] = ", out[b],
                          " is out of range: the schedule has timesteps 0..", rows - 1);
      }
      TORCH_CHECK_VALUE(false, "genfast ", op, ": timesteps[", b, "] = ", out[b], " is out of range ",
                  kind == tr::kSigma ? "(sigma must be finite and >= 0)" : "(flow t must be in [0, 1])",
                  " for a ", kKindNames[kind], " schedule");
    }
  }
  return out;
}

at::Tensor contig(const at::Tensor& t) { return t.contiguous(); }

cpu::StreamArgs stream_args(int64_t numel, int64_t seed, int64_t stream, int64_t sample_offset,
                            int64_t items) {
  constexpr int64_t k32 = int64_t{1} << 32;
  TORCH_CHECK(stream >= 0 && stream < k32, "genfast: stream must be in [0, 2**32), got ", stream);
  TORCH_CHECK(sample_offset >= 0 && sample_offset + items <= k32,
              "genfast: sample_offset + batch size must be <= 2**32, got ", sample_offset, " + ",
              items);
  TORCH_CHECK((numel + 3) / 4 <= k32, "genfast: at most 2**34 elements per item");
  const uint64_t s = static_cast<uint64_t>(seed);
  return cpu::StreamArgs{(numel + 3) / 4, static_cast<uint32_t>(s),
                         static_cast<uint32_t>(s >> 32), static_cast<uint32_t>(stream),
                         static_cast<uint32_t>(sample_offset)};
}

// ------------------------------------------------------------------ add_noise

std::vector<double> noise_coefs(const char* op, const at::Tensor& x0, const at::Tensor& timesteps,
                                const at::Tensor& table, int64_t kind, int64_t prediction) {
  check_timesteps(op, x0, timesteps, table, kind);
  TORCH_CHECK(prediction >= 0 && prediction <= 3, "genfast ", op, ": unknown prediction code ",
              prediction);
  TORCH_CHECK(x0.dim() >= 2, "genfast ", op,
              ": x0 needs a batch dimension and feature dimensions, got shape ", x0.sizes());
  const at::Tensor tab = table.contiguous();
  const std::vector<double> t = host_timesteps(op, timesteps, kind, tab.size(0));
  std::vector<double> k(4 * t.size());
  for (size_t b = 0; b < t.size(); ++b) {
    const tr::NoiseCoefs c = tr::add_noise_coefs((int)kind, (int)prediction, t[b],
                                                 tab.data_ptr<double>(), tab.size(0));
    k[4 * b] = c.a;
    k[4 * b + 1] = c.b;
    k[4 * b + 2] = c.c;
    k[4 * b + 3] = c.d;
  }
  return k;
}

std::tuple<at::Tensor, at::Tensor> add_noise_cpu(const at::Tensor& x0, const at::Tensor& noise,
                                                 const at::Tensor& timesteps,
                                                 const at::Tensor& table, int64_t kind,
                                                 int64_t prediction) {
  const int dt = training_dtype_code(x0.scalar_type(), true);
  check_same("add_noise", x0, "x0", noise, "noise");
  const std::vector<double> k = noise_coefs("add_noise", x0, timesteps, table, kind, prediction);
  const at::Tensor x = contig(x0), n = contig(noise);
  at::Tensor xt = at::empty(x0.sizes(), x0.options()), target = at::empty(x0.sizes(), x0.options());
  const cpu::Affine2Args a{x.data_ptr(), n.data_ptr(), xt.data_ptr(), target.data_ptr(),
                           k.data(), dt, item_layout(x0).numel};
  const auto f = kernels().affine2;
  at::parallel_for(0, x0.numel(), kElemGrain, [&](int64_t b, int64_t e) { f(a, b, e); });
  return {xt, target};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> add_noise_seeded_cpu(
    const at::Tensor& x0, const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
    int64_t prediction, int64_t seed, int64_t stream, int64_t sample_offset) {
  const int dt = training_dtype_code(x0.scalar_type(), true);
  const std::vector<double> k = noise_coefs("add_noise", x0, timesteps, table, kind, prediction);
  const ItemLayout l = item_layout(x0);
  const cpu::StreamArgs s = stream_args(l.numel, seed, stream, sample_offset, l.items);
  const at::Tensor x = contig(x0);
  // epsilon: the target is the noise; no third output written (see the schema in ops.cpp)
  const bool eps = prediction == 0;
  at::Tensor xt = at::empty(x0.sizes(), x0.options()), noise = at::empty(x0.sizes(), x0.options()),
             target = eps ? at::empty({0}, x0.options()) : at::empty(x0.sizes(), x0.options());
  const cpu::Affine2Args a{x.data_ptr(), nullptr, xt.data_ptr(),
                           eps ? nullptr : target.data_ptr(), k.data(), dt, l.numel};
  const auto f = kernels().add_noise_seeded;
  void* np = noise.data_ptr();
  at::parallel_for(0, l.items * s.quads_per_item, kQuadGrain,
                   [&](int64_t b, int64_t e) { f(a, np, s, b, e); });
  return {xt, noise, target};
}

// d/dx0 (wrt = 0) or d/dnoise (wrt = 1) of (x_t, target) = (a x0 + b n, c x0 + d n).
at::Tensor add_noise_backward_cpu(const std::optional<at::Tensor>& grad_xt,
                                  const std::optional<at::Tensor>& grad_target,
                                  const at::Tensor& timesteps, const at::Tensor& table,
                                  int64_t kind, int64_t prediction, int64_t wrt) {
  TORCH_CHECK(grad_xt.has_value() || grad_target.has_value(),
              "genfast add_noise_backward: needs grad_x_t or grad_target");
  TORCH_CHECK(wrt == 0 || wrt == 1, "genfast add_noise_backward: wrt must be 0 or 1");
  const at::Tensor& like = grad_xt.has_value() ? *grad_xt : *grad_target;
  const int dt = training_dtype_code(like.scalar_type(), true);
  if (grad_xt.has_value() && grad_target.has_value()) {
    check_same("add_noise_backward", *grad_xt, "grad_x_t", *grad_target, "grad_target");
  }
  std::vector<double> k = noise_coefs("add_noise_backward", like, timesteps, table, kind,
                                      prediction);
  const size_t items = k.size() / 4;
  // per item [coef of g_xt, coef of g_target, 0, 0]
  std::vector<double> g(4 * items, 0.0);
  for (size_t b = 0; b < items; ++b) {
    g[4 * b] = k[4 * b + wrt];
    g[4 * b + 1] = k[4 * b + 2 + wrt];
  }
  const bool both = grad_xt.has_value() && grad_target.has_value();
  if (!grad_xt.has_value()) {
    for (size_t b = 0; b < items; ++b) g[4 * b] = g[4 * b + 1];
  }
  const at::Tensor x = contig(grad_xt.has_value() ? *grad_xt : *grad_target);
  const at::Tensor y = both ? contig(*grad_target) : at::Tensor();
  at::Tensor out = at::empty(like.sizes(), like.options());
  const cpu::Affine2Args a{x.data_ptr(), both ? y.data_ptr() : nullptr, out.data_ptr(), nullptr,
                           g.data(), dt, item_layout(like).numel};
  const auto f = kernels().affine2;
  at::parallel_for(0, like.numel(), kElemGrain, [&](int64_t b, int64_t e) { f(a, b, e); });
  return out;
}

// ------------------------------------------------------------------ per-item reductions

// items along dim 0 for dim >= 1 (one per timestep); a 0-d tensor is one item.
ItemLayout reduce_layout(const at::Tensor& x) {
  if (x.dim() == 0) return {1, 1};
  return {x.size(0), x.size(0) == 0 ? 0 : x.numel() / x.size(0)};
}

// Per-item sums of (a - b)^2 or the KL elements; with `scale`, the pass also
// writes the gradient for an upstream grad of one (see cpu::ReduceArgs) into
// out1 (and out2 for the KL).
std::vector<double> item_sums(const at::Tensor& a, const at::Tensor& b, int dt, bool kl,
                              const double* scale = nullptr, at::Tensor* out1 = nullptr,
                              at::Tensor* out2 = nullptr) {
  const ItemLayout l = reduce_layout(a);
  std::vector<double> sums(l.items, 0.0);
  if (l.numel == 0 || l.items == 0) return sums;
  const int64_t chunks = (l.numel + kChunk - 1) / kChunk;
  std::vector<double> partials(l.items * chunks);
  const cpu::ReduceArgs r{a.data_ptr(), b.data_ptr(), dt, l.numel, kChunk,
                          out1 != nullptr ? out1->data_ptr() : nullptr,
                          out2 != nullptr ? out2->data_ptr() : nullptr, scale};
  const TrainingKernels k = kernels();
  const auto f = scale != nullptr ? (kl ? k.kl_partials_grad : k.sqdiff_partials_grad)
                                  : (kl ? k.kl_partials : k.sqdiff_partials);
  at::parallel_for(0, l.items * chunks, 1,
                   [&](int64_t j0, int64_t j1) { f(r, partials.data(), j0, j1); });
  for (int64_t i = 0; i < l.items; ++i) {
    for (int64_t c = 0; c < chunks; ++c) sums[i] += partials[i * chunks + c];
  }
  return sums;
}

at::Tensor reduce_items(const at::Tensor& like, const std::vector<double>& v, int64_t reduction) {
  const int64_t items = static_cast<int64_t>(v.size());
  at::Tensor out = reduced_output(like, items, reduction);
  double total = 0.0;
  for (double x : v) total += x;
  if (reduction == tr::kReduceMean) total = items > 0 ? total / (double)items : total / 0.0;
  const bool dbl = out.scalar_type() == at::kDouble;
  if (reduction == tr::kReduceNone) {
    for (int64_t i = 0; i < items; ++i) {
      if (dbl) out.data_ptr<double>()[i] = v[i];
      else out.data_ptr<float>()[i] = (float)v[i];
    }
  } else if (dbl) {
    *out.data_ptr<double>() = total;
  } else {
    *out.data_ptr<float>() = (float)total;
  }
  return out;
}

// Per-item gradient of the reduction times `factor[i]`.
std::vector<double> item_grads(const at::Tensor& grad, int64_t items, int64_t reduction,
                               const std::vector<double>& factor) {
  const at::Tensor g = grad.to(at::kDouble).contiguous();
  TORCH_CHECK(reduction == tr::kReduceNone ? g.numel() == items : g.numel() == 1,
              "genfast: grad has ", g.numel(), " elements for ", items, " items");
  std::vector<double> s(items);
  for (int64_t i = 0; i < items; ++i) {
    const double gi = reduction == tr::kReduceNone ? g.data_ptr<double>()[i] : *g.data_ptr<double>();
    s[i] = gi * factor[i] / (reduction == tr::kReduceMean ? (double)items : 1.0);
  }
  return s;
}

// item_grads for an upstream grad of one.
std::vector<double> unit_grads(int64_t items, int64_t reduction, std::vector<double> factor) {
  for (double& f : factor) f = f / (reduction == tr::kReduceMean ? (double)items : 1.0);
  return factor;
}

std::vector<double> loss_factors(const char* op, const at::Tensor& pred,
                                 const at::Tensor& timesteps, const at::Tensor& table,
                                 int64_t kind, int64_t weighting, int64_t prediction,
                                 double gamma, double sigma_data) {
  check_timesteps(op, pred, timesteps, table, kind);
  TORCH_CHECK(weighting >= 0 && weighting <= 2, "genfast ", op, ": unknown weighting code ",
              weighting);
  const at::Tensor tab = table.contiguous();
  const std::vector<double> t = host_timesteps(op, timesteps, kind, tab.size(0));
  const ItemLayout l = reduce_layout(pred);
  std::vector<double> w(t.size());
  for (size_t b = 0; b < t.size(); ++b) {
    w[b] = tr::loss_weight((int)kind, (int)weighting, (int)prediction, t[b],
                           tab.data_ptr<double>(), tab.size(0), gamma, sigma_data);
    TORCH_CHECK(w[b] < 1e300, "genfast ", op, ": the loss weight of timesteps[", b, "] = ", t[b],
                " is infinite (EDM weighting needs sigma > 0)");
    w[b] /= (double)(l.numel > 0 ? l.numel : 1);  // mean over the item's features
  }
  return w;
}

at::Tensor diffusion_loss_cpu(const at::Tensor& pred, const at::Tensor& target,
                              const at::Tensor& timesteps, const at::Tensor& table, int64_t kind,
                              int64_t weighting, int64_t prediction, double gamma,
                              double sigma_data, int64_t reduction) {
  const int dt = training_dtype_code(pred.scalar_type(), true);
  check_same("diffusion_loss", pred, "pred", target, "target");
  check_reduction("diffusion_loss", reduction);
  std::vector<double> w = loss_factors("diffusion_loss", pred, timesteps, table, kind, weighting,
                                       prediction, gamma, sigma_data);
  std::vector<double> s = item_sums(contig(pred), contig(target), dt, false);
  for (size_t i = 0; i < s.size(); ++i) s[i] *= w[i];
  return reduce_items(pred, s, reduction);
}

at::Tensor diffusion_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& pred,
                                       const at::Tensor& target, const at::Tensor& timesteps,
                                       const at::Tensor& table, int64_t kind, int64_t weighting,
                                       int64_t prediction, double gamma, double sigma_data,
                                       int64_t reduction) {
  const int dt = training_dtype_code(pred.scalar_type(), true);
  check_same("diffusion_loss_backward", pred, "pred", target, "target");
  check_reduction("diffusion_loss_backward", reduction);
  std::vector<double> w = loss_factors("diffusion_loss_backward", pred, timesteps, table, kind,
                                       weighting, prediction, gamma, sigma_data);
  for (double& x : w) x *= 2.0;
  const ItemLayout l = reduce_layout(pred);
  const std::vector<double> s = item_grads(grad, l.items, reduction, w);
  const at::Tensor p = contig(pred), t = contig(target);
  at::Tensor out = at::empty(pred.sizes(), pred.options());
  const cpu::ScaleArgs a{p.data_ptr(), t.data_ptr(), out.data_ptr(), nullptr, s.data(), dt,
                         l.numel};
  const auto f = kernels().scaled_diff;
  at::parallel_for(0, pred.numel(), kElemGrain, [&](int64_t b, int64_t e) { f(a, b, e); });
  return out;
}

// ------------------------------------------------------------------ VAE

at::Tensor kl_cpu(const at::Tensor& mu, const at::Tensor& logvar, int64_t reduction) {
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_same("kl_divergence", mu, "mu", logvar, "logvar");
  check_reduction("kl_divergence", reduction);
  return reduce_items(mu, item_sums(contig(mu), contig(logvar), dt, true), reduction);
}

std::tuple<at::Tensor, at::Tensor> kl_backward_cpu(const at::Tensor& grad, const at::Tensor& mu,
                                                   const at::Tensor& logvar, int64_t reduction) {
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_same("kl_divergence_backward", mu, "mu", logvar, "logvar");
  check_reduction("kl_divergence_backward", reduction);
  const ItemLayout l = reduce_layout(mu);
  const std::vector<double> s =
      item_grads(grad, l.items, reduction, std::vector<double>(l.items, 1.0));
  const at::Tensor m = contig(mu), v = contig(logvar);
  at::Tensor gm = at::empty(mu.sizes(), mu.options()), gv = at::empty(mu.sizes(), mu.options());
  const cpu::ScaleArgs a{m.data_ptr(), v.data_ptr(), gm.data_ptr(), gv.data_ptr(), s.data(), dt,
                         l.numel};
  const auto f = kernels().kl_backward;
  at::parallel_for(0, mu.numel(), kElemGrain, [&](int64_t b, int64_t e) { f(a, b, e); });
  return {gm, gv};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_impl(const at::Tensor& mu,
                                                       const at::Tensor& logvar, int64_t seed,
                                                       int64_t stream, int64_t sample_offset,
                                                       bool jacobian) {
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_same("reparameterize", mu, "mu", logvar, "logvar");
  const ItemLayout l = item_layout(mu);
  const cpu::StreamArgs s = stream_args(l.numel, seed, stream, sample_offset, l.items);
  const at::Tensor m = contig(mu), v = contig(logvar);
  at::Tensor z = at::empty(mu.sizes(), mu.options()), eps = at::empty(mu.sizes(), mu.options());
  if (mu.numel() == 0) return {z, eps};
  const cpu::ReparamArgs r{m.data_ptr(), v.data_ptr(), z.data_ptr(), eps.data_ptr(), dt, l.numel,
                          jacobian};
  const auto f = kernels().reparameterize;
  at::parallel_for(0, l.items * s.quads_per_item, kQuadGrain,
                   [&](int64_t b, int64_t e) { f(r, s, b, e); });
  return {z, eps};
}

std::tuple<at::Tensor, at::Tensor> reparameterize_cpu(const at::Tensor& mu,
                                                      const at::Tensor& logvar, int64_t seed,
                                                      int64_t stream, int64_t sample_offset) {
  return reparameterize_impl(mu, logvar, seed, stream, sample_offset, false);
}


at::Tensor reparameterize_backward_cpu(const at::Tensor& grad, const at::Tensor& logvar,
                                       const at::Tensor& eps) {
  const int dt = training_dtype_code(grad.scalar_type(), true);
  check_same("reparameterize_backward", logvar, "logvar", grad, "grad");
  check_same("reparameterize_backward", logvar, "logvar", eps, "eps");
  // The grad of z.sum() (and of any broadcast scalar) is one value expanded:
  // read it as one instead of writing and reading a whole contiguous copy.
  bool scalar = grad.numel() > 0;
  for (int64_t d = 0; d < grad.dim() && scalar; ++d) scalar = grad.stride(d) == 0;
  const at::Tensor g = scalar ? grad : contig(grad), v = contig(logvar), e = contig(eps);
  at::Tensor out = at::empty(grad.sizes(), grad.options());
  const cpu::ReparamArgs r{g.data_ptr(), v.data_ptr(), out.data_ptr(),
                           const_cast<void*>(e.data_ptr()), dt, scalar ? -1 : 0};
  const auto f = kernels().reparameterize_backward;
  at::parallel_for(0, grad.numel(), kElemGrain, [&](int64_t b, int64_t x) { f(r, b, x); });
  return out;
}

}  // namespace

// ------------------------------------------------------------------ fused forward + gradient
// The CPU autograd's forwards (bindings/training_autograd.cpp) when a gradient
// is wanted: plain functions, not ops (they run only on plain CPU tensors,
// outside tracing; the ops above are what torch.compile and the other
// devices see).

// The loss and, in the same pass, its gradient to pred for an upstream grad
// of one (diffusion_loss_backward's result for grad = 1, bit for bit): the
// forward of the CPU autograd, whose backward then only scales it.
std::tuple<at::Tensor, at::Tensor> diffusion_loss_with_grad_cpu(
    const at::Tensor& pred, const at::Tensor& target, const at::Tensor& timesteps,
    const at::Tensor& table, int64_t kind, int64_t weighting, int64_t prediction, double gamma,
    double sigma_data, int64_t reduction) {
  const int dt = training_dtype_code(pred.scalar_type(), true);
  check_same("diffusion_loss", pred, "pred", target, "target");
  check_reduction("diffusion_loss", reduction);
  std::vector<double> w = loss_factors("diffusion_loss", pred, timesteps, table, kind, weighting,
                                       prediction, gamma, sigma_data);
  const ItemLayout l = reduce_layout(pred);
  std::vector<double> factor(w);
  for (double& x : factor) x *= 2.0;
  const std::vector<double> scale = unit_grads(l.items, reduction, factor);
  at::Tensor grad = at::empty(pred.sizes(), pred.options());
  std::vector<double> s = item_sums(contig(pred), contig(target), dt, false, scale.data(), &grad);
  for (size_t i = 0; i < s.size(); ++i) s[i] *= w[i];
  return {reduce_items(pred, s, reduction), grad};
}

// The KL and, in the same pass, its gradients for an upstream grad of one
// (kl_divergence_backward's for grad = 1, bit for bit; one exp per element).
std::tuple<at::Tensor, at::Tensor, at::Tensor> kl_with_grad_cpu(const at::Tensor& mu,
                                                                const at::Tensor& logvar,
                                                                int64_t reduction) {
  const int dt = training_dtype_code(mu.scalar_type(), true);
  check_same("kl_divergence", mu, "mu", logvar, "logvar");
  check_reduction("kl_divergence", reduction);
  const ItemLayout l = reduce_layout(mu);
  const std::vector<double> scale =
      unit_grads(l.items, reduction, std::vector<double>(l.items, 1.0));
  at::Tensor gm = at::empty(mu.sizes(), mu.options()), gv = at::empty(mu.sizes(), mu.options());
  const std::vector<double> sums =
      item_sums(contig(mu), contig(logvar), dt, true, scale.data(), &gm, &gv);
  return {reduce_items(mu, sums, reduction), gm, gv};
}

// reparameterize with dz/dlogvar = d / 2 * [lv inside] (the backward's result
// for an upstream grad of one) as its second output instead of d.
std::tuple<at::Tensor, at::Tensor> reparameterize_with_grad_cpu(const at::Tensor& mu,
                                                                const at::Tensor& logvar,
                                                                int64_t seed, int64_t stream,
                                                                int64_t sample_offset) {
  return reparameterize_impl(mu, logvar, seed, stream, sample_offset, true);
}

}  // namespace genfast::bindings

TORCH_LIBRARY_IMPL(genfast, CPU, m) {
  using namespace genfast::bindings;
  m.impl("training_add_noise", &add_noise_cpu);
  m.impl("training_add_noise_seeded", &add_noise_seeded_cpu);
  m.impl("training_add_noise_backward", &add_noise_backward_cpu);
  m.impl("training_diffusion_loss", &diffusion_loss_cpu);
  m.impl("training_diffusion_loss_backward", &diffusion_loss_backward_cpu);
  m.impl("training_kl_divergence", &kl_cpu);
  m.impl("training_kl_divergence_backward", &kl_backward_cpu);
  m.impl("training_reparameterize", &reparameterize_cpu);
  m.impl("training_reparameterize_backward", &reparameterize_backward_cpu);
}
