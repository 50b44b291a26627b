"""Drop-in cases of the "loops" suite (collected by genfast/bench/loops.py):
genfast.diffusers' schedulers against diffusers 0.42.1's, the scheduler as a
pipeline calls it. Every row needs diffusers (skipped without it).

* op "step:<sampler>" (mode "step", 1x4x64x64, or the given sizes):
  one ``scheduler.step(model_output, t, sample)`` at step 10 of 30, for ddim,
  euler_ancestral (noise: diffusers from torch's global generator, genfast
  from its in-kernel stream) and dpmpp_2m (second order, history primed).
  Providers: "genfast" (the drop-in), "diffusers".
* op "loop50:<sampler>" (mode "loop"): a pipeline's whole loop with a
  trivial model (the model output is its input: no model time),
  ``set_timesteps(50)`` then 50 x (``scale_model_input``, ``step``), for ddim
  and euler_ancestral.
* op "unet-pipeline:ddim<steps>" (mode "pipeline", quick 10 steps, full 20): a ``DDIMPipeline``
  (eta 0.5) with a small random ``UNet2DModel`` (quick: 1x3x8x8, channels
  8/16; full: 1x3x32x32, channels 32/64, attention in the second level), before and after
  ``genfast.diffusers.accelerate(pipe)`` ("diffusers" / "genfast"), and the
  time of its scheduler calls alone, replayed with the UNet outputs of a run
  ("scheduler:diffusers" / "scheduler:genfast"): the scheduler's share of
  the sampling time is scheduler / pipeline of the same provider
  (`scheduler_share` computes it from a report's rows).
"""

from __future__ import annotations

import warnings

import torch

from .runner import Case, Provider

SD = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
      "beta_end": 0.012}
SAMPLERS = {  # short name -> (class, config)
    "ddim": ("DDIMScheduler", {"clip_sample": False, "set_alpha_to_one": False}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
}
N_STEPS, INDEX = 30, 10
LOOP_STEPS = 50
PIPE_STEPS = 20


def _libs():
    try:
        import diffusers
        import genfast.diffusers as gd
    except ImportError:
        return None, None
    diffusers.utils.logging.set_verbosity_error()
    return diffusers, gd


def _shape(n: int):
    if n < 16384:
        side = max(1, int((n // 4) ** 0.5))
        return (1, 4, side, side)
    return (n // 16384, 4, 64, 64)


def _pair(short):
    diffusers, gd = _libs()
    cls, cfg = SAMPLERS[short]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = getattr(diffusers, cls)(**SD, **cfg)
    return {"diffusers": d, "genfast": getattr(gd, cls).from_config(d.config)}


def _inputs(shape, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device, dtype)
    m = torch.randn(shape, generator=g).to(device, dtype)
    return x, m


def _step_case(short, n, device, dtype):
    shape = _shape(n)

    def make(which):
        def build():
            s = _pair(short)[which]
            s.set_timesteps(N_STEPS, device=device)
            x, m = _inputs(shape, device, dtype)
            ts = s.timesteps
            s.is_scale_input_called = True  # Euler-type: no warning per step
            for t in ts[:INDEX]:  # prime a multistep history the way a loop does
                s.step(m, t, x)
            t = ts[INDEX]
            multi = hasattr(s, "lower_order_nums")

            def call():
                s._step_index = INDEX  # time the same step on every call
                if multi:
                    s.lower_order_nums = 2
                return s.step(m, t, x)
            return call
        return build

    return Case("loops", f"step:{short}", n, "step",
                [Provider("genfast", make("genfast")), Provider("diffusers", make("diffusers"))],
                bytes_moved=16 * n)


def _loop_case(short, n, device, dtype):
    shape = _shape(n)

    def make(which):
        def build():
            s = _pair(short)[which]
            x0, _ = _inputs(shape, device, dtype)

            def call():
                s.set_timesteps(LOOP_STEPS, device=device)
                x = x0 * s.init_noise_sigma
                for t in s.timesteps:
                    m = s.scale_model_input(x, t)  # the trivial model: output = input
                    x = s.step(m, t, x).prev_sample
                return x
            return call
        return build

    return Case("loops", f"loop{LOOP_STEPS}:{short}", n, "loop",
                [Provider("genfast", make("genfast")), Provider("diffusers", make("diffusers"))],
                baseline="genfast")


def _unet(diffusers, device, dtype, side, width):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=side, in_channels=3, out_channels=3,
                                 layers_per_block=1, block_out_channels=(width, 2 * width),
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                                 norm_num_groups=min(8, width))
    return unet.eval().to(device, dtype)


def _pipeline_case(device, dtype, full):
    side, width = (32, 32) if full else (8, 8)  # quick: a UNet of a few ms a call
    steps = PIPE_STEPS if full else PIPE_STEPS // 2
    diffusers, gd = _libs()
    state = {}

    def pipe_of(which):
        if which not in state:
            unet = state.setdefault("unet", _unet(diffusers, device, dtype, side, width))
            pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(**SD))
            pipe.set_progress_bar_config(disable=True)
            if which == "genfast":
                gd.accelerate(pipe)
            state[which] = pipe
        return state[which]

    def run(pipe, seed=0):
        with torch.no_grad():
            return pipe(generator=torch.Generator().manual_seed(seed), eta=0.5,
                        num_inference_steps=steps, output_type="pt").images

    def pipeline(which):
        def build():
            pipe = pipe_of(which)
            return lambda: run(pipe)
        return build

    def scheduler_only(which):
        def build():
            pipe = pipe_of(which)
            calls = []  # (model_output, t, sample) of one run, replayed without the UNet
            orig = pipe.scheduler.step

            def record(mo, t, x, **kw):
                calls.append((mo, t, x, kw))
                return orig(mo, t, x, **kw)
            pipe.scheduler.step = record
            try:
                run(pipe)
            finally:
                del pipe.scheduler.step
            s = pipe.scheduler

            def call():
                s.set_timesteps(steps)
                gen = torch.Generator().manual_seed(0)
                for mo, t, x, kw in calls:
                    s.step(mo, t, x, **{**kw, "generator": gen})
            return call
        return build

    return Case("loops", f"unet-pipeline:ddim{steps}", 3 * side * side, "pipeline",
                [Provider("genfast", pipeline("genfast")),
                 Provider("diffusers", pipeline("diffusers")),
                 Provider("scheduler:genfast", scheduler_only("genfast")),
                 Provider("scheduler:diffusers", scheduler_only("diffusers"))])


def scheduler_share(rows) -> dict[str, float]:
    """{"diffusers": share, "genfast": share}: the scheduler's fraction of the
    pipeline's sampling time, from the rows of the unet-pipeline case."""
    by = {r.provider: r.median_ms for r in rows if r.op.startswith("unet-pipeline")}
    out = {}
    for who in ("diffusers", "genfast"):
        total, sched = by.get(who), by.get(f"scheduler:{who}")
        if total and sched:
            out[who] = sched / total
    return out


def cases(device, full: bool = False, sizes=None, dtype=torch.float32) -> list[Case]:
    device = torch.device(device)
    diffusers, _ = _libs()
    if diffusers is None:
        return [Case("loops", "dropin", 16384, "step",
                     [Provider("genfast", skip="diffusers is not installed")])]
    sizes = tuple(sizes) if sizes else ((1 << 14, 1 << 20) if full else (1 << 14,))
    out = []
    for n in sizes:
        out += [_step_case(s, n, device, dtype) for s in SAMPLERS]
        out += [_loop_case(s, n, device, dtype) for s in ("ddim", "euler_ancestral")]
    out.append(_pipeline_case(device, dtype, full))
    return out
