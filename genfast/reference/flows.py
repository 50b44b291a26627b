"""Reference normalizing-flow transforms (spec: shared/reference/flows.md).

Rational-quadratic spline: Durkan, Bekasov, Murray, Papamakarios, "Neural
Spline Flows", NeurIPS 2019, computed as nflows 0.14 does. Affine coupling:
Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", ICLR 2017
(with the scale activations of nflows, FrEIA and Glow, Kingma & Dhariwal
2018); additive coupling: Dinh, Krueger, Bengio, "NICE", 2014.

Plain PyTorch with autograd, written branch-free (torch.where over regions, no
boolean-mask indexing, no host sync) so it also compiles with torch.compile.
Where nflows is fragile this spec is not: the inverse uses the stable root and
clamps the discriminant at 0, theta is clamped to [0, 1], and every branch of
a torch.where is finite so gradients stay finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = ("none", "sigmoid", "exp", "atan", "tanh", "soft_sigmoid", "glow")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tail_logit(min_derivative: float) -> float:
    """The padded derivative logit that makes the boundary derivative 1 (nflows)."""
    return math.log(math.expm1(1.0 - min_derivative))


def knots(unnormalized: torch.Tensor, lo: float, hi: float, min_bin: float) -> torch.Tensor:
    """(..., K) logits -> (..., K + 1) knots on [lo, hi]: softmax, at least
    ``min_bin`` of the interval per bin, cumulative sum, ends pinned to lo, hi."""
    k = unnormalized.shape[-1]
    sizes = min_bin + (1.0 - min_bin * k) * torch.softmax(unnormalized, dim=-1)
    inner = (hi - lo) * torch.cumsum(sizes, dim=-1)[..., :-1] + lo
    shape = inner.shape[:-1] + (1,)
    return torch.cat([inner.new_full(shape, lo), inner, inner.new_full(shape, hi)], dim=-1)


def knot_derivatives(unnormalized: torch.Tensor, linear_tails: bool,
                     min_derivative: float) -> torch.Tensor:
    """(..., K - 1) with linear tails or (..., K + 1) -> (..., K + 1) derivatives."""
    if linear_tails:
        unnormalized = F.pad(unnormalized, (1, 1), value=tail_logit(min_derivative))
    return min_derivative + F.softplus(unnormalized)


def _pick(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.gather(-1, idx[..., None])[..., 0]


def _rq_lad(theta, s, dk, dk1):
    t = theta * (1 - theta)
    den = s + (dk + dk1 - 2 * s) * t
    m = dk1 * theta**2 + 2 * s * t + dk * (1 - theta) ** 2
    q = s / den  # in (0, 2]: no 0 / 0 anywhere
    return torch.log(q * q * m)


def rq_spline(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
              inverse: bool = False, linear_tails: bool = True, left: float = -1.0,
              right: float = 1.0, bottom: float = -1.0, top: float = 1.0,
              min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
              min_derivative: float = 1e-3):
    """Elementwise monotone rational-quadratic spline and its log|dy/dx|.

    inputs (...,), unnormalized_widths / heights (..., K), derivatives
    (..., K - 1) with linear tails (identity outside [left, right], lad 0) or
    (..., K + 1) bounded (outside the domain: linear continuation with the
    boundary derivative). In bin k, theta = (x - x_k) / w_k, s = h_k / w_k:
        y = y_k + h_k (s theta^2 + d_k theta (1 - theta)) / den,
        den = s + (d_k + d_k1 - 2 s) theta (1 - theta),
        lad = log(s^2 (d_k1 theta^2 + 2 s theta (1 - theta) + d_k (1 - theta)^2)) - 2 log den.
    The inverse solves the quadratic for theta with the stable root. Returns
    (outputs, logabsdet) in the inputs' dtype, computed in float32 (float64
    stays float64).
    """
    dtype = inputs.dtype
    ct = compute_dtype(dtype)
    x = inputs.to(ct)
    k = unnormalized_widths.shape[-1]
    cw = knots(unnormalized_widths.to(ct), left, right, min_bin_width)
    ch = knots(unnormalized_heights.to(ct), bottom, top, min_bin_height)
    d = knot_derivatives(unnormalized_derivatives.to(ct), linear_tails, min_derivative)
    search, lo, hi = (ch, bottom, top) if inverse else (cw, left, right)
    # bin = interior knots passed: in [0, K - 1] for every input (nflows'
    # searchsorted, with the tails and the domain edges folded in)
    idx = (x[..., None] >= search[..., 1:k]).sum(-1)
    xk, yk = _pick(cw, idx), _pick(ch, idx)
    w, h = _pick(cw, idx + 1) - xk, _pick(ch, idx + 1) - yk
    dk, dk1 = _pick(d, idx), _pick(d, idx + 1)
    s = h / w
    below, above = x < lo, x > hi
    g = dk + dk1 - 2 * s
    # the inside formulas see the input clamped to the domain: far-away inputs
    # (taken by the tails) then cannot overflow there and poison gradients
    xc = x.clamp(lo, hi)
    if not inverse:
        theta = ((xc - xk) / w).clamp(0, 1)
        t = theta * (1 - theta)
        y_in = yk + h * (s * theta**2 + dk * t) / (s + g * t)
        lad_in = _rq_lad(theta, s, dk, dk1)
        if linear_tails:
            y_out, lad_out = x, torch.zeros_like(x)
        else:
            y_out = torch.where(below, yk + dk * (x - xk), (yk + h) + dk1 * (x - (xk + w)))
            lad_out = torch.log(torch.where(below, dk, dk1))
    else:
        dy = xc - yk
        qa = dy * g + h * (s - dk)
        qb = h * dk - dy * g
        qc = -s * dy
        sq = torch.sqrt((qb * qb - 4 * qa * qc).clamp_min(0))
        den_pos = -qb - sq
        den_neg = 2 * qa
        ok_pos = den_pos < 0
        theta_pos = torch.where(ok_pos, 2 * qc / torch.where(ok_pos, den_pos, -1.0), 0.0)
        theta_neg = (sq - qb) / torch.where(den_neg > 0, den_neg, 1.0)
        theta = torch.where(qb >= 0, theta_pos, theta_neg).clamp(0, 1)
        y_in = xk + theta * w
        lad_in = -_rq_lad(theta, s, dk, dk1)
        if linear_tails:
            y_out, lad_out = x, torch.zeros_like(x)
        else:
            y_out = torch.where(below, xk + (x - yk) / dk, (xk + w) + (x - (yk + h)) / dk1)
            lad_out = -torch.log(torch.where(below, dk, dk1))
    outside = below | above
    out = torch.where(outside, y_out, y_in)
    lad = torch.where(outside, lad_out, lad_in)
    return out.to(dtype), lad.to(dtype)


def sum_items(t: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first (a 1-d tensor is one value per item)."""
    return t if t.dim() == 1 else t.flatten(1).sum(1)


def affine_scale(u: torch.Tensor, activation: str, clamp: float = 2.0):
    """(scale, log scale) of raw scale parameters ``u`` (see genfast/ops/flows.py)."""
    if activation == "none":
        return torch.ones_like(u), torch.zeros_like(u)
    if activation == "sigmoid":  # nflows AffineCouplingTransform
        scale = torch.sigmoid(u + 2) + 1e-3
        return scale, torch.log(scale)
    if activation == "glow":
        return torch.sigmoid(u + 2), F.logsigmoid(u + 2)
    if activation == "exp":
        s = u
    elif activation == "atan":  # FrEIA soft clamp
        s = clamp * 0.636 * torch.atan(u)
    elif activation == "tanh":
        s = clamp * torch.tanh(u)
    elif activation == "soft_sigmoid":
        s = clamp * 2 * (torch.sigmoid(u) - 0.5)
    else:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return torch.exp(s), s


def affine_coupling(inputs, shift, unconstrained_scale, activation: str = "sigmoid",
                    clamp: float = 2.0, inverse: bool = False):
    """y = x * scale + shift (Glow: (x + shift) * scale) and the per-item
    logabsdet = sum of log scale over every non-batch dimension; the inverse
    undoes it and negates the logabsdet. Returns (outputs (B, ...), logabsdet (B,))."""
    dtype = inputs.dtype
    ct = compute_dtype(dtype)
    x, t, u = inputs.to(ct), shift.to(ct), unconstrained_scale.to(ct)
    scale, log_scale = affine_scale(u, activation, clamp)
    glow = activation == "glow"
    if not inverse:
        y = (x + t) * scale if glow else x * scale + t
        lad = sum_items(log_scale)
    else:
        # exp(-log scale) rather than 1 / scale: autograd of 1 / sigmoid(v)
        # squares a tiny sigmoid and overflows where the result does not
        inv = torch.exp(-log_scale)
        y = x * inv - t if glow else (x - t) * inv
        lad = -sum_items(log_scale)
    return y.to(dtype), lad.to(dtype)
