"""Fused reverse-diffusion steps: one op call per sampler step, with
classifier-free guidance, guidance_rescale, clip_sample and dynamic
thresholding fused into the same call, and no host sync.

Spec: genfast/reference/steps.py; per-step and per-element math:
csrc/include/genfast/steps.h; kernels: csrc/cpu/steps.cpp, csrc/cuda/steps.cu,
genfast/triton/steps.py. Registered ops ``genfast::steps_step`` (cpu, cuda;
schema in csrc/bindings/ops.cpp) and ``genfast::steps_step_triton``.

The engine. A step reads its scalars from a `SamplingPlan`
(``schedule.plan(n, sampler=...)``: one float64 table on the device) by step
index: a Python int, or a 0-d integer tensor on the sample's device that the
kernel reads itself (a loop can keep its counter on the device; nothing
syncs). Every sampler is, per step, the affine map of steps.h applied once
x0 is known; the per-item passes (guidance_rescale's stds, the thresholding
quantile) run inside the same op before the elementwise pass.

Step index out of range: a Python int is checked here (ValueError naming
``index``); a tensor index is checked by the cpu kernel on the host (the
CPU's memory: no sync), an IndexError; the cuda and triton kernels read a
tensor index on the device and, past the plan, return NaN for the whole step
(checking it on the host would be a sync).

Noise of stochastic steps: ``noise=`` (a tensor like the sample: exact
comparison with other libraries), or ``seed=``: then the step's z equals
``genfast.randn(sample.shape, seed=seed, stream=stream + index,
sample_offset=sample_offset, dtype=sample.dtype)`` bit for bit on the same
backend: the stream of step i is ``stream + i`` (mod 2**32), item b is
sample ``sample_offset + b``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .. import backend as _backend
from .._checks import as_int64_bits
from .._extension import CPU_LIB
from .._plan import SamplingPlan
from ..reference import noise as _ref_noise
from ..reference import steps as _ref

U64, U32 = 1 << 64, 1 << 32
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SAMPLER_PREDICTIONS = {
    0: (0, 1, 2), 1: (0, 1, 2), 2: (0, 1, 2), 3: (0, 1, 2), 4: (0, 1, 2), 5: (3,),
}
_CLIPPING = (0, 1, 4)  # ddpm, ddim, lcm: the samplers where diffusers clips / thresholds x0


class StepOutput(NamedTuple):
    """``prev_sample`` and ``pred_original_sample`` (x0 after clipping /
    thresholding; LCM: its boundary-condition ``denoised``; None with
    ``return_x0=False``)."""
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None


# the OpOverload itself: calling the packet resolves the overload on every call (~3 us)
_CPP_OP = torch.ops.genfast.steps_step.default if CPU_LIB.loaded else None
# The eager fast path's call: genfast._C.steps_step (csrc/bindings/eager.cpp:
# typed arguments, the same op through the dispatcher, 7-12 us less than the
# boxed call on the CI machine), else the OpOverload's C++ callable. Dynamo
# traces the OpOverload; tensor subclasses and torch function modes take the
# full path, whose OpOverload call honours __torch_function__.
_CPP_CALL = (CPU_LIB.eager.steps_step if CPU_LIB.eager is not None
             else _CPP_OP._op if CPU_LIB.loaded else None)
_Tensor = torch.Tensor
_tf_mode = torch._C._is_torch_function_mode_enabled


def _plain(*tensors) -> bool:
    """Every argument a plain torch.Tensor or None (no subclass whose
    __torch_function__ must see the op)."""
    return all(t is None or type(t) is _Tensor for t in tensors)

if CPU_LIB.loaded:
    @torch.library.register_fake("genfast::steps_step")
    def _(sample, model_output, uncond, guidance, noise, plan, index, step, sampler, prediction,
          variance, flags, params, seed, stream, sample_offset):
        prev = torch.empty(sample.shape, dtype=sample.dtype, device=sample.device)
        n = sample.shape if flags & _ref.WANT_X0 else (0,)
        return prev, torch.empty(n, dtype=sample.dtype, device=sample.device)


_NO_CACHE: dict = {}
_KERNEL_OF = {"cpu": 1, "cuda": 1}
_new_output = tuple.__new__
I63 = 1 << 63


def _fast_codes(plan, key):
    """(sampler, prediction, flags, params, draws) of the fast path for
    ``plan`` and (prediction_type, timestep_scaling, return_x0); sampler -1:
    not for the fast path (the full checks then raise or handle it)."""
    (prediction_type, timestep_scaling, return_x0, eta, clip, clip_range,
     use_clipped) = key
    d = getattr(plan, "__dict__", None)
    cache = {} if d is None else d.setdefault("_genfast_fast_codes", {})
    sampler = _ref.SAMPLERS.get(plan.sampler, -1)
    pred = _ref.PREDICTIONS.get(prediction_type or ("flow" if sampler == 5 else "epsilon"), -1)
    if (sampler < 0 or pred not in _SAMPLER_PREDICTIONS[sampler] or type(return_x0) is not bool
            or not isinstance(timestep_scaling, (int, float))
            or not (eta is None or type(eta) in (int, float))
            or type(clip_range) not in (int, float)
            or ((clip or use_clipped) and sampler not in _CLIPPING)):
        hit = (-1, 0, 0, None, False)
    else:
        if eta is None:
            eta = plan.options.get("eta", 1.0 if sampler == 3 else 0.0)
        params = [0.0, 0.0, float(eta), float(clip_range), 0.995, 1.0, 0.0, 0.0, math.inf, 1.0,
                  float(timestep_scaling)]
        draws = sampler in (0, 3, 4) or (sampler == 1 and eta > 0)
        flags = ((_ref.WANT_X0 if return_x0 else 0) | (_ref.CLIP if clip else 0)
                 | (_ref.USE_CLIPPED if use_clipped else 0))
        hit = (sampler, pred, flags, params, draws)
    cache[key] = hit
    return hit


def bind(plan: SamplingPlan, key: tuple, seed: int | None = None, stream: int = 0,
         sample_offset: int = 0):
    """``step(plan, index, model_output, sample, **options)`` for one fixed set
    of options, as a direct call of the op's eager entry point with the codes
    resolved once: ``fn(index, model_output, sample) -> (prev, x0)`` (x0 an
    empty tensor when ``return_x0`` is False), or None where the wrapper must
    run (options its fast path does not take, no C++ extension, noise drawn
    without a seed). ``key`` is the fast path's: (prediction_type,
    timestep_scaling, return_x0, eta, clip_sample, clip_sample_range,
    use_clipped_model_output).

    For loops that call one step many times (genfast.sample, the diffusers
    drop-ins): the caller makes per call the checks the wrapper's fast path
    makes, that is plain tensors (``type(t) is torch.Tensor``), one float
    dtype for both, a cpu / cuda backend for the sample's device, an int
    index, not compiling and no torch function mode. The op checks shapes,
    devices and the index itself; results are the wrapper's bit for bit."""
    if _CPP_CALL is None:
        return None
    sampler, pred, flags, params, draws = _fast_codes(plan, key)
    if sampler < 0 or (draws and seed is None):
        return None
    bits = 0
    if seed is not None:
        if type(seed) is not int or not 0 <= seed < U64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        flags |= _ref.NOISE_SEEDED
        bits = seed - U64 if seed >= I63 else seed
    table, call = plan.table, _CPP_CALL

    def bound(index, model_output, sample):
        return call(sample, model_output, None, None, None, table, None, index, sampler, pred, 0,
                    flags, params, bits, stream, sample_offset)
    return bound


def _code(name, value, table):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{name} must be one of {', '.join(table)}, got {value!r}") from None


def _check_index(index, n):
    if isinstance(index, torch.Tensor):
        if index.dim() != 0 or index.dtype.is_floating_point or index.dtype == torch.bool:
            raise TypeError(f"index must be a Python int or a 0-d integer tensor, got a "
                            f"{index.dtype} tensor of shape {tuple(index.shape)}")
        return index, 0
    if type(index) is int:
        if not 0 <= index < n:
            raise ValueError(f"index {index} is past the plan: it has {n} steps (0..{n - 1})")
        return None, index
    if torch.compiler.is_compiling():
        torch._check(index >= 0)
        torch._check(index < n)
        return None, index
    if isinstance(index, bool) or not hasattr(index, "__index__"):
        raise TypeError(f"index must be a Python int or a 0-d integer tensor, got "
                        f"{type(index).__name__}")
    return _check_index(int(index), n)


def _check_model_output_shape(mo, x, uncond, guidance_scale, sampler, variance_type):
    """The uncommon shapes: batched CFG (2N items), learned variance (2C channels)."""
    items = 2 * x.shape[0] if uncond is None and guidance_scale is not None else x.shape[0]
    chans = 2 * x.shape[1] if sampler == 0 and variance_type == "learned_range" else x.shape[1]
    want = (items, chans) + tuple(x.shape[2:])
    if tuple(mo.shape) != want:
        if uncond is None and guidance_scale is not None and mo.shape[0] != items:
            raise ValueError(f"guidance halves do not split: model_output has {mo.shape[0]} "
                             f"items, the batched [uncond; cond] form needs 2 x {x.shape[0]} "
                             f"(the sample's)")
        raise ValueError(f"model_output has shape {tuple(mo.shape)} but sample has shape "
                         f"{tuple(x.shape)} (expected {want})")


def step(plan: SamplingPlan, index, model_output: torch.Tensor, sample: torch.Tensor, *,
         prediction_type: str | None = None, uncond: torch.Tensor | None = None,
         guidance_scale=None, guidance_rescale: float = 0.0, clip_sample: bool = False,
         clip_sample_range: float = 1.0, thresholding: bool = False,
         dynamic_thresholding_ratio: float = 0.995, sample_max_value: float = 1.0,
         eta: float | None = None, use_clipped_model_output: bool = False,
         variance_type: str = "fixed_small", s_churn: float = 0.0, s_tmin: float = 0.0,
         s_tmax: float = math.inf, s_noise: float = 1.0, timestep_scaling: float = 10.0,
         stochastic_sampling: bool = False, noise: torch.Tensor | None = None,
         seed: int | None = None, stream: int = 0, sample_offset: int = 0,
         return_x0: bool = True, backend: str | None = None) -> StepOutput:
    """One reverse step of ``plan.sampler`` from step ``index`` of the plan.

    Samplers (the plan's; diffusers 0.42.1's scheduler of the same name is the
    reference): "ddpm" (Ho et al. 2020; ``variance_type`` fixed_small,
    fixed_small_log, fixed_large, learned_range, where model_output carries
    the variance in its second half of channels), "ddim" (Song et al. 2021;
    ``eta``, ``use_clipped_model_output``), "euler" (Karras et al. 2022 alg. 2:
    ``s_churn``, ``s_tmin``, ``s_tmax``, ``s_noise``), "euler_ancestral"
    (``eta``, 1 = diffusers), "lcm" (Luo et al. 2023; ``timestep_scaling``),
    "flow_match_euler" (Lipman et al. 2023, Liu et al. 2023; velocity
    prediction; ``stochastic_sampling``: x_next = (1 - s') x0 + s' z).
    prediction_type: epsilon / v_prediction / sample (flow for flow matching);
    default epsilon (flow for flow_match_euler).

    Classifier-free guidance (Ho & Salimans 2022): m = u + g (c - u), from
    ``uncond=`` and model_output = c, or from one model_output of 2N items
    [uncond; cond] (the way pipelines batch them) when ``guidance_scale`` is
    given without ``uncond``. ``guidance_scale``: a float or a tensor of one
    scale per item. ``guidance_rescale`` phi (Lin et al. 2024):
    m <- phi m std(c)/std(m) + (1 - phi) m, per-item unbiased stds.
    ``clip_sample``: x0 clamped to +-clip_sample_range; ``thresholding``
    (Saharia et al. 2022; it takes precedence): per item s = clamp(quantile(
    |x0|, dynamic_thresholding_ratio), 1, sample_max_value), x0 = clamp(x0, -s, s)/s.

    Noise (stochastic samplers): ``noise=`` or ``seed=`` (module docstring).
    Computed in float32 for float32 / float16 / bfloat16 samples, same dtype
    out. Returns a `StepOutput` (prev_sample, pred_original_sample).
    """
    # Fast path: the plain step (no guidance, thresholding, churn or given
    # noise, an int index; clip_sample and eta allowed: diffusers' DDIM
    # default clips) on the C++ kernels, whose binding checks shapes, devices
    # and the plan itself. Per-plan cache of the codes and params.
    if (uncond is None and guidance_scale is None and noise is None
            and type(index) is int and type(plan) is SamplingPlan
            and not (guidance_rescale or thresholding or s_churn or stochastic_sampling)
            and variance_type == "fixed_small"
            and 0 <= index < plan.num_steps and (seed is None or type(seed) is int)
            and (prediction_type is None or type(prediction_type) is str)
            and not torch.compiler.is_compiling()):
        key = (prediction_type, timestep_scaling, return_x0, eta, bool(clip_sample),
               clip_sample_range, bool(use_clipped_model_output))
        cache = getattr(plan, "__dict__", _NO_CACHE).get("_genfast_fast_codes")
        fast = cache.get(key) if cache is not None else None
        if fast is None:
            fast = _fast_codes(plan, key)
        sampler, pred, flags, params, draws = fast
        if (sampler >= 0 and type(sample) is _Tensor and type(model_output) is _Tensor
                and model_output.dtype == sample.dtype and sample.dtype in _DTYPES
                and (seed is not None or not draws) and not _tf_mode()):
            dev = "cpu" if sample.is_cpu else "cuda" if sample.is_cuda else sample.device.type
            if _KERNEL_OF.get(_backend.resolve(backend, dev)) is not None:
                if seed is not None:
                    if not 0 <= seed < U64:
                        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
                    flags |= _ref.NOISE_SEEDED
                    seed = seed - U64 if seed >= I63 else seed
                prev, x0 = _CPP_CALL(sample, model_output, None, None, None, plan.table, None,
                                     index, sampler, pred, 0, flags, params, seed or 0, stream,
                                     sample_offset)
                return _new_output(StepOutput, (prev, x0 if return_x0 else None))
    if not isinstance(plan, SamplingPlan):
        raise TypeError(f"plan must be a genfast SamplingPlan (schedule.plan(n, sampler=...)), "
                        f"got {type(plan).__name__}")
    sampler = _ref.SAMPLERS.get(plan.sampler)
    if sampler is None:
        raise ValueError(f"plan.sampler {plan.sampler!r} has no single-step kernel (one of "
                         f"{', '.join(_ref.SAMPLERS)})")
    if not isinstance(sample, torch.Tensor) or sample.dtype not in _DTYPES:
        raise TypeError("sample must be a float32, float16 or bfloat16 Tensor, got "
                        f"{getattr(sample, 'dtype', type(sample).__name__)}")
    if not isinstance(model_output, torch.Tensor):
        raise TypeError(f"model_output must be a Tensor, got {type(model_output).__name__}")
    if model_output.dtype != sample.dtype:  # devices: checked by the op (a .device costs ~1 us)
        raise TypeError(f"model_output is {model_output.dtype} but sample is {sample.dtype}")
    if sample.dim() < 2:
        raise ValueError(f"sample needs a batch and a channel dimension, got shape "
                         f"{tuple(sample.shape)}")
    if model_output.shape != sample.shape:
        _check_model_output_shape(model_output, sample, uncond, guidance_scale, sampler,
                                  variance_type)
    pred = _ref.PREDICTIONS.get(prediction_type or ("flow" if sampler == 5 else "epsilon"))
    if pred is None:
        _code("prediction_type", prediction_type, _ref.PREDICTIONS)
    if pred not in _SAMPLER_PREDICTIONS[sampler]:
        raise ValueError(f"prediction_type {prediction_type!r} is not supported by the "
                         f"{plan.sampler} sampler (one of "
                         f"{', '.join(k for k, v in _ref.PREDICTIONS.items() if v in _SAMPLER_PREDICTIONS[sampler])})")
    var = _ref.VARIANCES.get(variance_type)
    if var is None:
        _code("variance_type", variance_type, _ref.VARIANCES)
    if type(index) is int and 0 <= index < plan.num_steps:  # the common case, cheaply
        index_t, index_i = None, index
    else:
        index_t, index_i = _check_index(index, plan.num_steps)
    dev = sample.device  # the plan's and the index's device: checked by the ops

    flags = _ref.WANT_X0 if return_x0 else 0
    g_t = None
    g = 0.0
    if uncond is not None or guidance_scale is not None:
        if guidance_scale is None:
            raise ValueError("uncond= needs guidance_scale=")
        flags |= _ref.CFG_SEPARATE if uncond is not None else _ref.CFG_BATCHED
        if isinstance(guidance_scale, torch.Tensor):
            if guidance_scale.shape != (sample.shape[0],):
                raise ValueError(f"guidance_scale must be a float or a tensor of shape "
                                 f"({sample.shape[0]},), got {tuple(guidance_scale.shape)}")
            g_t = guidance_scale.to(device=dev, dtype=torch.float32)
            flags |= _ref.GUIDANCE_TENSOR
        else:
            g = float(guidance_scale)
        if uncond is None and model_output.shape[0] != 2 * sample.shape[0]:
            raise ValueError(f"guidance halves do not split: model_output has "
                             f"{model_output.shape[0]} items, the batched [uncond; cond] form "
                             f"needs 2 x {sample.shape[0]} (the sample's)")
        if uncond is not None and uncond.shape != model_output.shape:
            raise ValueError(f"uncond has shape {tuple(uncond.shape)} but model_output has "
                             f"shape {tuple(model_output.shape)}")
        if guidance_rescale:
            flags |= _ref.RESCALE
    elif guidance_rescale:
        raise ValueError("guidance_rescale needs classifier-free guidance (guidance_scale=)")
    if (clip_sample or thresholding) and sampler not in _CLIPPING:
        raise ValueError(f"clip_sample / thresholding apply to ddpm, ddim and lcm, not "
                         f"{plan.sampler}")
    if thresholding:
        flags |= _ref.THRESHOLD
    elif clip_sample:
        flags |= _ref.CLIP
    if use_clipped_model_output:
        flags |= _ref.USE_CLIPPED
    if stochastic_sampling:
        if sampler != 5:
            raise ValueError("stochastic_sampling is an option of flow_match_euler")
        flags |= _ref.STOCHASTIC
    if eta is None:
        eta = plan.options.get("eta", 1.0 if sampler == 3 else 0.0)
    draws = (sampler in (0, 3, 4) or (sampler == 1 and eta > 0) or (sampler == 2 and s_churn > 0)
             or flags & _ref.STOCHASTIC)
    if noise is not None and seed is not None:
        raise ValueError("pass at most one of noise= and seed=")
    if noise is not None:
        flags |= _ref.NOISE_GIVEN
    elif seed is not None:
        flags |= _ref.NOISE_SEEDED
        if type(seed) is not int or not 0 <= seed < U64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    elif draws:
        raise ValueError(f"the {plan.sampler} step draws noise here: pass noise= (a tensor like "
                         f"sample) or seed=")
    params = [g, float(guidance_rescale), float(eta), float(clip_sample_range),
              float(dynamic_thresholding_ratio), float(sample_max_value), float(s_churn),
              float(s_tmin), float(s_tmax), float(s_noise), float(timestep_scaling)]

    which = _backend.resolve(backend, dev.type)  # cached per (backend, device type)
    if which in ("cpu", "cuda", "triton"):
        if which == "triton":
            op = _triton_op()
        elif (_plain(sample, model_output, uncond, g_t, noise) and not _tf_mode()
              and not torch.compiler.is_compiling()):
            op = _CPP_CALL  # the eager entry point: same op, no boxing
        else:
            op = _CPP_OP
        prev, x0 = op(sample, model_output, uncond, g_t, noise, plan.table, index_t, index_i,
                      sampler, pred, var, flags, params, as_int64_bits(seed or 0), stream,
                      sample_offset)
        return StepOutput(prev, x0 if return_x0 else None)
    if plan.table.device != dev or (index_t is not None and index_t.device != dev):
        raise ValueError(f"plan ({plan.table.device}) and index must be on the sample's device "
                         f"{dev} (plan.to(device) moves a plan once)")
    idx = index_t if index_t is not None else index_i
    if noise is None and seed is not None:
        noise = _ref_noise.randn(sample.shape, seed, _ref.stream_of(stream, idx), sample_offset,
                                 sample.dtype, dev)
    prev, x0 = _ref.step(plan.table, idx, sample, model_output, sampler=sampler,
                         prediction=pred, variance=var, flags=flags, params=params,
                         num_steps=plan.num_steps, uncond=uncond, guidance=g_t, noise=noise)
    return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype) if return_x0 else None)


def _triton_op():
    from ..triton import steps as _tt
    return _tt._steps_step


def _sampler_fn(name):
    def fn(plan, index, model_output, sample, **kw):
        if getattr(plan, "sampler", None) != name:
            raise ValueError(f"genfast.steps.{name} needs a plan built with sampler={name!r}, "
                             f"got {getattr(plan, 'sampler', plan)!r}")
        return step(plan, index, model_output, sample, **kw)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"`step` for a plan of the {name!r} sampler (checks the plan's sampler)."
    return fn


ddpm = _sampler_fn("ddpm")
ddim = _sampler_fn("ddim")
euler = _sampler_fn("euler")
euler_ancestral = _sampler_fn("euler_ancestral")
lcm = _sampler_fn("lcm")
flow_match_euler = _sampler_fn("flow_match_euler")
