"""Loops suite: whole sampling loops, `genfast.sample` against k-diffusion's
sampler functions and a diffusers scheduler loop with the same model.

The model is trivial on purpose (one multiply: eps = 0.5 x, or for
k-diffusion's denoiser interface x0 = 0.5 x), so what is timed is the loop
machinery a sampler adds around the network: per step, k-diffusion's dozen
small tensor ops and its host syncs (``if sigmas[i + 1] > 0``), diffusers'
``scale_model_input`` + ``step()`` with its timestep lookup, genfast's one
fused step. Size: one SD latent 1x4x64x64 (``sizes``: element counts, as the
steps suite: n / 16384 latents).

Rows (op, mode "loop", 30 steps):
* dpmpp_2m: genfast.sample(sampler="dpmpp_2m") vs k-diffusion sample_dpmpp_2m
  (Karras sigmas) on the eps model wrapped as k-diffusion runs one
  (``external.DiscreteEpsDDPMDenoiser``, what CompVisDenoiser is for SD) vs a
  diffusers DPMSolverMultistepScheduler loop; also k-diffusion and
  genfast.k_diffusion on a bare x0 function (the sampler loop alone, no
  wrapper: the drop-in's own speed-up);
* euler, euler_ancestral (not in quick mode): the same with
  sample_euler(_ancestral) and EulerDiscreteScheduler /
  EulerAncestralDiscreteScheduler;
* lms (not in quick mode): sample_lms (order 4) and LMSDiscreteScheduler
  (both call scipy's quad for every coefficient of every step; genfast's
  plan integrates once, exactly).
Rows "loop step (euler)", "loop step (dpmpp_2m)" (mode "overhead", 1x4x64x64):
one model evaluation + fused step of genfast.sample's loop (the loop body
itself, cycling through the 30 steps) against the bare model call: its
overhead_us is the per-step cost beyond the model. The cases of genfast.bench.dropin (helper suite, when present)
are appended.

The 2-process figure (gloo) is not a Case (spawning processes takes seconds):
``python -c "import genfast.bench.loops as m; m.main()"`` prints the wall time of genfast.sample on
a global batch in 1 process and split over 2 gloo processes.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

import genfast
from ..sample import SAMPLERS, _Run
from .runner import Case, Provider

STEPS = 30
SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012, "steps_offset": 1, "timestep_spacing": "leading"}
QUICK_SIZES = (1 << 14,)
FULL_SIZES = (1 << 14, 1 << 18)
# short name -> (k-diffusion function, diffusers class)
LOOPS = {
    "dpmpp_2m": ("sample_dpmpp_2m", "DPMSolverMultistepScheduler"),
    "euler": ("sample_euler", "EulerDiscreteScheduler"),
    "euler_ancestral": ("sample_euler_ancestral", "EulerAncestralDiscreteScheduler"),
    "lms": ("sample_lms", "LMSDiscreteScheduler"),
}
_FULL_ONLY = ("euler_ancestral", "lms")  # quick mode keeps to the 30 s budget


def eps_model(x, t):
    return x * 0.5


def denoiser(x, sigma):
    return x * 0.5


def _shape(n):
    return (max(1, n // 16384), 4, 64, 64) if n >= 16384 else (1, 4, 8, 8)


def load_kdiffusion_sampling():
    """k_diffusion/sampling.py of the installed k-diffusion, executed on its own
    (its package __init__ imports clip / torchvision, not needed to sample)
    with a stub ``utils`` holding append_dims; None if not installed."""
    import importlib.machinery
    import sys
    import types
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    name = "_genfast_bench_kdiff"
    if name + ".sampling" in sys.modules:
        return sys.modules[name + ".sampling"]
    pkg = types.ModuleType(name)
    pkg.__path__ = []
    utils = types.ModuleType(name + ".utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    pkg.utils = utils
    sys.modules[name], sys.modules[name + ".utils"] = pkg, utils
    path = list(spec.submodule_search_locations)[0] + "/sampling.py"
    loader = importlib.machinery.SourceFileLoader(name + ".sampling", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    mod.__package__ = name
    try:
        loader.exec_module(mod)
    except ImportError:
        return None
    sys.modules[name + ".sampling"] = mod
    pkg.sampling = mod
    return mod


def load_kdiffusion_external():
    """k_diffusion/external.py (the model wrappers: DiscreteEpsDDPMDenoiser,
    CompVisDenoiser) under the same private package, or None."""
    import importlib.machinery
    import sys
    K = load_kdiffusion_sampling()
    if K is None:
        return None
    name = "_genfast_bench_kdiff"
    if name + ".external" in sys.modules:
        return sys.modules[name + ".external"]
    path = K.__file__.rsplit("/", 1)[0] + "/external.py"
    loader = importlib.machinery.SourceFileLoader(name + ".external", path)
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    mod.__package__ = name
    try:
        loader.exec_module(mod)
    except (ImportError, OSError):
        return None
    sys.modules[name + ".external"] = mod
    return mod


def _supported(sampler):
    try:
        genfast.sample(eps_model, (1, 4, 4, 4), sampler=sampler, steps=2, schedule=SD)
        return None
    except Exception as e:  # noqa: BLE001  (a sampler of a later branch)
        return f"not available here: {type(e).__name__}: {e}"


def _loop_case(short, n, device, dtype):
    kname, dname = LOOPS[short]
    shape = _shape(n)

    def genfast_():
        genfast.sample(eps_model, shape, sampler=short, steps=STEPS, schedule=SD, seed=0,
                       device=device, dtype=dtype)  # warm: plan caches, first-call paths
        return lambda: genfast.sample(eps_model, shape, sampler=short, steps=STEPS,
                                      schedule=SD, seed=0, device=device, dtype=dtype)

    providers = [Provider("genfast", genfast_, skip=_supported(short))]
    K, E = load_kdiffusion_sampling(), load_kdiffusion_external()
    if K is None or E is None:
        providers.append(Provider("k-diffusion", skip="k-diffusion is not installed"))
    else:
        def kdiff(bare):
            def make():
                sched = genfast.schedules.from_config(SD)
                a = sched.alphas_cumprod.to(device=device, dtype=torch.float32)
                # the eps model as k-diffusion runs one (SD front ends: CompVisDenoiser)
                wrapped = E.DiscreteEpsDDPMDenoiser(eps_model, a, quantize=False).to(device)
                sigmas = K.get_sigmas_karras(STEPS, float(wrapped.sigma_min),
                                             float(wrapped.sigma_max), device=device)
                fn = getattr(K if bare != "genfast" else genfast.k_diffusion, kname)
                den = wrapped if bare is None else denoiser

                def call():
                    x = torch.randn(shape, device=device, dtype=dtype) * sigmas[0]
                    return fn(den, x, sigmas, disable=True)
                return call
            return make
        providers += [Provider("k-diffusion", kdiff(None)),
                      Provider("k-diffusion (bare x0 fn)", kdiff("bare")),
                      Provider("genfast.k_diffusion (bare x0 fn)", kdiff("genfast"))]
    try:
        import diffusers
    except ImportError:
        diffusers = None
    if diffusers is None:
        providers.append(Provider("diffusers", skip="diffusers is not installed"))
    else:
        def diff():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sched = getattr(diffusers, dname)(**SD)

            def call():
                with warnings.catch_warnings():  # numpy 2's copy= deprecation in set_timesteps
                    warnings.simplefilter("ignore", DeprecationWarning)
                    sched.set_timesteps(STEPS, device=device)
                x = torch.randn(shape, device=device, dtype=dtype) * sched.init_noise_sigma
                for t in sched.timesteps:
                    xin = sched.scale_model_input(x, t)
                    x = sched.step(eps_model(xin, t), t, x).prev_sample
                return x
            return call
        providers.append(Provider("diffusers", diff))
    return Case("loops", short, n, "loop", providers)


def _overhead_case(device, dtype, sampler):
    shape = _shape(1 << 14)

    def body():
        sched = genfast.schedules.from_config(SD)
        name, opts = SAMPLERS[sampler]
        plan = sched.plan(STEPS, sampler=name, device=device, **opts)
        run = _Run(eps_model, plan, sched, shape[0], device, dtype, "epsilon", False, 1.0, {},
                   {}, 0, 0)
        x0 = genfast.randn(shape, seed=0, dtype=dtype, device=device)
        state = {"x": x0, "j": 0, "opts": run.start(x0)}
        evals = len(run.loop.evals)

        def call():
            j = state["j"]
            if j == 0:
                state["x"] = x0
            state["x"] = run.eval(state["x"], j, state["opts"])
            state["j"] = (j + 1) % evals
        return call

    def model_only():
        x = genfast.randn(shape, seed=0, dtype=dtype, device=device)
        t = torch.full((shape[0],), 500.0, device=device)
        return lambda: eps_model(x, t)

    return Case("loops", f"loop step ({sampler})", 1 << 14, "overhead",
                [Provider("genfast", body, skip=_supported(sampler)),
                 Provider("model call", model_only)],
                overhead_of="model call")


def cases(device, full: bool = False, sizes=None, dtype=torch.float32) -> list[Case]:
    device = torch.device(device)
    given = sizes
    sizes = tuple(sizes) if sizes else (FULL_SIZES if full else QUICK_SIZES)
    out = []
    for n in sizes:  # quick: dpmpp_2m and euler (the <= 30 s budget); full: all of LOOPS
        out += [_loop_case(s, n, device, dtype) for s in LOOPS
                if full or sizes is not QUICK_SIZES or s not in _FULL_ONLY]
    out += [_overhead_case(device, dtype, s) for s in ("euler", "dpmpp_2m")]
    if importlib.util.find_spec("genfast.bench.dropin") is not None:
        import inspect
        from . import dropin
        kw = {"dtype": dtype} if "dtype" in inspect.signature(dropin.cases).parameters else {}
        out += dropin.cases(device, full=full, sizes=given, **kw)
    return out


def cpu_times(ops=("dpmpp_2m", "euler", "loop step (dpmpp_2m)", "loop step (euler)"),
              reps=15, device="cpu"):
    """Round-robin process CPU time (ms, median) of every provider of these
    cases, and the ratio to genfast: on a machine shared with other jobs, CPU
    time is what a loop costs whatever the scheduler does (wall time there
    counts the time slices lost to other processes). Single-threaded use:
    call torch.set_num_threads(1) first."""
    import time
    out = {}
    for case in cases(torch.device(device)):
        if case.op not in ops:
            continue
        fns = {p.name: p.make() for p in case.providers if p.skip is None}
        for f in fns.values():
            f()
        ts = {k: [] for k in fns}
        for _ in range(reps if case.mode == "loop" else 100 * reps):
            for k, f in fns.items():
                t = time.process_time()
                f()
                ts[k].append(time.process_time() - t)
        med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in ts.items()}
        out[case.op] = med
        base = med.get("genfast")
        print(f"{case.op}: " + " | ".join(
            f"{k} {v:.3f} ms" + (f" ({v / base:.1f}x)" if base else "") for k, v in med.items()))
    return out


# ---------------------------------------------------------------- 2 processes on gloo

def _dist_worker(rank, world, port, shape, steps, reps, out):
    import os
    import time
    import torch.distributed as dist
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(max(1, out["threads"] // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        genfast.sample(eps_model, shape, sampler="euler", steps=steps, schedule=SD)  # warm
        times = []
        for _ in range(reps):
            dist.barrier()
            t0 = time.perf_counter()
            genfast.sample(eps_model, shape, sampler="euler", steps=steps, schedule=SD)
            dist.barrier()
            times.append(time.perf_counter() - t0)
        if rank == 0:
            out["times"] = sorted(times)
    finally:
        dist.destroy_process_group()


def distributed_walltime(shape=(16, 4, 64, 64), steps=STEPS, reps=5, procs=(1, 2)):
    """Median wall time (s) of genfast.sample(euler, ``steps``) on the global
    batch ``shape`` for each process count in ``procs`` (gloo on this machine,
    spawned processes sharing its cores: torch threads split evenly; timed
    between barriers, gather included, spawn and import excluded)."""
    import socket
    import torch.multiprocessing as mp
    threads = torch.get_num_threads()
    result = {}
    for world in procs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with mp.Manager() as manager:
            out = manager.dict(threads=threads)
            mp.spawn(_dist_worker, args=(world, port, shape, steps, reps, out), nprocs=world,
                     join=True)
            times = list(out["times"])
        result[world] = times[len(times) // 2]
    return result


def main(argv=None):
    """Prints the 1- and 2-process wall times; argv[0]: the shape as 16x4x64x64."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    shape = (16, 4, 64, 64) if not argv else tuple(int(v) for v in argv[0].split("x"))
    res = distributed_walltime(shape)
    one = res[1]
    for world, t in res.items():
        print(f"genfast.sample euler x{STEPS} {'x'.join(map(str, shape))} gloo {world} "
              f"process(es): {t * 1e3:.1f} ms ({one / t:.2f}x of 1 process)")


if __name__ == "__main__":
    main()
