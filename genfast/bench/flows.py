"""Flows suite: the fused spline and affine coupling against their eager
reference, torch.compile of the reference (full runs) and nflows 0.14 (when
installed), in the suite's dtype (float32 default; float16 / bfloat16 are
computed in float32 inside genfast and its reference; nflows and the compiled
reference run in float32 only) on the suite's device.

Cases (numel = elements transformed):
  rq_spline   (4096, 64) features, K = 8 bins, linear tails, tail_bound 3:
              modes "forward", "inverse" (outputs + logabsdet) and "fwd+bwd"
              (forward, then backward of sum(y) + sum(logabsdet) into the
              inputs and the three parameter tensors).
  affine      (4096, 256) = 1M elements, nflows' sigmoid scale: modes
              "forward" (outputs + per-item logabsdet) and "fwd+bwd";
              bandwidth-bound, so the floor column counts reading x, shift
              and scale and writing y (16 bytes per element).
"fwd+bwd" drops the gradients after each call (``.grad = None``, what a
training step's ``zero_grad()`` does, and what the training suite does), so
each call writes fresh gradients instead of adding into the last call's: an
accumulation pass, the same for every provider, that is not the op's work.
Providers: "genfast" (default backend), "genfast[reference]" (the spec, eager),
"nflows" (unconstrained_rational_quadratic_spline / AffineCouplingTransform's
arithmetic), "torch.compile(reference)" (full runs; compile time excluded).
"""

from __future__ import annotations

import importlib.util

import torch

from ..ops import flows as _ops
from ..reference import flows as _ref
from .runner import Case, Provider

SPLINE_SHAPE = (4096, 64)
AFFINE_SHAPE = (4096, 256)
NUM_BINS = 8
TAIL_BOUND = 3.0
HAVE_NFLOWS = importlib.util.find_spec("nflows") is not None


def _shape_for(numel: int, width: int) -> tuple[int, int]:
    return (max(1, numel // width), min(width, numel))


def _backward(y, lad, args):
    """Backward of sum(y) + sum(logabsdet), then the gradients dropped (see
    the module docstring)."""
    (y.sum() + lad.sum()).backward()
    for a in args:
        a.grad = None


def _spline_inputs(shape, device, grad, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = (1.5 * torch.randn(shape, generator=g)).to(device, dtype)
    p = [torch.randn(*shape, m, generator=g).to(device, dtype)
         for m in (NUM_BINS, NUM_BINS, NUM_BINS - 1)]
    return [t.requires_grad_(grad) for t in [x] + p]


def _spline_fn(provider: str):
    if provider == "nflows":
        from nflows.transforms.splines.rational_quadratic import \
            unconstrained_rational_quadratic_spline as f
        return lambda x, w, h, d, inverse: f(x, w, h, d, inverse=inverse, tail_bound=TAIL_BOUND)
    if provider == "genfast":
        return lambda x, w, h, d, inverse: _ops.rational_quadratic_spline(
            x, w, h, d, inverse=inverse, tail_bound=TAIL_BOUND)
    return lambda x, w, h, d, inverse: _ref.rq_spline(
        x, w, h, d, inverse, True, -TAIL_BOUND, TAIL_BOUND, -TAIL_BOUND, TAIL_BOUND)


def _spline_provider(provider, shape, device, mode, dtype, compiled=False):
    def make():
        inverse = mode == "inverse"
        grad = mode == "fwd+bwd"
        args = _spline_inputs(shape, device, grad, dtype)
        f = _spline_fn(provider)
        if compiled:
            f = torch.compile(f, dynamic=False, fullgraph=True)
        if grad:
            def call():
                y, lad = f(*args, False)
                _backward(y, lad, args)
        else:
            def call():
                with torch.no_grad():
                    return f(*args, inverse)
        call()  # compiles (untimed)
        return call
    return make


def _affine_fn(provider: str):
    if provider == "genfast":
        return lambda x, t, u: _ops.affine_coupling(x, t, u, "sigmoid")
    if provider == "nflows":  # AffineCouplingTransform._coupling_transform_forward's arithmetic
        def f(x, t, u):
            scale = torch.sigmoid(u + 2) + 1e-3
            return x * scale + t, torch.log(scale).sum(1)
        return f
    return lambda x, t, u: _ref.affine_coupling(x, t, u, "sigmoid")


def _affine_provider(provider, shape, device, mode, dtype, compiled=False):
    def make():
        grad = mode == "fwd+bwd"
        g = torch.Generator().manual_seed(1)
        args = [torch.randn(shape, generator=g).to(device, dtype).requires_grad_(grad)
                for _ in range(3)]
        f = _affine_fn(provider)
        if compiled:
            f = torch.compile(f, dynamic=False, fullgraph=True)
        if grad:
            def call():
                y, lad = f(*args)
                _backward(y, lad, args)
        else:
            def call():
                with torch.no_grad():
                    return f(*args)
        call()
        return call
    return make


def _providers(builder, shape, device, mode, full, dtype):
    out = [Provider("genfast", builder("genfast", shape, device, mode, dtype)),
           Provider("genfast[reference]", builder("reference", shape, device, mode, dtype))]
    f32_only = None if dtype == torch.float32 else "float32 only"
    if not HAVE_NFLOWS:
        out.append(Provider("nflows", skip="nflows is not installed (pip install nflows==0.14)"))
    else:
        out.append(Provider("nflows", builder("nflows", shape, device, mode, dtype), max_reps=20,
                            skip=f32_only))
    if full:
        out.append(Provider("torch.compile(reference)",
                            builder("reference", shape, device, mode, dtype, compiled=True),
                            skip=f32_only))
    return out


def cases(device: torch.device, full: bool = False, sizes=None,
          dtype: torch.dtype = torch.float32) -> list[Case]:
    """rq_spline and affine cases on ``device`` in ``dtype`` (element counts
    from ``sizes`` replace the default shapes: (n / 64, 64) and (n / 256, 256))."""
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"flows suite: dtype must be float32, float16 or bfloat16, got {dtype}")
    device = torch.device(device)
    spline_shapes = [_shape_for(n, 64) for n in sizes] if sizes else [SPLINE_SHAPE]
    affine_shapes = [_shape_for(n, 256) for n in sizes] if sizes else [AFFINE_SHAPE]
    out = []
    for shape in spline_shapes:
        for mode in ("forward", "inverse", "fwd+bwd"):
            out.append(Case("flows", f"rq_spline K={NUM_BINS}", shape[0] * shape[1], mode,
                            _providers(_spline_provider, shape, device, mode, full, dtype)))
    for shape in affine_shapes:
        n = shape[0] * shape[1]
        for mode in ("forward", "fwd+bwd"):
            out.append(Case("flows", "affine", n, mode,
                            _providers(_affine_provider, shape, device, mode, full, dtype),
                            bytes_moved=4 * dtype.itemsize * n if mode == "forward" else None))
    return out
