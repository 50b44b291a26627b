"""`genfast.sample`: a whole sampling loop on the device, one fused step per
model evaluation, no host sync, reproducible per item, split over
torch.distributed ranks when a process group is up.

The loop (every scalar comes from the sampling plan, built once on the host
in float64 and moved to the device once; all control flow is on Python ints):

    x = genfast.randn(shape, seed=seed, stream=0, sample_offset=lo) * init_sigma
    for i in range(steps):
        for k in range(plan.stages(i)):
            out = model(x * c_in(i, k), t(i, k), **cond)        # (+ uncond, CFG)
            x = genfast.steps.step(plan, i, out, x, stage=k, seed=seed, stream=1,
                                   sample_offset=lo, guidance_scale=g, ...)

Noise: the initial latent of item i is genfast stream 0 of (seed, i); the
noise a stochastic step draws at step j is stream 1 + j of (seed, i). Nothing
else draws, so item i's result depends only on (seed, i) and the model: the
same seed gives the same samples with any batch size or split across
processes (the CPU kernels bit for bit; a GPU within float tolerance).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch

from . import _distributed
from . import schedules as _schedules
from . import steps as _steps
from .ops import multistep as _multistep_ops
from .ops import steps as _single_ops
from . import backend as _backend
from ._extension import CPU_LIB
from ._checks import as_int64_bits
from .ops.noise import randn
from .reference import steps as _ref_steps

# short name -> (plan sampler, plan options)
SAMPLERS = {
    "ddpm": ("ddpm", {}),
    "ddim": ("ddim", {}),
    "euler": ("euler", {}),
    "euler_ancestral": ("euler_ancestral", {}),
    "heun": ("heun", {}),
    "dpm_2": ("dpm_2", {}),
    "dpmpp_2m": ("dpmpp", {"solver_order": 2}),
    "dpmpp_3m": ("dpmpp", {"solver_order": 3}),
    "dpmpp_2m_sde": ("dpmpp", {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("unipc", {}),
    "lms": ("lms", {}),  # order 4 (diffusers' LMSDiscreteScheduler.step default)
    "lcm": ("lcm", {}),
    "flow_match_euler": ("flow_match_euler", {}),
}
# the Stable Diffusion 1.5 scheduler config (its scheduler_config.json)
DEFAULT_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                    "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
                    "timestep_spacing": "leading", "clip_sample": False,
                    "set_alpha_to_one": False}
INIT_STREAM, STEP_STREAM = 0, 1
_Tensor = torch.Tensor
# genfast._C's loop-step classes (csrc/bindings/eager.cpp), None in older builds
_LOOPS = (CPU_LIB.eager if hasattr(CPU_LIB.eager, "MultistepLoop")
          and hasattr(CPU_LIB.eager, "StepsLoop") else None)
_MULTISTEP = ("dpmpp", "unipc", "heun", "dpm_2", "lms")  # samplers with a history state


_SCHEDULES: dict = {}  # config -> Schedule: a schedule's float64 tables are built once
_LAST_CONFIG: list = [None]  # (a copy of the last dict config, its schedule)


def _key(value):
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_key(v) for v in value)
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        # every element: numpy's repr summarises big arrays with "...", so two
        # trained_betas tables that differ in the middle would share a key
        return ("array", str(value.dtype), tuple(value.shape), value.tobytes())
    return repr(value)


def _schedule(schedule):
    if isinstance(schedule, _schedules.Schedule):
        return schedule
    if schedule is None:
        schedule = DEFAULT_SCHEDULE
    cfg = schedule
    if not isinstance(schedule, Mapping) and hasattr(schedule, "config"):  # a scheduler
        cfg = dict(schedule.config, _class_name=type(schedule).__name__)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"schedule must be a genfast schedule, a diffusers scheduler or its "
                        f"config (dict), or None; got {type(schedule).__name__}")
    last = _LAST_CONFIG[0]
    if last is not None and type(cfg) is dict:
        try:
            same = bool(cfg == last[0])
        except Exception:  # noqa: BLE001  (array values: no truth value)
            same = False
        if same:
            return last[1]  # the same config as the last call: a dict compare, no key walk
    key = _key(cfg)
    sched = _SCHEDULES.get(key)
    if sched is None:
        sched = _schedules.from_config(cfg)
        if len(_SCHEDULES) >= 32:
            _SCHEDULES.clear()
        _SCHEDULES[key] = sched
    if type(cfg) is dict:
        try:  # a snapshot: the caller may change its dict afterwards
            _LAST_CONFIG[0] = (copy.deepcopy(cfg), sched)
        except Exception:  # noqa: BLE001  (an uncopyable value: no shortcut)
            _LAST_CONFIG[0] = None
    return sched


def _plan(sched, steps, name, device, opts):
    """The plan, built once per (schedule, steps, sampler, device): plans are
    read-only tables, so a loop can reuse one."""
    cache = sched.__dict__.setdefault("_genfast_sample_plans", {})
    key = (steps, name, str(device), _key(opts))
    plan = cache.get(key)
    if plan is None:
        if len(cache) >= 64:
            cache.clear()
        plan = cache[key] = sched.plan(steps, sampler=name, device=device, **opts)
    return plan


class _Loop:
    """Everything the loop reads, prepared before the first step: the model's
    timestep per evaluation (device tensors sliced by Python ints: views, no
    kernel, no sync) and its input scale c_in (host floats from the plan's
    host tables, the values ``plan.model_scale`` holds on the device)."""

    def __init__(self, plan, items):
        n = plan.num_steps
        self.evals = [(i, k) for i in range(n) for k in range(plan.stages(i))]
        c0 = plan.host[:, plan.col["c_in"]].tolist()
        c1 = plan.stage_host[:, plan.scol["s1_c_in"]].tolist()
        self.scale = [c0[i] if k == 0 else c1[i] for i, k in self.evals]
        t = torch.stack([plan.model_timestep(i, k) for i, k in self.evals])
        t = t.to(torch.float32)
        # per evaluation, for the model's batch and for the [uncond; cond] batch
        self.t1 = [t[j].expand(items) for j in range(len(self.evals))]
        self.t2 = [t[j].expand(2 * items) for j in range(len(self.evals))]


def _init_sigma(plan, sched):
    """diffusers' init_noise_sigma: 1 for samplers on the VP sample (DDPM, DDIM,
    DPM-Solver, UniPC, LCM) and flow matching; sigma_max in sigma space,
    sqrt(sigma_max^2 + 1) there with "leading" spacing (and for EDM)."""
    if plan.sample_space != "sigma" or sched.kind == "flow":
        return 1.0
    smax = float(plan.host[:, plan.col["sigma"]].max())
    if sched.kind == "vp" and sched.timestep_spacing in ("linspace", "trailing"):
        return smax
    return (smax * smax + 1.0) ** 0.5


def _split_cond(cond, batch, lo, hi, name):
    """A rank's (or a whole run's) view of cond: tensors whose leading dim is
    the global batch are sliced to the share; anything else is passed as is."""
    if cond is None:
        return {}
    if not hasattr(cond, "items"):
        raise TypeError(f"{name} must be a dict of keyword arguments for the model, got "
                        f"{type(cond).__name__}")
    out = {}
    for key, v in cond.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == batch and \
                (lo, hi) != (0, batch):
            v = v[lo:hi]
        out[key] = v
    return out


def _batchable(cond, uncond):
    """Both guidance halves in one model call: same keys, tensors of the same
    trailing shape with a batch dimension."""
    if set(cond) != set(uncond):
        return False
    for key in cond:
        c, u = cond[key], uncond[key]
        if not (isinstance(c, torch.Tensor) and isinstance(u, torch.Tensor)):
            return False
        if c.dim() == 0 or c.shape[1:] != u.shape[1:] or c.shape[0] != u.shape[0]:
            return False
    return True


def _output(out, dtype):
    if type(out) is torch.Tensor:  # the common case first: hasattr on a Tensor is slow
        return out if out.dtype == dtype else out.to(dtype)
    if hasattr(out, "sample"):
        out = out.sample
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model must return a Tensor (or an object with .sample), got "
                        f"{type(out).__name__}")
    return out if out.dtype == dtype else out.to(dtype)


def sample(model, shape, *, sampler: str = "dpmpp_2m", steps: int = 30, schedule=None,
           prediction_type: str = "epsilon", guidance_scale=1.0, cond=None, uncond=None,
           seed: int = 0, device=None, dtype=torch.float32, progress: bool = False,
           compile: bool = False, cuda_graph: bool = False, group=None,
           gather: bool = True) -> torch.Tensor:
    """Sample ``shape[0]`` items with ``model`` and return them (x0 at the end
    of the loop; latents for a latent model).

    Args:
        model: ``model(x, t, **cond)`` -> the prediction (a tensor like x, or
            an object with ``.sample`` such as a diffusers UNet's output, or a
            tuple whose first element is it). ``t``: float32 tensor of shape
            (items,) with the schedule's timestep (sigma-space samplers on a
            discrete schedule: diffusers' fractional timestep).
        shape: the global batch's shape (items first).
        sampler: a short name: ddpm, ddim, euler, euler_ancestral, heun, dpm_2,
            dpmpp_2m, dpmpp_3m, dpmpp_2m_sde, unipc, lms, lcm, flow_match_euler.
        steps: inference steps (model evaluations: twice per step for heun /
            dpm_2 except the last, as diffusers and k-diffusion).
        schedule: a genfast schedule, a diffusers scheduler or its ``.config``
            (or a dict), or None: the Stable Diffusion 1.5 scaled_linear one
            (``DEFAULT_SCHEDULE``).
        prediction_type: epsilon, v_prediction, sample (flow for flow
            matching; on a flow-matching schedule "epsilon", the default, is
            read as "flow": both mean x0 = x - sigma * out there).
        guidance_scale, cond, uncond: classifier-free guidance (Ho & Salimans
            2022): with ``uncond`` (a dict of model kwargs) and a scale != 1 the
            step fuses out = u + g (c - u). When cond and uncond hold tensors of
            matching shapes the two halves go through the model as one batch of
            2N (diffusers' form), else as two calls. cond / uncond tensors
            whose first dim is ``shape[0]`` are per item and follow the split.
        seed: int in [0, 2**64): item i's noise depends only on (seed, i)
            (module docstring).
        device, dtype: where and in what the sample lives (float32, float16,
            bfloat16; the steps compute in float32). device None: the device
            of the model's parameters (an nn.Module), else the CPU.
        progress: a tqdm bar over the steps (rank 0 only).
        compile: ``torch.compile`` the model. The steps stay one registered op
            call each (with fake kernels: a loop of your own that compiles
            model and steps together traces through them).
        cuda_graph: capture the whole loop, model included, in one CUDA graph
            and replay it (CUDA only).
        group: a torch.distributed process group; with it, or with a default
            group initialised (torchrun), ``shape[0]`` is the global batch and
            each rank samples its contiguous share with matching sample offsets.
        gather: return the global batch on every rank (all_gather; equal to
            the single-process result), or only this rank's share.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not callable(model):
        raise TypeError(f"model must be callable (model(x, t, **cond)), got "
                        f"{type(model).__name__}")
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints, got {shape!r}") from None
    if len(shape) < 2 or min(shape) < 0:
        raise ValueError(f"shape must be (items, channels, ...) with sizes >= 0, got {shape}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be torch.float32, float16 or bfloat16, got {dtype}")
    if type(seed) is not int or not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
    if device is None:
        params = model.parameters() if isinstance(model, torch.nn.Module) else iter(())
        first = next(params, None)
        device = "cpu" if first is None else first.device
    device = torch.device(device)
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a CUDA device, got device={str(device)!r}")
    cfg = guidance_scale is not None and not (
        not isinstance(guidance_scale, torch.Tensor) and float(guidance_scale) == 1.0)
    if cfg and uncond is None:
        raise ValueError(f"guidance_scale={guidance_scale!r} needs uncond= (the model "
                         f"kwargs of the unconditional branch)")

    sched = _schedule(schedule)
    name, opts = SAMPLERS[sampler]
    pred = prediction_type
    if sched.kind == "flow" and pred == "epsilon":
        pred = "flow" if name == "flow_match_euler" else pred
    plan = _plan(sched, steps, name, device, opts)

    batch = shape[0]
    where = _distributed.world(group)
    rank, size = where if where is not None else (0, 1)
    lo, hi = _distributed.share(batch, rank, size)
    items = hi - lo
    local = (items,) + shape[1:]
    cond_l = _split_cond(cond, batch, lo, hi, "cond")
    uncond_l = _split_cond(uncond, batch, lo, hi, "uncond") if cfg else {}
    g = guidance_scale
    if cfg and isinstance(g, torch.Tensor):
        if g.shape != (batch,):
            raise ValueError(f"guidance_scale must be a float or a tensor of shape ({batch},), "
                             f"got {tuple(g.shape)}")
        g = g[lo:hi].to(device)

    x = randn(local, seed=seed, stream=INIT_STREAM, sample_offset=lo, dtype=dtype,
              device=device)
    if items:
        init = _init_sigma(plan, sched)
        if init != 1.0:
            x.mul_(init)
        fn = torch.compile(model) if compile else model
        run = _Run(fn, plan, sched, items, device, dtype, pred, cfg, g, cond_l, uncond_l,
                   seed, lo)
        with torch.no_grad():  # sampling: no autograd graph through the model
            x = _graphed(run, x) if cuda_graph else run(x, progress and rank == 0)
    if where is None or not gather:
        return x
    return _distributed.gather(x, batch, rank, size, group)


class _Run:
    """One loop over a fixed share: callable on the initial sample."""

    def __init__(self, model, plan, sched, items, device, dtype, pred, cfg, g, cond, uncond,
                 seed, offset):
        self.model, self.plan, self.dtype, self.pred = model, plan, dtype, pred
        cache = plan.__dict__.setdefault("_genfast_sample_loops", {})
        self.loop = cache.get(items)  # (the plan is per device already)
        if self.loop is None:
            if len(cache) >= 16:
                cache.clear()
            self.loop = cache[items] = _Loop(plan, items)
        self.items, self.seed, self.offset = items, seed, offset
        self.cfg, self.g = cfg, g
        self.cond, self.uncond = cond, uncond
        self.batched = cfg and _batchable(cond, uncond)
        if self.batched:  # [uncond; cond], concatenated once
            self.both = {k: torch.cat([uncond[k], cond[k]]) for k in cond}

    def start(self, x):
        """The per-loop context: the sampler's history buffers (multistep and
        two-stage samplers; zeroed) and the step's keyword arguments."""
        opts = dict(prediction_type=self.pred, seed=self.seed, stream=STEP_STREAM,
                    sample_offset=self.offset, return_x0=False)
        if self.cfg:
            opts["guidance_scale"] = self.g
        if self.plan.sampler in _MULTISTEP:
            opts["state"] = _steps.new_state(self.plan, x)
            self.step = _multistep_ops.step
        else:  # (genfast.steps.step dispatches to these; calling them saves a hop per step)
            self.step = _single_ops.step
        self.bound = None if self.cfg else _bind(self.plan, x, opts)
        return opts

    def eval(self, x, j, opts):
        """Model evaluation j of the loop (step i, stage k) and its fused step."""
        loop, model = self.loop, self.model
        i, k = loop.evals[j]
        c = loop.scale[j]
        xin = x if c == 1.0 else x * c
        if self.batched:
            out = _output(model(torch.cat([xin, xin]), loop.t2[j], **self.both), self.dtype)
            u = None
        else:
            t = loop.t1[j]
            out = _output(model(xin, t, **self.cond), self.dtype)
            u = _output(model(xin, t, **self.uncond), self.dtype) if self.cfg else None
        if self.bound is not None and type(out) is _Tensor:
            return self.bound(i, k, out, x)
        if k:
            return self.step(self.plan, i, out, x, uncond=u, stage=k, **opts).prev_sample
        return self.step(self.plan, i, out, x, uncond=u, **opts).prev_sample

    def _plain(self, x, n, opts):
        """``eval`` for j < n, inlined for the common loop (no guidance, the
        bound step): per step what is left is the model call and the op call."""
        loop, model, step, dtype, cond = self.loop, self.model, self.bound, self.dtype, self.cond
        evals, scale, t1 = loop.evals, loop.scale, loop.t1
        for j in range(n):
            c = scale[j]
            out = model(x if c == 1.0 else x * c, t1[j], **cond)
            if type(out) is not _Tensor or out.dtype != dtype:
                out = _output(out, dtype)
                if type(out) is not _Tensor:  # a subclass: the wrappers take it
                    i, k = evals[j]
                    x = (self.step(self.plan, i, out, x, stage=k, **opts) if k else
                         self.step(self.plan, i, out, x, **opts)).prev_sample
                    continue
            i, k = evals[j]
            x = step(i, k, out, x)
        return x

    def __call__(self, x, progress=False, limit=None):
        opts = self.start(x)
        evals = self.loop.evals if limit is None else self.loop.evals[:limit]
        if not progress:
            if self.bound is not None and not self.cfg:
                return self._plain(x, len(evals), opts)
            for j in range(len(evals)):
                x = self.eval(x, j, opts)
            return x
        from tqdm.auto import tqdm
        with tqdm(total=self.plan.num_steps) as bar:
            for j, (i, k) in enumerate(evals):
                x = self.eval(x, j, opts)
                if k == self.plan.stages(i) - 1:
                    bar.update(1)
        return x


def _bind(plan, x, opts):
    """The loop's step as one direct call of the op's eager entry point
    (genfast._C, csrc/bindings/eager.cpp) with the codes, flags and params the
    step wrappers' fast paths would compute for these options, resolved once
    per loop: what is left per step is the op call (the wrappers' per-call
    checks hold for every step of a loop by construction). None where the
    wrappers must run: another backend, no entry point, a tensor subclass, or
    options their fast paths do not take; their results are the same."""
    if (type(x) is not _Tensor or torch.compiler.is_compiling()
            or _backend.resolve(None, x.device.type) not in ("cpu", "cuda")):
        return None
    seed, stream, offset = opts["seed"], opts["stream"], opts["sample_offset"]
    pred = opts["prediction_type"]
    table = plan.table
    if plan.sampler in _MULTISTEP:
        call = _multistep_ops._CPP_CALL
        if call is None:
            return None
        sampler, p, flags, params, draws, _ = _multistep_ops._fast_codes(plan, (pred, False))
        if sampler < 0:
            return None
        bits = 0
        if draws:
            flags |= _ref_steps.NOISE_SEEDED
            bits = as_int64_bits(seed)
        buf, stages = opts["state"].buffer, plan.stage_table
        if _LOOPS is not None:  # the constants bound in C++: 4 arguments a step
            return _LOOPS.MultistepLoop(buf, table, stages, sampler, p, flags, params, bits,
                                        stream, offset)

        def multistep(i, k, out, x):
            return call(x, out, None, None, None, buf, table, stages, None, i, sampler, k, p,
                        flags, params, bits, stream, offset)[0]
        return multistep
    # the key of ops.steps.step's fast path for its defaults (timestep_scaling 10,
    # eta from the plan, no clipping)
    key = (pred, 10.0, False, None, False, 1.0, False)
    if _LOOPS is not None:
        sampler, p, flags, params, _ = _single_ops._fast_codes(plan, key)
        if sampler < 0:
            return None
        return _LOOPS.StepsLoop(table, sampler, p, flags | _ref_steps.NOISE_SEEDED, params,
                                as_int64_bits(seed), stream, offset)
    step = _single_ops.bind(plan, key, seed, stream, offset)
    if step is None:
        return None

    def single(i, k, out, x):
        return step(i, out, x)[0]
    return single


def _graphed(run, x):
    """Capture the loop once (after one warm-up evaluation on a side stream,
    as CUDA graphs need) and replay it: the loop's launches leave the CPU."""
    static = x.clone()
    side = torch.cuda.Stream(device=x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):
        run(static.clone(), limit=2)  # warm-up: allocator, cuBLAS handles, lazy inits
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run(static)
    graph.replay()
    return out.clone()


__all__ = ["sample", "SAMPLERS", "DEFAULT_SCHEDULE"]
