"""genfast.vae.reparameterize_kl (the vae family): reparameterize and
kl_divergence as one op with a one-pass backward.

Checked against the two separate ops (genfast.vae.reparameterize /
kl_divergence, on the same backend) and the reference (genfast/reference/vae.py)
under autograd. Tolerances:
* z: bit-equal to reparameterize with the same seed (the same per-element
  math and the same noise). kl: bit-equal on the CPU for batched inputs (the
  same chunked float64 sums), else 1e-6 relative.
* gradients: the fused backward rounds each gradient once where the two ops
  round two terms and autograd adds them (fp16 / bf16: three roundings), so
  fp32 1e-5, fp16 2e-3, bf16 2e-2 relative (values O(1)).
"""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import genfast
from genfast.reference import vae as RV
from conftest import available_backends, cpu_isas

BACKENDS = [b for b in available_backends() if b in ("reference", "cpu", "cuda")]
KERNELS = [b for b in BACKENDS if b != "reference"]
DEV = {"reference": "cpu", "cpu": "cpu", "cuda": "cuda"}
GTOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float16: dict(atol=2e-3, rtol=2e-3),
        torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float64: dict(atol=1e-12, rtol=1e-12)}
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
REDUCTIONS = ("sum", "mean", "none")
vae = genfast.vae
requires_op = pytest.mark.skipif(not hasattr(torch.ops.genfast, "vae_reparameterize_kl"),
                                 reason="the C++ extension is not built")


def pair(shape, dtype=torch.float32, device="cpu", seed=0, wide=False):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(shape, generator=g, dtype=torch.float64)
    lv = torch.rand(shape, generator=g, dtype=torch.float64) * 4 - 2
    if wide and lv.numel():  # both sides of the clamp
        lv.view(-1)[::7] = 25.0
        lv.view(-1)[3::7] = -35.0
    return mu.to(device, dtype), lv.to(device, dtype)


def kw(mu, **more):
    return dict(seed=11, stream=2, sample_offset=3 if mu.dim() >= 2 else 0, **more)


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 16, 16), (3, 32773), (3, 1), (5,), ()])
def test_forward_equals_the_two_ops(backend, dtype, shape):
    if dtype == torch.float64 and DEV[backend] != "cpu":
        pytest.skip("float64 runs on the cpu")
    mu, lv = pair(shape, dtype, DEV[backend], wide=True)
    for r in REDUCTIONS:
        z, kl = vae.reparameterize_kl(mu, lv, reduction=r, backend=backend, **kw(mu))
        z2 = vae.reparameterize(mu, lv, backend=backend, **kw(mu))
        kl2 = vae.kl_divergence(mu, lv, reduction=r, backend=backend)
        assert z.dtype == mu.dtype and z.shape == mu.shape
        assert torch.equal(z, z2)
        assert kl.dtype == kl2.dtype and kl.shape == kl2.shape
        if backend == "cpu" and len(shape) >= 2:
            assert torch.equal(kl, kl2)  # the same chunked sums
        else:
            torch.testing.assert_close(kl, kl2, rtol=1e-6, atol=1e-6)
        assert torch.isfinite(kl).all()
        if dtype != torch.float16:  # exp(20 / 2) eps overflows float16 itself
            assert torch.isfinite(z).all()


@pytest.mark.parametrize("backend", KERNELS)
def test_noise_arguments_select_the_stream(backend):
    mu, lv = pair((2, 3, 8), device=DEV[backend])
    z0, _ = vae.reparameterize_kl(mu, lv, seed=1, backend=backend)
    for args in (dict(seed=2), dict(seed=1, stream=1), dict(seed=1, sample_offset=1),
                 dict(seed=2**64 - 1)):
        z, _ = vae.reparameterize_kl(mu, lv, backend=backend, **args)
        assert not torch.equal(z, z0)
        assert torch.equal(z, vae.reparameterize(mu, lv, backend=backend, **args))


# ---------------------------------------------------------------- gradients

def _grads(fn, mu, lv, upstream, reduction, seed=0):
    """Gradients of <gz, z> + <gk, kl> (random upstream) or z.sum() + kl.sum()."""
    m = mu.detach().clone().requires_grad_()
    v = lv.detach().clone().requires_grad_()
    z, kl = fn(m, v)
    if upstream == "sum":
        (z.sum() + kl.sum()).backward()
    else:
        g = torch.Generator().manual_seed(seed + 1)
        gz = torch.randn(z.shape, generator=g).to(z.device, z.dtype)
        gk = torch.randn(kl.shape, generator=g, dtype=torch.float64).to(kl.device, kl.dtype)
        torch.autograd.backward((z, kl), (gz, gk))
    return m.grad, v.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("upstream", ["random", "sum"])
def test_gradients_equal_the_two_ops_and_the_reference(backend, dtype, reduction, upstream):
    mu, lv = pair((3, 4, 9, 5), dtype, DEV[backend], wide=True)
    a = kw(mu)
    fused = _grads(lambda m, v: vae.reparameterize_kl(m, v, reduction=reduction, backend=backend,
                                                      **a), mu, lv, upstream, reduction)
    apart = _grads(lambda m, v: (vae.reparameterize(m, v, backend=backend, **a),
                                 vae.kl_divergence(m, v, reduction=reduction, backend=backend)),
                   mu, lv, upstream, reduction)
    eps = genfast.randn(mu.shape, seed=11, stream=2, sample_offset=3, dtype=dtype,
                        backend="reference").to(mu.device)
    ref = _grads(lambda m, v: RV.reparameterize_kl(m, v, eps, {"none": 0, "mean": 1,
                                                               "sum": 2}[reduction]),
                 mu, lv, upstream, reduction)
    for got, want, want2 in zip(fused, apart, ref):
        assert got.dtype == dtype and got.shape == mu.shape
        torch.testing.assert_close(got.float(), want.float(), **GTOL[dtype])
        torch.testing.assert_close(got.float(), want2.float(), **GTOL[dtype])
    assert (fused[1][lv.abs() > 21] == 0).all()  # outside the clamp: no gradient to logvar


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_output_used(backend):
    """Only z, or only kl, in the loss: the other's gradient counts as zero."""
    mu, lv = pair((2, 3, 6), device=DEV[backend])
    for which in (0, 1):
        m, v = mu.clone().requires_grad_(), lv.clone().requires_grad_()
        out = vae.reparameterize_kl(m, v, seed=4, backend=backend)[which]
        (out * 1.5).sum().backward()
        m2, v2 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
        alone = (vae.reparameterize(m2, v2, seed=4, backend=backend) if which == 0 else
                 vae.kl_divergence(m2, v2, backend=backend))
        (alone * 1.5).sum().backward()
        torch.testing.assert_close(m.grad, m2.grad, **GTOL[torch.float32])
        torch.testing.assert_close(v.grad, v2.grad, **GTOL[torch.float32])


@requires_op
@pytest.mark.parametrize("reduction", [0, 1, 2])
@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
def test_backward_op_matches_the_reference(reduction, dtype):
    ops = torch.ops.genfast
    mu, lv = pair((3, 5, 7), dtype, wide=True)
    _, _, d = ops.vae_reparameterize_kl(mu, lv, 5, 0, 0, reduction)
    gk = torch.randn(3 if reduction == 0 else ())
    gz = torch.randn(mu.shape).to(dtype)
    tol = GTOL[dtype] if dtype != torch.float64 else dict(atol=1e-12, rtol=1e-12)
    for g_z in (gz, torch.tensor(0.75, dtype=dtype).expand(mu.shape), gz.transpose(1, 2)
                .contiguous().transpose(1, 2), None):
        for g_k in (gk, None):
            got = ops.vae_reparameterize_kl_backward(g_z, g_k, mu, lv, d, reduction)
            want = RV.reparameterize_kl_backward(g_z, g_k, mu, lv, d, reduction)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if DEV[b] == "cpu"])
def test_gradcheck_float64(backend):
    mu, lv = pair((2, 3, 5), torch.float64)
    mu.requires_grad_()
    lv.requires_grad_()
    for r in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b: vae.reparameterize_kl(a, b, seed=7, stream=1, reduction=r,
                                               backend=backend), inputs=(mu, lv))
    assert torch.autograd.gradcheck(  # one output alone (the other's grad is None)
        lambda a, b: vae.reparameterize_kl(a, b, seed=7, backend=backend)[0], inputs=(mu, lv))


# ---------------------------------------------------------------- shapes

@pytest.mark.parametrize("backend", BACKENDS)
def test_awkward_shapes(backend):
    dev = DEV[backend]
    base_mu, base_lv = pair((4, 6, 9), device=dev, seed=3)
    cases = [
        (base_mu.transpose(1, 2), base_lv.transpose(1, 2)),  # non-contiguous
        (base_mu[:, ::2], base_lv[:, 1::2]),                  # strided
        (base_mu[:1], base_lv[:1]),                            # batch 1
        pair((3, 5, 7), device=dev), pair((1, 1), device=dev), pair((2, 0, 3), device=dev),
        pair((0, 4), device=dev),
    ]
    for mu, lv in cases:
        for r in REDUCTIONS:
            m, v = mu.clone().requires_grad_(), lv.clone().requires_grad_()
            z, kl = vae.reparameterize_kl(m, v, seed=2, reduction=r, backend=backend)
            assert torch.equal(z, vae.reparameterize(mu.contiguous(), lv.contiguous(), seed=2,
                                                     backend=backend))
            torch.testing.assert_close(kl, vae.kl_divergence(mu, lv, reduction=r, backend=backend),
                                       equal_nan=True)  # mean of no items
            (z.sum() + kl.sum()).backward()
            m2, v2 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
            z2 = vae.reparameterize(m2, v2, seed=2, backend=backend)
            (z2.sum() + vae.kl_divergence(m2, v2, reduction=r, backend=backend).sum()).backward()
            torch.testing.assert_close(m.grad, m2.grad, **GTOL[torch.float32])
            torch.testing.assert_close(v.grad, v2.grad, **GTOL[torch.float32])


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=3), reduction=st.sampled_from(
    REDUCTIONS), seed=st.integers(0, 2**64 - 1), stream=st.integers(0, 2**32 - 1))
def test_property_equals_the_two_ops(shape, reduction, seed, stream):
    backend = KERNELS[0] if KERNELS else "reference"
    mu, lv = pair(tuple(shape), device=DEV[backend], seed=len(shape), wide=True)
    a = dict(seed=seed, stream=stream)
    m, v = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    z, kl = vae.reparameterize_kl(m, v, reduction=reduction, backend=backend, **a)
    m2, v2 = mu.clone().requires_grad_(), lv.clone().requires_grad_()
    z2 = vae.reparameterize(m2, v2, backend=backend, **a)
    kl2 = vae.kl_divergence(m2, v2, reduction=reduction, backend=backend)
    assert torch.equal(z, z2)
    torch.testing.assert_close(kl, kl2, equal_nan=True)
    (z.sum() * 0.5 + kl.sum()).backward()
    (z2.sum() * 0.5 + kl2.sum()).backward()
    torch.testing.assert_close(m.grad, m2.grad, **GTOL[torch.float32], equal_nan=True)
    torch.testing.assert_close(v.grad, v2.grad, **GTOL[torch.float32], equal_nan=True)


@requires_op
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_isa_level_gives_the_same_bits(isa_levels, dtype):
    mu, lv = pair((2, 3, 20000), dtype, wide=True)  # two chunks per item, a ragged tail
    gz = torch.randn(mu.shape).to(dtype)
    outs = []
    for isa in cpu_isas():
        isa_levels(isa)
        m, v = mu.clone().requires_grad_(), lv.clone().requires_grad_()
        z, kl = vae.reparameterize_kl(m, v, seed=3, reduction="none", backend="cpu")
        torch.autograd.backward((z, kl), (gz, torch.full_like(kl, 0.3)))
        assert not v.grad.isnan().any()  # outside the clamp: 0, even where d overflowed
        outs.append((z, kl, m.grad, v.grad))
        assert torch.equal(z, vae.reparameterize(mu, lv, seed=3, backend="cpu"))
        assert torch.equal(kl, vae.kl_divergence(mu, lv, reduction="none", backend="cpu"))
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- errors

def test_bad_input_errors():
    mu, lv = pair((2, 3, 4))
    with pytest.raises(TypeError, match="mu"):
        vae.reparameterize_kl([1.0], lv, seed=1)
    with pytest.raises(TypeError, match="mu"):
        vae.reparameterize_kl(mu.long(), lv.long(), seed=1)
    with pytest.raises(ValueError, match="logvar"):
        vae.reparameterize_kl(mu, lv[:1], seed=1)
    with pytest.raises(TypeError, match="logvar"):
        vae.reparameterize_kl(mu, lv.half(), seed=1)
    with pytest.raises(TypeError, match="logvar"):
        vae.reparameterize_kl(mu, "x", seed=1)
    with pytest.raises(ValueError, match="reduction"):
        vae.reparameterize_kl(mu, lv, seed=1, reduction="batchmean")
    with pytest.raises((ValueError, TypeError), match="seed"):
        vae.reparameterize_kl(mu, lv, seed=-1)
    with pytest.raises((ValueError, TypeError), match="stream"):
        vae.reparameterize_kl(mu, lv, seed=1, stream=2**32)
    with pytest.raises((ValueError, TypeError), match="sample_offset"):
        vae.reparameterize_kl(mu, lv, seed=1, sample_offset=2**32 - 1)


@requires_op
def test_raw_op_errors_name_the_argument():
    ops = torch.ops.genfast
    mu, lv = pair((2, 3, 4))
    _, _, d = ops.vae_reparameterize_kl(mu, lv, 1, 0, 0, 2)
    with pytest.raises(RuntimeError, match="logvar"):
        ops.vae_reparameterize_kl(mu, lv[:1], 1, 0, 0, 2)
    with pytest.raises(RuntimeError, match="reduction"):
        ops.vae_reparameterize_kl(mu, lv, 1, 0, 0, 5)
    with pytest.raises(RuntimeError, match="grad_z"):
        ops.vae_reparameterize_kl_backward(mu[:1], None, mu, lv, d, 2)
    with pytest.raises(RuntimeError, match="grad_kl"):
        ops.vae_reparameterize_kl_backward(None, torch.ones(3), mu, lv, d, 0)
    with pytest.raises(RuntimeError, match="grad_kl"):
        ops.vae_reparameterize_kl_backward(None, torch.ones(2), mu, lv, d, 2)
    with pytest.raises(RuntimeError, match=" d "):
        ops.vae_reparameterize_kl_backward(None, None, mu, lv, d.half(), 2)


# ---------------------------------------------------------------- opcheck / compile

@requires_op
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if "cuda" in BACKENDS else []))
def test_opcheck(device):
    ops = torch.ops.genfast
    for shape, r in (((2, 3, 5), 2), ((3, 4), 0), ((1, 2, 3), 1)):
        mu, lv = pair(shape, device=device)
        torch.library.opcheck(ops.vae_reparameterize_kl.default,
                              (mu.clone().requires_grad_(), lv.clone().requires_grad_(), 1, 2,
                               0, r))
        _, kl, d = ops.vae_reparameterize_kl(mu, lv, 1, 2, 0, r)
        gk = torch.ones_like(kl)
        for gz in (torch.randn_like(mu), torch.tensor(2.0, device=device).expand(mu.shape), None):
            torch.library.opcheck(ops.vae_reparameterize_kl_backward.default,
                                  (gz, gk, mu, lv, d, r))
    # non-contiguous inputs (a transposed mu / logvar, a transposed grad_z)
    mu, lv = pair((3, 4, 5), device=device)
    mu_t, lv_t = mu.transpose(1, 2), lv.transpose(1, 2)
    torch.library.opcheck(ops.vae_reparameterize_kl.default,
                          (mu_t.requires_grad_(), lv_t.requires_grad_(), 1, 2, 0, 2))
    _, kl, d = ops.vae_reparameterize_kl(mu_t.detach(), lv_t.detach(), 1, 2, 0, 2)
    torch.library.opcheck(ops.vae_reparameterize_kl_backward.default,
                          (torch.randn_like(mu).transpose(1, 2), torch.ones_like(kl),
                           mu_t.detach(), lv_t.detach(), d, 2))


@pytest.mark.parametrize("backend", KERNELS)
def test_compile_fullgraph(backend):
    dev = DEV[backend]
    torch._dynamo.reset()
    w = torch.randn(5, 5, device=dev, requires_grad=True)

    def step(mu, lv, stream):
        z, kl = vae.reparameterize_kl(mu, lv, seed=9, stream=stream, reduction="mean",
                                      backend=backend)
        recon = torch.einsum("ij,bjk->bik", w, z)
        return recon.square().mean() + 1e-2 * kl

    compiled = torch.compile(step, fullgraph=True)
    mu0, lv0 = pair((2, 5, 6), device=dev)
    mu, lv = mu0.clone().requires_grad_(), lv0.clone().requires_grad_()
    for s in (0, 1):
        w.grad = mu.grad = lv.grad = None
        eager = step(mu, lv, s)
        eager.backward()
        ge = (w.grad.clone(), mu.grad.clone(), lv.grad.clone())
        w.grad = mu.grad = lv.grad = None
        out = compiled(mu, lv, s)
        out.backward()
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
        for a, b in zip((w.grad, mu.grad, lv.grad), ge):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
