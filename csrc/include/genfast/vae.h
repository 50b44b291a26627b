// Per-element math of the vae family (genfast.vae.reparameterize_kl): the
// reparameterisation trick and the KL divergence to N(0, I) as one op
// (Kingma & Welling 2014, "Auto-Encoding Variational Bayes", sec. 2.4 and
// app. B), so each input gradient is produced once. One definition for the
// CPU loops and the CUDA kernels; no torch, no loops. Reference:
// genfast/reference/vae.py. The forward's formulas (z, d, the KL element) are
// training.h's, so z and kl equal genfast.vae.reparameterize / kl_divergence.
#pragma once
#include <stdint.h>

#include "genfast/macros.h"
#include "genfast/training.h"

namespace genfast {
namespace vae {

// Gradients of (z, kl) to (mu, logvar) for one element, with
//   z  = mu + d,  d = exp(clamp(lv) / 2) eps   (d saved by the forward)
//   kl = 0.5 (mu^2 + exp(clamp(lv)) - 1 - clamp(lv))   summed per item
// (exp(clamp lv) as training::var_lv, the KL's own form)
// gz: upstream grad of z at this element; s: upstream grad of the element's
// item KL (the reduction's factor applied). dz/dlv = d / 2 and
// dkl/dlv = (exp(clamp lv) - 1) / 2, both zero outside the clamp (ties count
// as inside, like torch.clamp). Outside, a select rather than a product with
// zero: a float16 d can overflow to inf there (exp(20 / 2) eps > 65504), and
// the gradient stays 0, not NaN.
template <typename A>
GENFAST_HD void reparam_kl_grads(A gz, A s, A mu, A lv, A d, A& g_mu, A& g_lv) {
  g_mu = gz + s * mu;
  const A e = training::var_lv(training::clamp_logvar(lv));
  const A g = (A)0.5 * (gz * d + s * (e - (A)1));
  g_lv = training::logvar_inside(lv) != (A)0 ? g : (A)0;
}

// Upstream grad of item i's KL from the grad of the reduced value: "none"
// per item, "sum" as is, "mean" divided by the item count.
GENFAST_HD double kl_item_grad(double g, int reduction, int64_t items) {
  return reduction == training::kReduceMean ? g / (double)items : g;
}

}  // namespace vae
}  // namespace genfast
