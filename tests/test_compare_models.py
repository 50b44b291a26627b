"""examples/compare_models.py: metrics with known answers, the data, and a
smoke run of --quick on one density.

Closed form of the energy distance between X ~ N(0, I_d) and Y ~ N(m, I_d):
D^2 = 2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(-m, 2 I_d) and
X - X', Y - Y' ~ N(0, 2 I_d). So every term is the mean norm of a normal
vector with covariance s^2 I, s^2 = 2:
* d = 1, folded normal (Leone, Nelson & Nottingham 1961, Technometrics 3(4)):
  E|Z| = s sqrt(2/pi) exp(-mu^2 / (2 s^2)) + mu erf(mu / (s sqrt 2)), so
  D^2 = 4/sqrt(pi) (exp(-m^2/4) - 1) + 2 m erf(m/2).
* d = 2, Rice distribution (Rice 1945): E|Z| = s sqrt(pi/2) L_{1/2}(-r^2/(2 s^2)),
  r = |mu|, L_{1/2}(-a) = e^{-a/2} [(1 + a) I0(a/2) + a I1(a/2)], so with
  a = |m|^2 / 4: D^2 = 2 sqrt(pi) [(1 + a) i0e(a/2) + a i1e(a/2) - 1]
  (i0e, i1e the exponentially scaled Bessel functions).
"""

from __future__ import annotations

import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

from toy2d import data, metrics  # noqa: E402


def _normal(n, d, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + torch.as_tensor(shift)


# ---------------------------------------------------------------- energy distance

def test_energy_distance_identical_samples_is_zero():
    x = _normal(600, 2, 0)
    within = metrics._mean_pairwise(x, x, True)
    d = metrics.energy_distance(x, x)
    # the U-statistic of x against itself is exactly -2 E|X - X'| / n
    assert d == pytest.approx(float(-2 * within / 600), abs=1e-9)
    assert abs(d) < 0.01


def test_energy_distance_same_distribution_near_zero():
    assert abs(metrics.energy_distance(_normal(3000, 2, 1), _normal(3000, 2, 2))) < 0.01


def test_energy_distance_symmetric_and_nonfinite():
    x, y = _normal(300, 2, 3), _normal(200, 2, 4, 1.0)
    assert metrics.energy_distance(x, y) == pytest.approx(metrics.energy_distance(y, x))
    y[5, 0] = float("nan")
    assert metrics.energy_distance(x, y) == math.inf


@pytest.mark.parametrize("m", [0.5, 1.0, 2.0, 4.0])
def test_closed_form_1d_matches_direct_expectation(m):
    """The folded-normal cross term against a plain Monte Carlo mean of |X - Y|."""
    x, y = _normal(1_000_000, 1, 5), _normal(1_000_000, 1, 6, m)
    mc = 2 * (x - y).abs().mean() - 2 * (x - _normal(1_000_000, 1, 7)).abs().mean()
    assert metrics.energy_distance_gaussians([m]) == pytest.approx(float(mc), abs=5e-3)
    # and the written-out formula
    want = 4 / math.sqrt(math.pi) * (math.exp(-m * m / 4) - 1) + 2 * m * math.erf(m / 2)
    assert metrics.energy_distance_gaussians([m]) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("m", [(0.5, 0.0), (1.0, 1.0), (0.0, 3.0)])
def test_closed_form_2d_matches_direct_expectation(m):
    """The Rice-mean cross term against a Monte Carlo mean of |X - Y| in 2-D."""
    x, y = _normal(500_000, 2, 8), _normal(500_000, 2, 9, m)
    z = _normal(500_000, 2, 10)
    mc = 2 * (x - y).norm(dim=1).mean() - 2 * (x - z).norm(dim=1).mean()
    assert metrics.energy_distance_gaussians(m) == pytest.approx(float(mc), abs=8e-3)


def test_closed_form_limits():
    assert metrics.energy_distance_gaussians([0.0]) == pytest.approx(0.0, abs=1e-15)
    assert metrics.energy_distance_gaussians([0.0, 0.0]) == pytest.approx(0.0, abs=1e-15)
    # far apart, E|X - Y| -> |m|, so D^2 -> 2|m| - 2 E|X - X'|
    assert metrics.energy_distance_gaussians([50.0]) == pytest.approx(
        100 - 4 / math.sqrt(math.pi), rel=1e-6)
    assert metrics.energy_distance_gaussians([30.0, 40.0]) == pytest.approx(
        100 - 2 * math.sqrt(math.pi), rel=1e-3)


@pytest.mark.parametrize("d,m", [(1, (0.5,)), (1, (2.0,)), (2, (1.0, 0.0)), (2, (1.5, -2.0))])
def test_energy_distance_of_shifted_gaussians(d, m):
    """The estimator on samples against the closed form (n = 3000 each)."""
    want = metrics.energy_distance_gaussians(m)
    got = metrics.energy_distance(_normal(3000, d, 11), _normal(3000, d, 12, m))
    assert got == pytest.approx(want, rel=0.1, abs=0.01)


# ---------------------------------------------------------------- mode coverage, data

def test_mean_nearest_distance():
    ref = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    assert metrics.mean_nearest_distance(torch.tensor([[3.0, 4.0], [10.0, 1.0]]), ref) == 3.0


def test_mode_coverage():
    full = data.sample("eight_gaussians", 4000, seed=1)
    modes, hq = metrics.mode_coverage(full, data.RING_CENTERS, data.RING_STD)
    assert modes == 8
    assert hq == pytest.approx(1 - math.exp(-4.5), abs=0.01)  # P(chi_2 <= 3)
    three = data.RING_CENTERS[torch.arange(3000) % 3] + 0.05 * _normal(3000, 2, 2).float()
    assert metrics.mode_coverage(three, data.RING_CENTERS, data.RING_STD) == (3, 1.0)
    assert metrics.mode_coverage(torch.zeros(100, 2), data.RING_CENTERS, data.RING_STD) == (0, 0.0)


@pytest.mark.parametrize("name", list(data.DENSITIES))
def test_densities(name):
    a, b = data.split(name, 2000, 500)
    assert a.shape == (2000, 2) and b.shape == (500, 2) and a.dtype == torch.float32
    assert torch.equal(a, data.split(name, 2000, 500)[0])  # fixed seeds
    assert not torch.equal(a[:500], b)                     # independent sets
    assert a.abs().max() < data.LIMIT
    assert 0.5 < a.std() < 3.5
    with pytest.raises(ValueError, match="density"):
        data.sample("nope", 10, 0)


# ---------------------------------------------------------------- smoke run

def test_quick_run_one_density(tmp_path):
    pytest.importorskip("matplotlib")
    import compare_models
    rows = compare_models.main(["--quick", "--densities", "eight_gaussians", "--iters", "60,gan=200",
                                "--samples", "300", "--out", str(tmp_path)])
    labels = {r["label"] for r in rows}
    assert {"VAE", "GAN", "RealNVP", "RQ-spline flow", "diffusion DDPM 1000",
            "diffusion DDIM 50"} <= labels
    for r in rows:
        for key in ("energy", "hq", "train_s", "ms_iter_genfast", "ms_iter_eager",
                    "sample_s_10k", "loss_first", "loss_last"):
            assert math.isfinite(r[key]), (r["label"], key, r[key])
        assert r["eager_finite"], r  # the eager-PyTorch training ran too
        assert 0 <= r["modes"] <= 8
        if r["model"] == "gan":  # adversarial losses do not descend: its samples improve
            assert r["energy"] < 0.6 * r["energy_init"], r
        else:
            assert r["loss_last"] < r["loss_first"], r
    assert all(math.isfinite(r["nll"]) for r in rows if r["model"] in ("realnvp", "spline_flow"))
    assert all(math.isfinite(r["elbo"]) for r in rows if r["model"] == "vae")
    report = (tmp_path / "report.md").read_text()
    assert "| density | model | energy dist." in report and "RQ-spline flow" in report
    png = (tmp_path / "samples.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (tmp_path / "results.json").exists()
