"""genfast.steps multistep / two-stage samplers (dpmpp, unipc, heun, dpm_2, lms):
full loops against diffusers 0.42.1 and k-diffusion 0.1.1.post1 with a
deterministic dummy model (the same noise injected), the kernels against the
float64 reference step by step, the state, no host sync, bad input.

Tolerances (written down here, used below):
* full loops against diffusers, float32: 2e-4 relative to the loop's largest
  value. diffusers keeps its sigmas / alphas in float32 and genfast's plan is
  float64; the difference compounds over the loop (as in tests/test_steps.py).
* full loops against k-diffusion (plan_from_sigmas, the same float32 sigma
  tensor): 1e-4 relative (both compute in float32 from the same sigmas;
  k-diffusion's DPM2 midpoint exp(lerp(log s, log s')) is float32, genfast's
  float64, and the model sees that sigma).
* kernel against the float64 reference, per step: the error of the kernel is
  within 2x the error of the reference computed in the sample's dtype, plus
  one ulp of that dtype at the output's scale (float32: the kernel folds the
  step into float64 coefficients rounded once).
"""

import math

import pytest
import torch

import genfast
from genfast import schedules as S
from genfast.reference import multistep as RM
from conftest import available_backends

diffusers = pytest.importorskip("diffusers")
# diffusers' set_timesteps trips numpy 2's copy= deprecation on every call
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BACKENDS = [b for b in available_backends() if b in ("reference", "cpu")]
KERNELS = [b for b in BACKENDS if b != "reference"]
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def dummy_model(x, t):
    """Deterministic 'denoiser': bounded, smooth in x, depends on the timestep."""
    return (0.7 * torch.tanh(x.float()) + 0.05 * math.cos(float(t) / 150.0)
            + 0.02 * x.float()).to(x.dtype)


def latent(n=2, shape=(4, 8, 8), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + shape, generator=g).to(dtype)


def genfast_loop(plan, x, backend="reference", model=dummy_model, noises=None, **kw):
    state = genfast.steps.new_state(plan, x)
    for i in range(plan.num_steps):
        for k in range(plan.stages(i)):
            mo = model(x * plan.model_scale(i, k).to(x.dtype), plan.model_timestep(i, k))
            extra = {} if noises is None else {"noise": noises[i]}
            x = genfast.steps.step(plan, i, mo, x, state=state, stage=k, backend=backend,
                                   **extra, **kw).prev_sample
    return x


def diffusers_loop(d, x, noises=None, states=None, model=dummy_model):
    for i, t in enumerate(d.timesteps):
        if states is not None:
            states.append(x)
        kw = {} if noises is None else {"variance_noise": noises[i]}
        x = d.step(model(d.scale_model_input(x, t), t), t, x, **kw).prev_sample
    return x


def close(got, want, rel=2e-4):
    scale = max(float(want.abs().max()), 1.0)
    torch.testing.assert_close(got, want, rtol=0, atol=rel * scale)


# ---------------------------------------------------------------- diffusers parity

DPMPP = [
    # scheduler config (diffusers), plan opts of the same meaning
    dict(solver_order=1),
    dict(solver_order=2),
    dict(solver_order=2, solver_type="heun"),
    dict(solver_order=3),
    dict(solver_order=3, solver_type="heun", lower_order_final=False),
    dict(solver_order=2, use_karras_sigmas=True),
    dict(solver_order=2, use_exponential_sigmas=True),
    dict(solver_order=3, use_beta_sigmas=True),
    dict(solver_order=2, euler_at_final=True),
    dict(solver_order=2, use_karras_sigmas=True, final_sigmas_type="sigma_min"),
    dict(solver_order=2, algorithm_type="sde-dpmsolver++"),
    dict(solver_order=3, algorithm_type="sde-dpmsolver++", solver_type="heun"),
    dict(solver_order=2, prediction_type="v_prediction", timestep_spacing="trailing"),
    dict(solver_order=2, prediction_type="sample"),
]


def _plan_opts(cfg):
    return {k: v for k, v in cfg.items() if k not in ("prediction_type", "timestep_spacing")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", DPMPP, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("n", [1, 3, 16, 50])
def test_dpmpp_matches_diffusers(backend, cfg, n):
    if n == 50 and len(cfg) > 1 and "algorithm_type" not in cfg:
        pytest.skip("50 steps: sampled (the plain orders and the SDE variants)")
    d = diffusers.DPMSolverMultistepScheduler(**SD, **cfg)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="dpmpp", **_plan_opts(cfg))
    x = latent()
    noises = latent(n, (2, 4, 8, 8), seed=5) if "algorithm_type" in cfg else None
    states = []
    want = diffusers_loop(d, x, noises, states)
    got = genfast_loop(plan, x, backend, noises=noises,
                       prediction_type=cfg.get("prediction_type", "epsilon"))
    if not torch.isfinite(want).all():
        # Karras + final "sigma_min": the last step has sigma_next == sigma
        # (h = 0), diffusers' heun-form / SDE coefficients are 0/0; genfast's
        # plan holds the identity (the finite limit): see tests/test_schedules.py.
        assert cfg.get("final_sigmas_type") == "sigma_min"
        want = states[-1]
    assert torch.isfinite(got).all()
    close(got, want)


UNIPC = [
    dict(solver_order=1),
    dict(solver_order=2),
    dict(solver_order=3),
    dict(solver_order=2, solver_type="bh1"),
    dict(solver_order=3, solver_type="bh1"),
    dict(solver_order=2, disable_corrector=[0, 2]),
    dict(solver_order=3, lower_order_final=False),
    dict(solver_order=2, use_karras_sigmas=True),
    dict(solver_order=2, prediction_type="v_prediction", timestep_spacing="trailing"),
    dict(solver_order=2, prediction_type="sample"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", UNIPC, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("n", [1, 2, 7, 25])
def test_unipc_matches_diffusers(backend, cfg, n):
    d = diffusers.UniPCMultistepScheduler(**SD, **cfg)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="unipc", **_plan_opts(cfg))
    x = latent()
    states = []
    try:
        want = diffusers_loop(d, x, states=states)
    except torch.linalg.LinAlgError:
        # order 3 without lower_order_final: the last step's r_k are all 0
        # (sigma_next = 0), diffusers' solve is singular; compare up to there.
        assert cfg.get("lower_order_final") is False
        want = None
    got = genfast_loop(plan, x, backend, prediction_type=cfg.get("prediction_type", "epsilon"))
    assert torch.isfinite(got).all()
    if want is None or not torch.isfinite(want).all():
        # the last step of bh1 is NaN in diffusers (test_unipc_bh1_last_step_nan)
        assert want is None or cfg.get("solver_type") == "bh1" or not cfg.get(
            "lower_order_final", True)
        head = genfast.schedules.SamplingPlan("unipc", n - 1, plan.table[:-1], plan.host[:-1],
                                              plan.timesteps[:-1], None, plan.options)
        if n > 1:
            close(genfast_loop(head, x, backend, prediction_type=cfg.get(
                "prediction_type", "epsilon")), states[-1] if states else None)
        return
    close(got, want)


def test_unipc_bh1_last_step_nan():
    """diffusers 0.42.1's UniPC bh1 returns NaN at the last step (sigma_next
    = 0): in multistep_uni_p_bh_update, lambda_t = log(alpha_t) - log(sigma_t)
    = +inf, so h = inf and hh = -h = -inf; bh1 sets B_h = hh = -inf, and the
    update x_t = x_t_ - alpha_t * B_h * pred_res (pred_res = 0 at order 1,
    the lower_order_final step) evaluates -inf * 0 = NaN. (bh2's B_h =
    expm1(hh) = -1 stays finite.) The finite limit is x_next = D (the x0 of
    the last step), which is what genfast's plan holds."""
    n = 10
    d = diffusers.UniPCMultistepScheduler(**SD, solver_type="bh1")
    d.set_timesteps(n)
    states = []
    want = diffusers_loop(d, latent(), states=states)
    assert torch.isnan(want).all()
    plan = S.from_config(d.config).plan(n, sampler="unipc", solver_type="bh1")
    got = genfast_loop(plan, latent())
    assert torch.isfinite(got).all()
    # the last step is x_next = D: the model's x0 at the corrected last sample
    last = plan.host[-1]
    assert float(last[plan.col["c_x"]]) == 0.0 and float(last[plan.col["c_d0"]]) == 1.0


EVERY_COUNT = [
    ("dpmpp", diffusers.DPMSolverMultistepScheduler, dict(solver_order=2)),
    ("dpmpp", diffusers.DPMSolverMultistepScheduler, dict(solver_order=2, use_karras_sigmas=True)),
    ("unipc", diffusers.UniPCMultistepScheduler, dict(solver_order=2, solver_type="bh2")),
]


@pytest.mark.parametrize("case", EVERY_COUNT,
                         ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[2].values()))}")
def test_every_step_count_matches_diffusers(case):
    """Every step count 1..50 (the issue's range; the tests above sample it):
    the order warm-up, the lower-order final steps and the plan's last rows
    differ with n. DPM++ 2M (default and Karras sigmas) and UniPC bh2, the
    front ends' defaults, on a small latent, every backend here against one
    diffusers loop per count; the tolerance of the loops above."""
    sampler, cls, cfg = case
    x = latent(1, (4, 4, 4), seed=3)
    for n in range(1, 51):
        d = cls(**SD, **cfg)
        d.set_timesteps(n)
        plan = S.from_config(d.config).plan(n, sampler=sampler, **_plan_opts(cfg))
        want = diffusers_loop(d, x)
        scale = max(float(want.abs().max()), 1.0)
        for backend in BACKENDS:
            got = genfast_loop(plan, x, backend)
            assert torch.isfinite(got).all(), f"{backend}, {n} steps"
            torch.testing.assert_close(got, want, rtol=0, atol=2e-4 * scale,
                                       msg=lambda m: f"{backend}, {n} steps: {m}")


HEUN = [dict(), dict(use_karras_sigmas=True), dict(prediction_type="v_prediction"),
        dict(timestep_spacing="trailing"), dict(prediction_type="sample")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampler", ["heun", "dpm_2"])
@pytest.mark.parametrize("cfg", HEUN, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("n", [1, 2, 9, 30])
def test_two_stage_matches_diffusers(backend, sampler, cfg, n):
    if n == 30 and cfg:
        pytest.skip("30 steps: the default config only")
    if sampler == "dpm_2" and cfg.get("prediction_type") == "sample":
        pytest.skip("diffusers' KDPM2DiscreteScheduler has no sample prediction")
    cls = (diffusers.HeunDiscreteScheduler if sampler == "heun"
           else diffusers.KDPM2DiscreteScheduler)
    d = cls(**SD, **cfg)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler=sampler)
    assert [plan.stages(i) for i in range(n)] == [2] * (n - 1) + [1]
    x = latent() * d.init_noise_sigma
    want = diffusers_loop(d, x)
    got = genfast_loop(plan, x, backend, prediction_type=cfg.get("prediction_type", "epsilon"))
    close(got, want)


# ---------------------------------------------------------------- k-diffusion parity

def _kdiffusion():
    import _kdiff
    k = _kdiff.load()
    if k is None:
        pytest.skip("k-diffusion 0.1.1.post1 (and torchsde, torchdiffeq, tqdm) not installed")
    return k


def denoiser(x, sigma):
    """A k-diffusion denoiser (returns x0), bounded, depends on sigma."""
    s = sigma.reshape((-1,) + (1,) * (x.dim() - 1)) if sigma.dim() else sigma
    return (0.8 * torch.tanh(x.float() / (1 + s)) + 0.03 * torch.log1p(s)).to(x.dtype)


KDIFF = [
    ("sample_heun", "heun", {}, {}),
    ("sample_dpm_2", "dpm_2", {}, {}),
    ("sample_dpmpp_2m", "dpmpp", {}, {}),
    ("sample_dpmpp_2m_sde", "dpmpp", {"algorithm_type": "sde-dpmsolver++"}, {}),
    ("sample_dpmpp_2m_sde", "dpmpp", {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
     {"solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", "dpmpp", {"solver_order": 3, "solver_type": "heun",
                                      "lower_order_final": False}, {"eta": 0.0}),
    ("sample_euler", "euler", {}, {}),
    ("sample_lms", "lms", {}, {}),
    ("sample_lms", "lms", {"order": 2}, {"order": 2}),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", KDIFF, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[2].values()))}")
@pytest.mark.parametrize("n", [2, 6, 40])
@pytest.mark.parametrize("karras", [True, False])
def test_matches_k_diffusion(backend, case, n, karras):
    K = _kdiffusion()
    name, sampler, opts, kopts = case
    if n == 40 and not karras:
        pytest.skip("40 steps: Karras sigmas only")
    sig = (K.get_sigmas_karras(n, 0.03, 14.6) if karras
           else K.get_sigmas_exponential(n, 0.03, 14.6))
    x = latent() * sig[0]
    noises = latent(n, (2, 4, 8, 8), seed=9)
    kw = dict(kopts)
    if "sde" in name and kopts.get("eta", 1.0):
        it = iter(noises)
        kw["noise_sampler"] = lambda a, b: next(it)
    want = getattr(K, name)(denoiser, x.clone(), sig, disable=True, **kw)
    plan = S.plan_from_sigmas(sig, sampler, **opts)
    state = genfast.steps.new_state(plan, x)
    got = x.clone()
    for i in range(n):
        for k in range(plan.stages(i)):
            assert float(plan.model_scale(i, k)) == 1.0
            mo = denoiser(got, plan.model_sigma(i, k))
            extra = {"noise": noises[i]} if opts.get("algorithm_type") else {}
            got = genfast.steps.step(plan, i, mo, got, state=state, stage=k, backend=backend,
                                     prediction_type="sample", **extra).prev_sample
    close(got, want, rel=1e-4)


# ---------------------------------------------------------------- kernels against the reference

def _ref64(plan, i, x, mo, state, stage, pred, noise, dtype=torch.float64):
    st = state.clone().to(dtype)
    prev, x0 = RM.step(plan.table, plan.stage_table, i, x.to(dtype), mo.to(dtype), st,
                       sampler=RM.SAMPLERS[plan.sampler], stage=stage, prediction=pred,
                       flags=1024, params=[0.0, 0.0],
                       noise=None if noise is None else noise.to(dtype), dtype=dtype)
    return prev, x0, st


STEPWISE = [
    ("dpmpp", dict(solver_order=3), 0), ("dpmpp", dict(solver_order=2), 1),
    ("dpmpp", dict(solver_order=2, algorithm_type="sde-dpmsolver++"), 2),
    ("unipc", dict(solver_order=3), 0), ("unipc", dict(solver_order=2, solver_type="bh1"), 1),
    ("heun", {}, 0), ("dpm_2", {}, 1),
    ("lms", {}, 0), ("lms", dict(order=3), 1), ("lms", dict(order=2), 2),
]


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", STEPWISE, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1].values()))}")
def test_kernel_matches_reference(backend, dtype, case):
    sampler, opts, pred = case
    n = 6
    plan = S.from_config(SD).plan(n, sampler=sampler, **opts)
    shape = (3, 5, 7, 3)  # odd sizes: the vector loops' tails
    state = genfast.steps.new_state(plan, latent(*shape[:1], shape[1:], dtype=dtype))
    state.buffer.copy_(latent(state.buffer.shape[0] * 3, shape[1:], seed=4).reshape(
        state.buffer.shape).to(dtype))
    for i in range(n):
        for k in range(plan.stages(i)):
            x = latent(3, shape[1:], seed=10 + i, dtype=dtype)
            mo = latent(3, shape[1:], seed=30 + i, dtype=dtype)
            z = latent(3, shape[1:], seed=50 + i, dtype=dtype)
            before = state.buffer.clone()
            want, want0, want_st = _ref64(plan, i, x, mo, before, k, pred, z)
            low, _, low_st = _ref64(plan, i, x, mo, before, k, pred, z, dtype=dtype)
            got = genfast.steps.step(plan, i, mo, x, state=state, stage=k, noise=z,
                                     prediction_type=list(RM_PRED)[pred], backend=backend)
            ulp = torch.finfo(dtype).eps * max(float(want.abs().max()), 1.0)
            err_ref = float((low.double() - want).abs().max())
            tol = 2 * err_ref + ulp + (1e-5 * float(want.abs().max()) if dtype == torch.float32
                                       else 0.0)
            assert float((got.prev_sample.double() - want).abs().max()) <= tol
            assert float((got.pred_original_sample.double() - want0).abs().max()) <= 2 * tol
            # the state at its own scale (lms keeps derivatives (x - D)/sigma there)
            st_scale = max(float(want_st.abs().max()), 1.0)
            st_tol = (2 * float((low_st.double() - want_st).abs().max())
                      + torch.finfo(dtype).eps * st_scale
                      + (1e-5 * st_scale if dtype == torch.float32 else 0.0))
            assert float((state.buffer.double() - want_st).abs().max()) <= max(2 * tol, st_tol)


RM_PRED = {"epsilon": 0, "v_prediction": 1, "sample": 2, "flow": 3}


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("case", [("dpmpp", {}), ("unipc", {}), ("heun", {}), ("lms", {}),
                                  ("dpmpp", {"algorithm_type": "sde-dpmsolver++"})],
                         ids=lambda c: "-".join([c[0], *map(str, c[1].values())]))
def test_large_step_equals_item_by_item(backend, case):
    """A float32 step over 16 MB or more streams its outputs past the cache
    (csrc/bindings/multistep.cpp): the same bits as the cached stores of one
    item at a time, outputs and history alike."""
    sampler, opts = case
    plan = S.from_config(SD).plan(4, sampler=sampler, **opts)
    n, shape = 16, (4, 128, 128)  # 1M elements: 4 MB per stream
    big = genfast.steps.new_state(plan, latent(n, shape))
    small = [genfast.steps.new_state(plan, latent(1, shape)) for _ in range(n)]
    for i in range(3):
        for k in range(plan.stages(i)):
            x, mo = latent(n, shape, seed=10 + i), latent(n, shape, seed=30 + i)
            got = genfast.steps.step(plan, i, mo, x, state=big, stage=k, seed=5,
                                     backend=backend)
            for b in range(n):
                want = genfast.steps.step(plan, i, mo[b:b + 1], x[b:b + 1], state=small[b],
                                          stage=k, seed=5, sample_offset=b, backend=backend)
                assert torch.equal(got.prev_sample[b:b + 1], want.prev_sample)
                assert torch.equal(got.pred_original_sample[b:b + 1],
                                   want.pred_original_sample)
                assert torch.equal(big.buffer[:, b:b + 1], small[b].buffer)


# ---------------------------------------------------------------- state, stages, noise

@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_noise_is_the_stream(backend):
    plan = S.from_config(SD).plan(5, sampler="dpmpp", algorithm_type="sde-dpmsolver++")
    x, mo = latent(), latent(seed=1)
    for i in (0, 3):
        s1, s2 = genfast.steps.new_state(plan, x), genfast.steps.new_state(plan, x)
        a = genfast.steps.step(plan, i, mo, x, state=s1, seed=7, stream=2, backend=backend)
        z = genfast.randn(x.shape, seed=7, stream=2 + i, backend=backend)
        b = genfast.steps.step(plan, i, mo, x, state=s2, noise=z, backend=backend)
        torch.testing.assert_close(a.prev_sample, b.prev_sample, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensor_index_equals_int_and_state_reset(backend):
    plan = S.from_config(SD).plan(8, sampler="unipc", solver_order=3)
    x0 = latent()
    runs = []
    state = genfast.steps.new_state(plan, x0)
    for use_tensor in (False, True):
        state.reset()
        x = x0
        for i in range(plan.num_steps):
            idx = torch.tensor(i) if use_tensor else i
            x = genfast.steps.unipc(plan, idx, dummy_model(x, plan.timesteps[i]), x, state,
                                    backend=backend).prev_sample
        runs.append(x)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cfg_fused_equals_guided_output(backend):
    plan = S.from_config(SD).plan(6, sampler="dpmpp")
    x, u, c = latent(), latent(seed=1), latent(seed=2)
    g = torch.tensor([3.0, 7.5])
    s1, s2, s3 = (genfast.steps.new_state(plan, x) for _ in range(3))
    for i in range(3):
        a = genfast.steps.dpmpp(plan, i, torch.cat([u, c]), x, s1, guidance_scale=g,
                                backend=backend)
        b = genfast.steps.dpmpp(plan, i, c, x, s2, uncond=u, guidance_scale=g, backend=backend)
        m = u + g.reshape(-1, 1, 1, 1) * (c - u)
        w = genfast.steps.dpmpp(plan, i, m, x, s3, backend=backend)
        torch.testing.assert_close(a.prev_sample, w.prev_sample, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.prev_sample, w.prev_sample, rtol=1e-5, atol=1e-5)
    # guidance_rescale (Lin et al. 2024) against diffusers' rescale_noise_cfg
    def rescale_noise_cfg(cfg, text, phi):  # diffusers' formula (Lin et al. 2024 eq. 15-16)
        std_t = text.std(dim=list(range(1, text.ndim)), keepdim=True)
        std_c = cfg.std(dim=list(range(1, cfg.ndim)), keepdim=True)
        return phi * (cfg * (std_t / std_c)) + (1 - phi) * cfg

    s4, s5 = genfast.steps.new_state(plan, x), genfast.steps.new_state(plan, x)
    m = u + 5.0 * (c - u)
    want = genfast.steps.dpmpp(plan, 0, rescale_noise_cfg(m, c, 0.7), x, s4, backend=backend)
    got = genfast.steps.dpmpp(plan, 0, c, x, s5, uncond=u, guidance_scale=5.0,
                              guidance_rescale=0.7, backend=backend)
    torch.testing.assert_close(got.prev_sample, want.prev_sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    plan = S.from_config(SD).plan(4, sampler="heun")
    x = latent()
    st = genfast.steps.new_state(plan, x)
    with pytest.raises(ValueError, match="state"):
        genfast.steps.step(plan, 0, x, x, backend=backend)
    with pytest.raises(ValueError, match="stage"):
        genfast.steps.step(plan, 3, x, x, state=st, stage=1, backend=backend)
    with pytest.raises(ValueError, match="stage"):
        genfast.steps.step(plan, 0, x, x, state=st, stage=2, backend=backend)
    with pytest.raises(ValueError, match="index"):
        genfast.steps.step(plan, 4, x, x, state=st, backend=backend)
    with pytest.raises(ValueError, match="state"):
        genfast.steps.step(plan, 0, x, x, state=genfast.steps.new_state(plan, x[:1]),
                           backend=backend)
    dp = S.from_config(SD).plan(4, sampler="dpmpp")
    with pytest.raises(ValueError, match="made for"):
        genfast.steps.step(dp, 0, x, x, state=st, backend=backend)
    with pytest.raises(ValueError, match="model_output"):
        genfast.steps.step(dp, 0, x[:1], x, state=genfast.steps.new_state(dp, x),
                           backend=backend)
    sde = S.from_config(SD).plan(4, sampler="dpmpp", algorithm_type="sde-dpmsolver++")
    with pytest.raises(ValueError, match="noise"):
        genfast.steps.step(sde, 0, x, x, state=genfast.steps.new_state(sde, x), backend=backend)
    with pytest.raises(ValueError, match="prediction_type"):
        genfast.steps.step(dp, 0, x, x, state=genfast.steps.new_state(dp, x),
                           prediction_type="eps", backend=backend)
    with pytest.raises(ValueError, match="stage"):
        genfast.steps.step(S.from_config(SD).plan(4, sampler="ddim"), 0, x, x, stage=1)
    with pytest.raises(ValueError, match="needs a plan"):
        genfast.steps.heun(dp, 0, x, x, st)


@pytest.mark.parametrize("backend", BACKENDS)
def test_finite_every_step_zero_snr(backend):
    """Zero-terminal-SNR, trailing spacing: diffusers' first step has
    alpha = 0; genfast floors alpha (steps.h kAlphaFloor) and stays finite."""
    cfg = dict(SD, rescale_betas_zero_snr=True, timestep_spacing="trailing")
    for sampler in ("dpmpp", "unipc", "heun", "dpm_2"):
        for pred in ("epsilon", "v_prediction"):
            plan = S.from_config(cfg).plan(10, sampler=sampler)
            x = genfast_loop(plan, latent(), backend, prediction_type=pred)
            assert torch.isfinite(x).all(), (sampler, pred)


# ---------------------------------------------------------------- no host sync

def _loop(plan, x, state, idx, backend, steps):
    for _ in range(steps):
        mo = 0.5 * torch.tanh(x)
        x = genfast.steps.step(plan, idx, torch.cat([mo, 0.9 * mo]), x, state=state,
                               guidance_scale=5.0, seed=3, backend=backend).prev_sample
        idx = idx + 1
    return x


@pytest.mark.parametrize("backend", BACKENDS)
def test_50_step_loop_compiles_fullgraph_without_sync(backend):
    """A 50-step sde-dpmsolver++ 3M loop with the step counter on the device
    traces as one graph (a host sync or a Python branch on a tensor would
    break it), the state updated in place inside the graph. On a GPU,
    tests/test_multistep_gpu.py captures it in one CUDA graph."""
    # the reference backend's Python maths trace step by step (tens of
    # seconds per step on this machine): 2 steps show it has no sync.
    n = 2 if backend == "reference" else 50
    plan = S.from_config(SD).plan(n, sampler="dpmpp", solver_order=3,
                                  algorithm_type="sde-dpmsolver++")
    x = latent(1, (4, 8, 8))
    s1, s2 = genfast.steps.new_state(plan, x), genfast.steps.new_state(plan, x)
    torch._dynamo.reset()
    compiled = torch.compile(_loop, fullgraph=True, backend="aot_eager")
    got = compiled(plan, x, s1, torch.tensor(0), backend, n)
    want = _loop(plan, x, s2, torch.tensor(0), backend, n)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(s1.buffer, s2.buffer)
    assert torch.isfinite(got).all()


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("sampler", ["dpmpp", "unipc", "heun", "lms"])
def test_opcheck(backend, sampler):
    """Schema (the state is declared written), fake kernel, autograd
    registration and AOT dispatch of the C++ op, with a strided sample."""
    plan = S.from_config(SD).plan(6, sampler=sampler)
    x = latent(2, (4, 8, 10))[..., ::2]  # non-contiguous
    mo = latent(2, (4, 8, 5), seed=1)
    state = genfast.steps.new_state(plan, x)
    state.buffer.normal_()
    op = torch.ops.genfast.multistep_step.default
    for i, stage in ((0, 0), (3, 0)) if sampler != "heun" else ((2, 0), (2, 1)):
        args = (x, mo, None, None, None, state.buffer, plan.table, plan.stage_table, None, i,
                RM.SAMPLERS[sampler], stage, 0, 1024, [0.0, 0.0], 0, 0, 0)
        torch.library.opcheck(op, args)
