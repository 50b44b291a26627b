"""Reference (pure PyTorch) training ops: the spec the kernels are tested against.

Codes (shared with csrc/include/genfast/training.h and the schemas):
kind 0 vp / 1 sigma / 2 flow; prediction 0 epsilon / 1 v_prediction / 2 sample
/ 3 flow; weighting 0 none / 1 min_snr / 2 edm; reduction 0 none / 1 mean / 2 sum.

Forward processes (x_t = a x0 + b eps, target = c x0 + d eps, per item):
* vp (Ho et al. 2020): a = sqrt(abar_t), b = sqrt(1 - abar_t), gathered from
  the schedule's float64 table by integer timestep;
* sigma (Karras et al. 2022): a = 1, b = sigma (the float timestep);
* flow (Lipman et al. 2023, Liu et al. 2023): a = 1 - t, b = t.
Targets: epsilon (0, 1); sample (1, 0); v (Salimans & Ho 2022) the velocity
alpha eps - sigma_vp x0 of the VP form (sigma space: (eps - sigma x0) /
sqrt(sigma^2 + 1)); flow eps - x0.

Everything is computed in float32 (float64 for float64 inputs) and cast back.
"""

from __future__ import annotations

import torch

KINDS = {"vp": 0, "sigma": 1, "flow": 2}
PREDICTIONS = {"epsilon": 0, "v_prediction": 1, "sample": 2, "flow": 3}
WEIGHTINGS = {"none": 0, "min_snr": 1, "edm": 2}
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # diffusers' DiagonalGaussianDistribution


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def valid(kind: int, t: torch.Tensor, rows: int) -> torch.Tensor:
    t = t.to(torch.float64)
    if kind == 0:
        return (t >= 0) & (t < rows)
    if kind == 1:
        return (t >= 0) & (t < 1e30)
    return (t >= 0) & (t <= 1)


def noise_coefs(kind: int, prediction: int, timesteps: torch.Tensor, table: torch.Tensor):
    """Per-item (a, b, c, d), float64, NaN where the timestep is out of range."""
    t = timesteps.to(torch.float64)
    ok = valid(kind, timesteps, table.shape[0])
    if kind == 0:
        row = table[timesteps.long().clamp(0, max(table.shape[0] - 1, 0))]
        a, b = row[:, 0], row[:, 1]
        v_eps, v_x0 = a, -b
    elif kind == 1:
        a, b = torch.ones_like(t), t
        s = 1.0 / torch.sqrt(t * t + 1.0)
        v_eps, v_x0 = s, -t * s
    else:
        a, b = 1.0 - t, t
        v_eps = v_x0 = torch.full_like(t, float("nan"))
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    c, d = {0: (zero, one), 1: (v_x0, v_eps), 2: (one, zero), 3: (-one, one)}[prediction]
    nan = torch.full_like(t, float("nan"))
    return tuple(torch.where(ok, x, nan) for x in (a, b, c, d))


def _per_item(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (x.dim() - 1))


def add_noise(x0, noise, timesteps, table, kind: int, prediction: int):
    """(x_t, target) for the given noise."""
    cd = compute_dtype(x0.dtype)
    a, b, c, d = (_per_item(k.to(cd), x0) for k in noise_coefs(kind, prediction, timesteps, table))
    x, n = x0.to(cd), noise.to(cd)
    return (a * x + b * n).to(x0.dtype), (c * x + d * n).to(x0.dtype)


def snr(kind: int, timesteps, table):
    t = timesteps.to(torch.float64)
    if kind == 0:
        return table[timesteps.long().clamp(0, table.shape[0] - 1), 2]
    if kind == 1:
        return 1.0 / (t * t)
    return ((1.0 - t) / t) ** 2


def loss_weights(kind, weighting, prediction, timesteps, table, gamma, sigma_data):
    """Per-item loss weights (float64): none 1; min-SNR-gamma (Hang et al. 2023)
    min(snr, g)/snr for epsilon (1 at snr = 0), min(snr, g)/(snr + 1) for v,
    min(snr, g) for sample; EDM (Karras et al. 2022) (s^2 + sd^2)/(s sd)^2."""
    t = timesteps.to(torch.float64)
    ok = valid(kind, timesteps, table.shape[0])
    if weighting == 0:
        w = torch.ones_like(t)
    elif weighting == 2:
        w = (t * t + sigma_data ** 2) / (t * t * sigma_data ** 2)
    else:
        s = snr(kind, timesteps, table)
        m = torch.minimum(s, torch.full_like(s, gamma))
        if prediction == 0:
            w = torch.where(s > 0, m / s, torch.ones_like(s))
        elif prediction == 1:
            w = m / (s + 1)
        else:
            w = m
    return torch.where(ok, w, torch.full_like(w, float("nan")))


def _items(x: torch.Tensor) -> torch.Tensor:
    """(items, features): items along the leading dimension (0-d: one item)."""
    n = x.shape[0] if x.dim() >= 1 else 1
    f = 1
    for s in x.shape[1:]:
        f *= s
    return x.reshape(n, f)


def _reduce(per_item: torch.Tensor, reduction: int) -> torch.Tensor:
    if reduction == 0:
        return per_item
    return per_item.mean() if reduction == 1 else per_item.sum()


def diffusion_loss(pred, target, timesteps, table, kind, weighting, prediction, gamma,
                   sigma_data, reduction):
    """Per item: mean over its features of (pred - target)^2, times its weight;
    then mean / sum over items, or the per-item values ("none"). float32 out
    (float64 for float64 inputs)."""
    cd = compute_dtype(pred.dtype)
    diff = pred.to(cd) - target.to(cd)
    per = _items(diff * diff).mean(dim=1)
    w = loss_weights(kind, weighting, prediction, timesteps, table, gamma, sigma_data).to(cd)
    return _reduce(per * w, reduction)


def kl_divergence(mu, logvar, reduction):
    """KL(N(mu, exp(lv)) || N(0, I)) per item (Kingma & Welling 2014, app. B):
    0.5 sum(mu^2 + exp(lv) - 1 - lv) over the item's features, lv clamped to
    [-30, 20] (diffusers' DiagonalGaussianDistribution); "sum" over items gives
    the familiar -0.5 sum(1 + lv - mu^2 - exp(lv))."""
    cd = compute_dtype(mu.dtype)
    m = mu.to(cd)
    lv = logvar.to(cd).clamp(LOGVAR_MIN, LOGVAR_MAX)
    per = _items(0.5 * (m * m + torch.exp(lv) - 1.0 - lv)).sum(dim=1)
    return _reduce(per, reduction)


def reparameterize(mu, logvar, eps):
    """z = mu + exp(clamp(lv, -30, 20) / 2) eps (Kingma & Welling 2014)."""
    cd = compute_dtype(mu.dtype)
    std = torch.exp(0.5 * logvar.to(cd).clamp(LOGVAR_MIN, LOGVAR_MAX))
    return (mu.to(cd) + std * eps.to(cd)).to(mu.dtype)
