"""Normalizing-flow transforms as ops: the rational-quadratic spline and the
affine / additive coupling, forward and inverse, each with a fused backward.

Spec: shared/reference/flows.md; reference: genfast/reference/flows.py;
kernels: csrc/include/genfast/spline.h, coupling.h (math), csrc/cpu/flows.cpp,
csrc/cuda/flows.cu, genfast/triton/flows.py.

Registered ops (namespace ``genfast``; fake kernels are here, and the autograd of
the Triton ops; the C++ ops' autograd is csrc/bindings/flows_autograd.cpp):
  rq_spline(inputs, uw, uh, ud, bool inverse, bool linear_tails, float left,
            float right, float bottom, float top, float min_bin_width,
            float min_bin_height, float min_derivative) -> (Tensor, Tensor)
  rq_spline_backward(grad_outputs, grad_logabsdet, <the rq_spline arguments>)
            -> (grad_inputs, grad_uw, grad_uh, grad_ud)
  affine_coupling(inputs, shift, unconstrained_scale, int activation,
            float clamp, bool inverse) -> (outputs, logabsdet per item)
  affine_coupling_backward(grad_outputs, grad_logabsdet, <the affine_coupling
            arguments>) -> (grad_inputs, grad_shift, grad_unconstrained_scale)
Triton's are the same with a ``_triton`` suffix (genfast/triton/flows.py).
Nothing here reads tensor values: no host sync in forward, inverse or backward.
"""

from __future__ import annotations

import torch

from .. import backend as _backend
from .._extension import CPU_LIB
from ..reference import flows as _ref

ACTIVATIONS = _ref.ACTIVATIONS  # index = the kernels' activation code (coupling.h)
_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
DEFAULT_MIN_BIN_WIDTH = DEFAULT_MIN_BIN_HEIGHT = DEFAULT_MIN_DERIVATIVE = 1e-3


# --------------------------------------------------------------------------- autograd

def _rq_setup(ctx, inputs, output):
    x, uw, uh, ud, *args = inputs
    ctx.save_for_backward(x, uw, uh, ud)
    ctx.args = args


def _zeros_if_none(g, like):
    return torch.zeros_like(like) if g is None else g


def _rq_backward_with(op):
    def backward(ctx, g_out, g_lad):
        x, uw, uh, ud = ctx.saved_tensors
        gx, gw, gh, gd = op(_zeros_if_none(g_out, x), _zeros_if_none(g_lad, x), x, uw, uh, ud,
                            *ctx.args)
        return (gx, gw, gh, gd) + (None,) * len(ctx.args)
    return backward


def _affine_setup(ctx, inputs, output):
    x, shift, u, *args = inputs
    ctx.save_for_backward(x, shift, u)
    ctx.args = args


def _affine_backward_with(op):
    def backward(ctx, g_out, g_lad):
        x, shift, u = ctx.saved_tensors
        g_lad = torch.zeros(x.shape[:1], dtype=x.dtype, device=x.device) if g_lad is None else g_lad
        gx, gs, gu = op(_zeros_if_none(g_out, x), g_lad, x, shift, u, *ctx.args)
        return (gx, gs, gu) + (None,) * len(ctx.args)
    return backward


def _rq_fake(inputs, uw, uh, ud, *args):
    return inputs.new_empty(inputs.shape), inputs.new_empty(inputs.shape)


def _rq_backward_fake(g_out, g_lad, inputs, uw, uh, ud, *args):
    return (inputs.new_empty(inputs.shape), uw.new_empty(uw.shape), uh.new_empty(uh.shape),
            ud.new_empty(ud.shape))


def _affine_fake(inputs, shift, u, *args):
    return inputs.new_empty(inputs.shape), inputs.new_empty(inputs.shape[:1])


def _affine_backward_fake(g_out, g_lad, inputs, shift, u, *args):
    return (inputs.new_empty(inputs.shape), inputs.new_empty(inputs.shape),
            inputs.new_empty(inputs.shape))


def register(prefix: str, suffix: str = "") -> None:
    """Fake kernels (C++ ops only: triton_op derives its own) and autograd for
    the ops named ``prefix + name + suffix``."""
    ops = torch.ops.genfast
    if not suffix:
        torch.library.register_fake(f"{prefix}rq_spline")(_rq_fake)
        torch.library.register_fake(f"{prefix}rq_spline_backward")(_rq_backward_fake)
        torch.library.register_fake(f"{prefix}affine_coupling")(_affine_fake)
        torch.library.register_fake(f"{prefix}affine_coupling_backward")(_affine_backward_fake)
    for op, backward_with, setup in (("rq_spline", _rq_backward_with, _rq_setup),
                                     ("affine_coupling", _affine_backward_with, _affine_setup)):
        name = f"{prefix}{op}{suffix}"
        # the C++ ops' autograd is registered in C++ (csrc/bindings/flows_autograd.cpp)
        # when the build has it: this Python layer cost more than the op on small inputs
        if suffix or not torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd"):
            torch.library.register_autograd(
                name, backward_with(getattr(ops, f"{op}_backward{suffix}")), setup_context=setup)


if CPU_LIB.loaded:
    register("genfast::")


# --------------------------------------------------------------------------- checks

def _check_tensor(name, t, like=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if like is not None:
        if t.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but inputs has {like.dtype}")
        if t.device != like.device:
            raise ValueError(f"{name} is on {t.device} but inputs is on {like.device}")


def _spline_ok(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, mw, mh, md):
    """The common case in a few attribute reads (~1 us); anything unusual goes
    to _check_spline, which names the bad argument."""
    try:
        dt = inputs.dtype
        shape = inputs.shape
        ws = uw.shape
        ds = ud.shape
        k = ws[-1]
        return (dt in _DTYPES and uw.dtype == dt and uh.dtype == dt and ud.dtype == dt
                and ws == uh.shape and ws[:-1] == shape and ds[:-1] == shape
                and ds[-1] == (k - 1 if linear_tails else k + 1) and k >= 1
                and inputs.get_device() == uw.get_device() == uh.get_device() == ud.get_device()
                and left < right and bottom < top and 0 < mw * k <= 1 and 0 < mh * k <= 1
                and md > 0 and (md < 1 or not linear_tails))
    except (AttributeError, IndexError, TypeError):
        return False


def _check_spline(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, mw, mh, md):
    if _spline_ok(inputs, uw, uh, ud, linear_tails, left, right, bottom, top, mw, mh, md):
        return
    _check_tensor("inputs", inputs)
    _check_tensor("unnormalized_widths", uw, inputs)
    _check_tensor("unnormalized_heights", uh, inputs)
    _check_tensor("unnormalized_derivatives", ud, inputs)
    shape = inputs.shape
    if uw.dim() != inputs.dim() + 1 or uw.shape[:-1] != shape or uw.shape[-1] < 1:
        raise ValueError(f"unnormalized_widths must have shape inputs.shape + (num_bins,) with "
                         f"num_bins >= 1, got {tuple(uw.shape)} for inputs {tuple(shape)}")
    k = uw.shape[-1]
    if uh.shape != uw.shape:
        raise ValueError(f"unnormalized_heights must have shape {tuple(uw.shape)} (as "
                         f"unnormalized_widths), got {tuple(uh.shape)}")
    nd = k - 1 if linear_tails else k + 1
    if ud.dim() != inputs.dim() + 1 or ud.shape[:-1] != shape or ud.shape[-1] != nd:
        raise ValueError(f"unnormalized_derivatives must have shape inputs.shape + ({nd},) "
                         f"({'num_bins - 1 with linear tails' if linear_tails else 'num_bins + 1, bounded'}), "
                         f"got {tuple(ud.shape)}")
    if not (left < right and bottom < top):
        raise ValueError(f"the spline needs left < right and bottom < top, got "
                         f"[{left}, {right}] x [{bottom}, {top}]")
    for name, v in (("min_bin_width", mw), ("min_bin_height", mh)):
        if not 0 < v <= 1.0 / k:
            raise ValueError(f"{name} must be in (0, 1/num_bins] = (0, {1.0 / k:g}], got {v}")
    if not (md > 0 and (md < 1 or not linear_tails)):
        raise ValueError(f"min_derivative must be > 0 (and < 1 with linear tails), got {md}")


# --------------------------------------------------------------------------- spline

def rational_quadratic_spline(inputs, unnormalized_widths, unnormalized_heights,
                              unnormalized_derivatives, inverse: bool = False,
                              tails: str | None = "linear", tail_bound: float = 1.0,
                              min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
                              min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
                              min_derivative: float = DEFAULT_MIN_DERIVATIVE, *,
                              left: float = 0.0, right: float = 1.0, bottom: float = 0.0,
                              top: float = 1.0, backend: str | None = None):
    """Monotone rational-quadratic spline, elementwise (Durkan et al. 2019,
    "Neural Spline Flows"), forward or inverse, with log|d outputs / d inputs|.

    With ``tails="linear"`` this is nflows 0.14's
    ``unconstrained_rational_quadratic_spline``: the spline maps
    [-tail_bound, tail_bound] onto itself and is the identity (logabsdet 0)
    outside. With ``tails=None`` it is nflows' bounded
    ``rational_quadratic_spline`` on [left, right] x [bottom, top]; inputs
    outside that domain (where nflows raises after a host sync) continue the
    spline linearly with the boundary derivative instead.

    K bins from ``unnormalized_widths`` and ``unnormalized_heights`` (shape
    inputs.shape + (K,)): sizes = min + (1 - min K) softmax, cumulated into knots;
    knot derivatives min_derivative + softplus(``unnormalized_derivatives``),
    shape inputs.shape + (K - 1,) with linear tails (the boundary derivatives
    are 1) or (K + 1,) bounded. In bin k, theta = (x - x_k) / w_k and
    s = h_k / w_k:
        y = y_k + h_k (s theta^2 + d_k theta (1 - theta)) / (s + (d_k + d_k1 - 2 s) theta (1 - theta))
    The inverse solves the quadratic for theta with the numerically stable
    root (discriminant clamped at 0). Any finite inputs and parameters give
    finite outputs, logabsdet and gradients.

    Returns ``(outputs, logabsdet)``, both of inputs' shape and dtype (computed
    in float32; float64 in float64). Differentiable in every tensor argument,
    in both directions.
    """
    if tails == "linear":
        if not tail_bound > 0:
            raise ValueError(f"tail_bound must be > 0, got {tail_bound}")
        left = bottom = -float(tail_bound)
        right = top = float(tail_bound)
        linear = True
    elif tails is None:
        linear = False
    else:
        raise ValueError(f"tails must be 'linear' or None, got {tails!r}")
    args = (bool(inverse), linear, float(left), float(right), float(bottom), float(top),
            float(min_bin_width), float(min_bin_height), float(min_derivative))
    _check_spline(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
                  *args[1:])
    which = _backend.resolve(backend, inputs.device)
    if which in ("cpu", "cuda"):
        return torch.ops.genfast.rq_spline(inputs, unnormalized_widths, unnormalized_heights,
                                           unnormalized_derivatives, *args)
    if which == "triton":
        from ..triton import flows as _triton_flows
        return _triton_flows.rq_spline(inputs, unnormalized_widths, unnormalized_heights,
                                       unnormalized_derivatives, *args)
    return _ref.rq_spline(inputs, unnormalized_widths, unnormalized_heights,
                          unnormalized_derivatives, *args)


# --------------------------------------------------------------------------- coupling

def affine_coupling(inputs, shift, unconstrained_scale, activation: str = "sigmoid",
                    clamp: float = 2.0, inverse: bool = False, *, backend: str | None = None):
    """Affine coupling of the transformed half x2 (Dinh et al. 2017, RealNVP),
    fused with its per-item log-determinant.

    ``inputs``, ``shift`` and ``unconstrained_scale`` share a shape (B, ...);
    the scale comes from ``unconstrained_scale`` u by ``activation``:
      "sigmoid"       nflows' AffineCouplingTransform: scale = sigmoid(u + 2) + 1e-3
      "exp"           RealNVP: scale = exp(u) (overflows float32 past u ~ 88)
      "atan", "tanh", "soft_sigmoid"  FrEIA's soft clamp: scale = exp(clamp f(u)),
                      f = 0.636 atan, tanh, 2 (sigmoid - 1/2)
      "glow"          Glow (Kingma & Dhariwal 2018): scale = sigmoid(u + 2),
                      shift first: y = (x + shift) scale
      "none"          additive coupling (NICE): scale = 1
    Forward y = x scale + shift, logabsdet = sum of log scale over every
    non-batch dimension; ``inverse=True`` maps y back to x with -logabsdet.
    Returns ``(outputs, logabsdet)``: inputs' shape and dtype, and (B,).
    """
    if not _affine_ok(inputs, shift, unconstrained_scale):
        _check_affine(inputs, shift, unconstrained_scale)
    code = _ACT_CODE.get(activation)
    if code is None:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    which = _backend.resolve(backend, inputs.device)
    if which in ("cpu", "cuda"):
        return torch.ops.genfast.affine_coupling(inputs, shift, unconstrained_scale, code,
                                                 float(clamp), bool(inverse))
    if which == "triton":
        from ..triton import flows as _triton_flows
        return _triton_flows.affine_coupling(inputs, shift, unconstrained_scale, code,
                                             float(clamp), bool(inverse))
    return _ref.affine_coupling(inputs, shift, unconstrained_scale, activation, clamp, inverse)


def _affine_ok(inputs, shift, u):
    try:
        dt = inputs.dtype
        shape = inputs.shape
        return (dt in _DTYPES and shift.dtype == dt and u.dtype == dt and len(shape) >= 1
                and shift.shape == shape and u.shape == shape
                and inputs.get_device() == shift.get_device() == u.get_device())
    except (AttributeError, TypeError):
        return False


def _check_affine(inputs, shift, unconstrained_scale):
    _check_tensor("inputs", inputs)
    _check_tensor("shift", shift, inputs)
    _check_tensor("unconstrained_scale", unconstrained_scale, inputs)
    if inputs.dim() < 1:
        raise ValueError("inputs must have a batch dimension, got a 0-d tensor")
    if shift.shape != inputs.shape:
        raise ValueError(f"shift has shape {tuple(shift.shape)} but inputs has {tuple(inputs.shape)}")
    if unconstrained_scale.shape != inputs.shape:
        raise ValueError(f"unconstrained_scale has shape {tuple(unconstrained_scale.shape)} but "
                         f"inputs has {tuple(inputs.shape)}")


def additive_coupling(inputs, shift, inverse: bool = False, *, backend: str | None = None):
    """Additive coupling (Dinh et al. 2014, NICE): y = x + shift, logabsdet 0.
    Returns ``(outputs, logabsdet)`` with logabsdet zeros of shape (B,)."""
    if not isinstance(shift, torch.Tensor):
        raise TypeError(f"shift must be a Tensor, got {type(shift).__name__}")
    return affine_coupling(inputs, shift, shift, "none", 0.0, inverse, backend=backend)
