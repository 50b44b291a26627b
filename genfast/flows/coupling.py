"""Coupling layers with nflows' calling convention, on genfast's fused ops.

``forward(inputs, context=None) -> (outputs, logabsdet)`` and
``inverse(inputs, context=None) -> (outputs, logabsdet)``, logabsdet of shape
(batch,). A coupling (Dinh et al. 2017, "Density estimation using Real NVP")
splits the features by ``mask``: entries with ``mask > 0`` are transformed,
the others condition a user network ``transform_net_create_fn(in_features,
out_features)`` whose module is called as ``net(identity_part, context)``
(nflows' convention; a net taking one argument works too).

Masks: a 1-D mask over dimension 1 (features of (B, D) inputs, channels of
(B, C, H, W) images), as nflows; or ``checkerboard=True`` for images, where
the spatial checkerboard is the mask, the network sees ``inputs * mask`` in
full shape and returns its parameters in full shape (channels x multiplier).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from ..ops import flows as ops


def checkerboard_mask(height: int, width: int, parity: int = 0) -> torch.Tensor:
    """(H, W) float mask, 1 where (i + j + parity) is even: the conditioning
    positions of a checkerboard coupling (RealNVP)."""
    i = torch.arange(height)[:, None]
    j = torch.arange(width)[None, :]
    return ((i + j + parity) % 2 == 0).float()


def _call_net(net, x, context):
    if getattr(net, "_genfast_takes_context", None) is None:
        try:
            params = inspect.signature(net.forward).parameters
            net._genfast_takes_context = len(params) >= 2
        except (TypeError, ValueError):
            net._genfast_takes_context = True
    return net(x, context) if net._genfast_takes_context else net(x)


class _Coupling(nn.Module):
    """Splitting, the network call and re-assembly; subclasses transform."""

    def __init__(self, mask, transform_net_create_fn, checkerboard: bool = False,
                 image_shape=None):
        super().__init__()
        self.checkerboard = checkerboard
        if checkerboard:
            if image_shape is None:
                raise ValueError("checkerboard=True needs image_shape=(C, H, W)")
            c, h, w = image_shape
            board = checkerboard_mask(h, w) if mask is None else torch.as_tensor(mask).float()
            if board.shape != (h, w):
                raise ValueError(f"a checkerboard mask must have shape (H, W) = {(h, w)}, "
                                 f"got {tuple(board.shape)}")
            self.register_buffer("board", board)
            flat = board.flatten()
            self.register_buffer("transform_positions", torch.nonzero(flat == 0)[:, 0])
            self.features = c
            self.num_transform_features = c
            self.transform_net = transform_net_create_fn(c, c * self._multiplier())
            return
        mask = torch.as_tensor(mask)
        if mask.dim() != 1 or mask.numel() == 0:
            raise ValueError(f"mask must be a non-empty 1-d tensor, got shape {tuple(mask.shape)}")
        self.features = mask.numel()
        idx = torch.arange(self.features)
        self.register_buffer("identity_features", idx[mask <= 0])
        self.register_buffer("transform_features", idx[mask > 0])
        self.num_transform_features = int((mask > 0).sum())
        if self.num_transform_features == 0 or self.num_transform_features == self.features:
            raise ValueError("mask must select some features to transform and some to keep")
        self.transform_net = transform_net_create_fn(
            self.features - self.num_transform_features,
            self.num_transform_features * self._multiplier())

    def _multiplier(self) -> int:
        raise NotImplementedError

    def _transform(self, x, params, inverse):
        """x (B, n, ...) and params (B, n * multiplier, ...) -> (y, logabsdet (B,))."""
        raise NotImplementedError

    def _check(self, inputs):
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a Tensor, got {type(inputs).__name__}")
        if self.checkerboard:
            if inputs.dim() != 4 or inputs.shape[1] != self.features:
                raise ValueError(f"inputs must have shape (B, {self.features}, H, W), "
                                 f"got {tuple(inputs.shape)}")
        elif inputs.dim() not in (2, 4) or inputs.shape[1] != self.features:
            raise ValueError(f"inputs must have shape (B, {self.features}) or "
                             f"(B, {self.features}, H, W), got {tuple(inputs.shape)}")

    def _run(self, inputs, context, inverse):
        self._check(inputs)
        if self.checkerboard:
            return self._run_checkerboard(inputs, context, inverse)
        ident = inputs[:, self.identity_features]
        trans = inputs[:, self.transform_features]
        params = _call_net(self.transform_net, ident, context)
        y, lad = self._transform(trans, params, inverse)
        out = torch.empty_like(inputs)
        out[:, self.identity_features] = ident
        out[:, self.transform_features] = y.to(inputs.dtype)
        return out, lad

    def _run_checkerboard(self, inputs, context, inverse):
        b, c, h, w = inputs.shape
        params = _call_net(self.transform_net, inputs * self.board, context)
        pos = self.transform_positions
        flat = inputs.reshape(b, c, h * w)
        trans = flat[:, :, pos]                                   # (B, C, n)
        m = self._multiplier()
        p = params.reshape(b, c * m, h * w)[:, :, pos]            # (B, C*m, n)
        y, lad = self._transform(trans, p, inverse)
        out = flat.clone()
        out[:, :, pos] = y.to(inputs.dtype)
        return out.reshape(b, c, h, w), lad

    def forward(self, inputs, context=None):
        return self._run(inputs, context, inverse=False)

    def inverse(self, inputs, context=None):
        return self._run(inputs, context, inverse=True)


class AffineCoupling(_Coupling):
    """Affine coupling, fused with its log-determinant (genfast.flows.affine_coupling).

    The network returns (shift, unconstrained scale) stacked along dim 1
    (shift first, nflows' layout); ``activation`` picks the scale: "sigmoid"
    (nflows, default), "exp", "atan" / "tanh" / "soft_sigmoid" (FrEIA soft
    clamp with ``clamp``), "glow" (shift then scale)."""

    def __init__(self, mask, transform_net_create_fn, activation: str = "sigmoid",
                 clamp: float = 2.0, checkerboard: bool = False, image_shape=None):
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ops.ACTIVATIONS)}, "
                             f"got {activation!r}")
        self.activation, self.clamp = activation, float(clamp)
        super().__init__(mask, transform_net_create_fn, checkerboard, image_shape)

    def _multiplier(self):
        return 2

    def _transform(self, x, params, inverse):
        n = x.shape[1]
        return ops.affine_coupling(x, params[:, :n], params[:, n:], self.activation,
                                   self.clamp, inverse)


class AdditiveCoupling(_Coupling):
    """Additive coupling (Dinh et al. 2014, NICE): y = x + shift(x_identity)."""

    def _multiplier(self):
        return 1

    def _transform(self, x, params, inverse):
        return ops.additive_coupling(x, params, inverse)


class RQSplineCoupling(_Coupling):
    """Rational-quadratic spline coupling (Durkan et al. 2019, "Neural Spline
    Flows"), as nflows' PiecewiseRationalQuadraticCouplingTransform: per
    transformed feature the network gives K widths, K heights and K - 1
    (``tails="linear"``) or K + 1 (``tails=None``, on [0, 1]) derivative
    logits; widths and heights are divided by sqrt(hidden features) when the
    network has ``hidden_features`` or ``hidden_channels``."""

    def __init__(self, mask, transform_net_create_fn, num_bins: int = 10, tails=None,
                 tail_bound: float = 1.0, min_bin_width: float = 1e-3,
                 min_bin_height: float = 1e-3, min_derivative: float = 1e-3,
                 checkerboard: bool = False, image_shape=None):
        self.num_bins, self.tails, self.tail_bound = int(num_bins), tails, float(tail_bound)
        self.min_bin_width, self.min_bin_height = min_bin_width, min_bin_height
        self.min_derivative = min_derivative
        super().__init__(mask, transform_net_create_fn, checkerboard, image_shape)
        hidden = getattr(self.transform_net, "hidden_features",
                         getattr(self.transform_net, "hidden_channels", None))
        self.param_scale = 1.0 / math.sqrt(hidden) if hidden else 1.0

    def _multiplier(self):
        return 3 * self.num_bins + (-1 if self.tails == "linear" else 1)

    def _transform(self, x, params, inverse):
        b, n = x.shape[:2]
        k = self.num_bins
        # (B, n * m, *S) -> (B, n, *S, m), nflows' layout
        p = params.reshape(b, n, -1, *x.shape[2:]).movedim(2, -1)
        uw = p[..., :k] * self.param_scale
        uh = p[..., k:2 * k] * self.param_scale
        ud = p[..., 2 * k:]
        y, lad = ops.rational_quadratic_spline(
            x, uw, uh, ud, inverse=inverse, tails=self.tails, tail_bound=self.tail_bound,
            min_bin_width=self.min_bin_width, min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative)
        return y, lad.reshape(b, -1).sum(1)


class MLP(nn.Module):
    """A small residual-free MLP for coupling networks: Linear -> ReLU x
    ``layers`` -> Linear; ``hidden_features`` is read by RQSplineCoupling.
    The last layer starts at zero, so a fresh coupling is nearly the identity."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int = 64,
                 layers: int = 2):
        super().__init__()
        self.hidden_features = hidden_features
        mods, width = [], in_features
        for _ in range(layers):
            mods += [nn.Linear(width, hidden_features), nn.ReLU()]
            width = hidden_features
        last = nn.Linear(width, out_features)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*mods, last)

    def forward(self, x, context=None):
        return self.net(x)


def simple_net(hidden_features: int = 64, layers: int = 2):
    """A ``transform_net_create_fn`` building an MLP."""
    return lambda i, o: MLP(i, o, hidden_features, layers)
