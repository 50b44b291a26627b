"""Fused reverse-diffusion steps (the sampler side): one op call per step
(per model evaluation), classifier-free guidance fused in, no host sync.

`step` is the one entry for every sampler: it dispatches on ``plan.sampler``
to the single-step kernels (genfast/ops/steps.py: ddpm, ddim, euler,
euler_ancestral, lcm, flow_match_euler) or the multistep / two-stage ones
(genfast/ops/multistep.py: dpmpp, unipc, heun, dpm_2, lms), whose history lives in
a `StepState` made by `new_state`. A loop, for any sampler:

    plan = genfast.schedules.from_config(cfg).plan(n, sampler="dpmpp", device=dev)
    state = genfast.steps.new_state(plan, x)
    for i in range(n):
        for k in range(plan.stages(i)):
            mo = model(x * plan.model_scale(i, k), plan.model_timestep(i, k))
            x = genfast.steps.step(plan, i, mo, x, state=state, stage=k, seed=seed).prev_sample
"""

from __future__ import annotations

from .ops import multistep as _ms
from .ops import steps as _single
from .ops.multistep import StepState, new_state
from .ops.steps import StepOutput, ddim, ddpm, euler, euler_ancestral, flow_match_euler, lcm

_MULTI = _ms._ref.SAMPLERS
_single_step = _single.step
_multi_step = _ms.step


def step(plan, index, model_output, sample, *, state=None, stage: int = 0, **opts) -> StepOutput:
    """One step of ``plan.sampler`` at step ``index`` (stage ``stage`` for the
    two-stage samplers heun and dpm_2). Single-step samplers: see
    `genfast.ops.steps.step` (``state`` may be None or any state made for
    the plan; ``stage`` must be 0). Multistep samplers: see
    `genfast.ops.multistep.step` (``state`` is required)."""
    if getattr(plan, "sampler", None) in _MULTI:
        return _multi_step(plan, index, model_output, sample, state, stage=stage, **opts)
    if stage != 0:
        raise ValueError(f"stage must be 0 for the single-step {getattr(plan, 'sampler', plan)} "
                         f"sampler, got {stage!r}")
    if state is not None and not isinstance(state, StepState):
        raise TypeError(f"state must be a genfast.steps.StepState or None, got "
                        f"{type(state).__name__}")
    return _single_step(plan, index, model_output, sample, **opts)


def _named(name, two_stage):
    def fn(plan, index, model_output, sample, state, stage=0, **opts):
        if getattr(plan, "sampler", None) != name:
            raise ValueError(f"genfast.steps.{name} needs a plan built with sampler={name!r}, "
                             f"got {getattr(plan, 'sampler', plan)!r}")
        return _multi_step(plan, index, model_output, sample, state, stage=stage, **opts)
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = (f"`step` for a plan of the {name!r} sampler (checks the plan's sampler)"
                  + ("; stage 0 or 1." if two_stage else "."))
    return fn


dpmpp = _named("dpmpp", False)
unipc = _named("unipc", False)
heun = _named("heun", True)
dpm_2 = _named("dpm_2", True)
lms = _named("lms", False)

__all__ = ["step", "StepOutput", "StepState", "new_state", "ddpm", "ddim", "euler",
           "euler_ancestral", "lcm", "flow_match_euler", "dpmpp", "unipc", "heun", "dpm_2", "lms"]
