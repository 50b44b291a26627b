"""The Triton training kernels (genfast/triton/training.py) against the
reference, on Triton's CPU interpreter when there is no GPU (small shapes;
opcheck and torch.compile of triton ops only with a GPU, see
tests/test_noise_triton.py). Tolerances as tests/test_training.py; the
interpreter truncates float32 -> bfloat16, so bf16 gets two ulps.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import genfast  # noqa: E402
from genfast import backend as gf_backend  # noqa: E402
from genfast import schedules as S  # noqa: E402

_ok, _why = gf_backend.availability()["triton"]
if not _ok:
    pytest.skip(f"triton backend unavailable: {_why}", allow_module_level=True)

from genfast.triton import training as tri  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="opcheck / compile of triton ops need a GPU")
TOL = {torch.float32: dict(atol=2e-6, rtol=2e-6), torch.float16: dict(atol=1e-3, rtol=1e-3),
       torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}
VP = S.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                    "rescale_betas_zero_snr": True})


def rnd(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_add_noise(dtype):
    x0 = rnd((3, 2, 5, 3), dtype=dtype).transpose(1, 3)
    n = rnd((3, 3, 5, 2), 1, dtype)
    t = torch.tensor([0, 500, 999], device=DEVICE)
    for pred in ("epsilon", "v_prediction", "sample", "flow"):
        got = genfast.add_noise(x0, t, VP, noise=n, prediction_type=pred, backend="triton")
        ref = genfast.add_noise(x0, t, VP, noise=n, prediction_type=pred, backend="reference")
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, **TOL[dtype])
    flow = S.from_config({"shift": 3.0})
    s = torch.tensor([0.0, 0.3, 1.0], device=DEVICE)
    for a, b in zip(genfast.add_noise(x0, s, flow, noise=n, prediction_type="flow", backend="triton"),
                    genfast.add_noise(x0, s, flow, noise=n, prediction_type="flow", backend="reference")):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 3), (2, 5, 3), (3, 16)])
def test_seeded_noise_is_randn(dtype, shape):
    x0 = rnd(shape, dtype=dtype)
    t = torch.arange(shape[0], device=DEVICE) * 400
    x_t, noise, target = genfast.add_noise(x0, t, VP, seed=2**40 + 3, stream=5, sample_offset=7,
                                           prediction_type="v_prediction", backend="triton")
    want = genfast.randn(shape, seed=2**40 + 3, stream=5, sample_offset=7, dtype=dtype,
                         device=DEVICE, backend="triton")
    assert torch.equal(noise, want)
    x2, _, t2 = genfast.add_noise(x0, t, VP, noise=noise, prediction_type="v_prediction",
                                  backend="reference")
    torch.testing.assert_close(x_t, x2, **TOL[dtype])
    torch.testing.assert_close(target, t2, **TOL[dtype])


def test_seeded_epsilon_target_is_the_noise():
    # epsilon: the kernel writes no target; the wrapper returns the noise itself
    x0 = rnd((2, 5, 3))
    t = torch.tensor([0, 900], device=DEVICE)
    x_t, noise, target = genfast.add_noise(x0, t, VP, seed=9, stream=2, backend="triton")
    assert target is noise
    assert torch.equal(noise, genfast.randn((2, 5, 3), seed=9, stream=2, device=DEVICE,
                                            backend="triton"))
    x2, _, _ = genfast.add_noise(x0, t, VP, noise=noise, backend="reference")
    torch.testing.assert_close(x_t, x2, **TOL[torch.float32])
    raw = torch.ops.genfast.training_add_noise_seeded_triton(x0, t, VP.table(DEVICE), 0, 0, 9, 2, 0)
    assert raw[2].shape == (0,) and torch.equal(raw[1], noise)


def test_loss_kl_reparam_and_backward():
    t = torch.tensor([3, 999], device=DEVICE)
    res = {}
    for b in ("triton", "reference"):
        p = rnd((2, 3, 7)).requires_grad_()
        y = rnd((2, 3, 7), 1)
        mu = rnd((2, 3, 7), 2).requires_grad_()
        lv = (rnd((2, 3, 7), 3) * 10).requires_grad_()
        x0 = rnd((2, 3, 7), 4).requires_grad_()
        xt, _, tg = genfast.add_noise(x0, t, VP, noise=y, prediction_type="v_prediction", backend=b)
        outs = [genfast.diffusion_loss(p, tg, t, VP, weighting="min_snr", reduction=r,
                                       prediction_type="v_prediction", backend=b)
                for r in ("none", "mean", "sum")]
        outs += [genfast.vae.kl_divergence(mu, lv, reduction=r, backend=b)
                 for r in ("none", "mean", "sum")]
        eps = genfast.randn((2, 3, 7), seed=9, device=DEVICE, backend=b)
        z = genfast.vae.reparameterize(mu, lv, seed=9, backend=b)
        from genfast.reference import training as R
        torch.testing.assert_close(z, R.reparameterize(mu, lv, eps), atol=1e-5, rtol=1e-5)
        total = sum(o.sum() for o in outs) + (z * xt).sum()
        total.backward()
        res[b] = outs + [p.grad, mu.grad, lv.grad, x0.grad]
    for a, r in zip(res["triton"], res["reference"]):
        torch.testing.assert_close(a, r, atol=2e-4, rtol=1e-4)


@requires_cuda
def test_opcheck_gpu():
    table = VP.table(DEVICE)
    x = torch.randn(3, 5, 4, device=DEVICE).transpose(1, 2)
    t = torch.tensor([0, 5, 999], device=DEVICE)
    ops = torch.ops.genfast
    torch.library.opcheck(ops.training_add_noise_triton.default, (x, x.clone(), t, table, 0, 1))
    torch.library.opcheck(ops.training_add_noise_seeded_triton.default, (x, t, table, 0, 0, 5, 3, 2))
    torch.library.opcheck(ops.training_add_noise_seeded_triton.default, (x, t, table, 0, 1, 5, 3, 2))
    torch.library.opcheck(ops.training_diffusion_loss_triton.default,
                          (x, x.clone(), t, table, 0, 1, 0, 5.0, 0.5, 1))
    torch.library.opcheck(ops.training_kl_divergence_triton.default, (x, x.clone(), 2))
    torch.library.opcheck(ops.training_reparameterize_triton.default, (x, x.clone(), 1, 2, 3))
    torch.library.opcheck(ops.training_reparameterize_backward_triton.default,
                          (x, x.clone(), x.clone()))


@requires_cuda
def test_compile_gpu():
    torch._dynamo.reset()
    x0 = torch.randn(2, 4, 6, device=DEVICE, requires_grad=True)
    t = torch.tensor([3, 998], device=DEVICE)

    def step(x0):
        x_t, _, target = genfast.add_noise(x0, t, VP, seed=1, prediction_type="v_prediction",
                                           backend="triton")
        return genfast.diffusion_loss(x_t, target, t, VP, weighting="min_snr",
                                      prediction_type="v_prediction", backend="triton")
    out = torch.compile(step, fullgraph=True)(x0)
    torch.testing.assert_close(out, step(x0))
