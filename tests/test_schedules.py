"""genfast.schedules against diffusers 0.42.1 (the ground truth for parity).

Tolerances, and why: diffusers builds betas / alphas_cumprod in float32;
genfast in float64. Betas agree to float32 rounding (rtol 1e-6, relative to
the largest beta after zero-SNR rescaling, which diffusers does in float32).
alphas_cumprod: diffusers' float32 cumulative product of 1000 factors drifts
(measured up to 4e-5 relative near the end of scaled_linear + zero SNR);
genfast's float64 cumprod is the exact one, checked against a float64 cumprod
of the same betas. Inference: integer timesteps are equal exactly; float
timesteps and sigmas to float32 rounding (diffusers stores them as float32;
genfast keeps the float64 values it computed from diffusers' own float32
train sigmas, so the last bits differ by at most ~1 float32 ulp).
"""

import math
import warnings

import numpy as np
import pytest
import torch

from genfast import schedules as S

diffusers = pytest.importorskip("diffusers")
warnings.filterwarnings("ignore", category=FutureWarning)

STEPS = (1, 2, 10, 25, 50, 1000)
BETA = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
SD = dict(beta_start=0.00085, beta_end=0.012)


def close32(ours, theirs, what, atol=1e-9, rtol=2.4e-7):
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, what
    # one float32 ulp of each value (relative 2^-23), plus a tiny absolute for zeros
    tol = np.abs(theirs) * rtol + atol
    bad = np.abs(ours - theirs) > tol
    assert not bad.any(), f"{what}: worst {np.abs(ours - theirs)[bad].max()} at {np.nonzero(bad)[0][:5]}"


@pytest.mark.parametrize("beta_schedule", BETA)
@pytest.mark.parametrize("zero_snr", [False, True])
def test_discrete_tables(beta_schedule, zero_snr):
    d = diffusers.DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=zero_snr, **SD)
    g = S.from_config(d.config)
    assert isinstance(g, S.DiscreteSchedule) and g.betas.dtype == torch.float64
    scale = float(d.betas.max())
    assert (g.betas - d.betas.double()).abs().max() <= 1e-5 * scale
    torch.testing.assert_close(g.alphas_cumprod, d.alphas_cumprod.double(), rtol=5e-5, atol=1e-7)
    torch.testing.assert_close(g.alphas_cumprod, torch.cumprod(1 - g.betas, 0), rtol=1e-12, atol=1e-15)
    if zero_snr:
        assert g.alphas_cumprod[-1] == 0 and g.log_snr[-1] == -math.inf
    a = g.alphas_cumprod
    torch.testing.assert_close(g.log_snr[:-1], torch.log(a / (1 - a))[:-1])
    torch.testing.assert_close(g.sigmas[:-1], ((1 - a) / a).sqrt()[:-1])
    t = g.table("cpu")
    assert t.shape == (1000, 4) and t is g.table("cpu")  # cached
    torch.testing.assert_close(t[:, 0] ** 2 + t[:, 1] ** 2, torch.ones(1000, dtype=torch.float64))


def test_trained_betas_and_plain_dict():
    betas = np.linspace(1e-4, 2e-2, 50)
    g = S.from_config({"num_train_timesteps": 50, "trained_betas": betas.tolist()})
    torch.testing.assert_close(g.betas, torch.from_numpy(betas))
    d = diffusers.DDIMScheduler(num_train_timesteps=50, trained_betas=betas.tolist())
    torch.testing.assert_close(g.alphas_cumprod, d.alphas_cumprod.double(), rtol=1e-5, atol=0)


@pytest.mark.parametrize("spacing", S.SPACINGS)
@pytest.mark.parametrize("n", STEPS)
def test_ddim_ddpm_timesteps(spacing, n):
    for cls in (diffusers.DDIMScheduler, diffusers.DDPMScheduler):
        d = cls(timestep_spacing=spacing, steps_offset=1, **SD)
        d.set_timesteps(n)
        got = S.from_config(d.config).set_timesteps(n, "ddim").timesteps
        np.testing.assert_array_equal(got, d.timesteps.numpy())


SIGMA_KINDS = ("default", "karras", "exponential", "beta")


@pytest.mark.parametrize("spacing", S.SPACINGS)
@pytest.mark.parametrize("kind", SIGMA_KINDS)
@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_sigma_samplers(spacing, kind, zero_snr, final):
    kw = {} if kind == "default" else {f"use_{kind}_sigmas": True}
    cases = ((diffusers.EulerDiscreteScheduler, "euler"),
             (diffusers.DPMSolverMultistepScheduler, "dpm"),
             (diffusers.UniPCMultistepScheduler, "unipc"))
    for beta_schedule in ("scaled_linear", "squaredcos_cap_v2"):
        for cls, family in cases:
            d = cls(timestep_spacing=spacing, steps_offset=1, rescale_betas_zero_snr=zero_snr,
                    final_sigmas_type=final, beta_schedule=beta_schedule, **SD, **kw)
            g = S.from_config(d.config)
            # 1000 steps once per family and kind (diffusers' own set_timesteps
            # with converted sigmas takes ~0.1 s there)
            for n in STEPS if spacing == "linspace" or kind == "default" else STEPS[:-1]:
                d.set_timesteps(n)
                inf = g.set_timesteps(n, family)
                what = f"{cls.__name__} {beta_schedule} n={n}"
                if family == "euler":
                    close32(inf.timesteps, d.timesteps.numpy(), what + " timesteps")
                else:
                    np.testing.assert_array_equal(inf.timesteps, d.timesteps.numpy(), what)
                close32(inf.sigmas, d.sigmas.numpy(), what + " sigmas")


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("kind", SIGMA_KINDS)
def test_flow_match(shift, kind):
    kw = {} if kind == "default" else {f"use_{kind}_sigmas": True}
    for extra, mu in (({}, None), ({"use_dynamic_shifting": True}, 0.8),
                      ({"shift_terminal": 0.1}, None),
                      ({"use_dynamic_shifting": True, "time_shift_type": "linear"}, 1.5)):
        d = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, **kw, **extra)
        g = S.from_config(d.config)
        assert isinstance(g, S.FlowMatchSchedule)
        for n in STEPS:
            d.set_timesteps(n, mu=mu)
            inf = g.set_timesteps(n, mu=mu)
            close32(inf.sigmas, d.sigmas.numpy(), f"flow {extra} n={n} sigmas")
            close32(inf.timesteps, d.timesteps.numpy(), f"flow {extra} n={n} timesteps")


@pytest.mark.parametrize("sigma_schedule", ["karras", "exponential"])
@pytest.mark.parametrize("final", ["zero", "sigma_min"])
def test_edm(sigma_schedule, final):
    d = diffusers.EDMEulerScheduler(sigma_schedule=sigma_schedule, final_sigmas_type=final)
    g = S.from_config({**d.config, "_class_name": "EDMEulerScheduler"})
    assert isinstance(g, S.SigmaSchedule)
    for n in STEPS:
        d.set_timesteps(n)
        inf = g.set_timesteps(n)
        # exponential: torch.linspace and np.linspace of log sigma differ in the
        # last float64 bits, which exp turns into up to ~4 float32 ulps
        close32(inf.sigmas, d.sigmas.numpy(), f"edm n={n} sigmas", rtol=1e-6)
        # c_noise = log(sigma)/4 crosses 0: diffusers takes the log in float32
        close32(inf.timesteps, d.timesteps.numpy(), f"edm n={n} timesteps", atol=1e-6)


def test_from_config_errors():
    with pytest.raises(S.ScheduleError, match="beta_schedule"):
        S.from_config({"beta_schedule": "nope"})
    with pytest.raises(S.ScheduleError, match="timestep_spacing"):
        S.from_config({"timestep_spacing": "sideways"})
    with pytest.raises(S.ScheduleError, match="only one of"):
        S.from_config({"use_karras_sigmas": True, "use_beta_sigmas": True})
    with pytest.raises(S.ScheduleError, match="unknown scheduler class"):
        S.from_config({"_class_name": "MyScheduler"})
    with pytest.raises(TypeError, match="config"):
        S.from_config(42)
    with pytest.raises(S.ScheduleError, match="num_inference_steps"):
        S.from_config({}).set_timesteps(0)
    with pytest.raises(S.ScheduleError, match="interpolation_type"):
        S.from_config({"interpolation_type": "log_linear"}).plan(5, sampler="euler")


# ---------------------------------------------------------------- sampling plans
# A plan is right when a sampler that reads only its table, step by step,
# follows diffusers' scheduler.step() loop. The loop below is the linear form
# documented in genfast/_plan.py, in float64, with a deterministic dummy model.

def _model(x, t, base):
    return 0.5 * x + 0.1 * torch.cos(torch.as_tensor(t, dtype=torch.float64) / 100.0) * base


def _run_plan(plan, x, base, noises=None, model_scale_sigma=False):
    P = plan.host
    c = S.PLAN_COLUMNS.index
    hist = []
    for i in range(plan.num_steps):
        row = P[i]
        t = plan.timesteps[i]
        inp = x * row[c("c_in")] if model_scale_sigma else x
        eps = _model(inp.float(), t.float(), base).double()
        if model_scale_sigma:  # Euler-type: sample in sigma space
            d0 = x - row[c("sigma")] * eps
        else:  # VP sample
            d0 = (x - row[c("sigma_vp")] * eps) / row[c("alpha")]
        hist = [d0] + hist[:2]
        h = hist + [torch.zeros_like(d0)] * (3 - len(hist))
        z = noises[i] if noises is not None else torch.zeros_like(x)
        x = (row[c("c_x")] * x + row[c("c_d0")] * h[0] + row[c("c_d1")] * h[1]
             + row[c("c_d2")] * h[2] + row[c("c_noise")] * z)
    return x


def _run_diffusers(sched, n, x, base, noises=None, states=None):
    sched.set_timesteps(n)
    x = x.clone()
    for i, t in enumerate(sched.timesteps):
        if states is not None:
            states.append(x)
        inp = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
        out = _model(inp, t.float(), base).float()
        kw = {}
        if noises is not None:
            kw = {"variance_noise": noises[i].float()}
        x = sched.step(out, t, x, **kw).prev_sample
    return x


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_plan_dpmpp_follows_diffusers(order, solver_type, n):
    for karras, final in ((False, "zero"), (True, "zero"), (True, "sigma_min")):
        d = diffusers.DPMSolverMultistepScheduler(solver_order=order, solver_type=solver_type,
                                                  use_karras_sigmas=karras, final_sigmas_type=final,
                                                  **SD, beta_schedule="scaled_linear")
        g = S.from_config(d.config)
        plan = g.plan(n, sampler="dpmpp", solver_order=order, solver_type=solver_type)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(1, 2, 4, 4, generator=gen)
        base = torch.randn(1, 2, 4, 4, generator=gen)
        states = []
        want = _run_diffusers(d, n, x, base, states=states)
        got = _run_plan(plan, x.double(), base)
        if torch.isnan(want).any():
            # Karras + final "sigma_min": the last step has sigma_next == sigma
            # (h = 0) and diffusers' 2nd / 3rd-order heun-form coefficients
            # evaluate 0/0 = NaN. The plan holds the finite limit (the identity),
            # so genfast ends where diffusers stood before its last step.
            assert karras and final == "sigma_min" and (order > 1 and n > 1)
            want = states[-1]
        torch.testing.assert_close(got.float(), want, rtol=2e-4, atol=2e-4)


def test_plan_sde_dpmpp_with_given_noise():
    n = 10
    d = diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", **SD,
                                              beta_schedule="scaled_linear")
    g = S.from_config(d.config)
    plan = g.plan(n, sampler="dpmpp", algorithm_type="sde-dpmsolver++")
    gen = torch.Generator().manual_seed(1)
    x, base = torch.randn(1, 2, 4, 4, generator=gen), torch.randn(1, 2, 4, 4, generator=gen)
    noises = torch.randn(n, 1, 2, 4, 4, generator=gen).double()
    want = _run_diffusers(d, n, x, base, noises)
    got = _run_plan(plan, x.double(), base, noises)
    torch.testing.assert_close(got.float(), want, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("spacing", S.SPACINGS)
@pytest.mark.parametrize("n", [1, 10, 50])
def test_plan_ddim_euler_follow_diffusers(spacing, n):
    gen = torch.Generator().manual_seed(2)
    x, base = torch.randn(1, 2, 4, 4, generator=gen), torch.randn(1, 2, 4, 4, generator=gen)
    d = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=1, clip_sample=False,
                                set_alpha_to_one=False, **SD, beta_schedule="scaled_linear")
    g = S.from_config(d.config)
    got = _run_plan(g.plan(n, sampler="ddim", set_alpha_to_one=False), x.double(), base)
    torch.testing.assert_close(got.float(), _run_diffusers(d, n, x, base), rtol=2e-4, atol=2e-4)
    e = diffusers.EulerDiscreteScheduler(timestep_spacing=spacing, steps_offset=1, **SD,
                                         beta_schedule="scaled_linear")
    g = S.from_config(e.config)
    e.set_timesteps(n)
    x_e = x * e.init_noise_sigma
    got = _run_plan(g.plan(n, sampler="euler"), x_e.double(), base, model_scale_sigma=True)
    torch.testing.assert_close(got.float(), _run_diffusers(e, n, x_e, base), rtol=2e-4, atol=2e-4)


def test_plan_layout_and_orders():
    g = S.from_config({**SD, "beta_schedule": "scaled_linear"})
    plan = g.plan(10, sampler="dpmpp", solver_order=3)
    assert plan.table.dtype == torch.float64 and plan.table.shape == (10, len(S.PLAN_COLUMNS))
    # warm-up 1, 2, then 3; lower_order_final (n < 15): second-to-last 2, last 1
    assert plan.column("order").tolist() == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert plan.column("last").tolist() == [0] * 9 + [1]
    u = g.plan(4, sampler="unipc", solver_order=3)
    assert u.column("order").tolist() == [1, 2, 2, 1]
    assert torch.isfinite(plan.host[:, :7]).all()
    with pytest.raises(ValueError, match="sampler must be one of"):
        g.plan(10, sampler="plms")


def _run_unipc_plan(plan, x, base):
    P, c = plan.host, S.PLAN_COLUMNS.index
    hist, prev = [], None
    for i in range(plan.num_steps):
        r = P[i]
        eps = _model(x.float(), plan.timesteps[i].float(), base).double()
        d_new = (x - r[c("sigma_vp")] * eps) / r[c("alpha")]
        h = hist + [torch.zeros_like(x)] * (3 - len(hist))
        if prev is not None:
            x = (r[c("cc_self")] * x + r[c("cc_x")] * prev + r[c("cc_dnew")] * d_new
                 + r[c("cc_d0")] * h[0] + r[c("cc_d1")] * h[1] + r[c("cc_d2")] * h[2])
        hist = [d_new] + hist[:2]
        h = hist + [torch.zeros_like(x)] * (3 - len(hist))
        prev = x
        x = r[c("c_x")] * x + r[c("c_d0")] * h[0] + r[c("c_d1")] * h[1] + r[c("c_d2")] * h[2]
    return x


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("bh", ["bh1", "bh2"])
@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_plan_unipc_follows_diffusers(order, bh, n):
    for karras, lof, disable in ((False, True, []), (True, True, [1]), (False, False, [])):
        d = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=bh,
                                              use_karras_sigmas=karras, lower_order_final=lof,
                                              disable_corrector=disable, **SD,
                                              beta_schedule="scaled_linear")
        g = S.from_config(d.config)
        plan = g.plan(n, sampler="unipc", solver_order=order, solver_type=bh,
                      lower_order_final=lof, disable_corrector=disable)
        gen = torch.Generator().manual_seed(3)
        x, base = torch.randn(1, 2, 4, 4, generator=gen), torch.randn(1, 2, 4, 4, generator=gen)
        got = _run_unipc_plan(plan, x.double(), base)
        assert torch.isfinite(got).all()
        states = []
        try:
            want = _run_diffusers(d, n, x, base, states=states)
        except torch.linalg.LinAlgError:
            # order 3 without lower_order_final: at the last step sigma_next = 0,
            # every r_k = (lambda_k - lambda_s0) / h is 0 and diffusers' 2x2
            # solve is singular; the plan takes the finite first-order limit.
            assert order == 3 and not lof
            continue
        if not torch.isfinite(want).all():
            # The last step (sigma_next = 0, h = inf) is NaN in diffusers:
            # bh1 always, as B_h = -h = -inf and x_t_ - alpha_t * B_h * pred_res
            # multiplies it by pred_res = 0 at order 1; order 2 without
            # lower_order_final divides (m_k - m0) by r_k = 0. The plan holds
            # the finite limits; the steps before agree with diffusers.
            assert bh == "bh1" or (order > 1 and not lof)
            head = S.SamplingPlan(plan.sampler, n - 1, plan.table[:-1], plan.host[:-1],
                                  plan.timesteps[:-1], None, {})
            if n > 1:
                torch.testing.assert_close(_run_unipc_plan(head, x.double(), base).float(),
                                           states[-1], rtol=2e-4, atol=2e-4)
            continue
        torch.testing.assert_close(got.float(), want, rtol=2e-4, atol=2e-4)
