"""Sample-quality metrics on held-out data.

Energy distance (Szekely & Rizzo 2013, "Energy statistics: A class of
statistics based on distances", J. Stat. Plan. Inference 143(8)) between the
distributions of X and Y, with the Euclidean norm:

    D^2(X, Y) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|  >= 0,

zero exactly when the distributions are equal. It is the squared MMD of the
distance-induced kernel k(x, y) = -|x - y| (Sejdinovic et al. 2013, "Equivalence
of distance-based and RKHS-based statistics in hypothesis testing"), so it
needs no bandwidth. Estimated here as a U-statistic: the cross term averages
all n m pairs, the within terms all pairs i != j, which makes it unbiased
(it can dip slightly below 0 for two samples of one distribution).

Closed forms used by the tests (derivations in tests/test_compare_models.py):
for X ~ N(0, I_d), Y ~ N(m, I_d), X - Y ~ N(-m, 2 I_d), so E|X - Y| is the
mean of a folded normal (d = 1; Leone, Nelson & Nottingham 1961) or of a Rice
distribution (d = 2; Rice 1945) with scale sqrt(2); `energy_distance_gaussians`
evaluates them.
"""

from __future__ import annotations

import math

import torch


def _mean_pairwise(a: torch.Tensor, b: torch.Tensor, exclude_diagonal: bool,
                   chunk: int = 4096) -> torch.Tensor:
    """Mean of |a_i - b_j| over all pairs (i != j when exclude_diagonal), in
    float64 and in row chunks so 20k x 20k never materialises at once."""
    a, b = a.double(), b.double()
    total = a.new_zeros(())
    for s in range(0, a.shape[0], chunk):
        total = total + torch.cdist(a[s:s + chunk], b).sum()
    pairs = a.shape[0] * b.shape[0] - (a.shape[0] if exclude_diagonal else 0)
    return total / pairs


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """U-statistic of D^2(X, Y) (module docstring) from samples x (n, d), y (m, d)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must be (n, d) and (m, d), got {tuple(x.shape)}, "
                         f"{tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("energy distance needs at least 2 samples on each side")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
        return math.inf  # a model that emits inf/NaN is infinitely far off
    xy = _mean_pairwise(x, y, False)
    xx = _mean_pairwise(x, x, True)
    yy = _mean_pairwise(y, y, True)
    return float(2 * xy - xx - yy)


def energy_distance_gaussians(m: torch.Tensor | list) -> float:
    """Closed-form D^2 between N(0, I_d) and N(m, I_d) for d = 1 or 2."""
    m = torch.as_tensor(m, dtype=torch.float64).reshape(-1)
    r = float(torch.linalg.vector_norm(m))
    if m.numel() == 1:
        # E|Z|, Z ~ N(mu, s^2) (folded normal): s sqrt(2/pi) exp(-mu^2/(2 s^2))
        # + mu erf(mu / (s sqrt 2)); with s^2 = 2: 2/sqrt(pi) e^{-r^2/4} + r erf(r/2)
        cross = 2 / math.sqrt(math.pi) * math.exp(-r * r / 4) + r * math.erf(r / 2)
        within = 2 / math.sqrt(math.pi)
    elif m.numel() == 2:
        # Rice mean with scale s, offset r: s sqrt(pi/2) L_{1/2}(-r^2/(2 s^2)),
        # L_{1/2}(-a) = e^{-a/2} [(1 + a) I0(a/2) + a I1(a/2)]; s^2 = 2, a = r^2/4
        a = torch.tensor(r * r / 4, dtype=torch.float64)
        lag = float((1 + a) * torch.special.i0e(a / 2) + a * torch.special.i1e(a / 2))
        cross = math.sqrt(math.pi) * lag
        within = math.sqrt(math.pi)
    else:
        raise ValueError("closed form implemented for d = 1 and d = 2")
    return 2 * cross - 2 * within


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float,
                  min_fraction: float = 0.2) -> tuple[int, float]:
    """(modes covered, fraction of high-quality samples) for a mixture of
    isotropic Gaussians of equal weight, as in Srivastava et al. 2017 (VEEGAN):
    a sample is high-quality when it lies within 3 std of its nearest centre;
    a mode is covered when it receives at least ``min_fraction`` of its fair
    share (n / modes) of high-quality samples."""
    samples = samples[torch.isfinite(samples).all(1)]
    if samples.shape[0] == 0:
        return 0, 0.0
    d = torch.cdist(samples.double(), centers.double())
    dist, nearest = d.min(1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])
    fair = samples.shape[0] / centers.shape[0]
    return int((counts >= min_fraction * fair).sum()), float(good.double().mean())


def mean_nearest_distance(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean Euclidean distance from each sample to its nearest reference point:
    how far samples land from the data (a precision proxy: it ignores missed
    modes, so a collapsed model scores well here, unlike the energy distance)."""
    d = torch.cdist(samples.double(), reference.double())
    return float(d.min(1).values.mean())
