"""Reference (pure PyTorch) vae ops: the spec of genfast.vae.reparameterize_kl.

The reparameterisation trick and the KL divergence to N(0, I) of one diagonal
Gaussian posterior, as VAE training uses the pair (Kingma & Welling 2014,
"Auto-Encoding Variational Bayes", sec. 2.4 and app. B):

    z  = mu + exp(clamp(lv) / 2) eps
    kl = per item 0.5 sum(mu^2 + exp(clamp(lv)) - 1 - clamp(lv)), then the reduction

lv clamped to [-30, 20] (diffusers' DiagonalGaussianDistribution); the
gradient is zero outside the clamp. Reduction codes 0 none / 1 mean / 2 sum.
Computed in float32 (float64 for float64 inputs); z in the input dtype, kl in
float32 (float64). ``reparameterize_kl_backward`` is the backward in closed
form, the spec of the fused backward kernels.
"""

from __future__ import annotations

import torch

from . import training as _tr


def reparameterize_kl(mu, logvar, eps, reduction: int):
    """(z, kl) for the given normals eps (autograd flows through it)."""
    return _tr.reparameterize(mu, logvar, eps), _tr.kl_divergence(mu, logvar, reduction)


def reparameterize_kl_backward(grad_z, grad_kl, mu, logvar, d, reduction: int):
    """(grad_mu, grad_logvar) of (z, kl) with d = exp(clamp(lv) / 2) eps:
    grad_mu = gz + s mu, grad_lv = (gz d + s (exp(clamp lv) - 1)) / 2 inside
    the clamp, s the upstream grad of each item's KL (per item for "none",
    divided by the item count for "mean"). grad_z / grad_kl may be None."""
    cd = _tr.compute_dtype(mu.dtype)
    m, lv, dd = mu.to(cd), logvar.to(cd), d.to(cd)
    n = mu.shape[0] if mu.dim() >= 1 else 1
    gz = torch.zeros((), dtype=cd) if grad_z is None else grad_z.to(cd)
    if grad_kl is None:
        s = torch.zeros((), dtype=cd)
    elif reduction == 0:
        s = grad_kl.to(cd).reshape(tuple(mu.shape[:1]) + (1,) * max(mu.dim() - 1, 0))
    else:
        s = grad_kl.to(cd).reshape(()) / (n if reduction == 1 else 1)
    inside = (lv >= _tr.LOGVAR_MIN) & (lv <= _tr.LOGVAR_MAX)
    e = torch.exp(lv.clamp(_tr.LOGVAR_MIN, _tr.LOGVAR_MAX))
    g_mu = (gz + s * m).expand(mu.shape)
    # a select, not a product with 0: an overflowed float16 d (inf) gives 0 outside
    g_lv = torch.where(inside, 0.5 * (gz * dd + s * (e - 1.0)), 0.0).expand(mu.shape)
    return g_mu.to(mu.dtype), g_lv.to(mu.dtype)
