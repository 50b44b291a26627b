"""genfast.steps: every sampler against diffusers 0.42.1 (full loops with a
deterministic dummy model, the same noise injected), the kernels against the
reference step by step, guidance / thresholding, no host sync, bad input.

Tolerances (written down here, used below):
* full loops against diffusers, float32: atol 2e-4 + rtol 2e-4 after up to 25
  steps. diffusers keeps alphas_cumprod / sigmas in float32 (~1e-5 relative
  off at the end of the schedule, see tests/test_schedules.py), genfast's plan
  is float64; the difference compounds over the loop.
* kernel against reference, float32: 2e-5 relative to the output's largest
  value (the kernel folds the step into one affine map with float64
  coefficients rounded once; the reference follows diffusers' operation
  order in float32: a few ulp apart, more where x - s eps cancels).
* every dtype: the kernel's max error against the float64 reference is
  within 2x the error of the reference computed in that dtype (for fp16 /
  bf16: diffusers' own low-precision chain), plus one ulp of the dtype at the
  output's scale.
"""

import math

import pytest
import torch

import genfast
from genfast import schedules as S
from genfast.reference import steps as R
from conftest import available_backends

diffusers = pytest.importorskip("diffusers")

BACKENDS = [b for b in available_backends() if b in ("reference", "cpu")]
KERNELS = [b for b in BACKENDS if b != "reference"]
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
DIFFUSERS = {
    "ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler", "lcm": "LCMScheduler",
    "flow_match_euler": "FlowMatchEulerDiscreteScheduler",
}
FULL = dict(atol=2e-4, rtol=2e-4)


def dummy_model(x, t, channels_out=None):
    """Deterministic 'denoiser': smooth in x, depends on the timestep."""
    out = 0.7 * torch.tanh(x.float()) + 0.05 * math.cos(float(t) / 150.0) + 0.02 * x.float() ** 2
    if channels_out is not None:  # learned variance: v in [-1, 1] in the second half
        out = torch.cat([out, torch.tanh(0.5 * x.float())], dim=1)
    return out.to(x.dtype)


def latent(n=2, shape=(4, 8, 8), seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn((n,) + shape, generator=g)).to(dtype)


def pair(sampler, n, **cfg):
    """A diffusers scheduler and the genfast plan of the same config."""
    cls = getattr(diffusers, DIFFUSERS[sampler])
    base = {} if sampler == "flow_match_euler" else dict(SD)
    d = cls(**{**base, **cfg})
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler=sampler)
    return d, plan


def _noises(count, like, seed=100):
    return [latent(like.shape[0], tuple(like.shape[1:]), seed=seed + i) for i in range(count)]


def run_diffusers(d, sampler, x, noises, monkeypatch, cond_kw=None, learned=False, **step_kw):
    """diffusers' loop with `noises[i]` injected as step i's noise."""
    import importlib
    mod = importlib.import_module(type(d).__module__)
    step = [0]  # noise of step i, whether or not diffusers draws at every step
    monkeypatch.setattr(mod, "randn_tensor", lambda *a, **k: noises[step[0]].clone(),
                        raising=False)
    x0s = []
    for i, t in enumerate(d.timesteps):
        step[0] = i
        xin = d.scale_model_input(x, t) if hasattr(d, "scale_model_input") else x
        out = dummy_model(xin, t, channels_out=learned or None)
        res = d.step(out, t, x, **step_kw)
        x = res.prev_sample
        x0s.append(getattr(res, "pred_original_sample", None) if sampler != "lcm" else res.denoised)
    return x, x0s


def run_genfast(plan, sampler, x, noises, backend, learned=False, **kw):
    c_in = plan.column("c_in")
    x0s = []
    for i in range(plan.num_steps):
        t = plan.timesteps[i]
        out = dummy_model(x * float(c_in[i]), t, channels_out=learned or None)
        nz = noises[i] if noises is not None else None
        x, x0 = genfast.steps.step(plan, i, out, x, noise=nz, backend=backend, **kw)
        x0s.append(x0)
    return x, x0s


# ---------------------------------------------------------------- parity with diffusers

CASES = [
    # sampler, scheduler config, genfast step kwargs, diffusers step kwargs
    ("ddim", dict(set_alpha_to_one=False, clip_sample=False), {}, {}),
    ("ddim", dict(clip_sample=False, timestep_spacing="trailing", rescale_betas_zero_snr=True,
                  prediction_type="v_prediction"), {"prediction_type": "v_prediction"}, {}),
    ("ddim", dict(clip_sample=True, steps_offset=1), {"clip_sample": True}, {}),
    ("ddim", dict(clip_sample=True, prediction_type="sample"),
     {"clip_sample": True, "prediction_type": "sample", "use_clipped_model_output": True},
     {"use_clipped_model_output": True}),
    ("ddpm", dict(clip_sample=False), {}, {}),
    ("ddpm", dict(clip_sample=False, variance_type="fixed_small_log", prediction_type="v_prediction"),
     {"variance_type": "fixed_small_log", "prediction_type": "v_prediction"}, {}),
    ("ddpm", dict(clip_sample=True, variance_type="fixed_large", timestep_spacing="trailing"),
     {"variance_type": "fixed_large", "clip_sample": True}, {}),
    ("ddpm", dict(clip_sample=False, variance_type="learned_range", prediction_type="sample"),
     {"variance_type": "learned_range", "prediction_type": "sample"}, {}),
    ("ddpm", dict(thresholding=True, clip_sample=False, dynamic_thresholding_ratio=0.9,
                  sample_max_value=1.5),
     {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}, {}),
    ("euler", {}, {}, {}),
    ("euler", dict(prediction_type="v_prediction", timestep_spacing="trailing"),
     {"prediction_type": "v_prediction"}, {}),
    ("euler", dict(use_karras_sigmas=True), {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 8.0},
     {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 8.0}),
    ("euler", dict(prediction_type="sample"), {"prediction_type": "sample"}, {}),
    ("euler_ancestral", {}, {}, {}),
    ("euler_ancestral", dict(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                             timestep_spacing="trailing"), {"prediction_type": "v_prediction"}, {}),
    ("lcm", {}, {}, {}),
    ("lcm", dict(prediction_type="v_prediction"), {"prediction_type": "v_prediction"}, {}),
    ("flow_match_euler", dict(shift=3.0), {}, {}),
    ("flow_match_euler", dict(shift=3.0, stochastic_sampling=True), {"stochastic_sampling": True}, {}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1].values()))}")
def test_full_loop_matches_diffusers(backend, case, monkeypatch):
    sampler, cfg, kw, dkw = case
    n = 4 if sampler == "lcm" else 12
    d, plan = pair(sampler, n, **cfg)
    learned = kw.get("variance_type") == "learned_range"
    x = latent() * float(getattr(d, "init_noise_sigma", 1.0))
    noises = _noises(n, x)
    want, want_x0 = run_diffusers(d, sampler, x, noises, monkeypatch, learned=learned, **dkw)
    got, got_x0 = run_genfast(plan, sampler, x, noises, backend, learned=learned, **kw)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want.float(), **FULL)
    if want_x0[-1] is not None:
        torch.testing.assert_close(got_x0[-1], want_x0[-1].float(), **FULL)


def test_ddim_eta_matches_diffusers():
    d, plan = pair("ddim", 10, clip_sample=False, set_alpha_to_one=False)
    x = latent()
    y = x.clone()
    noises = _noises(10, x)
    for i, t in enumerate(d.timesteps):
        out = dummy_model(x, t)
        x = d.step(out, t, x, eta=0.7, variance_noise=noises[i]).prev_sample
        y = genfast.steps.ddim(plan, i, dummy_model(y, t), y, eta=0.7, noise=noises[i]).prev_sample
    torch.testing.assert_close(y, x, **FULL)


# ---------------------------------------------------------------- classifier-free guidance

def _rescale_noise_cfg(noise_cfg, noise_pred_text, guidance_rescale):
    """diffusers' rescale_noise_cfg (pipeline_stable_diffusion.py, 0.42.1), copied:
    importing the pipeline module needs transformers."""
    std_text = noise_pred_text.std(dim=list(range(1, noise_pred_text.ndim)), keepdim=True)
    std_cfg = noise_cfg.std(dim=list(range(1, noise_cfg.ndim)), keepdim=True)
    noise_pred_rescaled = noise_cfg * (std_text / std_cfg)
    return guidance_rescale * noise_pred_rescaled + (1 - guidance_rescale) * noise_cfg


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rescale", [0.0, 0.7])
def test_cfg_fused_equals_pipeline(backend, rescale):
    """The pipeline's u + g (c - u) (then rescale_noise_cfg), then the step, equals
    the fused step with both halves, as two tensors or one batched tensor."""
    d, plan = pair("ddim", 10, clip_sample=False)
    x = latent(3)
    u, c = latent(3, seed=5), latent(3, seed=6)
    g = 6.5
    m = u + g * (c - u)
    if rescale:
        m = _rescale_noise_cfg(m, c, rescale)
    t = d.timesteps[3]
    want = d.step(m, t, x)
    d2, _ = pair("ddim", 10, clip_sample=False)
    for kw in (dict(uncond=u, model_output=c), dict(model_output=torch.cat([u, c]))):
        mo = kw.pop("model_output")
        got = genfast.steps.ddim(plan, 3, mo, x, guidance_scale=g, guidance_rescale=rescale,
                                 backend=backend, **kw)
        torch.testing.assert_close(got.prev_sample, want.prev_sample, atol=5e-5, rtol=5e-5)
        torch.testing.assert_close(got.pred_original_sample, want.pred_original_sample,
                                   atol=5e-5, rtol=5e-5)
    # one scale per item
    gs = torch.tensor([1.0, 4.0, 9.0])
    got = genfast.steps.ddim(plan, 3, c, x, uncond=u, guidance_scale=gs, backend=backend)
    for b in range(3):
        one = genfast.steps.ddim(plan, 3, c[b:b + 1], x[b:b + 1], uncond=u[b:b + 1],
                                 guidance_scale=float(gs[b]), backend=backend)
        torch.testing.assert_close(got.prev_sample[b:b + 1], one.prev_sample, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- kernels against the reference

STEP_CASES = [
    ("ddpm", "epsilon", {}), ("ddpm", "v_prediction", {"variance_type": "fixed_large"}),
    ("ddpm", "sample", {"variance_type": "learned_range"}),
    ("ddim", "epsilon", {"eta": 0.5}), ("ddim", "v_prediction", {"clip_sample": True}),
    ("ddim", "sample", {"thresholding": True, "use_clipped_model_output": True}),
    ("euler", "epsilon", {"s_churn": 2.0}), ("euler", "v_prediction", {}),
    ("euler_ancestral", "epsilon", {}), ("euler_ancestral", "sample", {"eta": 0.5}),
    ("lcm", "epsilon", {}), ("lcm", "v_prediction", {"thresholding": True}),
    ("flow_match_euler", "flow", {}), ("flow_match_euler", "flow", {"stochastic_sampling": True}),
]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _plan(sampler, n=6, **cfg):
    if sampler == "flow_match_euler":
        return S.from_config({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}).plan(n, sampler=sampler)
    return S.from_config({**SD, **cfg}).plan(n, sampler=sampler)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{'-'.join(c[2])}")
def test_kernel_matches_reference(backend, dtype, case):
    sampler, pred, kw = case
    plan = _plan(sampler)
    learned = kw.get("variance_type") == "learned_range"
    x = latent(2, (4, 6, 5), scale=2.0).to(dtype)
    mo = latent(2, (8 if learned else 4, 6, 5), seed=3).to(dtype)
    u = latent(2, tuple(mo.shape[1:]), seed=4).to(dtype)
    z = latent(2, (4, 6, 5), seed=7).to(dtype)
    for i in (0, 2, plan.num_steps - 1):
        kws = dict(prediction_type=pred, noise=z, uncond=u, guidance_scale=3.0, **kw)
        got = genfast.steps.step(plan, i, mo, x, backend=backend, **kws)
        ref = genfast.steps.step(plan, i, mo, x, backend="reference", **kws)
        args = _raw_args(plan, i, mo, x, u, z, pred, kws)
        truth = R.step(plan.table, i, x.double(), mo.double(), uncond=u.double(),
                       noise=z.double(), dtype=torch.float64, **args)
        for k, (g, r) in enumerate(zip(got, ref)):
            assert torch.isfinite(g).all()
            t = truth[k]
            scale = t.abs().max().item()
            if dtype == torch.float32:
                torch.testing.assert_close(g, r, atol=2e-5 * scale, rtol=2e-5)
            low = R.step(plan.table, i, x, mo, uncond=u, noise=z, dtype=dtype, **args)[k]
            ulp = torch.finfo(dtype).eps * scale
            err = (g.double() - t).abs().max().item()
            ref_err = (low.double() - t).abs().max().item()
            assert err <= 2 * ref_err + ulp, (err, ref_err, ulp)


def _raw_args(plan, i, mo, x, u, z, pred, kws):
    """The reference's codes for the wrapper kwargs used in these tests."""
    flags = R.CFG_SEPARATE | R.NOISE_GIVEN | R.WANT_X0
    flags |= R.THRESHOLD if kws.get("thresholding") else (R.CLIP if kws.get("clip_sample") else 0)
    flags |= R.USE_CLIPPED if kws.get("use_clipped_model_output") else 0
    flags |= R.STOCHASTIC if kws.get("stochastic_sampling") else 0
    sampler = R.SAMPLERS[plan.sampler]
    eta = kws.get("eta", 1.0 if sampler == 3 else 0.0)
    params = [kws["guidance_scale"], 0.0, eta, 1.0, 0.995, 1.0, kws.get("s_churn", 0.0), 0.0,
              math.inf, 1.0, 10.0]
    return dict(sampler=sampler, prediction=R.PREDICTIONS[pred],
                variance=R.VARIANCES[kws.get("variance_type", "fixed_small")], flags=flags,
                params=params, num_steps=plan.num_steps)


# ---------------------------------------------------------------- noise, index, sync

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_seeded_noise_is_the_stream(backend, dtype):
    """seed= draws genfast.randn(stream=stream + i, sample_offset=...) in the step."""
    plan = _plan("euler_ancestral")
    x, mo = latent(3, dtype=dtype), latent(3, seed=2, dtype=dtype)
    for i in (0, 4):
        z = genfast.randn(x.shape, seed=42, stream=10 + i, sample_offset=5, dtype=dtype,
                          backend=backend)
        a = genfast.steps.euler_ancestral(plan, i, mo, x, noise=z, backend=backend)
        b = genfast.steps.euler_ancestral(plan, i, mo, x, seed=42, stream=10, sample_offset=5,
                                          backend=backend)
        assert torch.equal(a.prev_sample, b.prev_sample)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_index_equals_int(backend):
    plan = _plan("ddpm", 8)
    x, mo = latent(), latent(seed=2)
    for i in (0, 3, 7):
        a = genfast.steps.ddpm(plan, i, mo, x, seed=1, backend=backend)
        b = genfast.steps.ddpm(plan, torch.tensor(i), mo, x, seed=1, backend=backend)
        assert torch.equal(a.prev_sample, b.prev_sample)
        assert torch.equal(a.pred_original_sample, b.pred_original_sample)


def _loop(plan, x, idx, backend, steps):
    for _ in range(steps):
        out = 0.5 * torch.tanh(x)
        x, _ = genfast.steps.euler_ancestral(plan, idx, torch.cat([out, out * 0.9]), x,
                                             guidance_scale=5.0, guidance_rescale=0.5, seed=3,
                                             backend=backend)
        idx = idx + 1
    return x


@pytest.mark.parametrize("backend", KERNELS)
def test_50_step_loop_compiles_fullgraph_without_sync(backend):
    """A 50-step loop with the step counter on the device traces as one graph
    (a host sync or a Python branch on a tensor would break it): the no-sync
    test on the CPU. On a GPU tests/test_steps_gpu.py runs it under
    torch.cuda.set_sync_debug_mode("error") and CUDA-graph capture."""
    plan = _plan("euler_ancestral", 50)
    x = latent(1, (4, 8, 8))
    idx = torch.tensor(0)
    torch._dynamo.reset()
    compiled = torch.compile(_loop, fullgraph=True, backend="aot_eager")
    got = compiled(plan, x, idx, backend, 50)
    want = _loop(plan, x, torch.tensor(0), backend, 50)
    torch.testing.assert_close(got, want)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("backend", KERNELS)
def test_compiled_step_inductor(backend):
    plan = _plan("ddim", 10)
    x, mo = latent(), latent(seed=2)
    f = torch.compile(lambda i, m, s: genfast.steps.ddim(plan, i, m, s, backend=backend),
                      fullgraph=True)
    torch._dynamo.reset()
    for i in (0, 1, 2):
        ti = torch.tensor(i)
        torch.testing.assert_close(f(ti, mo, x).prev_sample,
                                   genfast.steps.ddim(plan, i, mo, x, backend=backend).prev_sample)


# ---------------------------------------------------------------- finiteness

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler", "euler_ancestral", "lcm"])
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_finite_every_step_zero_snr(backend, sampler, pred):
    """Zero-terminal-SNR schedules (Lin et al. 2024), trailing spacing: the
    first step has alpha = 0 (diffusers: inf / NaN for epsilon prediction),
    the last goes to sigma 0. Every step stays finite."""
    plan = _plan(sampler, 8, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    x = latent() * 3
    for i in range(plan.num_steps):
        x, x0 = genfast.steps.step(plan, i, 0.5 * torch.tanh(x), x, prediction_type=pred, seed=0,
                                   backend=backend)
        assert torch.isfinite(x).all() and torch.isfinite(x0).all(), i


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    plan = _plan("ddim", 5)
    x, mo = latent(), latent(seed=2)
    with pytest.raises(ValueError, match="model_output has shape"):
        genfast.steps.ddim(plan, 0, mo[:, :3], x, backend=backend)
    with pytest.raises(ValueError, match="index 5 is past the plan"):
        genfast.steps.ddim(plan, 5, mo, x, backend=backend)
    with pytest.raises(ValueError, match="index -1 is past the plan"):
        genfast.steps.ddim(plan, -1, mo, x, backend=backend)
    with pytest.raises(ValueError, match="prediction_type 'flow' is not supported"):
        genfast.steps.ddim(plan, 0, mo, x, prediction_type="flow", backend=backend)
    with pytest.raises(ValueError, match="prediction_type must be one of"):
        genfast.steps.ddim(plan, 0, mo, x, prediction_type="eps", backend=backend)
    with pytest.raises(ValueError, match="guidance halves do not split"):
        genfast.steps.ddim(plan, 0, mo, x, guidance_scale=7.0,
                           backend=backend)
    with pytest.raises(ValueError, match="needs a plan built with sampler='euler'"):
        genfast.steps.euler(plan, 0, mo, x, backend=backend)
    with pytest.raises(ValueError, match="draws noise"):
        genfast.steps.step(_plan("ddpm", 5), 0, mo, x, backend=backend)
    with pytest.raises(TypeError, match="model_output is torch.float16 but sample is torch.float32"):
        genfast.steps.ddim(plan, 0, mo.half(), x, backend=backend)
    with pytest.raises(ValueError, match="clip_sample / thresholding"):
        genfast.steps.euler(_plan("euler"), 0, mo, x, clip_sample=True, backend=backend)


@pytest.mark.parametrize("backend", KERNELS)
def test_tensor_index_past_the_plan(backend):
    plan = _plan("ddim", 5)
    x, mo = latent(), latent(seed=2)
    with pytest.raises(IndexError, match="step index 5 is past the plan"):
        genfast.steps.ddim(plan, torch.tensor(5), mo, x, backend=backend)


# ---------------------------------------------------------------- opcheck

@pytest.mark.parametrize("backend", KERNELS)
def test_opcheck_strided(backend):
    plan = _plan("ddpm", 5)
    x = latent(2, (8, 4, 4)).transpose(2, 3)  # non-contiguous
    mo = latent(4, (16, 4, 4), seed=2)[:, ::2].transpose(2, 3)
    z = latent(2, (8, 4, 4), seed=3)[:, :, :, :].transpose(1, 3).contiguous().transpose(1, 3)
    flags = R.CFG_BATCHED | R.NOISE_GIVEN | R.WANT_X0 | R.RESCALE | R.THRESHOLD
    params = [4.0, 0.5, 0.0, 1.0, 0.9, 1.5, 0.0, 0.0, math.inf, 1.0, 10.0]
    for index, step in ((None, 2), (torch.tensor(3), 0)):
        args = (x, mo, None, None, z, plan.table, index, step, 0, 0, 0, flags, params, 0, 0, 0)
        torch.library.opcheck(torch.ops.genfast.steps_step.default, args)
    seeded = (x, mo[:2], None, None, None, plan.table, None, 1, 0, 1, 2,
              R.NOISE_SEEDED, params, 7, 3, 0)
    torch.library.opcheck(torch.ops.genfast.steps_step.default, seeded)


@pytest.mark.parametrize("n", [1, 4, 8])
def test_lcm_plan_timesteps_match_diffusers(n):
    d = diffusers.LCMScheduler(**SD)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="lcm")
    assert plan.timesteps.long().tolist() == d.timesteps.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_x0_false(backend):
    plan = _plan("ddim", 5)
    x, mo = latent(), latent(seed=2)
    a = genfast.steps.ddim(plan, 1, mo, x, backend=backend)
    b = genfast.steps.ddim(plan, 1, mo, x, return_x0=False, backend=backend)
    assert b.pred_original_sample is None and torch.equal(a.prev_sample, b.prev_sample)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_bench_suite_cases_run_in_each_dtype(dtype):
    """The steps suite builds in every dtype and its eager providers run once
    (timing is `genfast bench --suite steps`'s job)."""
    from genfast.bench import steps as bench_steps
    cases = bench_steps.cases(torch.device("cpu"), sizes=[256], dtype=dtype)
    assert {c.op for c in cases} >= {"ddpm", "ddim", "euler", "euler_ancestral", "lcm",
                                     "flow_match", "ddim+cfg"}
    for case in cases:
        for p in case.providers:
            if not p.skip and "compile" not in p.name:
                p.make()()
