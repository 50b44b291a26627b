"""`genfast profile` / ``genfast.profile(...)``: where the time of a sampling loop goes.

A loop of ``steps`` reverse steps (``genfast.steps.step``, the one entry for
every sampler) around a denoiser, split per step into phases:

* model:    the denoiser call (the U-Net);
* guidance: what classifier-free guidance adds outside the model: the doubled
            [uncond; cond] batch (genfast fuses u + g (c - u) into the step;
            the diffusers loop does the chunk and the combination here);
* step:     the scheduler step (``genfast.steps.step`` / ``scheduler.step``);
* rest:     the loop's own work: c_in scaling, the model's timestep.

Each phase is timed per step over ``runs`` loops after ``warmup`` untimed
ones (on CUDA the clock is read after a ``synchronize``, so a phase is charged
its kernels, not only their launch; the loop then runs slower than unprofiled
but its parts are attributed honestly). The report gives p50 / p95 over all
steps of all runs, the loop total, host syncs and allocations per phase, and
the same loop with the diffusers scheduler side by side when diffusers is
installed (the pipeline loop: cat, scale_model_input, model, chunk + guidance,
scheduler.step).

Host syncs: on CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` reports every
call that waits for the GPU; we count its warnings per phase. On the CPU
nothing waits, so we count the ops that would block the host on a GPU: with a
``TorchDispatchMode`` over one extra (untimed) loop, every
``aten::item`` / ``aten::_local_scalar_dense`` / ``aten::is_nonzero`` (what
``.item()``, ``float(t)``, ``bool(t)`` and ``int(t)`` of a tensor dispatch to) and every data-dependent-shape op
(``nonzero``, ``masked_select``, ``unique``). Allocations: in the same loop,
every op output whose storage is new (not a view of, or written into, an
input), with its bytes.

Models: the built-in `TinyDenoiser` (no download, random weights; shows the
scheduler's share when the model is cheap), a ``module:callable`` (the model
itself, called ``model(x, t)``, or a factory with no required arguments that
returns it), or a diffusers pipeline directory (``pipeline=PATH``, loaded
with ``from_pretrained`` from local files only; its U-Net and scheduler
config are used, cross-attention U-Nets get zero text embeddings).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import sys
import time
import types
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

PHASES = ("model", "guidance", "step", "rest")
SD_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "beta_end": 0.012}
FLOW_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
               "shift": 3.0}
# name -> (plan sampler, plan options, diffusers scheduler class, its extra config)
SAMPLERS = {
    "ddim": ("ddim", {}, "DDIMScheduler", {"set_alpha_to_one": False}),
    "ddpm": ("ddpm", {}, "DDPMScheduler", {}),
    "euler": ("euler", {}, "EulerDiscreteScheduler", {}),
    "euler_ancestral": ("euler_ancestral", {}, "EulerAncestralDiscreteScheduler", {}),
    "lcm": ("lcm", {}, "LCMScheduler", {}),
    "flow_match_euler": ("flow_match_euler", {}, "FlowMatchEulerDiscreteScheduler", {}),
    "dpmpp_2m": ("dpmpp", {"solver_order": 2}, "DPMSolverMultistepScheduler",
                 {"solver_order": 2}),
    "dpmpp_3m": ("dpmpp", {"solver_order": 3}, "DPMSolverMultistepScheduler",
                 {"solver_order": 3}),
    "dpmpp_2m_sde": ("dpmpp", {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"},
                     "DPMSolverMultistepScheduler",
                     {"solver_order": 2, "algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("unipc", {}, "UniPCMultistepScheduler", {}),
    "heun": ("heun", {}, "HeunDiscreteScheduler", {}),
    "dpm_2": ("dpm_2", {}, "KDPM2DiscreteScheduler", {}),
    "lms": ("lms", {}, "LMSDiscreteScheduler", {}),
}
# samplers with history or two model evaluations: they need the multistep step API
# (genfast.steps.new_state / plan.stages), present once that branch is merged
MULTISTEP = {"dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "heun", "dpm_2", "lms"}


def available_samplers() -> list[str]:
    from . import steps as _steps
    multi = hasattr(_steps, "new_state")
    return [s for s in SAMPLERS if multi or s not in MULTISTEP]


# ------------------------------------------------------------------ the built-in model
class TinyDenoiser(nn.Module):
    """A small U-Net-shaped conv denoiser (two resolutions, a skip, a
    sinusoidal timestep embedding as in Ho et al. 2020 / Vaswani et al. 2017)
    with fixed random weights: no download, a few ms per call on a CPU at
    64x64, so a profile shows the scheduler's and the loop's share."""

    def __init__(self, channels: int = 4, width: int = 16, seed: int = 0):
        super().__init__()
        g = torch.random.fork_rng(devices=[])
        with g:
            torch.manual_seed(seed)
            w = width
            self.width = w
            self.emb = nn.Sequential(nn.Linear(w, 2 * w), nn.SiLU(), nn.Linear(2 * w, 3 * w))
            self.conv_in = nn.Conv2d(channels, w, 3, padding=1)
            self.down = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
            self.mid = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
            self.up = nn.Conv2d(2 * w, w, 3, padding=1)
            self.norm = nn.GroupNorm(8, 2 * w)
            self.conv_out = nn.Conv2d(2 * w, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        w = self.width
        t = torch.as_tensor(t, device=x.device).reshape(-1).to(torch.float32)
        freqs = torch.exp(torch.arange(w // 2, device=x.device, dtype=torch.float32)
                          * (-math.log(10000.0) / (w // 2)))
        e = t[:, None] * freqs[None]
        e = self.emb(torch.cat([e.sin(), e.cos()], dim=1).to(x.dtype))
        e = e.expand(x.shape[0], -1)[:, :, None, None]
        h1 = nn.functional.silu(self.conv_in(x) + e[:, :w])
        h2 = nn.functional.silu(self.norm(self.down(h1)) + e[:, w:])
        h2 = nn.functional.silu(self.mid(h2))
        u = nn.functional.silu(self.up(h2))  # at half resolution: 4x cheaper
        u = nn.functional.interpolate(u, size=h1.shape[-2:], mode="nearest")
        return self.conv_out(torch.cat([u, h1], dim=1))


# ------------------------------------------------------------------ probes
class _Timer:
    """Per (phase, step) wall times; syncs CUDA so kernels land in their phase."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.times: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))

    @contextlib.contextmanager
    def phase(self, name: str, i: int):
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.times[name][i] += time.perf_counter() - t0


# item / is_nonzero are what the mode sees under inference_mode (they decompose to
# _local_scalar_dense outside it); the mode sees the outermost op only, so none
# is counted twice
_SYNC_OPS = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::nonzero",
             "aten::masked_select",
             "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive"}


class _Counter:
    """Host syncs and allocations per phase (module docstring)."""

    def __init__(self, device: torch.device):
        from torch.utils._python_dispatch import TorchDispatchMode
        self.syncs: dict[str, int] = defaultdict(int)
        self.allocs: dict[str, int] = defaultdict(int)
        self.alloc_bytes: dict[str, int] = defaultdict(int)
        self.current = "rest"
        self.cuda = device.type == "cuda"
        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                name = func._schema.name
                if not counter.cuda and name in _SYNC_OPS:
                    counter.syncs[counter.current] += 1
                counter._count_allocs(args, kwargs, out)
                return out
        self.mode = Mode()

    def _count_allocs(self, args, kwargs, out):
        def storage(t):
            try:  # sparse, nested or wrapper tensors have no plain storage: not counted
                st = t.untyped_storage()
                return st.data_ptr(), st.nbytes()
            except (RuntimeError, NotImplementedError):
                return None, 0
        inputs = set()
        for a in list(args) + list(kwargs.values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(t, torch.Tensor):
                    inputs.add(storage(t)[0])
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, torch.Tensor):
                ptr, nbytes = storage(t)
                if nbytes and ptr not in inputs:
                    self.allocs[self.current] += 1
                    self.alloc_bytes[self.current] += nbytes

    @contextlib.contextmanager
    def phase(self, name: str, i: int):
        prev, self.current = self.current, name
        if self.cuda:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
            self.syncs[name] += sum("synchroniz" in str(w.message) for w in caught)
        else:
            yield
        self.current = prev

    @contextlib.contextmanager
    def active(self):
        if self.cuda:
            old = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with self.mode:
                yield
        finally:
            if self.cuda:
                torch.cuda.set_sync_debug_mode(old)


class _Labels:
    """torch.profiler ranges named "step i: phase" (for --trace)."""

    @contextlib.contextmanager
    def phase(self, name: str, i: int):
        with torch.profiler.record_function(f"step {i}: {name}"):
            yield


# ------------------------------------------------------------------ the loops
def _unwrap(out):
    """A model's prediction: a tensor, or diffusers' output object / tuple."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "sample"):
        return out.sample
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}, not a tensor or an object with "
                    f".sample")


@dataclass
class _Setup:
    model: object
    shape: tuple
    device: torch.device
    dtype: torch.dtype
    sampler: str
    steps: int
    guidance: float
    config: dict
    prediction_type: str
    cond: dict
    seed: int
    model_name: str
    plan: object = None


def _plan_scalar(plan, name, i, k):
    """plan.<name>(i, k) where the plan has it (multistep API), else the table
    column: a 0-d tensor on the plan's device either way (no sync)."""
    fn = getattr(plan, name, None)
    if fn is not None:
        return fn(i, k)
    from ._plan import COL
    return plan.table[i, COL["timestep" if name == "model_timestep" else "c_in"]]


def _genfast_loop(s: _Setup, x, probe):
    from . import steps as _steps
    plan = s.plan
    multi = hasattr(_steps, "new_state")
    state = _steps.new_state(plan, x) if multi else None
    cfg = s.guidance != 1.0
    # return_x0=False: a sampling loop does not need x0, so no tensor is made for it
    kw = {"prediction_type": s.prediction_type, "seed": s.seed, "return_x0": False}
    if cfg:
        kw["guidance_scale"] = s.guidance
    for i in range(s.steps):
        for k in range(plan.stages(i) if multi else 1):
            with probe.phase("rest", i):
                t = _plan_scalar(plan, "model_timestep", i, k).to(s.dtype)
                xin = x * _plan_scalar(plan, "model_scale", i, k).to(s.dtype)
            if cfg:
                with probe.phase("guidance", i):
                    xin = torch.cat([xin, xin])
            with probe.phase("model", i):
                mo = _unwrap(s.model(xin, t, **s.cond))
            with probe.phase("step", i):
                extra = {"state": state, "stage": k} if multi else {}
                x = _steps.step(plan, i, mo, x, **kw, **extra).prev_sample
    return x


def _diffusers_scheduler(s: _Setup):
    import diffusers
    _, _, cls_name, extra = SAMPLERS[s.sampler]
    cfg = {k: v for k, v in s.config.items() if not k.startswith("_")}
    cls = getattr(diffusers, cls_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = cls.from_config({**cfg, **extra, "prediction_type": s.prediction_type})
        sched.set_timesteps(s.steps, device=s.device)
    return sched


def _diffusers_loop(s: _Setup, x, probe):
    sched = _diffusers_scheduler(s)
    gen = torch.Generator(s.device).manual_seed(s.seed)
    cfg = s.guidance != 1.0
    x = x * sched.init_noise_sigma
    step_kw = {"generator": gen} if "generator" in inspect.signature(sched.step).parameters else {}
    for i, t in enumerate(sched.timesteps):
        xin = x
        if cfg:
            with probe.phase("guidance", i):
                xin = torch.cat([x, x])
        with probe.phase("rest", i):
            xin = sched.scale_model_input(xin, t)
        with probe.phase("model", i):
            mo = _unwrap(s.model(xin, t, **s.cond))
        if cfg:
            with probe.phase("guidance", i):
                u, c = mo.chunk(2)
                mo = u + s.guidance * (c - u)
        with probe.phase("step", i):
            x = sched.step(mo, t, x, **step_kw).prev_sample
    return x


# ------------------------------------------------------------------ results
@dataclass
class PhaseStats:
    p50_ms: float
    p95_ms: float
    total_ms: float  # per loop (median run)
    syncs: int  # per loop
    allocs: int  # per loop
    alloc_mb: float  # per loop


@dataclass
class LoopProfile:
    """One loop's numbers: per-phase stats, the loop's median total, and the
    per-step phase times of the median run (for the plot)."""
    name: str
    loop_ms: float
    loop_p95_ms: float
    steps: int
    phases: dict[str, PhaseStats]
    timeline: dict[str, list[float]]  # phase -> ms per step, median run
    error: str | None = None


@dataclass
class ProfileResult:
    """What ``genfast.profile`` returns: the setup and one LoopProfile per loop
    ("genfast", and "diffusers" when installed). ``to_dict()`` for JSON."""
    setup: dict
    loops: dict[str, LoopProfile] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"setup": self.setup, "loops": {k: asdict(v) for k, v in self.loops.items()}}

    def __str__(self) -> str:
        from ._profile_output import format_result
        return format_result(self)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return 0.0
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _run_loop(name, loop, s: _Setup, x0, warmup, runs) -> LoopProfile:
    with torch.inference_mode():
        for _ in range(warmup):
            loop(s, x0.clone(), _Null())
        timers, totals = [], []
        for _ in range(runs):
            timer = _Timer(s.device)
            t0 = time.perf_counter()
            loop(s, x0.clone(), timer)
            if s.device.type == "cuda":
                torch.cuda.synchronize()
            totals.append((time.perf_counter() - t0) * 1e3)
            timers.append(timer)
        counter = _Counter(s.device)
        with counter.active():
            loop(s, x0.clone(), counter)
    median_run = sorted(range(runs), key=lambda r: totals[r])[runs // 2]
    n_steps = max(max(t.times[p].keys(), default=-1) for t in timers for p in PHASES) + 1
    phases, timeline = {}, {}
    for p in PHASES:
        per_step = [tm.times[p].get(i, 0.0) * 1e3 for tm in timers for i in range(n_steps)]
        timeline[p] = [timers[median_run].times[p].get(i, 0.0) * 1e3 for i in range(n_steps)]
        phases[p] = PhaseStats(_pct(per_step, 0.5), _pct(per_step, 0.95), sum(timeline[p]),
                               counter.syncs[p], counter.allocs[p],
                               counter.alloc_bytes[p] / 2**20)
    return LoopProfile(name, _pct(totals, 0.5), _pct(totals, 0.95), n_steps, phases, timeline)


class _Null:
    @contextlib.contextmanager
    def phase(self, name, i):
        yield


# ------------------------------------------------------------------ set-up
def _resolve_model(spec):
    """``module:callable`` -> the model (module docstring)."""
    if not isinstance(spec, str):
        return spec, getattr(spec, "__class__", type(spec)).__name__
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ValueError(f"model must be 'module:callable', got {spec!r}")
    import os
    if os.getcwd() not in sys.path:  # as `python -m` does: modules beside you import
        sys.path.insert(0, os.getcwd())
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"model {spec!r}: cannot import {mod_name} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: {mod_name} has no attribute {attr}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r} is not callable")
    if not isinstance(obj, nn.Module) and (inspect.isclass(obj) or _no_required_args(obj)):
        obj = obj()  # a factory
    return obj, spec


def _no_required_args(fn) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return not any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                   for p in sig.parameters.values())


def _load_pipeline(path: str, device, dtype):
    try:
        from diffusers import DiffusionPipeline
    except ImportError:
        raise ValueError("pipeline= needs diffusers: pip install 'genfast[diffusers]'") from None
    import os
    if not os.path.isdir(path):
        raise ValueError(f"pipeline: {path} is not a directory (a saved diffusers pipeline)")
    from diffusers.utils import logging as dlog
    verbosity = dlog.get_verbosity()
    dlog.set_verbosity_error()  # no progress bar, no advice about accelerate
    dlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True,
                                                     low_cpu_mem_usage=False)
    except Exception as e:  # noqa: BLE001  (diffusers raises many kinds)
        raise ValueError(f"pipeline: cannot load {path}: {type(e).__name__}: {e}") from None
    finally:
        dlog.set_verbosity(verbosity)
        dlog.enable_progress_bar()
    unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    if unet is None or getattr(pipe, "scheduler", None) is None:
        raise ValueError(f"pipeline: {path} has no unet/transformer and scheduler")
    unet = unet.to(device=device, dtype=dtype).eval()
    return pipe, unet


def profile(model=None, *, pipeline: str | None = None, sampler: str = "euler", steps: int = 20,
            batch: int = 1, size: int | None = None, guidance: float | None = None,
            device=None, dtype: torch.dtype = torch.float32, runs: int = 3, warmup: int = 1,
            diffusers: bool = True, trace: str | None = None, plot: str | None = None,
            seed: int = 0) -> ProfileResult:
    """Profile a sampling loop (module docstring) and return the numbers.

    model: None (the built-in TinyDenoiser), an ``nn.Module`` / callable
    ``model(x, t)``, or ``"module:callable"``; pipeline: a diffusers pipeline
    directory instead. size: latent side (default 64, or the pipeline U-Net's
    sample_size); guidance: CFG scale, 1 = off (default 7.5; 1 for
    unconditional pipelines). ``trace``: write a Chrome trace of one genfast
    loop; ``plot``: a PNG of per-step stacked bars (needs matplotlib)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler not in available_samplers():
        raise ValueError(f"sampler {sampler!r} needs the multistep step API "
                         f"(genfast.steps.new_state), not in this genfast")
    for name, v, lo in (("steps", steps, 1), ("batch", batch, 1), ("runs", runs, 1),
                        ("warmup", warmup, 0)):
        if type(v) is not int or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if size is not None and (type(size) is not int or size < 2):
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if guidance is not None and not (isinstance(guidance, (int, float)) and guidance >= 0
                                     and math.isfinite(guidance)):
        raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    if model is not None and pipeline is not None:
        raise ValueError("pass model= or pipeline=, not both")
    try:
        device = torch.device(device if device is not None else
                              ("cuda" if torch.cuda.is_available() else "cpu"))
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"device: {device!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device: genfast profile runs on cpu or cuda, not {device.type}")
    if device.type == "cuda" and (not torch.cuda.is_available() or
                                  (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device: {device} requested but torch sees "
                         f"{torch.cuda.device_count()} GPUs")
    if plot is not None:
        from .bench import plot as _bplot
        if not _bplot.available():
            raise ValueError("plot= needs matplotlib: pip install 'genfast[plot]'")

    plan_sampler, plan_opts, _, _ = SAMPLERS[sampler]
    config = dict(FLOW_CONFIG if sampler == "flow_match_euler" else SD_CONFIG)
    prediction = "flow" if sampler == "flow_match_euler" else "epsilon"
    cond = {}
    if pipeline is not None:
        pipe, net = _load_pipeline(pipeline, device, dtype)
        config = dict(pipe.scheduler.config)
        prediction = config.get("prediction_type") or prediction
        if sampler == "flow_match_euler" or "FlowMatch" in config.get("_class_name", ""):
            prediction = "flow"
        channels = net.config.get("in_channels", 4)
        side = size or net.config.get("sample_size", 64)
        side = side if isinstance(side, int) else side[0]
        xattn = net.config.get("cross_attention_dim")
        if guidance is None:
            guidance = 7.5 if xattn else 1.0
        if xattn:
            items = batch * (2 if guidance != 1.0 else 1)
            cond = {"encoder_hidden_states": torch.zeros(items, 77, xattn, device=device,
                                                         dtype=dtype)}
        model_obj, model_name = net, f"{type(net).__name__} from {pipeline}"
    else:
        if model is None:
            model_obj, model_name = TinyDenoiser().to(device=device, dtype=dtype).eval(), \
                "built-in TinyDenoiser"
        else:
            model_obj, model_name = _resolve_model(model)
            if isinstance(model_obj, nn.Module):
                model_obj = model_obj.to(device=device, dtype=dtype).eval()
        channels, side = 4, size or 64
        guidance = 7.5 if guidance is None else guidance
    if isinstance(model_obj, nn.Module):
        params = sum(p.numel() for p in model_obj.parameters())
        model_name += f" ({params / 1e6:.2f}M parameters)"

    from . import schedules as _schedules
    s = _Setup(model_obj, (batch, channels, side, side), device, dtype, sampler, steps,
               float(guidance), config, prediction, cond, seed, model_name)
    s.plan = _schedules.from_config(config).plan(steps, sampler=plan_sampler, device=device,
                                                 **plan_opts)
    from .ops.noise import randn
    x0 = randn(s.shape, seed=seed, device=device, dtype=dtype)
    if sampler in ("euler", "euler_ancestral", "heun", "dpm_2"):
        from ._plan import COL
        x0 = x0 * float(s.plan.host[0, COL["sigma"]])  # the loop starts at sigma_max

    result = ProfileResult(setup={
        "sampler": sampler, "steps": steps, "batch": batch, "shape": list(s.shape),
        "guidance": s.guidance, "model": model_name, "device": str(device),
        "dtype": str(dtype).removeprefix("torch."), "runs": runs, "warmup": warmup,
        "prediction_type": prediction, "torch_version": torch.__version__,
        "threads": torch.get_num_threads()})
    result.loops["genfast"] = _run_loop("genfast", _genfast_loop, s, x0, warmup, runs)
    if diffusers:
        try:
            import diffusers as _d
            have = True
        except ImportError:
            have = False
        if have:
            name = f"diffusers {SAMPLERS[sampler][2]}"
            try:
                result.loops["diffusers"] = _run_loop(name, _diffusers_loop, s, x0, warmup, runs)
                result.setup["diffusers_version"] = _d.__version__
            except Exception as e:  # noqa: BLE001  (reported, not fatal)
                result.loops["diffusers"] = LoopProfile(name, 0.0, 0.0, 0, {}, {},
                                                        error=f"{type(e).__name__}: {e}")
    if trace is not None:
        write_trace(s, x0, trace)
    if plot is not None:
        from ._profile_output import plot_result
        plot_result(result, plot)
    return result


def write_trace(s: _Setup, x0, path: str) -> None:
    """A torch.profiler Chrome trace (chrome://tracing, Perfetto) of one genfast
    loop, each phase a range "step i: phase", with memory events."""
    acts = [torch.profiler.ProfilerActivity.CPU]
    if s.device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.inference_mode():
        _genfast_loop(s, x0.clone(), _Null())  # warm
        with torch.profiler.profile(activities=acts, profile_memory=True) as prof:
            _genfast_loop(s, x0.clone(), _Labels())
    prof.export_chrome_trace(path)


# ``import genfast.profile`` binds the module to genfast.profile (the import
# system sets the attribute), which would hide the function of the same name;
# a callable module makes ``genfast.profile(...)`` work either way.
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return profile(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
