"""Steps suite: one fused sampler step against what runs it today (float32
unless ``dtype`` says otherwise: float16 / bfloat16 run every provider in
that dtype).

Sizes: 1x4x64x64 (one Stable Diffusion latent, 16K elements), 1x4x128x128
(one SDXL latent, 64K), 16x4x64x64 (256K) and 16x4x128x128 (1M); other
``sizes``: (n / 16384, 4, 64, 64), below 16K (1, 4, s, s). Quick mode keeps
each provider where its target is stated (issue 7): diffusers at 1x4x64x64,
torch.compile(reference) at 1M, the eager reference at every size but a few
repetitions only; the SDXL and batch-16 sizes time ddim and euler_ancestral.

Rows (op = the sampler's short name): ddpm, ddim, euler, euler_ancestral,
lcm, flow_match, and ddim+cfg (both guidance halves in one call). Providers:
* "genfast": ``genfast.steps.step`` (noise in-kernel from ``seed=`` for the
  stochastic samplers: ddpm, euler_ancestral, lcm);
* "reference": the eager reference step (genfast/reference/steps.py), the
  stochastic ones drawing with ``torch.randn_like`` as eager code does;
* "torch.compile(reference)": the same, compiled (inductor, static shapes);
* "diffusers": the diffusers 0.42.1 scheduler's ``step()`` (skipped when
  diffusers is not installed);
* ddim+cfg: "unfused" = ``u + g * (c - u)`` in eager PyTorch, then the genfast step.
Bytes moved (the floor): read sample and model output, write prev_sample and
x0: 4 elements (ddim+cfg: 5) of the dtype's size per element. The ``overhead`` row times the Python
wrapper against the raw ``torch.ops.genfast.steps_step`` call at 1x4x8x8.
"""

from __future__ import annotations

import types
import warnings

import torch

import genfast
from .. import schedules as S
from ..reference import steps as _ref
from .runner import Case, Provider

SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012}
QUICK_SIZES = (1 << 14, 1 << 16, 1 << 18, 1 << 20)
FULL_SIZES = QUICK_SIZES
SMALL = 1 << 14  # the size of the diffusers comparison in quick mode
LARGE = 1 << 20  # the size of the torch.compile comparison in quick mode
MIDDLE_SAMPLERS = ("ddim", "euler_ancestral")  # quick mode at 64K and 256K
REFERENCE_REPS = 20
N_STEPS = 30
INDEX = 10
# short name -> (plan sampler, diffusers class, diffusers config, stochastic)
SAMPLERS = {
    "ddpm": ("ddpm", "DDPMScheduler", {"clip_sample": False}, True),
    "ddim": ("ddim", "DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}, False),
    "euler": ("euler", "EulerDiscreteScheduler", {}, False),
    "euler_ancestral": ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}, True),
    "lcm": ("lcm", "LCMScheduler", {}, True),
    "flow_match": ("flow_match_euler", "FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, False),
}


def _shape(n: int):
    if n == 1 << 20:
        return (16, 4, 128, 128)
    if n == 1 << 16:
        return (1, 4, 128, 128)
    if n < 16384:  # tiny (tests): one item of 4 square channels
        side = max(1, int((n // 4) ** 0.5))
        return (1, 4, side, side)
    return (n // 16384, 4, 64, 64)


def _diffusers(cls_name, cfg, n):
    try:
        import diffusers
    except ImportError:
        return None
    base = {} if cls_name.startswith("FlowMatch") else dict(SD)
    with warnings.catch_warnings():  # numpy 2's copy= deprecation inside diffusers' set-up
        warnings.simplefilter("ignore", DeprecationWarning)
        d = getattr(diffusers, cls_name)(**{**base, **cfg})
        d.set_timesteps(n if cls_name != "LCMScheduler" else 8)
    return d


def _inputs(shape, device, items=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device, dtype)
    m = torch.randn((items * shape[0],) + shape[1:], generator=g).to(device, dtype)
    return x, m


def _fresh(fn):
    """fn with its own code object: dynamo keeps its cache (and its recompile
    limit) per code object, and every case's closure shares one; without this
    the later cases hit the limit and time dynamo's fallback, not inductor."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__,
                              fn.__defaults__, fn.__closure__)


def _sampler_case(short, n, device, dtype=torch.float32, full=True):
    sampler, cls_name, cfg, stochastic = SAMPLERS[short]
    shape = _shape(n)
    steps = 8 if short == "lcm" else N_STEPS
    idx = 3 if short == "lcm" else INDEX
    base = {"_class_name": cls_name, "shift": 3.0} if short == "flow_match" else {**SD, **cfg}
    plan = S.from_config(base).plan(steps, sampler=sampler, device=device)
    pred = "flow" if short == "flow_match" else "epsilon"
    code = dict(sampler=_ref.SAMPLERS[sampler], prediction=_ref.PREDICTIONS[pred], variance=0,
                flags=_ref.WANT_X0 | (_ref.NOISE_GIVEN if stochastic else 0),
                params=[0.0, 0.0, 1.0 if short == "euler_ancestral" else 0.0, 1.0, 0.995, 1.0,
                        0.0, 0.0, float("inf"), 1.0, 10.0], num_steps=steps)

    def genfast_():
        x, m = _inputs(shape, device, dtype=dtype)
        kw = {"seed": 1234} if stochastic else {}
        return lambda: genfast.steps.step(plan, idx, m, x, **kw)

    def reference(compiled):
        def make():
            x, m = _inputs(shape, device, dtype=dtype)

            def f(x, m):
                z = torch.randn_like(x) if stochastic else None
                return _ref.step(plan.table, idx, x, m, noise=z, **code)
            if compiled:
                f = torch.compile(_fresh(f), dynamic=False)
                f(x, m)
            return lambda: f(x, m)
        return make

    providers = [Provider("genfast", genfast_),
                 Provider("reference", reference(False),
                          max_reps=None if full else REFERENCE_REPS)]
    if full or n == LARGE:
        providers.append(Provider("torch.compile(reference)", reference(True)))
    d = _diffusers(cls_name, cfg, steps) if full or n == SMALL else None
    if d is None:
        if full or n == SMALL:
            providers.append(Provider("diffusers", skip="diffusers is not installed"))
    else:
        def diffusers_():
            x, m = _inputs(shape, device, dtype=dtype)
            t = d.timesteps[idx]

            if hasattr(d, "is_scale_input_called"):
                d.is_scale_input_called = True  # else Euler logs a warning on every step

            def call():
                d._step_index = idx  # step() advances it; time the same step every call
                return d.step(m, t, x)
            return call
        providers.append(Provider("diffusers", diffusers_))
    return Case("steps", short, n, "step", providers, bytes_moved=4 * _esize(dtype) * n)


def _esize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def _cfg_case(n, device, dtype=torch.float32):
    shape = _shape(n)
    plan = S.from_config({**SD, "set_alpha_to_one": False}).plan(N_STEPS, sampler="ddim",
                                                                 device=device)

    def fused():
        x, m = _inputs(shape, device, items=2, dtype=dtype)
        return lambda: genfast.steps.ddim(plan, INDEX, m, x, guidance_scale=7.5)

    def unfused():
        x, m = _inputs(shape, device, items=2, dtype=dtype)

        def call():
            u, c = m.chunk(2)
            return genfast.steps.ddim(plan, INDEX, u + 7.5 * (c - u), x)
        return call

    return Case("steps", "ddim+cfg", n, "step",
                [Provider("genfast", fused), Provider("unfused", unfused)],
                bytes_moved=5 * _esize(dtype) * n)


def _overhead_case(device):
    plan = S.from_config(SD).plan(N_STEPS, sampler="ddim", device=device)
    params = [0.0, 0.0, 0.0, 1.0, 0.995, 1.0, 0.0, 0.0, float("inf"), 1.0, 10.0]

    def make(raw):
        def build():
            x, m = _inputs((1, 4, 8, 8), device)
            if raw:
                op = torch.ops.genfast.steps_step.default
                return lambda: op(x, m, None, None, None, plan.table, None, INDEX, 1, 0, 0,
                                  _ref.WANT_X0, params, 0, 0, 0)
            return lambda: genfast.steps.ddim(plan, INDEX, m, x)
        return build

    return Case("steps", "overhead", 256, "step",
                [Provider("genfast", make(False)), Provider("raw torch.ops", make(True))])


def cases(device, full: bool = False, sizes=None, dtype=torch.float32) -> list[Case]:
    """The step cases on ``device`` in ``dtype`` (float32, float16, bfloat16)."""
    device = torch.device(device)
    every = full or bool(sizes)  # asked for sizes: every sampler and provider at each
    sizes = tuple(sizes) if sizes else (FULL_SIZES if full else QUICK_SIZES)
    out = []
    for n in sizes:
        names = SAMPLERS if every or n in (SMALL, LARGE) else MIDDLE_SAMPLERS
        out += [_sampler_case(s, n, device, dtype, full=every) for s in names]
        if every or n in (SMALL, LARGE):
            out.append(_cfg_case(n, device, dtype))
    out.append(_overhead_case(device))
    return out
