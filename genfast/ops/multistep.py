"""Multistep and two-stage reverse steps (DPM-Solver++, UniPC, Heun, DPM2, LMS):
one op call per step (per stage), classifier-free guidance fused, the
sampler's history in a device state the op reads and updates in place, no
host sync.

Spec: genfast/reference/multistep.py; per-element math:
csrc/include/genfast/multistep.h; kernels: csrc/cpu/multistep.cpp,
csrc/cuda/multistep.cu, genfast/triton/multistep.py. Registered ops
``genfast::multistep_step`` (cpu, cuda; schema in csrc/bindings/ops.cpp) and
``genfast::multistep_step_triton``; both write the state (``Tensor(a!)``).

Noise (sde-dpmsolver++ only): ``noise=`` or ``seed=``; with a seed step i's
z is ``genfast.randn(sample.shape, seed=seed, stream=stream + i,
sample_offset=sample_offset, dtype=sample.dtype)``. Heun and DPM2 draw no
noise; a stochastic two-stage sampler would draw its stage-1 noise from
stream + i as well, at sample offsets shifted by 2**31 (documented here so
that the pair stays distinct; none of the samplers here needs it).
"""

from __future__ import annotations

import math

import torch

from .. import backend as _backend
from .._checks import as_int64_bits
from .._extension import CPU_LIB
from .._plan import SamplingPlan
from ..reference import multistep as _ref
from ..reference import noise as _ref_noise
from ..reference import steps as _rs
from .steps import StepOutput, _check_index, _plain, _Tensor, _tf_mode

U64 = 1 << 64
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_PRED = {"epsilon": 0, "v_prediction": 1, "sample": 2, "flow": 3}


def _cpp_op():
    if CPU_LIB.loaded:
        try:
            return torch.ops.genfast.multistep_step.default
        except (AttributeError, RuntimeError):
            return None
    return None


_CPP_OP = _cpp_op()
# The eager fast path's call: genfast._C.multistep_step (csrc/bindings/eager.cpp:
# typed arguments, the same op through the dispatcher, no boxing of the 18
# arguments), else the OpOverload's C++ callable. Dynamo traces the
# OpOverload; tensor subclasses and torch function modes take the full path.
_CPP_CALL = (None if _CPP_OP is None else CPU_LIB.eager.multistep_step
             if CPU_LIB.eager is not None else _CPP_OP._op)
_KERNEL_OF = {"cpu": 1, "cuda": 1}
_new_output = tuple.__new__

if _CPP_OP is not None:
    @torch.library.register_fake("genfast::multistep_step")
    def _(sample, model_output, uncond, guidance, noise, state, plan, stage_plan, index, step,
          sampler, stage, prediction, flags, params, seed, stream, sample_offset):
        prev = torch.empty(sample.shape, dtype=sample.dtype, device=sample.device)
        n = sample.shape if flags & _rs.WANT_X0 else (0,)
        return prev, torch.empty(n, dtype=sample.dtype, device=sample.device)


class StepState:
    """A multistep / two-stage sampler's history, on the sample's device:
    ``buffer`` of shape (slots,) + sample shape in the sample's dtype (see
    genfast/reference/multistep.py for the slots). Made zeroed by
    `new_state`; `reset` zeroes it for a new loop. Single-step samplers get a
    state with no slots (they need none; ``state=None`` works for them too)."""

    __slots__ = ("sampler", "buffer")

    def __init__(self, sampler: str, buffer: torch.Tensor):
        self.sampler = sampler
        self.buffer = buffer

    def reset(self) -> "StepState":
        self.buffer.zero_()
        return self

    def __repr__(self) -> str:
        return (f"StepState({self.sampler!r}, slots={self.buffer.shape[0]}, "
                f"shape={tuple(self.buffer.shape[1:])}, dtype={self.buffer.dtype})")


def new_state(plan: SamplingPlan, sample: torch.Tensor) -> StepState:
    """The zeroed history buffers ``plan.sampler`` needs for samples like ``sample``."""
    if not isinstance(plan, SamplingPlan):
        raise TypeError(f"plan must be a genfast SamplingPlan, got {type(plan).__name__}")
    if not isinstance(sample, torch.Tensor):
        raise TypeError(f"sample must be a Tensor, got {type(sample).__name__}")
    code = _ref.SAMPLERS.get(plan.sampler)
    slots = 0 if code is None else _ref.SLOTS[code]
    shape = (slots,) + tuple(sample.shape)
    if sample.is_cpu and _ZERO_SERIAL is not None and \
            math.prod(shape) * sample.element_size() <= _SERIAL_ZERO_BYTES:
        buf = torch.empty(shape, dtype=sample.dtype)
        _ZERO_SERIAL(buf)
    else:
        buf = torch.zeros(shape, dtype=sample.dtype, device=sample.device)
    return StepState(plan.sampler, buf)


# Small CPU buffers are zeroed by one memset on the calling thread
# (csrc/bindings/eager.cpp zero_serial): torch.zeros fills more than 32K
# elements in a parallel region, which for one latent's history costs more
# than the memset and, on a loaded machine, waits for the other thread's
# time slice (measured: 2 ms a call at load 3, against ~5 us for the memset).
_SERIAL_ZERO_BYTES = 2 << 20
_ZERO_SERIAL = getattr(CPU_LIB.eager, "zero_serial", None)


def _bad_state(state, plan, sample):
    if not isinstance(state, StepState):
        if state is None:
            return (f"the {plan.sampler} sampler keeps a history: pass "
                    f"state=genfast.steps.new_state(plan, sample)")
        return f"state must be a genfast.steps.StepState, got {type(state).__name__}"
    if state.sampler != plan.sampler:
        return f"state was made for the {state.sampler} sampler, the plan is {plan.sampler}"
    b = state.buffer
    want = (_ref.SLOTS[_ref.SAMPLERS[plan.sampler]],) + tuple(sample.shape)
    if tuple(b.shape) != want or b.dtype != sample.dtype or b.device != sample.device:
        return (f"state holds {tuple(b.shape)} {b.dtype} on {b.device}, this step needs "
                f"{want} {sample.dtype} on {sample.device} (new_state(plan, sample))")
    if not b.is_contiguous():
        return "state.buffer must be contiguous (the op writes it in place)"
    return None


def _fast_codes(plan, key):
    """(sampler, pred, flags, params, draws, stage-1 steps) of the fast path for
    ``plan`` and (prediction_type, return_x0); sampler -1: not for the fast
    path (the full checks then raise or handle it). Cached on the plan."""
    prediction_type, return_x0 = key
    cache = plan.__dict__.setdefault("_genfast_multistep_fast", {})
    sampler = _ref.SAMPLERS.get(plan.sampler, -1)
    pred = (3 if plan.options.get("_flow") else 0) if prediction_type is None else \
        _PRED.get(prediction_type, -1)
    if sampler < 0 or pred < 0:
        hit = (-1, 0, 0, None, False, ())
    else:
        draws = sampler == 0 and plan.options.get("algorithm_type") == "sde-dpmsolver++"
        two = (tuple(plan.stages(i) == 2 for i in range(plan.num_steps))
               if sampler in _ref.TWO_STAGE else ())
        hit = (sampler, pred, _rs.WANT_X0 if return_x0 else 0, [0.0, 0.0], draws, two)
    cache[key] = hit
    return hit


def _guidance_tensor(model_output, uncond, guidance_scale, rescale, n, dev):
    """(2, N) float32: per-item scale g and guidance_rescale factor r (Lin et
    al. 2024: phi std(c)/std(cfg) + 1 - phi, unbiased per-item stds), device
    ops only (no sync)."""
    if isinstance(guidance_scale, torch.Tensor):
        g = guidance_scale.to(device=dev, dtype=torch.float32).reshape(n)
    else:
        g = torch.full((n,), float(guidance_scale), dtype=torch.float32, device=dev)
    if not rescale:
        return torch.stack([g, torch.ones_like(g)])
    mo = model_output.float()
    if uncond is None:
        u, c = mo[:n], mo[n:]
    else:
        u, c = uncond.float(), mo
    cf, uf = c.reshape(n, -1), u.reshape(n, -1)
    m = uf + g[:, None] * (cf - uf)
    sc, sm = cf.std(dim=1), m.std(dim=1)
    r = torch.where(sm > 0, rescale * sc / sm + (1 - rescale), torch.ones_like(sm))
    return torch.stack([g, r])


def step(plan: SamplingPlan, index, model_output: torch.Tensor, sample: torch.Tensor,
         state: StepState | None = None, *, stage: int = 0, prediction_type: str | None = None,
         uncond: torch.Tensor | None = None, guidance_scale=None, guidance_rescale: float = 0.0,
         noise: torch.Tensor | None = None, seed: int | None = None, stream: int = 0,
         sample_offset: int = 0, return_x0: bool = True, backend: str | None = None
         ) -> StepOutput:
    """One step (stage ``stage``) of a multistep / two-stage sampler:
    ``plan.sampler`` in dpmpp, unipc, heun, dpm_2, lms (reference: diffusers
    0.42.1's DPMSolverMultistep / UniPCMultistep / HeunDiscrete /
    LMSDiscrete schedulers and k-diffusion 0.1.1.post1's samplers; the maths in
    genfast/reference/multistep.py). ``state``: `new_state(plan, sample)`,
    written in place. Two-stage samplers (heun, dpm_2): stage 0 takes the
    model output at (x_i, sigma_i) and returns the sample of the second model
    evaluation (or x_{i+1} when ``plan.stages(i) == 1``); stage 1 takes the
    model output there, with that sample, and returns x_{i+1}.

    prediction_type: epsilon (default; flow on flow-matching schedules),
    v_prediction, sample, flow. Guidance as `genfast.steps.step` (uncond=,
    guidance_scale= float or per-item tensor, guidance_rescale=). Noise:
    module docstring. Computed in float32 for float32 / float16 / bfloat16,
    same dtype out; the state is kept in the sample's dtype.
    """
    # Fast path: the plain step (no guidance or given noise, an int index, a
    # state made for the plan) on the C++ kernels, whose binding checks
    # shapes, dtypes and devices itself. Per-plan cache of the codes. Any
    # error there (the binding writes nothing before its checks pass) falls
    # through to the full checks below, which raise their own messages.
    if (uncond is None and guidance_scale is None and noise is None and not guidance_rescale
            and type(index) is int and type(plan) is SamplingPlan and type(stage) is int
            and type(state) is StepState and state.sampler == plan.sampler
            and 0 <= index < plan.num_steps and (seed is None or type(seed) is int)
            and (prediction_type is None or type(prediction_type) is str)
            and type(return_x0) is bool and _CPP_CALL is not None
            and type(sample) is _Tensor and type(model_output) is _Tensor and not _tf_mode()
            and not torch.compiler.is_compiling()):
        cache = plan.__dict__.get("_genfast_multistep_fast")
        key = (prediction_type, return_x0)
        fast = cache.get(key) if cache is not None else None
        if fast is None:
            fast = _fast_codes(plan, key)
        sampler, pred, flags, params, draws, two = fast
        if (sampler >= 0 and (stage == 0 or (stage == 1 and two and two[index]))
                and (seed is None or 0 <= seed < U64) and (seed is not None or not draws)):
            bits = 0
            if draws:
                flags |= _rs.NOISE_SEEDED
                bits = as_int64_bits(seed)
            try:
                dev = "cpu" if sample.is_cpu else "cuda" if sample.is_cuda else sample.device.type
                if _KERNEL_OF.get(_backend.resolve(backend, dev)) is not None:
                    prev, x0 = _CPP_CALL(sample, model_output, None, None, None, state.buffer,
                                         plan.table, plan.stage_table, None, index, sampler,
                                         stage, pred, flags, params, bits, stream, sample_offset)
                    return _new_output(StepOutput, (prev, x0 if return_x0 else None))
            except Exception:  # noqa: BLE001
                pass  # the full checks below raise, naming the argument
    if not isinstance(plan, SamplingPlan):
        raise TypeError(f"plan must be a genfast SamplingPlan (schedule.plan(n, sampler=...)), "
                        f"got {type(plan).__name__}")
    sampler = _ref.SAMPLERS.get(plan.sampler)
    if sampler is None:
        raise ValueError(f"plan.sampler {plan.sampler!r} is not a multistep sampler (one of "
                         f"{', '.join(_ref.SAMPLERS)})")
    if not isinstance(sample, torch.Tensor) or sample.dtype not in _DTYPES:
        raise TypeError("sample must be a float32, float16 or bfloat16 Tensor, got "
                        f"{getattr(sample, 'dtype', type(sample).__name__)}")
    if not isinstance(model_output, torch.Tensor):
        raise TypeError(f"model_output must be a Tensor, got {type(model_output).__name__}")
    if model_output.dtype != sample.dtype:
        raise TypeError(f"model_output is {model_output.dtype} but sample is {sample.dtype}")
    if sample.dim() < 2:
        raise ValueError(f"sample needs a batch and a channel dimension, got shape "
                         f"{tuple(sample.shape)}")
    n_items = sample.shape[0]
    cfg = uncond is not None or guidance_scale is not None
    if model_output.shape != sample.shape:
        if not (cfg and uncond is None and model_output.shape[0] == 2 * n_items
                and model_output.shape[1:] == sample.shape[1:]):
            if cfg and uncond is None:
                raise ValueError(f"guidance halves do not split: model_output has shape "
                                 f"{tuple(model_output.shape)}, the batched [uncond; cond] form "
                                 f"needs 2 x {n_items} items of the sample's shape "
                                 f"{tuple(sample.shape)}")
            raise ValueError(f"model_output has shape {tuple(model_output.shape)} but sample "
                             f"has shape {tuple(sample.shape)}")
    elif cfg and uncond is None:
        raise ValueError(f"guidance halves do not split: model_output has {n_items} items, "
                         f"the batched [uncond; cond] form needs 2 x {n_items}")
    why = _bad_state(state, plan, sample)
    if why is not None:
        raise ValueError(why)
    if type(index) is int and 0 <= index < plan.num_steps:
        index_t, index_i = None, index
    else:
        index_t, index_i = _check_index(index, plan.num_steps)
    two = sampler in _ref.TWO_STAGE
    if type(stage) is not int or not 0 <= stage <= (1 if two else 0):
        raise ValueError(f"stage must be 0{' or 1' if two else ''} for the {plan.sampler} "
                         f"sampler, got {stage!r}")
    if stage == 1 and index_t is None and plan.stages(index_i) != 2:
        raise ValueError(f"step {index_i} of this plan has one model evaluation (it ends at "
                         f"sigma 0): stage 1 does not exist")
    if prediction_type is None:
        pred = 3 if plan.options.get("_flow") else 0
    else:
        pred = _PRED.get(prediction_type)
        if pred is None:
            raise ValueError(f"prediction_type must be one of {', '.join(_PRED)}, got "
                             f"{prediction_type!r}")
    flags = _rs.WANT_X0 if return_x0 else 0
    g_t = None
    g = 0.0
    if cfg:
        if guidance_scale is None:
            raise ValueError("uncond= needs guidance_scale=")
        flags |= _rs.CFG_SEPARATE if uncond is not None else _rs.CFG_BATCHED
        if uncond is not None and (uncond.shape != model_output.shape
                                   or uncond.dtype != model_output.dtype):
            raise ValueError(f"uncond has shape {tuple(uncond.shape)} ({uncond.dtype}) but "
                             f"model_output has shape {tuple(model_output.shape)} "
                             f"({model_output.dtype})")
        if isinstance(guidance_scale, torch.Tensor):
            if guidance_scale.shape != (n_items,):
                raise ValueError(f"guidance_scale must be a float or a tensor of shape "
                                 f"({n_items},), got {tuple(guidance_scale.shape)}")
        if isinstance(guidance_scale, torch.Tensor) or guidance_rescale:
            g_t = _guidance_tensor(model_output, uncond, guidance_scale, float(guidance_rescale),
                                   n_items, sample.device)
            flags |= _rs.GUIDANCE_TENSOR
        else:
            g = float(guidance_scale)
    elif guidance_rescale:
        raise ValueError("guidance_rescale needs classifier-free guidance (guidance_scale=)")
    draws = sampler == 0 and plan.options.get("algorithm_type") == "sde-dpmsolver++"
    if noise is not None and seed is not None:
        raise ValueError("pass at most one of noise= and seed=")
    if draws:
        if noise is not None:
            if noise.shape != sample.shape or noise.dtype != sample.dtype:
                raise ValueError(f"noise has shape {tuple(noise.shape)} ({noise.dtype}) but "
                                 f"sample has shape {tuple(sample.shape)} ({sample.dtype})")
            flags |= _rs.NOISE_GIVEN
        elif seed is not None:
            if type(seed) is not int or not 0 <= seed < U64:
                raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
            flags |= _rs.NOISE_SEEDED
        else:
            raise ValueError("sde-dpmsolver++ draws noise at every step: pass noise= (a tensor "
                             "like sample) or seed=")
    else:
        noise = None
    params = [g, float(guidance_rescale)]
    dev = sample.device
    which = _backend.resolve(backend, dev.type)
    if which in ("cpu", "cuda") and _CPP_OP is not None:
        op = (_CPP_CALL if _plain(sample, model_output, uncond, g_t, noise) and not _tf_mode()
              and not torch.compiler.is_compiling() else _CPP_OP)
        prev, x0 = op(sample, model_output, uncond, g_t, noise, state.buffer, plan.table,
                           plan.stage_table, index_t, index_i, sampler, stage, pred, flags,
                           params, as_int64_bits(seed or 0), stream, sample_offset)
        return StepOutput(prev, x0 if return_x0 else None)
    if which == "triton":
        from ..triton import multistep as _tt
        prev, x0 = _tt._multistep_step(sample, model_output, uncond, g_t, noise, state.buffer,
                                       plan.table, plan.stage_table, index_t, index_i, sampler,
                                       stage, pred, flags, params, as_int64_bits(seed or 0),
                                       stream, sample_offset)
        return StepOutput(prev, x0 if return_x0 else None)
    if plan.table.device != dev or (index_t is not None and index_t.device != dev):
        raise ValueError(f"plan ({plan.table.device}) and index must be on the sample's device "
                         f"{dev} (plan.to(device) moves a plan once)")
    idx = index_t if index_t is not None else index_i
    if noise is None and seed is not None and draws:
        noise = _ref_noise.randn(sample.shape, seed, _rs.stream_of(stream, idx), sample_offset,
                                 sample.dtype, dev)
    prev, x0 = _ref.step(plan.table, plan.stage_table, idx, sample, model_output, state.buffer,
                         sampler=sampler, stage=stage, prediction=pred, flags=flags,
                         params=params, uncond=uncond, guidance=g_t, noise=noise)
    return StepOutput(prev.to(sample.dtype), x0.to(sample.dtype) if return_x0 else None)
