"""genfast.sample: the loop against a diffusers scheduler loop with the same
model and noise, batch-split invariance, CFG forms, options and errors."""

import inspect

import pytest
import torch

import genfast
from genfast.sample import DEFAULT_SCHEDULE, SAMPLERS

diffusers = pytest.importorskip("diffusers")
# diffusers 0.42.1's schedulers hand torch tensors to numpy (numpy 2 deprecations)
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")]


def toy(x, t, scale=None, shift=None):
    """Per-item, batch-invariant stand-in for a denoiser (elementwise)."""
    out = 0.3 * x + 0.01 * torch.sin(t.view(-1, *([1] * (x.dim() - 1))) / 100)
    if scale is not None:
        out = out * scale.view(-1, *([1] * (x.dim() - 1)))
    if shift is not None:
        out = out + shift
    return out


def _diffusers_loop(cls_name, model, shape, steps, seed, config=DEFAULT_SCHEDULE, **call):
    """The diffusers pipeline loop, its noise replaced by genfast's streams
    (initial latent: stream 0; step i's draw: stream 1 + i)."""
    import importlib
    cls = getattr(diffusers, cls_name)
    params = inspect.signature(cls.__init__).parameters
    s = cls(**{k: v for k, v in config.items() if k in params})
    s.set_timesteps(steps)
    x = genfast.randn(shape, seed=seed) * getattr(s, "init_noise_sigma", 1.0)
    mod = importlib.import_module(cls.__module__)
    saved = getattr(mod, "randn_tensor", None)
    try:
        for i, t in enumerate(s.timesteps):
            z = genfast.randn(shape, seed=seed, stream=1 + i)
            if saved is not None:
                mod.randn_tensor = lambda *a, **k: z
            xin = s.scale_model_input(x, t) if hasattr(s, "scale_model_input") else x
            out = model(xin, t.float().expand(shape[0]), **call)
            out = getattr(out, "sample", out)
            x = s.step(out, t, x).prev_sample
    finally:
        if saved is not None:
            mod.randn_tensor = saved
    return x


@pytest.mark.parametrize("name,cls,extra", [
    ("ddim", "DDIMScheduler", {}), ("ddpm", "DDPMScheduler", {}),
    ("euler", "EulerDiscreteScheduler", {}),
    ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}),
    ("heun", "HeunDiscreteScheduler", {}), ("dpm_2", "KDPM2DiscreteScheduler", {}),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", {}),
    ("dpmpp_3m", "DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("unipc", "UniPCMultistepScheduler", {}),
    ("lms", "LMSDiscreteScheduler", {}),
])
@pytest.mark.parametrize("steps", [10, 20])
def test_matches_diffusers_loop(name, cls, extra, steps):
    shape = (2, 4, 8, 8)
    got = genfast.sample(toy, shape, sampler=name, steps=steps, seed=3)
    want = _diffusers_loop(cls, toy, shape, steps, 3, config={**DEFAULT_SCHEDULE, **extra})
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_item_depends_only_on_seed_and_index(name):
    """Item i of a batch of 5 is item i of a batch of 3: nothing in the loop
    mixes items, and the noise of item i is (seed, i)'s."""
    sched = {"shift": 3.0} if name == "flow_match_euler" else None
    five = genfast.sample(toy, (5, 4, 8, 8), sampler=name, steps=6, seed=11, schedule=sched)
    three = genfast.sample(toy, (3, 4, 8, 8), sampler=name, steps=6, seed=11, schedule=sched)
    assert torch.equal(five[:3], three)
    other = genfast.sample(toy, (3, 4, 8, 8), sampler=name, steps=6, seed=12, schedule=sched)
    assert not torch.equal(other, three)


def test_per_item_cond_is_split_with_the_items():
    scale = torch.linspace(0.5, 1.5, 5)
    five = genfast.sample(toy, (5, 4, 8, 8), sampler="euler", steps=5, seed=1,
                          cond={"scale": scale})
    three = genfast.sample(toy, (3, 4, 8, 8), sampler="euler", steps=5, seed=1,
                           cond={"scale": scale[:3]})
    assert torch.equal(five[:3], three)


@pytest.mark.parametrize("batched", [True, False])
def test_cfg_fused_equals_manual_guidance(batched):
    g = 4.0
    c = {"shift": torch.full((2, 4, 8, 8), 0.2)}
    u = {"shift": torch.full((2, 4, 8, 8), -0.1)}
    if not batched:  # different keys: two model calls
        u = {"scale": torch.ones(2), "shift": u["shift"]}

    def guided(x, t):
        uo, co = toy(x, t, **u), toy(x, t, **c)
        return uo + g * (co - uo)

    got = genfast.sample(toy, (2, 4, 8, 8), sampler="ddim", steps=8, seed=5,
                         guidance_scale=g, cond=c, uncond=u)
    want = genfast.sample(guided, (2, 4, 8, 8), sampler="ddim", steps=8, seed=5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_diffusers_unet_as_it_is():
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=4, out_channels=4,
                                 block_out_channels=(8, 16), layers_per_block=1,
                                 norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()
    with torch.no_grad():
        got = genfast.sample(unet, (1, 4, 8, 8), sampler="euler", steps=4, seed=2)
        want = _diffusers_loop("EulerDiscreteScheduler", unet, (1, 4, 8, 8), 4, 2)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_runs_without_autograd_and_on_the_model_device():
    lin = torch.nn.Conv2d(4, 4, 1)  # parameters require grad
    out = genfast.sample(lambda x, t: lin(x), (1, 4, 4, 4), sampler="euler", steps=2)
    assert not out.requires_grad and out.grad_fn is None
    model = torch.nn.Conv2d(4, 4, 1)
    out = genfast.sample(lambda x, t: model(x), (1, 4, 4, 4), sampler="ddim", steps=2)
    wrapped = type("M", (torch.nn.Module,), {"forward": lambda self, x, t: self.c(x)})()
    wrapped.c = model
    assert genfast.sample(wrapped, (1, 4, 4, 4), sampler="ddim", steps=2).device.type == "cpu"


def test_schedule_forms_agree():
    cfg = dict(DEFAULT_SCHEDULE, timestep_spacing="trailing")
    sched = diffusers.DDIMScheduler(**cfg)
    a = genfast.sample(toy, (1, 4, 8, 8), sampler="ddim", steps=5, schedule=cfg)
    b = genfast.sample(toy, (1, 4, 8, 8), sampler="ddim", steps=5, schedule=sched)
    c = genfast.sample(toy, (1, 4, 8, 8), sampler="ddim", steps=5, schedule=sched.config)
    d = genfast.sample(toy, (1, 4, 8, 8), sampler="ddim", steps=5,
                       schedule=genfast.schedules.from_config(cfg))
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(a, d)


def test_flow_match_default_prediction_is_velocity():
    cfg = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    got = genfast.sample(toy, (1, 4, 8, 8), sampler="flow_match_euler", steps=6, schedule=cfg)
    want = _diffusers_loop("FlowMatchEulerDiscreteScheduler", toy, (1, 4, 8, 8), 6, 0,
                           config=cfg)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,cls,pred", [
    ("ddim", "DDIMScheduler", "v_prediction"), ("euler", "EulerDiscreteScheduler", "v_prediction"),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", "v_prediction"),
    ("dpmpp_2m", "DPMSolverMultistepScheduler", "sample"),
    ("heun", "HeunDiscreteScheduler", "v_prediction"),
])
def test_prediction_types_match_diffusers(name, cls, pred):
    shape = (1, 4, 8, 8)
    got = genfast.sample(toy, shape, sampler=name, steps=8, seed=2, prediction_type=pred)
    want = _diffusers_loop(cls, toy, shape, 8, 2,
                           config={**DEFAULT_SCHEDULE, "prediction_type": pred})
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "heun"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision(name, dtype):
    got = genfast.sample(toy, (2, 4, 8, 8), sampler=name, steps=5, dtype=dtype)
    want = genfast.sample(toy, (2, 4, 8, 8), sampler=name, steps=5)
    assert got.dtype == dtype and torch.isfinite(got).all()
    tol = 2e-2 if dtype == torch.float16 else 1e-1
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


def test_progress_bar_and_empty_batch(capsys):
    out = genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", steps=3, progress=True)
    assert out.shape == (1, 4, 4, 4)
    assert genfast.sample(toy, (0, 4, 4, 4), sampler="ddim", steps=3).shape == (0, 4, 4, 4)


def test_compile_matches_eager():
    eager = genfast.sample(toy, (1, 4, 8, 8), sampler="euler", steps=3, seed=4)
    comp = genfast.sample(toy, (1, 4, 8, 8), sampler="euler", steps=3, seed=4, compile=True)
    torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-5)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="cuda_graph"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", cuda_graph=True, device="cpu")
    with pytest.raises(ValueError, match="sampler"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="plms")
    with pytest.raises(ValueError, match="uncond"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", guidance_scale=7.5)
    with pytest.raises(ValueError, match="steps"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", steps=0)
    with pytest.raises(ValueError, match="shape"):
        genfast.sample(toy, (4,), sampler="ddim")
    with pytest.raises(TypeError, match="schedule"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", schedule=3)
    with pytest.raises(TypeError, match="model"):
        genfast.sample(lambda x, t: 3, (1, 4, 4, 4), sampler="ddim", steps=1)
    with pytest.raises(ValueError, match="seed"):
        genfast.sample(toy, (1, 4, 4, 4), sampler="ddim", seed=-1)


def test_every_short_name_is_listed():
    assert set(SAMPLERS) == {"ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpm_2",
                             "dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "lms", "lcm",
                             "flow_match_euler"}


def test_loops_bench_cases_run():
    """The loops suite's cases build and every provider runs once (timing is
    `genfast bench --suite loops`'s job, not a test's)."""
    from genfast.bench import loops
    cases = loops.cases(torch.device("cpu"), sizes=[4096])
    assert "euler_ancestral" not in {c.op for c in loops.cases(torch.device("cpu"))}
    ops = {c.op for c in cases}
    assert {"dpmpp_2m", "euler", "euler_ancestral", "loop step (euler)",
            "loop step (dpmpp_2m)"} <= ops
    for case in cases:
        if case.suite != "loops":
            continue  # genfast.bench.dropin's, tested there
        for p in case.providers:
            assert p.skip is None or "not installed" in p.skip, (case.op, p.name, p.skip)
            if p.skip is None:
                p.make()()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_bound_step_equals_the_wrappers(sampler, dtype, monkeypatch):
    """The loop's bound step (genfast.sample._bind: the op's eager entry
    point called with codes resolved once per loop) gives the same samples,
    bit for bit, as the step wrappers it stands in for."""
    import importlib
    S = importlib.import_module("genfast.sample")

    def model(x, t):
        return torch.tanh(x) * 0.7 + 0.01 * t.reshape(-1, 1, 1, 1).to(x.dtype) / 1000

    kw = dict(sampler=sampler, steps=7, seed=3, dtype=dtype)
    if sampler == "flow_match_euler":
        kw["schedule"] = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
    fast = genfast.sample(model, (2, 3, 5, 4), **kw)
    calls = []
    real = S._bind
    monkeypatch.setattr(S, "_bind", lambda *a: calls.append(real(*a)))  # records, returns None
    slow = genfast.sample(model, (2, 3, 5, 4), **kw)
    assert calls and calls[0] is not None, "the CPU loop should have a bound step"
    assert torch.equal(fast, slow)


def test_schedule_config_shortcut_sees_changes():
    """genfast.sample remembers the last dict config: a changed (or array-valued)
    dict must still give its own schedule."""
    import importlib

    import numpy as np
    S = importlib.import_module("genfast.sample")
    cfg = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    a = S._schedule(cfg)
    assert S._schedule(dict(cfg)) is a
    cfg["beta_schedule"] = "scaled_linear"  # mutated in place after the call
    b = S._schedule(cfg)
    assert b is not a and b.betas[1] != a.betas[1]
    betas = np.linspace(1e-4, 0.02, 1000)
    c = S._schedule({"num_train_timesteps": 1000, "trained_betas": betas})
    d = S._schedule({"num_train_timesteps": 1000, "trained_betas": betas * 0.5})
    assert c is not d
    # past numpy's print threshold (1000 elements) its repr shows "..." in the middle
    long = np.linspace(1e-4, 0.02, 2000)
    middle = long.copy()
    middle[1000] *= 1.5
    e = S._schedule({"num_train_timesteps": 2000, "trained_betas": long})
    f = S._schedule({"num_train_timesteps": 2000, "trained_betas": middle})
    assert repr(long) == repr(middle)
    assert e is not f and e.betas[1000] != f.betas[1000]


class _Tagged(torch.Tensor):
    """A tensor subclass a model might return: the loop hands it to the step
    wrappers (the bound entry point takes plain tensors only)."""


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
def test_plain_loop_takes_subclass_and_other_dtype_outputs(sampler):
    def plain(x, t):
        return torch.tanh(x) * 0.7

    def tagged(x, t):
        return (torch.tanh(x) * 0.7).as_subclass(_Tagged)

    def half(x, t):  # a model run in float16 inside a float32 loop
        return (torch.tanh(x) * 0.7).to(torch.float16)

    kw = dict(sampler=sampler, steps=6, seed=5)
    ref = genfast.sample(plain, (2, 3, 4, 4), **kw)
    got = genfast.sample(tagged, (2, 3, 4, 4), **kw)
    assert type(got) is torch.Tensor or isinstance(got, torch.Tensor)
    torch.testing.assert_close(got.as_subclass(torch.Tensor), ref, rtol=0, atol=0)
    want = genfast.sample(lambda x, t: half(x, t).float(), (2, 3, 4, 4), **kw)
    assert torch.equal(genfast.sample(half, (2, 3, 4, 4), **kw), want)


_GPU = torch.cuda.is_available() and genfast.backend.availability()["cuda"][0]


@pytest.mark.skipif(not _GPU, reason="needs a GPU and the cuda backend")
@pytest.mark.parametrize("sampler", ["ddim", "euler_ancestral", "dpmpp_2m", "unipc", "heun", "lms"])
def test_gpu_equals_cpu_and_cuda_graph_equals_eager(sampler):
    """The same seed on CPU and GPU gives the same samples within float
    tolerance (the noise stream is the same; only the transcendental
    rounding differs), and the loop captured in one CUDA graph replays to
    the eager GPU result."""
    kw = dict(sampler=sampler, steps=12, seed=11)
    cpu = genfast.sample(toy, (3, 4, 8, 8), **kw)
    gpu = genfast.sample(toy, (3, 4, 8, 8), device="cuda", **kw)
    graph = genfast.sample(toy, (3, 4, 8, 8), device="cuda", cuda_graph=True, **kw)
    scale = cpu.abs().max().item()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4 * scale + 1e-5, rtol=1e-4)
    torch.testing.assert_close(graph, gpu, atol=1e-6 * scale, rtol=1e-6)
