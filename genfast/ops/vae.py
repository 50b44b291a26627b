"""``genfast.vae.reparameterize_kl``: the reparameterisation trick and the KL
divergence to N(0, I) as one op, the way VAE training uses the pair (z for
the decoder, kl for the loss), so each input gradient is produced once.

Spec: genfast/reference/vae.py; per-element math: csrc/include/genfast/vae.h;
kernels: csrc/cpu/vae.cpp, csrc/cuda/vae.cu, genfast/triton/vae.py.

Registered ops (namespace ``genfast``; schemas in csrc/bindings/ops.cpp):
``vae_reparameterize_kl(mu, logvar, seed, stream, sample_offset, reduction)
-> (z, kl, d)`` with d = exp(clamp(logvar) / 2) eps kept for the backward,
and ``vae_reparameterize_kl_backward(grad_z?, grad_kl?, mu, logvar, d,
reduction) -> (grad_mu, grad_logvar)``, one pass. The Triton twins carry a
``_triton`` suffix. Fake kernels are registered here, autograd in C++
(csrc/bindings/vae_autograd.cpp; register_autograd below for the Triton
op), so torch.compile(fullgraph=True) traces the op and its backward like
any other (no host sync in either: grad_kl is read on the device on a GPU).

Why one op: called separately, reparameterize and kl_divergence each give
mu and logvar a gradient, and autograd then adds the two pairs (two more
passes over 1M-element tensors, plus the separate forward passes over mu and
logvar). Here the CPU forward reads mu and logvar once for z, d and the KL,
and the backward writes each gradient once.
"""

from __future__ import annotations

import torch

from .. import backend as _backend
from .._checks import as_int64_bits
from .._extension import CPU_LIB
from ..reference import training as _rt
from ..reference import vae as _ref
from . import noise as _noise
from . import training as _tr

_HAVE_OP = CPU_LIB.loaded and hasattr(torch.ops.genfast, "vae_reparameterize_kl")

# ---------------------------------------------------------------- fake kernels

if _HAVE_OP:
    def _like(x):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    @torch.library.register_fake("genfast::vae_reparameterize_kl")
    def _(mu, logvar, seed, stream, sample_offset, reduction):
        dtype = torch.float64 if mu.dtype == torch.float64 else torch.float32
        n = mu.shape[0] if mu.dim() >= 1 else 1
        kl = mu.new_empty((n,) if reduction == 0 else (), dtype=dtype)
        return _like(mu), kl, _like(mu)

    @torch.library.register_fake("genfast::vae_reparameterize_kl_backward")
    def _(grad_z, grad_kl, mu, logvar, d, reduction):
        return _like(mu), _like(mu)


# ---------------------------------------------------------------- autograd

def register_autograd(ops) -> None:
    """Autograd of ``ops["forward"]`` through ``ops["backward"]`` (the C++ ops
    and the Triton ones, genfast/triton/vae.py, share it)."""

    def setup(ctx, inputs, output):
        mu, logvar = inputs[:2]
        ctx.save_for_backward(mu, logvar, output[2])  # output[2]: d = std * eps
        ctx.reduction = inputs[5]
        ctx.set_materialize_grads(False)

    def backward(ctx, g_z, g_kl, _g_d):
        if g_z is None and g_kl is None or not any(ctx.needs_input_grad[:2]):
            return None, None, None, None, None, None
        mu, logvar, d = ctx.saved_tensors
        gm, gv = ops["backward"](g_z, g_kl, mu, logvar, d, ctx.reduction)
        return (gm if ctx.needs_input_grad[0] else None,
                gv if ctx.needs_input_grad[1] else None, None, None, None, None)

    torch.library.register_autograd(ops["forward"], backward, setup_context=setup)


if _HAVE_OP:
    CPP_OPS = {"forward": torch.ops.genfast.vae_reparameterize_kl.default,
               "backward": torch.ops.genfast.vae_reparameterize_kl_backward.default}
    # the C++ autograd (csrc/bindings/vae_autograd.cpp) when the build has it
    if not torch._C._dispatch_has_kernel_for_dispatch_key("genfast::vae_reparameterize_kl",
                                                          "Autograd"):
        register_autograd(CPP_OPS)
    _FORWARD = CPP_OPS["forward"]
else:
    CPP_OPS = None


def _which(backend, x):
    which = _backend.resolve(backend, x.device)
    if x.dtype == torch.float64 and which not in ("cpu", "reference"):
        if (backend or _backend.get_backend()) != "auto":
            raise TypeError(f"float64 inputs run on the cpu and reference backends, not on "
                            f"{which!r}")
        which = "cpu" if x.is_cpu else "reference"
    if which in ("cpu", "cuda"):
        return which, CPP_OPS
    if which == "triton":
        from ..triton import vae as _tv
        return which, _tv.OPS
    return which, None


# ---------------------------------------------------------------- the op

def reparameterize_kl(mu: torch.Tensor, logvar: torch.Tensor, *, seed: int, stream: int = 0,
                      sample_offset: int = 0, reduction: str = "sum",
                      backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, kl)``: ``reparameterize`` and ``kl_divergence`` of one diagonal
    Gaussian posterior in one op (Kingma & Welling 2014, "Auto-Encoding
    Variational Bayes", sec. 2.4 and app. B):

        z  = mu + exp(lv / 2) eps,   eps = genfast.randn(mu.shape, seed=seed,
             stream=stream, sample_offset=sample_offset, dtype=mu.dtype)
        kl = 0.5 sum(mu^2 + exp(lv) - 1 - lv) over each item's features

    with lv = logvar clamped to [-30, 20] (diffusers'
    DiagonalGaussianDistribution; zero gradient outside). z equals
    ``genfast.vae.reparameterize`` with the same seed / stream /
    sample_offset bit for bit on the same backend, and kl equals
    ``genfast.vae.kl_divergence(mu, logvar, reduction=reduction)``: "sum"
    over items (the familiar -0.5 sum(1 + lv - mu^2 - exp(lv))), "mean" over
    items, or "none" (N,). Items are the leading dimension; kl is float32
    (float64 for float64 inputs), z has mu's dtype (float16 / bfloat16 are
    computed in float32).

    The backward is one pass giving both gradients,
    grad_mu = g_z + g_kl mu and grad_lv = (g_z d + g_kl (exp(lv) - 1)) / 2
    inside the clamp, with d = exp(lv / 2) eps saved by the forward (no
    second run of the generator); an expanded scalar g_z (``z.sum()``) is
    read as one value.
    """
    r = _rt.REDUCTIONS.get(reduction, -1) if type(reduction) is str else -1
    if (_HAVE_OP and r >= 0 and type(seed) is int and 0 <= seed < _tr.U64 and type(stream) is int
            and 0 <= stream < _tr.U32 and type(sample_offset) is int
            and isinstance(mu, torch.Tensor) and isinstance(logvar, torch.Tensor)
            and mu.dim() >= 2 and 0 <= sample_offset and sample_offset + mu.shape[0] <= _tr.U32
            and logvar.dtype == mu.dtype and logvar.shape == mu.shape
            and _tr._fast(backend, mu)):
        z, kl, _ = _FORWARD(mu, logvar, seed - _tr.U64 if seed >= _tr.I63 else seed, stream,
                            sample_offset, r)
        return z, kl
    _tr._check_tensor("mu", mu)
    _tr._check_pair("mu", mu, "logvar", logvar)
    seed = _tr._uint("seed", seed, _tr.U64)
    items = mu.shape[0] if mu.dim() >= 2 else 1
    stream, sample_offset = _tr._stream_args(stream, sample_offset, items)
    r = _tr._code("reduction", reduction, _rt.REDUCTIONS)
    which, ops = _which(backend, mu)
    if ops is None and which != "reference":  # an extension built before this op
        z = _tr.reparameterize(mu, logvar, seed=seed, stream=stream, sample_offset=sample_offset,
                               backend=backend)
        return z, _tr.kl_divergence(mu, logvar, reduction=reduction, backend=backend)
    if ops is None:
        eps = _noise.randn(mu.shape, seed=seed, stream=stream, sample_offset=sample_offset,
                           dtype=_tr._noise_dtype(mu.dtype), device=mu.device,
                           backend="reference")
        return _ref.reparameterize_kl(mu, logvar, eps.to(mu.dtype), r)
    z, kl, _ = ops["forward"](mu, logvar, as_int64_bits(seed), stream, sample_offset, r)
    return z, kl
