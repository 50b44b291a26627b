"""Plan extensions of part 2: two-stage rows (heun, dpm_2), plan.stages /
model_timestep / model_sigma / model_scale, custom sigmas= / timesteps=,
plan_from_sigmas. Against diffusers 0.42.1's set_timesteps."""

import math

import numpy as np
import pytest
import torch

import genfast
from genfast import schedules as S

diffusers = pytest.importorskip("diffusers")
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


@pytest.mark.parametrize("n", [1, 4, 25])
@pytest.mark.parametrize("karras", [False, True])
def test_heun_model_inputs_follow_diffusers(n, karras):
    d = diffusers.HeunDiscreteScheduler(**SD, use_karras_sigmas=karras)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="heun")
    ts, sig, scale = [], [], []
    for i in range(n):
        for k in range(plan.stages(i)):
            ts.append(float(plan.model_timestep(i, k)))
            sig.append(float(plan.model_sigma(i, k)))
            scale.append(float(plan.model_scale(i, k)))
    np.testing.assert_allclose(ts, d.timesteps.numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(sig, d.sigmas[:-1].numpy(), rtol=1e-5)
    np.testing.assert_allclose(scale, 1 / np.sqrt(np.array(sig) ** 2 + 1), rtol=1e-6)


def test_kdpm2_model_inputs_follow_diffusers():
    n = 6
    d = diffusers.KDPM2DiscreteScheduler(**SD)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="dpm_2")
    ts = [float(plan.model_timestep(i, k)) for i in range(n) for k in range(plan.stages(i))]
    np.testing.assert_allclose(ts, d.timesteps.numpy(), rtol=1e-5, atol=2e-3)


def test_model_values_are_device_scalars_and_scales():
    g = S.from_config(SD)
    for sampler, unit in (("dpmpp", True), ("unipc", True), ("ddim", True), ("euler", False),
                          ("heun", False)):
        plan = g.plan(5, sampler=sampler)
        v = plan.model_scale(1)
        assert v.dim() == 0 and v.dtype == torch.float32 and v.device == plan.table.device
        if unit:
            assert float(v) == 1.0
        else:
            s = float(plan.host[1, plan.col["sigma"]])
            assert math.isclose(float(v), 1 / math.sqrt(s * s + 1), rel_tol=1e-6)
        assert plan.stages(1) == (2 if sampler == "heun" else 1)
    plan = g.plan(3, sampler="heun")
    with pytest.raises(ValueError, match="stage"):
        plan.model_timestep(2, 1)  # the last step ends at sigma 0: one stage


@pytest.mark.parametrize("n", [3, 12])
def test_custom_sigmas_follow_diffusers_euler(n):
    sig = np.concatenate([S.karras_sigmas(0.05, 12.0, n), [0.0]]).astype(np.float32)
    d = diffusers.EulerDiscreteScheduler(**SD)
    d.set_timesteps(sigmas=sig)
    plan = S.from_config(d.config).plan(sampler="euler", sigmas=sig)
    assert plan.num_steps == n
    np.testing.assert_allclose(plan.timesteps.numpy(), d.timesteps.numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(plan.sigmas.numpy(), d.sigmas.numpy(), rtol=1e-6)


def test_custom_timesteps_follow_diffusers_dpmpp():
    ts = [999, 850, 700, 500, 300, 120, 20]
    d = diffusers.DPMSolverMultistepScheduler(**SD)
    d.set_timesteps(timesteps=ts)
    plan = S.from_config(d.config).plan(sampler="dpmpp", timesteps=ts)
    np.testing.assert_allclose(plan.sigmas.numpy(), d.sigmas.numpy(), rtol=2e-5)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    want, y = x.clone(), x.clone()
    for t in d.timesteps:
        want = d.step(0.5 * torch.tanh(want) + 0.001 * t, t, want).prev_sample
    st = genfast.steps.new_state(plan, y)
    for i in range(plan.num_steps):
        mo = 0.5 * torch.tanh(y) + 0.001 * plan.model_timestep(i)
        y = genfast.steps.step(plan, i, mo, y, state=st).prev_sample
    torch.testing.assert_close(y, want, rtol=2e-4, atol=2e-4)


def test_plan_from_sigmas_rows():
    sig = torch.tensor([10.0, 3.0, 1.0, 0.2, 0.0])
    plan = S.plan_from_sigmas(sig, "heun")
    assert plan.sample_space == "sigma" and plan.num_steps == 4
    assert [plan.stages(i) for i in range(4)] == [2, 2, 2, 1]
    assert float(plan.model_sigma(1, 1)) == pytest.approx(1.0)
    assert float(plan.model_timestep(0)) == pytest.approx(10.0)  # the model sees sigma
    assert float(plan.model_scale(0)) == 1.0
    dp = S.plan_from_sigmas(sig, "dpm_2")
    assert float(dp.model_sigma(0, 1)) == pytest.approx(math.sqrt(30.0), rel=1e-6)


@pytest.mark.parametrize("bad, match", [
    ([1.0], "n \\+ 1"), ([[1.0, 0.0]], "1-d"), ([1.0, 2.0, 0.0], "descending"),
    ([1.0, float("nan"), 0.0], "finite"), ([1.0, 0.0, 0.0], "positive"), ([1.0, -0.5], "positive"),
])
def test_plan_from_sigmas_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        S.plan_from_sigmas(bad, "euler")


def test_bad_custom_values():
    g = S.from_config(SD)
    with pytest.raises(ValueError, match="at most one"):
        g.plan(sampler="euler", sigmas=[1.0, 0.0], timesteps=[10])
    with pytest.raises(ValueError, match="num_inference_steps"):
        g.plan(3, sampler="euler", sigmas=[2.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="timesteps"):
        g.plan(sampler="dpmpp", timesteps=[1000, 10])
    with pytest.raises(ValueError, match="not supported"):
        g.plan(sampler="ddim", timesteps=[900, 10])
    with pytest.raises(ValueError, match="sampler must be one of"):
        S.plan_from_sigmas([1.0, 0.0], "ddim")


def test_plan_options_override_the_config_sigmas():
    g = S.from_config(SD)
    a = g.plan(10, sampler="dpmpp", use_karras_sigmas=True)
    b = S.from_config({**SD, "use_karras_sigmas": True}).plan(10, sampler="dpmpp")
    torch.testing.assert_close(a.table, b.table)
    c = g.plan(10, sampler="dpmpp", final_sigmas_type="sigma_min")
    assert float(c.sigmas[-1]) > 0
