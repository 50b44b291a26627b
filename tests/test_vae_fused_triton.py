"""genfast.vae.reparameterize_kl on the Triton backend (genfast/triton/vae.py),
on Triton's CPU interpreter when there is no GPU (small shapes; opcheck and
torch.compile of triton ops only with a GPU, as tests/test_training_triton.py).
Against the Triton reparameterize / kl_divergence (the same kernels: z and
kl equal) and the reference backward; tolerances as tests/test_vae_fused.py,
bf16 two ulps (the interpreter truncates float32 -> bfloat16).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import genfast  # noqa: E402
from genfast import backend as gf_backend  # noqa: E402
from genfast.reference import vae as RV  # noqa: E402

_ok, _why = gf_backend.availability()["triton"]
if not _ok:
    pytest.skip(f"triton backend unavailable: {_why}", allow_module_level=True)

from genfast.triton import vae as tv  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="opcheck / compile of triton ops need a GPU")
GTOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
        torch.bfloat16: dict(atol=3.2e-2, rtol=3.2e-2)}
vae = genfast.vae


def pair(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g)
    lv = torch.rand(shape, generator=g) * 4 - 2
    if lv.numel():
        lv.view(-1)[::5] = 22.0
        lv.view(-1)[2::5] = -33.0
    return mu.to(DEVICE, dtype), lv.to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 7), (1, 5), (4,)])
def test_forward_and_gradients(dtype, shape):
    mu, lv = pair(shape, dtype)
    for r, code in (("sum", 2), ("mean", 1), ("none", 0)):
        m, v = mu.clone().requires_grad_(), lv.clone().requires_grad_()
        z, kl = vae.reparameterize_kl(m, v, seed=5, stream=1, reduction=r, backend="triton")
        assert torch.equal(z, vae.reparameterize(mu, lv, seed=5, stream=1, backend="triton"))
        torch.testing.assert_close(kl, vae.kl_divergence(mu, lv, reduction=r, backend="triton"))
        gk = torch.randn(kl.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE)
        for gz in (torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(DEVICE, dtype),
                   torch.tensor(0.5, device=DEVICE, dtype=dtype).expand(shape)):
            m.grad = v.grad = None
            torch.autograd.backward((z, kl), (gz, gk), retain_graph=True)
            eps = genfast.randn(shape, seed=5, stream=1, dtype=dtype, device=DEVICE,
                                backend="triton")
            d = (torch.exp(0.5 * lv.float().clamp(-30, 20)) * eps.float()).to(dtype)
            want = RV.reparameterize_kl_backward(gz, gk, mu, lv, d, code)
            torch.testing.assert_close(m.grad, want[0], **GTOL[dtype])
            torch.testing.assert_close(v.grad, want[1], **GTOL[dtype])


def test_backward_op_without_upstream_grads():
    mu, lv = pair((2, 4, 3))
    z, kl, d = tv.OPS["forward"](mu, lv, 3, 0, 0, 2)
    for gz, gk in ((None, torch.tensor(1.5, device=DEVICE)), (torch.ones_like(mu), None)):
        got = tv.OPS["backward"](gz, gk, mu, lv, d, 2)
        want = RV.reparameterize_kl_backward(gz, gk, mu, lv, d, 2)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **GTOL[torch.float32])


def test_empty():
    mu, lv = pair((0, 3))
    z, kl = vae.reparameterize_kl(mu, lv, seed=1, reduction="none", backend="triton")
    assert z.shape == (0, 3) and kl.shape == (0,)


@requires_cuda
def test_opcheck_gpu():
    ops = torch.ops.genfast
    mu, lv = pair((2, 3, 5))
    torch.library.opcheck(ops.vae_reparameterize_kl_triton.default, (mu, lv, 1, 2, 3, 2))
    _, kl, d = ops.vae_reparameterize_kl_triton(mu, lv, 1, 2, 3, 2)
    torch.library.opcheck(ops.vae_reparameterize_kl_backward_triton.default,
                          (torch.randn_like(mu), torch.ones_like(kl), mu, lv, d, 2))
