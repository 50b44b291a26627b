"""CUDA flow kernels (csrc/cuda/flows.cu) against the CPU kernels and the
reference; opcheck and torch.compile on the GPU. Skipped without a GPU (the
sources are compile-checked by nvcc in CI)."""

import pytest
import torch

import genfast.flows as gff
from genfast import backend as gf_backend

pytestmark = pytest.mark.skipif(not gf_backend.availability()["cuda"][0],
                                reason="the cuda backend needs a GPU and the CUDA build")


def _params(shape, k, linear, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, m, generator=g, dtype=dtype) * 1.5
            for m in (k, k, k - 1 if linear else k + 1)]


@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [1, 8, 64])
def test_spline_cuda_matches_cpu(tails, inverse, k):
    shape = (33, 7)
    x = 1.5 * torch.randn(shape, generator=torch.Generator().manual_seed(k))
    p = _params(shape, k, tails == "linear", seed=k)
    kw = dict(inverse=inverse, tails=tails, left=-1.0, right=1.0, bottom=-1.0, top=1.0)
    res = {}
    for be, dev in (("cpu", "cpu"), ("cuda", "cuda")):
        leaves = [t.to(dev).requires_grad_() for t in [x] + p]
        y, lad = gff.rational_quadratic_spline(*leaves, **kw, backend=be)
        gr = torch.autograd.grad((y * y + lad).sum(), leaves)
        res[be] = [t.cpu() for t in (y, lad) + gr]
    for a, b in zip(res["cpu"], res["cuda"]):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tails,inverse", [("linear", False), (None, True)])
def test_spline_cuda_gradcheck_float64(tails, inverse):
    x = torch.tensor([-0.7, 0.1, 0.6, -3.0, 2.0], dtype=torch.float64, device="cuda")
    p = [t.cuda() for t in _params((5,), 3, tails == "linear", dtype=torch.float64)]
    leaves = [t.requires_grad_() for t in [x] + p]
    assert torch.autograd.gradcheck(
        lambda *a: gff.rational_quadratic_spline(*a, inverse=inverse, tails=tails, left=-1.0,
                                                 right=1.0, bottom=-1.0, top=1.0,
                                                 backend="cuda"), leaves)


@pytest.mark.parametrize("activation", gff.ACTIVATIONS)
def test_affine_cuda_matches_cpu(activation):
    x, t, u = (torch.randn(5, 3, 4099) for _ in range(3))
    for inverse in (False, True):
        a = gff.affine_coupling(x, t, u, activation, 2.0, inverse, backend="cpu")
        b = gff.affine_coupling(x.cuda(), t.cuda(), u.cuda(), activation, 2.0, inverse,
                                backend="cuda")
        torch.testing.assert_close(b[0].cpu(), a[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(b[1].cpu(), a[1], atol=1e-2, rtol=1e-4)


def test_opcheck_cuda():
    x = torch.randn(4, 5, device="cuda").t()
    p = [t.cuda() for t in _params((5, 4), 3, True)]
    torch.library.opcheck(torch.ops.genfast.rq_spline.default,
                          (x, *p, True, True, -1.0, 1.0, -1.0, 1.0, 1e-3, 1e-3, 1e-3))
    torch.library.opcheck(torch.ops.genfast.affine_coupling.default,
                          (x, x.clone(), x.clone(), 1, 2.0, False))


def test_compile_cuda_flow():
    from genfast.flows import RQSplineCoupling, simple_net
    layer = RQSplineCoupling([1, 0, 1, 0], simple_net(16), num_bins=4, tails="linear").cuda()
    x = torch.randn(8, 4, device="cuda")
    f = torch.compile(layer, fullgraph=True)
    torch.testing.assert_close(f(x)[0], layer(x)[0])
