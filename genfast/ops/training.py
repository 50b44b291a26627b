"""Fused training ops: ``genfast.add_noise``, ``genfast.diffusion_loss`` and the
VAE's ``reparameterize`` / ``kl_divergence`` (genfast/vae.py).

Spec: genfast/reference/training.py; per-element math:
csrc/include/genfast/training.h; kernels: csrc/cpu/training.cpp,
csrc/cuda/training.cu, genfast/triton/training.py.

Registered ops (namespace ``genfast``; schemas in csrc/bindings/ops.cpp):
training_add_noise, training_add_noise_seeded, training_add_noise_backward,
training_diffusion_loss(+_backward), training_kl_divergence(+_backward),
training_reparameterize(+_backward), training_reparameterize_sample (z
alone: the wrappers' op); the Triton ones carry a ``_triton`` suffix. Each
forward has a fake kernel and a fused backward: for the C++ ops a C++
autograd Function (csrc/bindings/training_autograd.cpp, no Python on the
autograd path), for the Triton ops torch.library.register_autograd. On plain
CPU tensors that autograd's forwards of diffusion_loss, kl_divergence and
reparameterize_sample write, in the same pass, the gradient for an upstream
grad of one; the backward hands it on (``loss.backward()``) or scales it in
place, so it makes no pass over the inputs and allocates nothing.

The wrappers first try a fast path: a few attribute reads confirm the common
call (a Schedule, a float tensor, one timestep per item of the right dtype, a
kernel backend) and go straight to the op, whose C++ binding checks devices,
shapes and timestep values itself; anything else takes the full checks,
which name the argument.

Timestep range checks, and why they differ by device: a check of tensor
values on the host costs a device sync on a GPU, which would break CUDA-graph
capture and stall every training step. So:
* CPU tensors (cpu, reference, triton-interpreter backends): every timestep is
  checked (in the C++ binding for the cpu backend, so also under
  torch.compile), and an out-of-range one raises an error naming its index.
* CUDA tensors: the kernels check in-kernel and write NaN for every element of
  an item whose timestep is out of range (its x_t, target, loss term): the
  loss turns NaN at once instead of training silently on a clamped noise
  level. Set ``GENFAST_CHECK_TIMESTEPS=1`` to check on the host (one sync per
  call, eager mode only) and get the error instead.
"""

from __future__ import annotations

import os

import torch

from .. import backend as _backend
from .._checks import as_int64_bits, check_int
from .._extension import CPU_LIB
from ..reference import training as _ref
from ..schedules import Schedule
from . import noise as _noise

U64, U32 = 1 << 64, 1 << 32
_FLOATS = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_CHECK_ON_DEVICE = os.environ.get("GENFAST_CHECK_TIMESTEPS", "0") not in ("", "0", "false")
_EMPTY_TABLES: dict = {}

# ---------------------------------------------------------------- fake kernels

if CPU_LIB.loaded:
    def _like(x):
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)

    def _reduced(x, reduction):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        n = x.shape[0] if x.dim() >= 1 else 1
        return x.new_empty((n,) if reduction == 0 else (), dtype=dtype)

    @torch.library.register_fake("genfast::training_add_noise")
    def _(x0, noise, timesteps, table, kind, prediction):
        return _like(x0), _like(x0)

    @torch.library.register_fake("genfast::training_add_noise_seeded")
    def _(x0, timesteps, table, kind, prediction, seed, stream, sample_offset):
        # epsilon: the target is the noise, returned empty (see csrc/bindings/ops.cpp)
        return _like(x0), _like(x0), x0.new_empty((0,)) if prediction == 0 else _like(x0)

    @torch.library.register_fake("genfast::training_add_noise_backward")
    def _(grad_x_t, grad_target, timesteps, table, kind, prediction, wrt):
        return _like(grad_x_t if grad_x_t is not None else grad_target)

    @torch.library.register_fake("genfast::training_diffusion_loss")
    def _(pred, target, timesteps, table, kind, weighting, prediction, gamma, sigma_data,
          reduction):
        return _reduced(pred, reduction)

    @torch.library.register_fake("genfast::training_diffusion_loss_backward")
    def _(grad, pred, target, timesteps, table, kind, weighting, prediction, gamma, sigma_data,
          reduction):
        return _like(pred)

    @torch.library.register_fake("genfast::training_kl_divergence")
    def _(mu, logvar, reduction):
        return _reduced(mu, reduction)

    @torch.library.register_fake("genfast::training_kl_divergence_backward")
    def _(grad, mu, logvar, reduction):
        return _like(mu), _like(mu)

    @torch.library.register_fake("genfast::training_reparameterize")
    def _(mu, logvar, seed, stream, sample_offset):
        return _like(mu), _like(mu)

    @torch.library.register_fake("genfast::training_reparameterize_backward")
    def _(grad, logvar, eps):
        return _like(grad)

    if hasattr(torch.ops.genfast, "training_reparameterize_sample"):
        @torch.library.register_fake("genfast::training_reparameterize_sample")
        def _(mu, logvar, seed, stream, sample_offset):
            return _like(mu)


# ---------------------------------------------------------------- autograd (fused backward ops)

def register_autograd(ops) -> None:
    """Autograd of the training ops in namespace ``ops`` (a dict name -> op);
    the C++ ops and the Triton ones (genfast/triton/training.py) share it."""

    def add_noise_setup(ctx, inputs, output):
        x0, noise, timesteps, table, kind, prediction = inputs
        ctx.save_for_backward(timesteps, table)
        ctx.args = (kind, prediction)
        ctx.set_materialize_grads(False)

    def add_noise_backward(ctx, g_xt, g_target):
        timesteps, table = ctx.saved_tensors
        if g_xt is None and g_target is None:
            return None, None, None, None, None, None
        grads = [ops["add_noise_backward"](g_xt, g_target, timesteps, table, *ctx.args, wrt)
                 if ctx.needs_input_grad[wrt] else None for wrt in (0, 1)]
        return grads[0], grads[1], None, None, None, None

    torch.library.register_autograd(ops["add_noise"], add_noise_backward, setup_context=add_noise_setup)

    def seeded_setup(ctx, inputs, output):
        x0, timesteps, table, kind, prediction = inputs[:5]
        ctx.save_for_backward(timesteps, table)
        ctx.args = (kind, prediction)
        ctx.set_materialize_grads(False)
        # the noise has no input behind it; for epsilon the target is empty
        ctx.mark_non_differentiable(*((output[1], output[2]) if prediction == 0 else (output[1],)))

    def seeded_backward(ctx, g_xt, g_noise, g_target):
        timesteps, table = ctx.saved_tensors
        if ctx.args[1] == 0:
            g_target = None  # epsilon: the empty placeholder
        gx = None
        if ctx.needs_input_grad[0] and (g_xt is not None or g_target is not None):
            gx = ops["add_noise_backward"](g_xt, g_target, timesteps, table, *ctx.args, 0)
        return (gx,) + (None,) * 7

    torch.library.register_autograd(ops["add_noise_seeded"], seeded_backward,
                                    setup_context=seeded_setup)

    def loss_setup(ctx, inputs, output):
        pred, target, timesteps, table = inputs[:4]
        ctx.save_for_backward(pred, target, timesteps, table)
        ctx.args = inputs[4:]

    def loss_backward(ctx, grad):
        pred, target, timesteps, table = ctx.saved_tensors
        g = ops["diffusion_loss_backward"](grad, pred, target, timesteps, table, *ctx.args)
        gt = -g if ctx.needs_input_grad[1] else None
        return (g if ctx.needs_input_grad[0] else None, gt) + (None,) * 8

    torch.library.register_autograd(ops["diffusion_loss"], loss_backward, setup_context=loss_setup)

    def kl_setup(ctx, inputs, output):
        mu, logvar, reduction = inputs
        ctx.save_for_backward(mu, logvar)
        ctx.reduction = reduction

    def kl_backward(ctx, grad):
        mu, logvar = ctx.saved_tensors
        gm, gv = ops["kl_divergence_backward"](grad, mu, logvar, ctx.reduction)
        return gm, gv, None

    torch.library.register_autograd(ops["kl_divergence"], kl_backward, setup_context=kl_setup)

    def reparam_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], output[1])  # logvar, d = std * eps
        ctx.set_materialize_grads(False)

    def reparam_backward(ctx, grad, _grad_eps):
        logvar, eps = ctx.saved_tensors
        if grad is None:
            return None, None, None, None, None
        # dz/dmu = 1; dz/dlogvar = exp(lv/2) eps / 2 = d / 2 inside the clamp, d
        # the forward's second output: no second run of Philox, no exp.
        gv = ops["reparameterize_backward"](grad, logvar, eps) if ctx.needs_input_grad[1] else None
        return grad if ctx.needs_input_grad[0] else None, gv, None, None, None

    torch.library.register_autograd(ops["reparameterize"], reparam_backward,
                                    setup_context=reparam_setup)


_NAMES = ("add_noise", "add_noise_seeded", "add_noise_backward", "diffusion_loss",
          "diffusion_loss_backward", "kl_divergence", "kl_divergence_backward", "reparameterize",
          "reparameterize_backward")

if CPU_LIB.loaded:
    CPP_OPS = {n: getattr(torch.ops.genfast, f"training_{n}").default for n in _NAMES}
    if not torch._C._dispatch_has_kernel_for_dispatch_key("genfast::training_add_noise",
                                                          "Autograd"):
        register_autograd(CPP_OPS)  # an extension built before the C++ autograd
    _ADD_NOISE, _ADD_NOISE_SEEDED = CPP_OPS["add_noise"], CPP_OPS["add_noise_seeded"]
    _DIFFUSION_LOSS = CPP_OPS["diffusion_loss"]
    _KL, _REPARAM = CPP_OPS["kl_divergence"], CPP_OPS["reparameterize"]
    # z alone: its C++ autograd keeps what the backward needs private (on the
    # CPU the forward's pass writes dz/dlogvar itself; see
    # csrc/bindings/training_autograd.cpp). Absent from older builds.
    if hasattr(torch.ops.genfast, "training_reparameterize_sample"):
        CPP_OPS["reparameterize_sample"] = torch.ops.genfast.training_reparameterize_sample.default
        _REPARAM_Z = CPP_OPS["reparameterize_sample"]
    else:
        def _REPARAM_Z(*args):
            return _REPARAM(*args)[0]


def _triton_ops():
    from ..triton import training as _tt
    return _tt.OPS


# ---------------------------------------------------------------- argument checks

def _check_tensor(name, x, device=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but x0/pred is on {device}")


def _check_pair(name_a, a, name_b, b):
    _check_tensor(name_b, b, a.device)
    if b.shape != a.shape:
        raise ValueError(f"{name_b} has shape {tuple(b.shape)} but {name_a} has shape "
                         f"{tuple(a.shape)}")
    if b.dtype != a.dtype:
        raise TypeError(f"{name_b} is {b.dtype} but {name_a} is {a.dtype}")


def _check_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise TypeError("schedule must be a genfast.schedules.Schedule (build one with "
                        f"genfast.schedules.from_config(scheduler.config)), got "
                        f"{type(schedule).__name__}")
    return schedule.kind_code


def _check_timesteps(timesteps, x, kind, schedule, which):
    if not isinstance(timesteps, torch.Tensor):
        raise TypeError(f"timesteps must be a Tensor (one per item), got {type(timesteps).__name__}")
    if timesteps.device != x.device:
        raise ValueError(f"timesteps is on {timesteps.device} but {which} is on {x.device}")
    n = x.shape[0] if x.dim() >= 1 else 1
    if timesteps.dim() != 1 or timesteps.shape[0] != n:
        raise ValueError(f"timesteps must have shape ({n},), one per item of {which} "
                         f"{tuple(x.shape)}; got {tuple(timesteps.shape)}")
    if kind == 0:
        if timesteps.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"timesteps must be int64 or int32 (indices into the {schedule.kind} "
                            f"schedule's table), got {timesteps.dtype}")
    elif timesteps.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"timesteps must be float32 or float64 for a {schedule.kind} schedule "
                        f"({'sigma' if kind == 1 else 't in [0, 1]'}), got {timesteps.dtype}")


def _check_values(timesteps, kind, schedule, which):
    """Value range on the host: free for CPU tensors (the cpu backend's C++
    binding does it there itself); a sync on a GPU, so only when asked."""
    if which == "cpu" or torch.compiler.is_compiling():
        return
    if (timesteps.device.type == "cpu" or _CHECK_ON_DEVICE) and timesteps.numel():
        ok = _ref.valid(kind, timesteps, schedule.num_train_timesteps)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            rng = {0: f"[0, {schedule.num_train_timesteps})", 1: "[0, inf) (sigma)",
                   2: "[0, 1] (flow t)"}[kind]
            raise ValueError(f"timesteps[{i}] = {timesteps[i].item()} is out of range {rng} "
                             f"for this {schedule.kind} schedule")


def _code(name, value, table):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{name} must be one of {', '.join(table)}, got {value!r}") from None


def _table(schedule, device):
    if schedule.kind_code == 0:
        return schedule.table(device)
    key = (device.type, device.index)
    t = _EMPTY_TABLES.get(key)
    if t is None:
        t = _EMPTY_TABLES[key] = torch.zeros((0, 4), dtype=torch.float64, device=device)
    return t


def _which(backend, x):
    which = _backend.resolve(backend, x.device)
    if which == "cpu":
        return which, CPP_OPS
    if x.dtype == torch.float64:  # float64 (gradcheck) kernels are the CPU's
        if which != "reference" and (backend or _backend.get_backend()) != "auto":
            raise TypeError(f"float64 inputs run on the cpu and reference backends, not on "
                            f"{which!r}")
        return which, None
    if which == "cuda":
        return which, CPP_OPS
    if which == "triton":
        return which, _triton_ops()
    return which, None


_FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_TS_DTYPES = ((torch.int64, torch.int32), (torch.float32, torch.float64),
              (torch.float32, torch.float64))
_KERNELS = ("cpu", "cuda")
I63 = 1 << 63


def _fast(backend, x):
    """True when the call may skip the Python checks: x a float32 / float16 /
    bfloat16 tensor on the CPU or a GPU whose backend is the C++ kernels
    (their bindings check devices, shapes and, on the CPU, timestep values)."""
    if x.dtype not in _FAST_DTYPES:
        return False
    if x.is_cpu:
        return _backend.resolve(backend, "cpu") == "cpu"
    return x.is_cuda and not _CHECK_ON_DEVICE and _backend.resolve(backend, "cuda") == "cuda"


def _fast_timesteps(timesteps, x, kind):
    return (isinstance(timesteps, torch.Tensor) and timesteps.dtype in _TS_DTYPES[kind]
            and timesteps.dim() == 1 and x.dim() >= 2 and timesteps.shape[0] == x.shape[0])


# ---------------------------------------------------------------- add_noise

def add_noise(x0: torch.Tensor, timesteps: torch.Tensor, schedule: Schedule, *,
              noise: torch.Tensor | None = None, seed: int | None = None, stream: int = 0,
              sample_offset: int = 0, prediction_type: str = "epsilon",
              backend: str | None = None):
    """The forward process in one pass: ``(x_t, noise, target)``.

    x_t = a x0 + b eps and target = c x0 + d eps with per-item coefficients of
    the schedule at ``timesteps`` (one per item of the leading dimension):
    VP (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"):
    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, integer timesteps;
    sigma space (Karras et al. 2022, EDM): x_t = x0 + sigma eps, float sigma;
    flow matching (Lipman et al. 2023; Liu et al. 2023): x_t = (1 - t) x0 + t eps,
    float t in [0, 1] (apply the schedule's shift to t before, as SD3 training
    does, Esser et al. 2024).

    prediction_type picks the target: "epsilon" (eps), "v_prediction"
    (Salimans & Ho 2022: sqrt(abar) eps - sqrt(1 - abar) x0, in sigma space
    (eps - sigma x0)/sqrt(sigma^2 + 1)), "sample" (x0) or "flow" (eps - x0,
    the rectified-flow velocity of diffusers' flow-matching training scripts).
    Equal to diffusers' ``add_noise`` / ``get_velocity`` for the same noise.

    Noise: exactly one of ``noise`` (a tensor like x0) or ``seed``: then eps is
    drawn in the kernel and equals ``genfast.randn(x0.shape, seed=seed,
    stream=stream, sample_offset=sample_offset, dtype=x0.dtype)`` bit for bit on
    the same backend (float64 x0: the float32 normals, widened); with
    "epsilon" the target returned is that noise tensor itself (as diffusers'
    training scripts use ``target = noise``), not a third copy. The gradient
    flows to x0 (and to a given noise). Computed in float32 (float64 for
    float64 x0); fp16 / bf16 in, same dtype out.
    """
    kind = schedule.kind_code if isinstance(schedule, Schedule) else -1
    pred = _ref.PREDICTIONS.get(prediction_type, -1) if type(prediction_type) is str else -1
    if (noise is None and type(seed) is int and 0 <= seed < U64 and kind >= 0 and pred >= 0
            and not (kind == 2 and pred == 1) and type(stream) is int and 0 <= stream < U32
            and type(sample_offset) is int and isinstance(x0, torch.Tensor)
            and _fast_timesteps(timesteps, x0, kind) and 0 <= sample_offset
            and sample_offset + x0.shape[0] <= U32 and _fast(backend, x0)):
        x_t, eps, target = _ADD_NOISE_SEEDED(x0, timesteps, _table(schedule, x0.device), kind,
                                             pred, seed - U64 if seed >= I63 else seed, stream,
                                             sample_offset)
        return x_t, eps, eps if pred == 0 else target
    if (seed is None and isinstance(noise, torch.Tensor) and kind >= 0 and pred >= 0
            and not (kind == 2 and pred == 1) and isinstance(x0, torch.Tensor)
            and noise.dtype == x0.dtype and noise.shape == x0.shape
            and _fast_timesteps(timesteps, x0, kind) and _fast(backend, x0)):
        x_t, target = _ADD_NOISE(x0, noise, timesteps, _table(schedule, x0.device), kind, pred)
        return x_t, noise, target
    _check_tensor("x0", x0)
    kind = _check_schedule(schedule)
    if x0.dim() < 2:
        raise ValueError(f"x0 needs a batch dimension and feature dimensions, got shape "
                         f"{tuple(x0.shape)}")
    _check_timesteps(timesteps, x0, kind, schedule, "x0")
    pred = _code("prediction_type", prediction_type, _ref.PREDICTIONS)
    if kind == 2 and pred == 1:
        raise ValueError("prediction_type 'v_prediction' has no meaning for a flow-matching "
                         "schedule (use 'flow')")
    if (noise is None) == (seed is None):
        raise ValueError("pass exactly one of noise= and seed= (got "
                         f"{'both' if noise is not None else 'neither'})")
    table = _table(schedule, x0.device)
    which, ops = _which(backend, x0)
    _check_values(timesteps, kind, schedule, which)
    if noise is not None:
        _check_pair("x0", x0, "noise", noise)
        if ops is None:
            x_t, target = _ref.add_noise(x0, noise, timesteps, table, kind, pred)
        else:
            x_t, target = ops["add_noise"](x0, noise, timesteps, table, kind, pred)
        return x_t, noise, target
    seed = _uint("seed", seed, U64)
    stream, sample_offset = _stream_args(stream, sample_offset, x0.shape[0])
    if ops is None:
        eps = _noise.randn(x0.shape, seed=seed, stream=stream, sample_offset=sample_offset,
                           dtype=_noise_dtype(x0.dtype), device=x0.device,
                           backend="reference").to(x0.dtype)
        x_t, target = _ref.add_noise(x0, eps, timesteps, table, kind, pred)
        return x_t, eps, eps if pred == 0 else target
    x_t, eps, target = ops["add_noise_seeded"](x0, timesteps, table, kind, pred,
                                               as_int64_bits(seed), stream, sample_offset)
    return x_t, eps, eps if pred == 0 else target


def _noise_dtype(dtype):
    return torch.float32 if dtype == torch.float64 else dtype


def _uint(name, value, hi):
    # the common case (a Python int in range) costs one type check; anything
    # else (SymInt under compile, numpy ints, bad values) takes check_int
    if type(value) is int and 0 <= value < hi:
        return value
    return check_int(name, value, 0, hi)


def _stream_args(stream, sample_offset, items):
    stream = _uint("stream", stream, U32)
    sample_offset = _uint("sample_offset", sample_offset, U32)
    if type(items) is int and items > 0 and sample_offset + items > U32:
        raise ValueError(f"sample_offset + batch size must be <= 2**32, got sample_offset="
                         f"{sample_offset} with {items} items")
    return stream, sample_offset


# ---------------------------------------------------------------- diffusion_loss

def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor,
                   schedule: Schedule, *, weighting: str = "none",
                   prediction_type: str = "epsilon", gamma: float = 5.0,
                   reduction: str = "mean", sigma_data: float | None = None,
                   backend: str | None = None) -> torch.Tensor:
    """Fused weighted MSE, as diffusers' training scripts compute it.

    Per item i: l_i = w_i * mean over its features of (pred - target)^2; then
    "mean" / "sum" over items, or "none" for the (N,) per-item values. Weights,
    computed per item inside the kernel from the schedule at ``timesteps``:
    "none" (1); "min_snr" (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy"): min(snr, gamma)/snr for epsilon (1 at
    snr = 0, the zero-terminal-SNR limit), min(snr, gamma)/(snr + 1) for
    v_prediction, min(snr, gamma) for sample; "edm" (Karras et al. 2022, sigma
    schedules): (sigma^2 + sigma_data^2)/(sigma sigma_data)^2.
    One kernel forward, one backward; the loss is float32 (float64 for
    float64 inputs) whatever the input dtype, as the scripts' ``.float()``.
    """
    kind = schedule.kind_code if isinstance(schedule, Schedule) else -1
    if (kind >= 0 and isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor)
            and type(weighting) is str and type(prediction_type) is str
            and type(reduction) is str and type(gamma) in (int, float) and gamma > 0
            and _fast_timesteps(timesteps, pred, kind) and target.dtype == pred.dtype
            and target.shape == pred.shape and _fast(backend, pred)):
        w = _ref.WEIGHTINGS.get(weighting, -1)
        p = _ref.PREDICTIONS.get(prediction_type, -1)
        r = _ref.REDUCTIONS.get(reduction, -1)
        if (w >= 0 and p >= 0 and r >= 0 and not (w == 1 and (kind == 2 or p == 3))
                and not (w == 2 and kind != 1)):
            if sigma_data is None:
                sigma_data = getattr(schedule, "sigma_data", 0.5)
            return _DIFFUSION_LOSS(pred, target, timesteps, _table(schedule, pred.device), kind,
                                   w, p, float(gamma), float(sigma_data), r)
    _check_tensor("pred", pred)
    _check_pair("pred", pred, "target", target)
    kind = _check_schedule(schedule)
    _check_timesteps(timesteps, pred, kind, schedule, "pred")
    w = _code("weighting", weighting, _ref.WEIGHTINGS)
    p = _code("prediction_type", prediction_type, _ref.PREDICTIONS)
    r = _code("reduction", reduction, _ref.REDUCTIONS)
    if w == 1 and (kind == 2 or p == 3):
        raise ValueError("weighting 'min_snr' is defined for epsilon, v_prediction and sample "
                         "prediction on vp or sigma schedules")
    if w == 2 and kind != 1:
        raise ValueError("weighting 'edm' needs a sigma-space schedule (float sigma timesteps)")
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma > 0:
        raise ValueError(f"gamma must be a positive number, got {gamma!r}")
    if sigma_data is None:
        sigma_data = getattr(schedule, "sigma_data", 0.5)
    table = _table(schedule, pred.device)
    which, ops = _which(backend, pred)
    _check_values(timesteps, kind, schedule, which)
    args = (timesteps, table, kind, w, p, float(gamma), float(sigma_data), r)
    if ops is None:
        return _ref.diffusion_loss(pred, target, *args)
    return ops["diffusion_loss"](pred, target, *args)


# ---------------------------------------------------------------- VAE

def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, seed: int, stream: int = 0,
                   sample_offset: int = 0, backend: str | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) eps (Kingma & Welling 2014, "Auto-Encoding
    Variational Bayes"), eps drawn in the kernel: ``genfast.randn(mu.shape,
    seed=seed, stream=stream, sample_offset=sample_offset, dtype=mu.dtype)``.

    logvar is clamped to [-30, 20] first, as diffusers'
    DiagonalGaussianDistribution does, so exp never overflows (the gradient is
    0 outside the clamp, like torch.clamp's). The op keeps d = exp(lv/2) eps
    for its fused backward (one elementwise pass, no generator, no exp).
    """
    if (type(seed) is int and 0 <= seed < U64 and type(stream) is int and 0 <= stream < U32
            and type(sample_offset) is int and isinstance(mu, torch.Tensor)
            and isinstance(logvar, torch.Tensor) and mu.dim() >= 2 and 0 <= sample_offset
            and sample_offset + mu.shape[0] <= U32 and logvar.dtype == mu.dtype
            and logvar.shape == mu.shape and _fast(backend, mu)):
        return _REPARAM_Z(mu, logvar, seed - U64 if seed >= I63 else seed, stream, sample_offset)
    _check_tensor("mu", mu)
    _check_pair("mu", mu, "logvar", logvar)
    seed = _uint("seed", seed, U64)
    items = mu.shape[0] if mu.dim() >= 2 else 1
    stream, sample_offset = _stream_args(stream, sample_offset, items)
    which, ops = _which(backend, mu)
    if ops is None:
        eps = _noise.randn(mu.shape, seed=seed, stream=stream, sample_offset=sample_offset,
                           dtype=_noise_dtype(mu.dtype), device=mu.device, backend="reference")
        return _ref.reparameterize(mu, logvar, eps.to(mu.dtype))
    if "reparameterize_sample" in ops:
        return ops["reparameterize_sample"](mu, logvar, as_int64_bits(seed), stream, sample_offset)
    return ops["reparameterize"](mu, logvar, as_int64_bits(seed), stream, sample_offset)[0]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, *, reduction: str = "sum",
                  backend: str | None = None) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over each item's features
    (Kingma & Welling 2014, appendix B): 0.5 sum(mu^2 + exp(lv) - 1 - lv), lv
    clamped to [-30, 20] (diffusers' DiagonalGaussianDistribution.kl). Then
    "sum" over items (the familiar -0.5 sum(1 + lv - mu^2 - exp(lv))), "mean"
    over items (diffusers' ``posterior.kl().mean()``), or "none": (N,). Items
    are the leading dimension. float32 out (float64 for float64 inputs)."""
    r = _ref.REDUCTIONS.get(reduction, -1) if type(reduction) is str else -1
    if (r >= 0 and isinstance(mu, torch.Tensor) and isinstance(logvar, torch.Tensor)
            and logvar.dtype == mu.dtype and logvar.shape == mu.shape and _fast(backend, mu)):
        return _KL(mu, logvar, r)
    _check_tensor("mu", mu)
    _check_pair("mu", mu, "logvar", logvar)
    r = _code("reduction", reduction, _ref.REDUCTIONS)
    which, ops = _which(backend, mu)
    if ops is None:
        return _ref.kl_divergence(mu, logvar, r)
    return ops["kl_divergence"](mu, logvar, r)
