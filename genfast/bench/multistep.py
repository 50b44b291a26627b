"""Multistep rows of the steps suite: one step of the multistep / two-stage
samplers against what runs it today.

Sizes: 1x4x64x64 (one Stable Diffusion latent, 16K elements) and
16x4x128x128 (1M elements); ``sizes`` given: as genfast/bench/steps.py.

Rows (op): heun, dpm_2 (one step = both stages, two calls), dpmpp_2m,
dpmpp_3m, dpmpp_2m_sde (noise in-kernel from ``seed=``), unipc (bh2, order
2, corrector + predictor). Step 10 of 30, past the order warm-up. Providers:
* "genfast": ``genfast.steps.step`` with its state (return_x0=False: the
  schedulers' step() returns only the sample);
* "reference": the eager reference step (genfast/reference/multistep.py;
  the SDE drawing with ``torch.randn_like``);
* "torch.compile(reference)": the same, compiled (inductor, static shapes);
* "diffusers": the diffusers 0.42.1 scheduler's ``step()`` with its history
  filled by a real loop up to the step (skipped when diffusers is missing).
Bytes moved (the floor, counted with the history reads and writes, per
element, float32): dpmpp_2m / _2m_sde read x, m, H[i-1], write out, D: 20 B;
dpmpp_3m + H[i-2]: 24 B; unipc reads x, m, P, H[i-1], H[i-2] and writes out,
D, P: 32 B; heun / dpm_2 stage 0 reads x, m, writes out, P, stage 1 reads x,
m, P and writes out: 32 B for the pair. The ``overhead:dpmpp_2m`` row times
the Python wrapper against the raw ``torch.ops.genfast.multistep_step`` call
at 1x4x8x8.
"""

from __future__ import annotations

import warnings

import torch

import genfast
from .. import schedules as S
from ..reference import multistep as _ref
from .runner import Case, Provider
from .steps import _fresh, _shape

SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012}
QUICK_SIZES = (1 << 14, 1 << 20)
N_STEPS = 30
INDEX = 10
# short name -> (plan sampler, plan opts, diffusers class, diffusers config, bytes/element)
ROWS = {
    "heun": ("heun", {}, "HeunDiscreteScheduler", {}, 32),
    "dpm_2": ("dpm_2", {}, "KDPM2DiscreteScheduler", {}, 32),
    "dpmpp_2m": ("dpmpp", {"solver_order": 2}, "DPMSolverMultistepScheduler",
                 {"solver_order": 2}, 20),
    "dpmpp_3m": ("dpmpp", {"solver_order": 3}, "DPMSolverMultistepScheduler",
                 {"solver_order": 3}, 24),
    "dpmpp_2m_sde": ("dpmpp", {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
                     "DPMSolverMultistepScheduler",
                     {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}, 20),
    "unipc": ("unipc", {"solver_order": 2}, "UniPCMultistepScheduler", {"solver_order": 2}, 32),
}


def _inputs(shape, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device, dtype)
    m = torch.randn(shape, generator=g).to(device, dtype)
    return x, m


def _warm_state(plan, shape, device, dtype):
    """A state as a loop leaves it at step INDEX (history filled)."""
    x, m = _inputs(shape, device, dtype)
    st = genfast.steps.new_state(plan, x)
    st.buffer.copy_(torch.randn(st.buffer.shape, generator=torch.Generator().manual_seed(1))
                    .to(device, dtype))
    return st


def _diffusers(cls_name, cfg, shape, dtype):
    try:
        import diffusers
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        d = getattr(diffusers, cls_name)(**{**SD, **cfg})
        d.set_timesteps(N_STEPS)
    two = cls_name in ("HeunDiscreteScheduler", "KDPM2DiscreteScheduler")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=g).to(dtype)
    calls = 2 * INDEX if two else INDEX
    for t in d.timesteps[:calls]:  # fill the history as a real loop does
        x = d.step(0.1 * torch.randn(shape, generator=g).to(dtype), t, x).prev_sample
    return d, two


def _case(short, n, device, dtype):
    sampler, opts, cls_name, cfg, bpe = ROWS[short]
    shape = _shape(n)
    plan = S.from_config(SD).plan(N_STEPS, sampler=sampler, device=device, **opts)
    two = sampler in ("heun", "dpm_2")
    seeded = opts.get("algorithm_type") == "sde-dpmsolver++"
    code = _ref.SAMPLERS[sampler]

    def genfast_():
        x, m = _inputs(shape, device, dtype)
        st = _warm_state(plan, shape, device, dtype)
        kw = {"seed": 1234} if seeded else {}
        step = genfast.steps.step
        if two:
            def call():
                y = step(plan, INDEX, m, x, state=st, stage=0, return_x0=False).prev_sample
                return step(plan, INDEX, m, y, state=st, stage=1, return_x0=False)
            return call
        return lambda: step(plan, INDEX, m, x, state=st, return_x0=False, **kw)

    def reference(compiled):
        def make():
            x, m = _inputs(shape, device, dtype)
            st = _warm_state(plan, shape, device, dtype)

            def one(x, m, buf, stage):
                z = torch.randn_like(x) if seeded else None
                return _ref.step(plan.table, plan.stage_table, INDEX, x, m, buf, sampler=code,
                                 stage=stage, prediction=0, flags=0, params=[0.0, 0.0],
                                 noise=z)[0].to(dtype)

            def s0(x, m, buf):
                return one(x, m, buf, 0)

            def s1(x, m, buf):
                return one(x, m, buf, 1)
            if compiled:  # one graph per stage: a real loop calls the model in between
                s0 = torch.compile(_fresh(s0), dynamic=False)
                s1 = torch.compile(_fresh(s1), dynamic=False)
                y = s0(x, m, st.buffer)
                if two:
                    s1(y, m, st.buffer)
            if two:
                return lambda: s1(s0(x, m, st.buffer), m, st.buffer)
            return lambda: s0(x, m, st.buffer)
        return make

    providers = [Provider("genfast", genfast_), Provider("reference", reference(False)),
                 Provider("torch.compile(reference)", reference(True))]
    dd = _diffusers(cls_name, cfg, shape, dtype)
    if dd is None:
        providers.append(Provider("diffusers", skip="diffusers is not installed"))
    else:
        d, two_d = dd

        def diffusers_():
            x, m = _inputs(shape, device, dtype)
            for k, v in list(vars(d).items()):  # its history on the device
                if isinstance(v, torch.Tensor) and v.dim() >= 2:
                    setattr(d, k, v.to(device))
            if getattr(d, "model_outputs", None) is not None:
                d.model_outputs = [None if v is None else v.to(device) for v in d.model_outputs]
            t = d.timesteps[2 * INDEX if two_d else INDEX]
            if two_d:
                t1 = d.timesteps[2 * INDEX + 1]

                def call():
                    d._step_index = 2 * INDEX
                    y = d.step(m, t, x).prev_sample
                    return d.step(m, t1, y)
                return call

            def call():
                d._step_index = INDEX  # step() advances it; time the same step every call
                return d.step(m, t, x)
            return call
        providers.append(Provider("diffusers", diffusers_))
    esize = torch.empty((), dtype=dtype).element_size()
    return Case("steps", short, n, "step", providers, bytes_moved=bpe * n * esize // 4)


def _overhead_case(device):
    plan = S.from_config(SD).plan(N_STEPS, sampler="dpmpp", solver_order=2, device=device)

    def make(raw):
        def build():
            x, m = _inputs((1, 4, 8, 8), device, torch.float32)
            state = genfast.steps.new_state(plan, x)
            if raw:
                op = torch.ops.genfast.multistep_step.default
                return lambda: op(x, m, None, None, None, state.buffer, plan.table,
                                  plan.stage_table, None, INDEX, _ref.SAMPLERS["dpmpp"], 0, 0, 0,
                                  [0.0, 0.0], 0, 0, 0)
            return lambda: genfast.steps.dpmpp(plan, INDEX, m, x, state, return_x0=False)
        return build

    return Case("steps", "overhead:dpmpp_2m", 256, "step",
                [Provider("genfast", make(False)), Provider("raw torch.ops", make(True))])


def cases(device, full: bool = False, sizes=None, dtype=torch.float32) -> list[Case]:
    device = torch.device(device)
    sizes = tuple(sizes) if sizes else QUICK_SIZES
    return [_case(s, n, device, dtype) for n in sizes for s in ROWS] + [_overhead_case(device)]


__all__ = ["cases", "ROWS"]
