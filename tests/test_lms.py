"""The lms sampler (linear multistep on d = (x - D)/sigma: genfast.steps.lms,
genfast.k_diffusion.sample_lms, plans with sampler="lms") against
k-diffusion 0.1.1.post1's sample_lms (its sampling.py loaded on its own:
tests/_kdiff.py) and diffusers 0.42.1's LMSDiscreteScheduler, with
deterministic denoisers; the plan's coefficients against scipy's quad as
k-diffusion calls it. Kernels against the float64 reference step by step:
tests/test_multistep.py (STEPWISE) and tests/test_multistep_triton.py.

Tolerances (those of tests/test_k_diffusion.py and tests/test_multistep.py):
* k-diffusion loops, float32: 1e-4 (both compute in float32 from the same
  float32 sigmas; k-diffusion's quad evaluates the Lagrange basis from the
  float32 sigma array, genfast integrates exactly in float64).
* float16 / bfloat16 loops against k-diffusion's float32 loop: 2e-2 / 1e-1.
* diffusers loops: 2e-4 of the loop's largest value (diffusers keeps its
  sigmas in float32, the plan is float64).
* coefficients against quad over float64 sigmas: 1e-10 relative (both are
  the exact integral of a degree <= 3 polynomial up to float64 rounding).
"""

import math

import numpy as np
import pytest
import torch

import genfast
from _kdiff import load
from conftest import available_backends
from genfast import k_diffusion as gk
from genfast import schedules as S
from genfast.reference import multistep as RM

K = load()
needs_k = pytest.mark.skipif(K is None, reason="k-diffusion 0.1.1.post1 not installed")
BACKENDS = [b for b in available_backends() if b in ("reference", "cpu")]
SHAPE = (2, 4, 8, 8)
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def denoiser(x, sigma):
    """Deterministic, smooth in (x, sigma), per item (k-diffusion's form: x0)."""
    s = sigma.view(-1, 1, 1, 1).to(x.dtype)
    return x / (s * s + 1) + 0.1 * torch.tanh(x) * s / (s * s + 1)


def _x(dtype=torch.float32, sigma_max=14.6):
    return (genfast.randn(SHAPE, seed=0) * sigma_max).to(dtype)


def _sigmas(n, karras):
    fn = gk.get_sigmas_karras if karras else gk.get_sigmas_exponential
    return fn(n, 0.03, 14.6)


def _run(fn, *args, **kw):
    calls = []
    out = fn(*args, callback=calls.append, disable=True, **kw)
    return out, calls


# ---------------------------------------------------------------- the plan

@needs_k
@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("karras", [True, False])
def test_coefficients_are_the_lagrange_integrals(order, karras):
    sig = _sigmas(12, karras).double()
    s = sig.numpy()
    plan = S.plan_from_sigmas(sig, "lms", order=order)
    for i in range(12):
        o = min(i + 1, order)
        assert plan.column("order")[i] == o
        want = [K.linear_multistep_coeff(o, s, i, j) for j in range(o)] + [0.0] * (4 - o)
        c0 = -float(plan.column("c_d0")[i]) * s[i]
        got = [c0, float(plan.column("c_d1")[i]), float(plan.column("c_d2")[i]),
               float(plan.column("c_d3")[i])]
        for g, w in zip(got, want):
            assert abs(g - w) <= 1e-10 * max(abs(w), 1e-3), (i, got, want)
        assert float(plan.column("c_x")[i]) == pytest.approx(1.0 + c0 / s[i], rel=1e-14)
        assert float(plan.column("h_x")[i]) == 1.0 / s[i] == -float(plan.column("h_d")[i])


def test_repeated_sigma_lowers_the_order_and_stays_finite():
    """A zero-length step (a repeated sigma) would make the Lagrange basis
    singular (k-diffusion divides by zero there): the plan drops to the
    distinct nodes, and a zero-length step is the identity."""
    sig = torch.tensor([10.0, 5.0, 5.0, 2.0, 1.0, 0.5, 0.0])
    plan = S.plan_from_sigmas(sig, "lms")
    assert plan.column("order").tolist() == [1, 2, 1, 2, 3, 4]
    read = [plan.col[c] for c in ("alpha", "sigma_vp", "c_x", "c_d0", "c_d1", "c_d2")]
    assert torch.isfinite(plan.host[:, read]).all() and torch.isfinite(plan.stage_host).all()
    assert float(plan.column("c_x")[1]) == 1.0 and float(plan.column("c_d0")[1]) == 0.0
    out = gk.sample_lms(denoiser, _x(), sig, disable=True)
    assert torch.isfinite(out).all()


def test_bad_order_names_the_argument():
    with pytest.raises(ValueError, match="order"):
        gk.sample_lms(denoiser, _x(), _sigmas(4, True), disable=True, order=5)
    with pytest.raises(ValueError, match="order"):
        gk.sample_lms(denoiser, _x(), _sigmas(4, True), disable=True, order=0)
    with pytest.raises(ValueError, match="order"):
        S.plan_from_sigmas(_sigmas(4, True), "lms", order=2.0)
    with pytest.raises(ValueError, match="sigmas"):
        gk.sample_lms(denoiser, _x(), torch.tensor([1.0]), disable=True)


# ---------------------------------------------------------------- k-diffusion parity

@needs_k
@pytest.mark.parametrize("karras", [True, False], ids=["karras", "exponential"])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 10, 30])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_sample_lms_matches_k_diffusion(order, n, karras):
    sig = _sigmas(n, karras)
    want, wcalls = _run(K.sample_lms, denoiser, _x(), sig, order=order)
    got, gcalls = _run(gk.sample_lms, denoiser, _x(), sig, order=order)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert len(gcalls) == len(wcalls) == n
    for u, v in zip(gcalls, wcalls):
        assert set(u) == set(v) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert u["i"] == v["i"]
        for key in ("x", "denoised", "sigma", "sigma_hat"):
            torch.testing.assert_close(torch.as_tensor(u[key]).float(),
                                       torch.as_tensor(v[key]).float(), rtol=1e-4, atol=1e-4)


@needs_k
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("order", [1, 4])
@pytest.mark.parametrize("karras", [True, False], ids=["karras", "exponential"])
def test_low_precision_matches_k_diffusion(dtype, tol, order, karras):
    sig = _sigmas(10, karras)
    want = K.sample_lms(denoiser, _x(), sig, disable=True, order=order)
    got = gk.sample_lms(denoiser, _x(dtype), sig, disable=True, order=order)
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


@needs_k
def test_extra_args_reach_the_model():
    def model(x, sigma, cond):
        return denoiser(x, sigma) + cond

    sig = _sigmas(6, True)
    cond = torch.full(SHAPE, 0.05)
    want = K.sample_lms(model, _x(), sig, extra_args={"cond": cond}, disable=True)
    got = gk.sample_lms(model, _x(), sig, extra_args={"cond": cond}, disable=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- diffusers parity

def _dummy_model(x, t):
    return (0.7 * torch.tanh(x.float()) + 0.05 * math.cos(float(t) / 150.0)
            + 0.02 * x.float()).to(x.dtype)


LMS_CONFIGS = [dict(), dict(use_karras_sigmas=True), dict(prediction_type="v_prediction"),
               dict(timestep_spacing="trailing"), dict(prediction_type="sample")]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", LMS_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
@pytest.mark.parametrize("n", [1, 2, 9, 30])
def test_schedule_plan_matches_diffusers_lms(backend, cfg, n):
    diffusers = pytest.importorskip("diffusers")
    if n == 30 and cfg:
        pytest.skip("30 steps: the default config only")
    d = diffusers.LMSDiscreteScheduler(**SD, **cfg)
    d.set_timesteps(n)
    plan = S.from_config(d.config).plan(n, sampler="lms")
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(SHAPE, generator=g) * d.init_noise_sigma
    x = x0
    for t in d.timesteps:
        x = d.step(_dummy_model(d.scale_model_input(x, t), t), t, x).prev_sample
    want = x
    pred = cfg.get("prediction_type", "epsilon")
    state = genfast.steps.new_state(plan, x0)
    got = x0
    for i in range(n):
        mo = _dummy_model(got * plan.model_scale(i), plan.model_timestep(i))
        got = genfast.steps.lms(plan, i, mo, got, state, prediction_type=pred,
                                backend=backend).prev_sample
    scale = max(float(want.abs().max()), 1.0)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-4 * scale)


# ---------------------------------------------------------------- the ring

@pytest.mark.parametrize("backend", BACKENDS)
def test_ring_holds_the_derivatives(backend):
    sig = _sigmas(6, True)
    plan = S.plan_from_sigmas(sig, "lms")
    x = _x()
    state = genfast.steps.new_state(plan, x)
    assert state.buffer.shape == (3,) + SHAPE
    for i in range(5):
        den = denoiser(x, sig[i].expand(2))
        out = genfast.steps.lms(plan, i, den, x, state, prediction_type="sample",
                                backend=backend)
        assert torch.equal(out.pred_original_sample, den)
        torch.testing.assert_close(state.buffer[i % 3], (x - den) / sig[i], rtol=1e-5,
                                   atol=1e-5)
        x = out.prev_sample


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampler", ["dpmpp", "unipc"])
def test_other_samplers_ring_holds_x0_exactly(backend, sampler):
    """The generalised history write leaves the x0 samplers' ring as it was:
    slot i mod 3 is the step's x0 prediction, bit for bit."""
    plan = S.from_config(SD).plan(5, sampler=sampler)
    x = _x() / 14.6
    state = genfast.steps.new_state(plan, x)
    for i in range(5):
        out = genfast.steps.step(plan, i, torch.tanh(x) * 0.9, x, state=state, backend=backend)
        assert torch.equal(state.buffer[i % 3], out.pred_original_sample)
        x = out.prev_sample


def _loop(plan, x, state, idx, backend, steps):
    for _ in range(steps):
        x = genfast.steps.step(plan, idx, 0.9 * torch.tanh(x), x, state=state,
                               prediction_type="sample", backend=backend).prev_sample
        idx = idx + 1
    return x


@pytest.mark.parametrize("backend", BACKENDS)
def test_loop_compiles_fullgraph_without_sync(backend):
    n = 2 if backend == "reference" else 12
    plan = S.plan_from_sigmas(_sigmas(n, True), "lms")
    x = _x()[:1]
    s1, s2 = genfast.steps.new_state(plan, x), genfast.steps.new_state(plan, x)
    torch._dynamo.reset()
    compiled = torch.compile(_loop, fullgraph=True, backend="aot_eager")
    got = compiled(plan, x, s1, torch.tensor(0), backend, n)
    want = _loop(plan, x, s2, torch.tensor(0), backend, n)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(s1.buffer, s2.buffer)


def test_lms_code_and_slots():
    assert RM.SAMPLERS["lms"] == 4 and RM.SLOTS[4] == 3
    plan = S.plan_from_sigmas(_sigmas(3, True), "lms")
    assert plan.stage_table.shape == (3, len(S.STAGE_COLUMNS))
    assert np.isfinite(plan.stage_host.numpy()).all()
