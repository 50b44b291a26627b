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


def close32(ours, theirs, what, atol=1e-9):
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, what
    # one float32 ulp of each value (relative 2^-23), plus a tiny absolute for zeros
    tol = np.abs(theirs) * 2.4e-7 + atol
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
        close32(inf.sigmas, d.sigmas.numpy(), f"edm n={n} sigmas")
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
