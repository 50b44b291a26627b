"""ActNorm and the invertible 1x1 convolution of Glow (Kingma & Dhariwal 2018),
with nflows' calling convention. Both are matmul / broadcast bound: plain
PyTorch ops (no custom kernel), written without host syncs after the first
(initialising) call, so they compile with torch.compile(fullgraph=True).
"""

from __future__ import annotations

import torch
from torch import nn


def _pixels(x: torch.Tensor) -> int:
    """Spatial positions per item: 1 for (B, C), H * W for (B, C, H, W)."""
    n = 1
    for d in x.shape[2:]:
        n *= d
    return n


class ActNorm(nn.Module):
    """Per-channel affine y = exp(log_scale) x + shift (channels on dim 1),
    initialised from the first batch it sees in training mode to zero mean and
    unit variance per channel (data-dependent init). logabsdet = H W sum log_scale."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.shift = nn.Parameter(torch.zeros(features))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(False))
        self._init_done = False  # Python mirror: no tensor read on the hot path

    def _view(self, t, x):
        return t.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def _initialize(self, x):
        dims = [0] + list(range(2, x.dim()))
        std = x.std(dim=dims) if x.shape[0] * _pixels(x) > 1 else torch.ones_like(self.shift)
        mean = x.mean(dim=dims)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.shift.copy_(-mean * torch.exp(self.log_scale))
        self.initialized.fill_(True)
        self._init_done = True

    def _maybe_init(self, x):
        if not self._init_done:
            if self.training:
                self._initialize(x)
            else:
                self._init_done = True  # eval before any training batch: keep identity

    def forward(self, inputs, context=None):
        self._maybe_init(inputs)
        y = inputs * self._view(torch.exp(self.log_scale), inputs) + self._view(self.shift, inputs)
        lad = (_pixels(inputs) * self.log_scale.sum()).expand(inputs.shape[0])
        return y, lad

    def inverse(self, inputs, context=None):
        y = (inputs - self._view(self.shift, inputs)) * self._view(torch.exp(-self.log_scale), inputs)
        lad = (-_pixels(inputs) * self.log_scale.sum()).expand(inputs.shape[0])
        return y, lad

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._init_done = bool(self.initialized)


class InvertibleConv1x1(nn.Module):
    """Invertible 1x1 convolution (a channel mixing matrix W at every pixel)
    with the LU parametrisation W = P L (U + diag(sign_s exp(log_s))), P a fixed
    permutation, L unit lower- and U strictly upper-triangular:
    logabsdet = H W sum log_s. Starts from a random rotation. The inverse
    weight is computed in float64, then cast."""

    def __init__(self, channels: int, seed: int | None = None):
        super().__init__()
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self) -> torch.Tensor:
        eye = torch.eye(self.lower.shape[0], device=self.lower.device, dtype=self.lower.dtype)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.t() + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def _apply_w(self, w, x):
        return torch.einsum("ij,bj...->bi...", w.to(x.dtype), x)

    def forward(self, inputs, context=None):
        y = self._apply_w(self.weight(), inputs)
        return y, (_pixels(inputs) * self.log_s.sum()).expand(inputs.shape[0])

    def inverse(self, inputs, context=None):
        w_inv = torch.linalg.inv(self.weight().double())
        y = self._apply_w(w_inv, inputs)
        return y, (-_pixels(inputs) * self.log_s.sum()).expand(inputs.shape[0])
