"""genfast.k_diffusion against k-diffusion 0.1.1.post1 itself.

k-diffusion's package __init__ imports clip, torchvision and more that do
not import beside the CPU torch here; its sampling.py needs only torch,
scipy, torchsde, torchdiffeq, tqdm and ``utils.append_dims``. So the test
loads sampling.py on its own (importlib, under a private package whose
``utils`` is a stub with append_dims: tests/_kdiff.py) and runs it as
installed. Both sides get the same deterministic denoiser and the same noise
(through ``noise_sampler``; for churn, k-diffusion's torch.randn_like is
replaced by the same tensors).
"""

import inspect
import math

import pytest
import torch

import genfast
from _kdiff import load
from genfast import k_diffusion as gk


K = load()
pytestmark = pytest.mark.skipif(K is None, reason="k-diffusion 0.1.1.post1 not installed")

SHAPE = (2, 4, 8, 8)


def denoiser(x, sigma, cond=None):
    """Deterministic, smooth in (x, sigma), per item."""
    s = sigma.view(-1, 1, 1, 1).to(x.dtype)
    out = x / (s * s + 1) + 0.1 * torch.tanh(x) * s / (s * s + 1)
    return out if cond is None else out + cond


class Noise:
    """The same tensors for both: keyed by the (sigma, sigma_next) pair."""

    def __init__(self, shape, dtype=torch.float32):
        self.shape, self.dtype, self.calls = shape, dtype, []

    def __call__(self, sigma, sigma_next):
        key = (round(float(sigma), 6), round(float(sigma_next), 6))
        self.calls.append(key)
        seed = abs(hash(key)) % (1 << 32)
        return genfast.randn(self.shape, seed=seed, dtype=self.dtype)


def _x(seed=0, sigma_max=14.6):
    return genfast.randn(SHAPE, seed=seed) * sigma_max


def _sigmas(n=12):
    return K.get_sigmas_karras(n, 0.03, 14.6)


@pytest.mark.parametrize("name,args", [
    ("get_sigmas_karras", (10, 0.03, 14.6)), ("get_sigmas_karras", (7, 0.1, 80.0, 5.0)),
    ("get_sigmas_exponential", (10, 0.03, 14.6)),
    ("get_sigmas_polyexponential", (10, 0.03, 14.6)),
    ("get_sigmas_polyexponential", (9, 0.03, 14.6, 2.0)),
    ("get_sigmas_vp", (10,)), ("get_sigmas_vp", (5, 10.0, 0.2, 1e-2)),
])
def test_sigma_schedules_equal(name, args):
    assert torch.equal(getattr(gk, name)(*args), getattr(K, name)(*args))


@pytest.mark.parametrize("name", [n for n in gk.__all__ if n.startswith(("sample_", "get_"))])
def test_signatures_and_defaults_match(name):
    ours = inspect.signature(getattr(gk, name)).parameters
    theirs = inspect.signature(getattr(K, name)).parameters
    for p, q in theirs.items():
        assert p in ours, (name, p)
        assert ours[p].default == q.default, (name, p)
    extra = [p for p in ours if p not in theirs]
    assert all(ours[p].kind == inspect.Parameter.KEYWORD_ONLY for p in extra), extra


def _run(fn, *args, **kw):
    calls = []
    out = fn(*args, callback=calls.append, disable=True, **kw)
    return out, calls


def _same_callbacks(a, b, tol):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert set(u) == set(v) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert u["i"] == v["i"]
        for key in ("x", "denoised", "sigma", "sigma_hat"):
            torch.testing.assert_close(torch.as_tensor(u[key]).float(),
                                       torch.as_tensor(v[key]).float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("eta,s_noise", [(1.0, 1.0), (0.5, 1.3), (0.0, 1.0)])
@pytest.mark.parametrize("name", ["sample_euler_ancestral", "sample_dpmpp_2s_ancestral",
                                  "sample_dpm_2_ancestral"])
def test_ancestral_samplers_match(name, eta, s_noise):
    sig = _sigmas()
    want, wcalls = _run(getattr(K, name), denoiser, _x(), sig, eta=eta, s_noise=s_noise,
                        noise_sampler=(nk := Noise(SHAPE)))
    got, gcalls = _run(getattr(gk, name), denoiser, _x(), sig, eta=eta, s_noise=s_noise,
                       noise_sampler=(ng := Noise(SHAPE)))
    assert ng.calls == nk.calls  # the same draws in the same order
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _same_callbacks(gcalls, wcalls, 1e-4)


@pytest.mark.parametrize("n", [5, 12, 25])
@pytest.mark.parametrize("churn", [0.0, 2.0])
@pytest.mark.parametrize("name", ["sample_euler", "sample_heun", "sample_dpm_2"])
def test_churn_samplers_match(name, churn, n, monkeypatch):
    sig = _sigmas(n)
    noise = Noise(SHAPE)
    kw = dict(s_churn=churn, s_tmin=0.1, s_tmax=10.0, s_noise=1.01)
    # k-diffusion draws torch.randn_like(x) at every step: give it step i's tensor
    draws = iter([noise(sig[i], sig[i + 1]) for i in range(len(sig) - 1)])
    monkeypatch.setattr(K.torch, "randn_like", lambda x: next(draws))
    want, wcalls = _run(getattr(K, name), denoiser, _x(), sig, **kw)
    monkeypatch.undo()
    got, gcalls = _run(getattr(gk, name), denoiser, _x(), sig, noise_sampler=noise, **kw)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _same_callbacks(gcalls, wcalls, 1e-4)


@pytest.mark.parametrize("n", [1, 2, 6, 25])
def test_dpmpp_2m_matches(n):
    sig = _sigmas(n)
    want, wcalls = _run(K.sample_dpmpp_2m, denoiser, _x(), sig)
    got, gcalls = _run(gk.sample_dpmpp_2m, denoiser, _x(), sig)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _same_callbacks(gcalls, wcalls, 1e-4)


@pytest.mark.parametrize("n", [2, 6, 25])
@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
@pytest.mark.parametrize("eta,s_noise", [(1.0, 1.0), (1.0, 0.7), (0.0, 1.0)])
def test_dpmpp_2m_sde_matches(n, solver_type, eta, s_noise):
    sig = _sigmas(n)
    kw = dict(eta=eta, s_noise=s_noise, solver_type=solver_type)
    want, wcalls = _run(K.sample_dpmpp_2m_sde, denoiser, _x(), sig,
                        noise_sampler=(nk := Noise(SHAPE)), **kw)
    got, gcalls = _run(gk.sample_dpmpp_2m_sde, denoiser, _x(), sig,
                       noise_sampler=(ng := Noise(SHAPE)), **kw)
    assert ng.calls == nk.calls
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    _same_callbacks(gcalls, wcalls, 1e-4)


def test_dpmpp_2m_sde_other_eta_is_refused():
    with pytest.raises(ValueError, match="eta"):
        gk.sample_dpmpp_2m_sde(denoiser, _x(), _sigmas(), eta=0.5, disable=True)
    with pytest.raises(ValueError, match="solver_type"):
        gk.sample_dpmpp_2m_sde(denoiser, _x(), _sigmas(), solver_type="euler", disable=True)


def test_extra_args_reach_the_model():
    sig = _sigmas(6)
    cond = torch.full(SHAPE, 0.05)
    want = K.sample_euler(denoiser, _x(), sig, extra_args={"cond": cond}, disable=True)
    got = gk.sample_euler(denoiser, _x(), sig, extra_args={"cond": cond}, disable=True)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["sample_euler_ancestral", "sample_dpmpp_2s_ancestral",
                                  "sample_dpm_2_ancestral", "sample_dpmpp_2m_sde"])
def test_seeded_noise_is_per_item_and_reproducible(name):
    fn = getattr(gk, name)
    sig = _sigmas(8)
    a = fn(denoiser, _x(), sig, disable=True, seed=3)
    b = fn(denoiser, _x(), sig, disable=True, seed=3)
    c = fn(denoiser, _x()[:1], sig, disable=True, seed=3)
    d = fn(denoiser, _x(), sig, disable=True, seed=4)
    assert torch.equal(a, b) and torch.equal(a[:1], c) and not torch.equal(a, d)
    # the default seed is 0; step i draws genfast stream 1 + i
    z = [genfast.randn(SHAPE, seed=0, stream=1 + i) for i in range(len(sig) - 1)]
    zs = iter(z)
    want = K.__dict__[name](denoiser, _x(), sig, disable=True,
                            noise_sampler=lambda s, t: next(zs))
    torch.testing.assert_close(fn(denoiser, _x(), sig, disable=True), want,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("name", [n for n in gk.__all__ if n.startswith("sample_")])
def test_low_precision_runs_finite(name, dtype, tol):
    sig = _sigmas(8)
    fn = getattr(gk, name)
    out = fn(denoiser, _x().to(dtype), sig, disable=True)
    ref = fn(denoiser, _x(), sig, disable=True)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="sigmas"):
        gk.sample_euler(denoiser, _x(), torch.tensor([1.0]), disable=True)
    with pytest.raises(ValueError, match="sigmas"):
        gk.sample_euler(denoiser, _x(), torch.tensor([1.0, math.nan]), disable=True)
    with pytest.raises(ValueError, match="x must"):
        gk.sample_euler(denoiser, torch.zeros(3), _sigmas(), disable=True)
    with pytest.raises(ValueError, match="seed"):
        gk.sample_euler_ancestral(denoiser, _x(), _sigmas(), disable=True, seed=-1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", ["sample_dpmpp_2m", "sample_lms"])
def test_bound_multistep_step_equals_the_wrapper(name, dtype, monkeypatch):
    """sample_dpmpp_2m / sample_lms step through the loop binding genfast.sample
    uses (gk._bound_mstep); the wrapper path gives the same bits."""
    sig = _sigmas(9)
    x = _x().to(dtype)
    fast = getattr(gk, name)(denoiser, x, sig, disable=True)
    calls = []
    real = gk._bound_mstep
    monkeypatch.setattr(gk, "_bound_mstep", lambda *a: calls.append(real(*a)))  # -> None
    slow = getattr(gk, name)(denoiser, x, sig, disable=True)
    assert calls and calls[0] is not None
    assert torch.equal(fast, slow)
