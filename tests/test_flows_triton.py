"""The Triton flow kernels (genfast/triton/flows.py) against the reference.

Without a GPU they run on Triton's CPU interpreter (TRITON_INTERPRET=1, set
before triton is imported): slow, so shapes are small and everything runs
eagerly; opcheck and torch.compile of triton ops need a GPU
(shared/reference/practice.md) and are skipped here.
Tolerances (float32): outputs 1e-5 abs + rel, logabsdet 1e-4, gradients 2e-4
(Triton's exp/log are not torch's); float64: gradcheck.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import genfast.flows as gff  # noqa: E402
from genfast import backend as gf_backend  # noqa: E402

_ok, _why = gf_backend.availability()["triton"]
if not _ok:
    pytest.skip(f"triton backend unavailable: {_why}", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="opcheck / torch.compile of triton ops cannot run under the CPU interpreter")


def _params(n, k, linear, dtype=torch.float32, seed=0, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(n, m, generator=g, dtype=dtype)).to(DEVICE)
            for m in (k, k, k - 1 if linear else k + 1)]


KW = dict(left=-1.0, right=1.0, bottom=-1.0, top=1.0)


@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [1, 5])
def test_spline_matches_reference(tails, inverse, k):
    n = 17
    x = (1.5 * torch.randn(n, generator=torch.Generator().manual_seed(k))).to(DEVICE)
    p = _params(n, k, tails == "linear", seed=k)
    grads = {}
    outs = {}
    for be in ("reference", "triton"):
        leaves = [t.clone().requires_grad_() for t in [x] + p]
        y, lad = gff.rational_quadratic_spline(*leaves, inverse=inverse, tails=tails, **KW,
                                               backend=be)
        outs[be] = (y, lad)
        grads[be] = torch.autograd.grad((y * torch.cos(x) + lad * torch.sin(x)).sum(), leaves)
    torch.testing.assert_close(outs["triton"][0], outs["reference"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs["triton"][1], outs["reference"][1], atol=1e-4, rtol=1e-4)
    for a, b in zip(grads["reference"], grads["triton"]):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("tails,inverse", [("linear", False), (None, True)])
def test_spline_gradcheck_float64(tails, inverse):
    # fast_mode: each interpreted call is slow; the other direction/tails
    # combinations are covered against the reference's autograd above
    x = torch.tensor([-0.7, 0.1, 0.6, -3.0, 2.0], dtype=torch.float64, device=DEVICE)
    p = _params(5, 3, tails == "linear", dtype=torch.float64, seed=1)
    leaves = [t.requires_grad_() for t in [x] + p]
    assert torch.autograd.gradcheck(
        lambda *a: gff.rational_quadratic_spline(*a, inverse=inverse, tails=tails, **KW,
                                                 backend="triton"), leaves, fast_mode=True)


def test_spline_extreme_and_shapes():
    k = 6
    x = torch.tensor([-1e4, -1.0, 0.0, 0.3, 1.0, 1e4], device=DEVICE)
    p = [50.0 * torch.sign(t) for t in _params(6, k, True, seed=2)]
    for inverse in (False, True):
        leaves = [t.clone().requires_grad_() for t in [x] + p]
        y, lad = gff.rational_quadratic_spline(*leaves, inverse=inverse, backend="triton")
        (y.sum() + lad.sum()).backward()
        assert all(torch.isfinite(t).all() for t in [y, lad] + [v.grad for v in leaves])
    for shape in [(0,), (1,), (2, 0, 3), (3, 1)]:
        x = torch.zeros(shape, device=DEVICE)
        p = [torch.zeros(*shape, m, device=DEVICE) for m in (k, k, k - 1)]
        y, lad = gff.rational_quadratic_spline(x, *p, backend="triton")
        assert y.shape == shape and lad.shape == shape


@pytest.mark.parametrize("activation", gff.ACTIVATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_matches_reference(activation, inverse):
    g = torch.Generator().manual_seed(3)
    x, t, u = ((torch.randn(3, 2, 19, generator=g) * s).to(DEVICE) for s in (1, 1, 2))
    res = {}
    for be in ("reference", "triton"):
        leaves = [v.clone().requires_grad_() for v in (x, t, u)]
        y, lad = gff.affine_coupling(*leaves, activation, 2.0, inverse, backend=be)
        gr = torch.autograd.grad((y * torch.cos(x)).sum() + (lad * torch.arange(3.0)).sum(), leaves,
                                 allow_unused=True, materialize_grads=True)
        res[be] = (y, lad) + gr
    for a, b in zip(res["reference"], res["triton"]):
        torch.testing.assert_close(b, a, atol=5e-5, rtol=5e-5)


@requires_cuda
def test_opcheck_triton_ops():
    x = torch.randn(4, 5, device="cuda")
    p = _params(20, 3, True)
    p = [t.reshape(4, 5, -1) for t in p]
    torch.library.opcheck(torch.ops.genfast.rq_spline_triton.default,
                          (x, *p, False, True, -1.0, 1.0, -1.0, 1.0, 1e-3, 1e-3, 1e-3))
    torch.library.opcheck(torch.ops.genfast.affine_coupling_triton.default,
                          (x, x.clone(), x.clone(), 1, 2.0, False))


@requires_cuda
def test_compile_triton_spline():
    x = torch.randn(64, device="cuda")
    p = _params(64, 4, True)
    f = torch.compile(lambda *a: gff.rational_quadratic_spline(*a, backend="triton"),
                      fullgraph=True)
    torch.testing.assert_close(f(x, *p)[0], gff.rational_quadratic_spline(x, *p, backend="triton")[0])
