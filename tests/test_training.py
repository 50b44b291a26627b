"""add_noise, diffusion_loss and the VAE ops: reference, cpu (and cuda where a
GPU exists) against diffusers 0.42.1 and each other.

Tolerances (max abs error, values O(1)):
* fp32: 2e-6 against the reference (float64 coefficients rounded once).
  Against diffusers 5e-5: its float32 alphas_cumprod is off by up to ~4e-5
  relative at the end of the schedule, and at t = 0 sqrt(1 - abar_0) of a
  ~1e-5 quantity loses ~0.6% to the float32 rounding of abar_0 (seen: 2.7e-5
  absolute with squaredcos_cap_v2 + zero SNR); genfast's float64 is the exact one.
* fp16 / bf16: the kernel computes in float32 and rounds once, like the
  reference, so within one ulp of the output dtype of it (the reference's own
  rounding): fp16 1e-3 rel, bf16 8e-3 rel.
* Losses and KL (reductions, float64 partial sums in the kernels): 1e-5 rel.
"""

import pytest
import torch

import genfast
from genfast import schedules as S
from genfast.ops import training as T
from conftest import available_backends

diffusers = pytest.importorskip("diffusers")

BACKENDS = [b for b in available_backends() if b in ("reference", "cpu", "cuda")]
KERNELS = [b for b in BACKENDS if b != "reference"]
DEV = {"reference": "cpu", "cpu": "cpu", "cuda": "cuda"}
SD = dict(beta_start=0.00085, beta_end=0.012)
TOL = {torch.float32: dict(atol=2e-6, rtol=2e-6), torch.float16: dict(atol=1e-3, rtol=1e-3),
       torch.bfloat16: dict(atol=8e-3, rtol=8e-3), torch.float64: dict(atol=1e-12, rtol=1e-12)}


def ddpm(beta_schedule="scaled_linear", zero_snr=False, **kw):
    d = diffusers.DDPMScheduler(beta_schedule=beta_schedule, rescale_betas_zero_snr=zero_snr,
                                **SD, **kw)
    return d, S.from_config(d.config)


def batch(n=3, shape=(4, 5, 7), dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + shape, generator=g).to(device=device, dtype=dtype)


# ---------------------------------------------------------------- add_noise

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
@pytest.mark.parametrize("zero_snr", [False, True])
def test_add_noise_matches_diffusers(backend, beta_schedule, zero_snr):
    d, g = ddpm(beta_schedule, zero_snr)
    dev = DEV[backend]
    x0, n = batch(device=dev), batch(seed=1, device=dev)
    t = torch.tensor([0, 421, 999], device=dev)  # first and last timestep
    for pred in ("epsilon", "v_prediction", "sample"):
        x_t, noise, target = genfast.add_noise(x0, t, g, noise=n, prediction_type=pred,
                                               backend=backend)
        assert noise is n
        want = d.add_noise(x0.cpu(), n.cpu(), t.cpu())
        torch.testing.assert_close(x_t.cpu(), want, atol=5e-5, rtol=5e-5)
        want_t = {"epsilon": n.cpu(), "sample": x0.cpu(),
                  "v_prediction": d.get_velocity(x0.cpu(), n.cpu(), t.cpu())}[pred]
        torch.testing.assert_close(target.cpu(), want_t, atol=5e-5, rtol=5e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_noise_sigma_and_flow(backend):
    dev = DEV[backend]
    x0, n = batch(device=dev), batch(seed=1, device=dev)
    edm = S.from_config({"_class_name": "EDMEulerScheduler"})
    s = torch.tensor([0.0, 0.5, 80.0], device=dev)
    x_t, _, v = genfast.add_noise(x0, s, edm, noise=n, prediction_type="v_prediction",
                                  backend=backend)
    sv = s.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, x0 + sv * n, **TOL[torch.float32])
    torch.testing.assert_close(v, (n - sv * x0) / (sv * sv + 1).sqrt(), atol=1e-5, rtol=1e-5)
    flow = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    fg = S.from_config(flow.config)
    t = torch.tensor([0.0, 0.25, 1.0], device=dev)
    x_t, _, u = genfast.add_noise(x0, t, fg, noise=n, prediction_type="flow", backend=backend)
    # diffusers' scale_noise at the same sigma, and its training scripts' target
    flow.set_timesteps(4)
    ref = flow.scale_noise(x0.cpu(), flow.timesteps[1:2].expand(3), n.cpu())
    sig = flow.sigmas[1]
    torch.testing.assert_close(
        genfast.add_noise(x0, torch.full((3,), float(sig), device=dev), fg, noise=n,
                          backend=backend)[0].cpu(), ref, **TOL[torch.float32])
    tv = t.view(-1, 1, 1, 1)
    torch.testing.assert_close(x_t, (1 - tv) * x0 + tv * n, **TOL[torch.float32])
    torch.testing.assert_close(u, n - x0, **TOL[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape", [(1, 3), (2, 3, 5), (5, 1, 7, 3), (4, 2, 64)])
def test_seeded_noise_is_randn(backend, dtype, shape):
    _, g = ddpm()
    dev = DEV[backend]
    x0 = torch.randn(shape).to(dev, dtype)
    t = torch.randint(0, 1000, (shape[0],), device=dev)
    x_t, noise, target = genfast.add_noise(x0, t, g, seed=2**63 + 5, stream=9, sample_offset=11,
                                           prediction_type="v_prediction", backend=backend)
    nd = torch.float32 if dtype == torch.float64 else dtype
    want = genfast.randn(shape, seed=2**63 + 5, stream=9, sample_offset=11, dtype=nd,
                         device=dev, backend=backend).to(dtype)
    assert torch.equal(noise, want)
    # and the rest equals the given-noise path exactly
    x2, _, t2 = genfast.add_noise(x0, t, g, noise=noise, prediction_type="v_prediction",
                                  backend=backend)
    assert torch.equal(x_t, x2) and torch.equal(target, t2)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_seeded_epsilon_target_is_the_noise(backend, dtype):
    # epsilon: the target is the noise tensor itself (diffusers' training
    # scripts: target = noise), no third copy; x_t still equals the
    # given-noise path and its gradient still reaches x0
    d, g = ddpm()
    dev = DEV[backend]
    x0 = torch.randn(3, 2, 5, 7).to(dev, dtype).requires_grad_()
    t = torch.tensor([0, 500, 999], device=dev)
    x_t, noise, target = genfast.add_noise(x0, t, g, seed=77, stream=4, backend=backend)
    assert target is noise and not noise.requires_grad
    x2, _, t2 = genfast.add_noise(x0.detach(), t, g, noise=noise, backend=backend)
    assert torch.equal(x_t.detach(), x2) and torch.equal(t2, noise)
    x_t.sum().backward()
    want = d.alphas_cumprod[t.cpu()].double().sqrt()
    torch.testing.assert_close(x0.grad, (want.to(dev, dtype).view(-1, 1, 1, 1))
                               .expand_as(x0), atol=1e-6 if dtype == torch.float64 else 1e-2,
                               rtol=1e-2)


def test_seeded_op_epsilon_returns_an_empty_target():
    if "cpu" not in BACKENDS:
        pytest.skip("no cpu backend")
    _, g = ddpm()
    x0, t = torch.randn(2, 3, 4), torch.tensor([1, 900])
    op = torch.ops.genfast.training_add_noise_seeded
    x_t, noise, target = op(x0, t, g.table("cpu"), 0, 0, 5, 1, 0)
    assert target.shape == (0,) and noise.shape == x0.shape
    x_v, noise_v, target_v = op(x0, t, g.table("cpu"), 0, 1, 5, 1, 0)  # v: written
    assert target_v.shape == x0.shape and torch.equal(noise_v, noise) and torch.equal(x_v, x_t)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_kernels_match_reference(backend, dtype):
    _, g = ddpm(zero_snr=True)
    dev = DEV[backend]
    base = batch(n=6, shape=(3, 9, 5))
    x0 = base.transpose(1, 3).to(dev, dtype)[::2]  # strided, non-contiguous
    n = batch(n=3, shape=(5, 9, 3), seed=3).to(dev, dtype)
    t = torch.tensor([999, 0, 17], device=dev)
    for pred in ("epsilon", "v_prediction", "sample", "flow"):
        got = genfast.add_noise(x0, t, g, noise=n, prediction_type=pred, backend=backend)
        ref = genfast.add_noise(x0, t, g, noise=n, prediction_type=pred, backend="reference")
        for a, b in zip(got, ref):
            assert a.dtype == dtype
            torch.testing.assert_close(a, b, **TOL[dtype])
    for w, pred in (("none", "epsilon"), ("min_snr", "epsilon"), ("min_snr", "v_prediction"),
                    ("min_snr", "sample")):
        for r in ("none", "mean", "sum"):
            a = genfast.diffusion_loss(x0, n, t, g, weighting=w, prediction_type=pred, reduction=r,
                                       backend=backend)
            b = genfast.diffusion_loss(x0, n, t, g, weighting=w, prediction_type=pred, reduction=r,
                                       backend="reference")
            assert a.dtype == torch.float32 and a.shape == b.shape
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    for r in ("none", "mean", "sum"):
        torch.testing.assert_close(genfast.vae.kl_divergence(x0, n, reduction=r, backend=backend),
                                   genfast.vae.kl_divergence(x0, n, reduction=r, backend="reference"),
                                   atol=1e-5, rtol=1e-5)
    z = genfast.vae.reparameterize(x0, n, seed=3, sample_offset=2, backend=backend)
    eps = genfast.randn(x0.shape, seed=3, sample_offset=2, dtype=dtype, device=dev, backend=backend)
    torch.testing.assert_close(z, T._ref.reparameterize(x0, n, eps), **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_batch_one(backend):
    _, g = ddpm()
    dev = DEV[backend]
    x0 = torch.zeros((0, 4, 3), device=dev)
    t = torch.zeros((0,), dtype=torch.int64, device=dev)
    out = genfast.add_noise(x0, t, g, seed=1, backend=backend)
    assert all(o.shape == (0, 4, 3) for o in out)
    assert genfast.diffusion_loss(x0, x0, t, g, reduction="sum", backend=backend) == 0
    x1 = torch.randn(1, 3, 3, device=dev)
    t1 = torch.tensor([999], device=dev)
    a = genfast.add_noise(x1, t1, g, seed=1, backend=backend)[0]
    assert a.shape == (1, 3, 3) and torch.isfinite(a).all()


# ---------------------------------------------------------------- loss weights

def test_min_snr_weights_match_diffusers_training_utils():
    from diffusers.training_utils import compute_snr
    d, g = ddpm()
    t = torch.tensor([0, 10, 300, 999])
    snr = compute_snr(d, t).double()
    gamma = 5.0
    m = torch.minimum(snr, torch.full_like(snr, gamma))
    table = g.table("cpu")
    for pred, want in ((0, m / snr), (1, m / (snr + 1)), (2, m)):
        w = T._ref.loss_weights(0, 1, pred, t, table, gamma, 0.5)
        torch.testing.assert_close(w, want, rtol=1e-4, atol=0)  # diffusers' snr is float32
    # the fused loss equals the scripts' two-liner
    pred, target = batch(n=4), batch(n=4, seed=1)
    want = (torch.nn.functional.mse_loss(pred, target, reduction="none").mean(dim=[1, 2, 3])
            * (m / snr).float()).mean()
    for backend in BACKENDS:
        if DEV[backend] == "cpu":
            got = genfast.diffusion_loss(pred, target, t, g, weighting="min_snr", backend=backend)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_zero_terminal_snr_weight_is_finite():
    _, g = ddpm(zero_snr=True)
    pred, target = batch(n=2), batch(n=2, seed=1)
    t = torch.tensor([999, 999])
    for backend in BACKENDS:
        if DEV[backend] == "cpu":
            for p in ("epsilon", "v_prediction", "sample"):
                loss = genfast.diffusion_loss(pred, target, t, g, weighting="min_snr",
                                              prediction_type=p, backend=backend)
                assert torch.isfinite(loss)


@pytest.mark.parametrize("backend", BACKENDS)
def test_edm_weighting(backend):
    dev = DEV[backend]
    edm = S.from_config({"_class_name": "EDMEulerScheduler", "sigma_data": 0.5})
    pred, target = batch(n=2, device=dev), batch(n=2, seed=1, device=dev)
    s = torch.tensor([0.1, 3.0], dtype=torch.float64, device=dev)
    w = (s ** 2 + 0.25) / (s * 0.5) ** 2
    want = ((pred - target) ** 2).mean(dim=[1, 2, 3]).double() * w
    got = genfast.diffusion_loss(pred, target, s, edm, weighting="edm", reduction="none",
                                 backend=backend)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=0)


# ---------------------------------------------------------------- VAE

@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_matches_diffusers_posterior(backend):
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    dev = DEV[backend]
    mu, lv = batch(device=dev), batch(seed=1, device=dev) * 3
    post = DiagonalGaussianDistribution(torch.cat([mu, lv], dim=1).cpu())
    want = post.kl()  # per item
    got = genfast.vae.kl_divergence(mu, lv, reduction="none", backend=backend)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    total = -0.5 * torch.sum(1 + lv - mu ** 2 - lv.exp())
    torch.testing.assert_close(genfast.vae.kl_divergence(mu, lv, backend=backend), total,
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vae_extreme_logvar_is_finite(backend):
    dev = DEV[backend]
    mu = torch.zeros(2, 8, device=dev, requires_grad=True)
    lv = torch.tensor([[1e4, -1e4, 200.0, -200.0, 88.0, -104.0, 20.0, -30.0]] * 2, device=dev,
                      requires_grad=True)
    z = genfast.vae.reparameterize(mu, lv, seed=1, backend=backend)
    kl = genfast.vae.kl_divergence(mu, lv, backend=backend)
    assert torch.isfinite(z).all() and torch.isfinite(kl)
    (z.sum() + kl).backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(lv.grad).all()
    assert (lv.grad[:, :4] == 0).all()  # outside the clamp: no gradient, as torch.clamp


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64(backend):
    if DEV[backend] != "cpu":
        pytest.skip("float64 kernels are the CPU's")
    _, g = ddpm()
    opts = dict(dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(2, 3, 5, **opts)
    n = torch.randn(2, 3, 5, **opts)
    t = torch.tensor([3, 999])
    for pred in ("epsilon", "v_prediction", "sample"):
        assert torch.autograd.gradcheck(fast_mode=True, func=
            lambda a, b: genfast.add_noise(a, t, g, noise=b, prediction_type=pred,
                                           backend=backend)[::2], inputs=(x0, n))
        assert torch.autograd.gradcheck(fast_mode=True, func=
            lambda a: genfast.add_noise(a, t, g, seed=4, prediction_type=pred,
                                        backend=backend)[::2], inputs=(x0,))
    for w, r in (("min_snr", "mean"), ("none", "none"), ("min_snr", "sum")):
        assert torch.autograd.gradcheck(fast_mode=True, func=
            lambda a, b: genfast.diffusion_loss(a, b, t, g, weighting=w, reduction=r,
                                                backend=backend), inputs=(x0, n))
    lv = (torch.rand(2, 3, 5, dtype=torch.float64) * 4 - 2).requires_grad_()
    for r in ("none", "mean", "sum"):
        assert torch.autograd.gradcheck(fast_mode=True, func=
            lambda a, b: genfast.vae.kl_divergence(a, b, reduction=r, backend=backend),
            inputs=(x0, lv))
    assert torch.autograd.gradcheck(fast_mode=True, func=
        lambda a, b: genfast.vae.reparameterize(a, b, seed=7, stream=1, backend=backend),
        inputs=(x0, lv))


@pytest.mark.parametrize("backend", KERNELS)
def test_backward_matches_reference_fp32(backend):
    _, g = ddpm()
    dev = DEV[backend]
    t = torch.tensor([5, 700, 999], device=dev)

    def run(b):
        x0 = batch(device=dev).requires_grad_()
        pred = batch(seed=2, device=dev).requires_grad_()
        x_t, noise, target = genfast.add_noise(x0, t, g, seed=3, prediction_type="v_prediction",
                                               backend=b)
        loss = genfast.diffusion_loss(pred * x_t, target, t, g, weighting="min_snr",
                                      prediction_type="v_prediction", backend=b)
        mu = batch(seed=4, device=dev).requires_grad_()
        lv = batch(seed=5, device=dev).requires_grad_()
        z = genfast.vae.reparameterize(mu, lv, seed=1, backend=b)
        total = loss + (z * z).mean() + 1e-3 * genfast.vae.kl_divergence(mu, lv, backend=b)
        total.backward()
        return x0.grad, pred.grad, mu.grad, lv.grad

    # the reference draws its own noise (same stream, other rounding): compare at 1e-4
    for a, b in zip(run(backend), run("reference")):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", KERNELS)
def test_reparameterize_backward_of_a_sum(backend):
    # z.sum() hands the backward one value expanded over z (stride 0): the
    # kernel reads it as one value instead of a contiguous copy
    dev = DEV[backend]
    lv = (torch.rand(3, 4, 5, 7, device=dev) * 80 - 40).requires_grad_()  # outside the clamp too

    def grad(b, scale):
        mu = batch(seed=4, device=dev).requires_grad_()
        (scale * genfast.vae.reparameterize(mu, lv, seed=1, backend=b).sum()).backward()
        out = mu.grad, lv.grad
        lv.grad = None
        return out

    for scale in (1.0, -2.5):
        for a, b in zip(grad(backend, scale), grad("reference", scale)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- fused CPU backward

@pytest.mark.skipif("cpu" not in KERNELS, reason="needs the cpu backend")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cpu_fused_backward(dtype, reduction):
    """On the CPU the forwards write the gradient for an upstream grad of one
    and the backward hands it on or scales it: it must equal the backward ops
    for grads of one and others, with retain_graph (buffers reused twice) and
    create_graph, and leave the saved buffers alone for a second backward."""
    _, g = ddpm()
    t = torch.tensor([0, 500, 999])
    table = g.table("cpu")
    r = {"none": 0, "mean": 1, "sum": 2}[reduction]
    ops = torch.ops.genfast
    # float16 with a grad other than one: the buffer is rounded, then scaled
    # and rounded again (up to an ulp or two more than the backward ops)
    tol = dict(rtol=1e-2, atol=2e-3) if dtype == torch.float16 else dict(rtol=1e-6, atol=1e-7)
    pred = batch(dtype=dtype).requires_grad_()
    target = batch(dtype=dtype, seed=1).requires_grad_()
    mu = batch(dtype=dtype, seed=2).requires_grad_()
    lv = (batch(dtype=dtype, seed=3) * 20).requires_grad_()  # some outside the clamp
    for scale in (1.0, -2.5):
        for retain in (False, True):
            loss = genfast.diffusion_loss(pred, target, t, g, weighting="min_snr",
                                          reduction=reduction, backend="cpu")
            kl = genfast.vae.kl_divergence(mu, lv, reduction=reduction, backend="cpu")
            z = genfast.vae.reparameterize(mu, lv, seed=5, backend="cpu")
            gl = torch.full_like(loss, scale)
            gz = torch.full_like(z, scale).expand_as(z) if scale != 1.0 else torch.ones(()).expand(z.shape)
            want_p = ops.training_diffusion_loss_backward(gl, pred.detach(), target.detach(), t,
                                                          table, 0, 1, 0, 5.0, 0.5, r)
            want_m, want_v = ops.training_kl_divergence_backward(gl, mu.detach(), lv.detach(), r)
            _, d = ops.training_reparameterize(mu.detach(), lv.detach(), 5, 0, 0)
            want_v = want_v + ops.training_reparameterize_backward(gz.to(dtype), lv.detach(), d)
            want_m = want_m + gz.to(dtype)
            torch.autograd.backward([loss, kl, z], [gl, gl, gz.to(dtype)], retain_graph=retain)
            if retain:  # a second backward reads the same saved buffers: twice the grads
                torch.autograd.backward([loss, kl, z], [gl, gl, gz.to(dtype)])
            k = 2 if retain else 1
            torch.testing.assert_close(pred.grad, k * want_p, **tol)
            torch.testing.assert_close(target.grad, -k * want_p, **tol)
            torch.testing.assert_close(mu.grad, k * want_m, **tol)
            torch.testing.assert_close(lv.grad, k * want_v, **tol)
            pred.grad = target.grad = mu.grad = lv.grad = None
    # create_graph: the first-order grads are the same
    kl = genfast.vae.kl_divergence(mu, lv, reduction=reduction, backend="cpu")
    gm, gv = torch.autograd.grad(kl.sum(), (mu, lv), create_graph=True)
    wm, wv = ops.training_kl_divergence_backward(torch.ones_like(kl), mu.detach(), lv.detach(), r)
    torch.testing.assert_close(gm, wm, **tol)
    torch.testing.assert_close(gv, wv, **tol)


# ---------------------------------------------------------------- opcheck / compile

def _op_samples(device):
    _, g = ddpm()
    table = g.table(device)
    f = dict(device=device)
    x = torch.randn(3, 5, 4, **f).transpose(1, 2)  # non-contiguous
    y = torch.randn(3, 4, 5, **f)[:, :, :]
    y2 = torch.randn(3, 4, 10, **f)[:, :, ::2]  # strided
    t = torch.tensor([0, 5, 999], **f)
    ts = torch.tensor([0.0, 0.5, 2.0], **f)
    xr = x.clone().requires_grad_()
    ops = torch.ops.genfast
    return [
        (ops.training_add_noise.default, (xr, y2, t, table, 0, 1)),
        (ops.training_add_noise.default, (xr, y2, ts, torch.zeros(0, 4, dtype=torch.float64, **f), 1, 1)),
        (ops.training_add_noise_seeded.default, (xr, t, table, 0, 0, 5, 3, 2)),
        (ops.training_add_noise_seeded.default, (xr, t, table, 0, 1, 5, 3, 2)),
        (ops.training_add_noise_backward.default, (x, y2, t, table, 0, 1, 0)),
        (ops.training_add_noise_backward.default, (None, y2, t, table, 0, 1, 1)),
        (ops.training_diffusion_loss.default, (xr, y2, t, table, 0, 1, 0, 5.0, 0.5, 1)),
        (ops.training_diffusion_loss.default, (xr, y2, t, table, 0, 0, 0, 5.0, 0.5, 0)),
        (ops.training_diffusion_loss_backward.default,
         (torch.ones(3, **f), x, y2, t, table, 0, 1, 1, 5.0, 0.5, 0)),
        (ops.training_kl_divergence.default, (xr, y2.clone().requires_grad_(), 2)),
        (ops.training_kl_divergence_backward.default, (torch.tensor(1.0, **f), x, y, 1)),
        (ops.training_reparameterize.default, (xr, y2.clone().requires_grad_(), 1, 2, 3)),
        (ops.training_reparameterize_backward.default, (x, y2, y)),
        (ops.training_reparameterize_sample.default, (xr, y2.clone().requires_grad_(), 1, 2, 3)),
    ]


@pytest.mark.parametrize("backend", KERNELS)
def test_opcheck(backend):
    for op, args in _op_samples(DEV[backend]):
        torch.library.opcheck(op, args)


@pytest.mark.slow
@pytest.mark.parametrize("backend", KERNELS)
def test_compile_training_step(backend):
    _, g = ddpm()
    dev = DEV[backend]
    torch._dynamo.reset()
    w = torch.randn(4, 4, device=dev, requires_grad=True)

    def step(x0, t, mu, lv, seed_stream):
        x_t, noise, target = genfast.add_noise(x0, t, g, seed=1234, stream=seed_stream,
                                               prediction_type="v_prediction", backend=backend)
        pred = torch.einsum("ij,bjk->bik", w, x_t)
        loss = genfast.diffusion_loss(pred, target, t, g, weighting="min_snr",
                                      prediction_type="v_prediction", backend=backend)
        z = genfast.vae.reparameterize(mu, lv, seed=9, stream=seed_stream, backend=backend)
        return loss + z.square().mean() + 1e-3 * genfast.vae.kl_divergence(mu, lv, backend=backend)

    compiled = torch.compile(step, fullgraph=True)
    x0 = torch.randn(2, 4, 6, device=dev)
    t = torch.tensor([3, 998], device=dev)
    mu = torch.randn(2, 4, 6, device=dev, requires_grad=True)
    lv = torch.randn(2, 4, 6, device=dev, requires_grad=True)
    for s in (0, 1):
        w.grad = mu.grad = None
        eager = step(x0, t, mu, lv, s)
        eager.backward()
        ge = (w.grad.clone(), mu.grad.clone())
        w.grad = mu.grad = None
        out = compiled(x0, t, mu, lv, s)
        out.backward()
        torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w.grad, ge[0], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(mu.grad, ge[1], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- errors

def test_bad_input_errors():
    d, g = ddpm()
    x0 = torch.randn(2, 3, 4)
    t = torch.tensor([1, 2])
    for backend in BACKENDS:
        if DEV[backend] != "cpu":
            continue
        kw = dict(backend=backend)
        with pytest.raises(ValueError, match=r"timesteps\[1\] = 1000.*out of range"):
            genfast.add_noise(x0, torch.tensor([0, 1000]), g, seed=1, **kw)
        with pytest.raises(ValueError, match=r"timesteps\[0\] = -1"):
            genfast.diffusion_loss(x0, x0, torch.tensor([-1, 3]), g, **kw)
        with pytest.raises(TypeError, match="timesteps must be int64"):
            genfast.add_noise(x0, t.float(), g, seed=1, **kw)
        with pytest.raises(ValueError, match=r"timesteps must have shape \(2,\)"):
            genfast.add_noise(x0, torch.tensor([1, 2, 3]), g, seed=1, **kw)
        with pytest.raises(ValueError, match="noise has shape"):
            genfast.add_noise(x0, t, g, noise=torch.randn(2, 3, 5), **kw)
        with pytest.raises(ValueError, match="target has shape"):
            genfast.diffusion_loss(x0, torch.randn(2, 3, 5), t, g, **kw)
        with pytest.raises(ValueError, match="exactly one of noise= and seed=.*both"):
            genfast.add_noise(x0, t, g, noise=x0, seed=1, **kw)
        with pytest.raises(ValueError, match="neither"):
            genfast.add_noise(x0, t, g, **kw)
        with pytest.raises(TypeError, match="schedule must be a genfast.schedules.Schedule"):
            genfast.add_noise(x0, t, d, seed=1, **kw)
        with pytest.raises(ValueError, match="weighting must be one of"):
            genfast.diffusion_loss(x0, x0, t, g, weighting="snr", **kw)
        with pytest.raises(ValueError, match="prediction_type must be one of"):
            genfast.add_noise(x0, t, g, seed=1, prediction_type="eps", **kw)
        with pytest.raises(ValueError, match="reduction must be one of"):
            genfast.vae.kl_divergence(x0, x0, reduction="batchmean", **kw)
        with pytest.raises(TypeError, match="noise is torch.float16"):
            genfast.add_noise(x0, t, g, noise=x0.half(), **kw)
        with pytest.raises(TypeError, match="x0 must be float32"):
            genfast.add_noise(x0.int(), t, g, seed=1, **kw)
        with pytest.raises(ValueError, match="x0 needs a batch dimension"):
            genfast.add_noise(torch.randn(2), t, g, seed=1, **kw)
        with pytest.raises(ValueError, match="edm"):
            genfast.diffusion_loss(x0, x0, t, g, weighting="edm", **kw)
        flow = S.from_config({"shift": 3.0})
        with pytest.raises(ValueError, match=r"out of range.*\[0, 1\]"):
            genfast.add_noise(x0, torch.tensor([0.5, 1.5]), flow, seed=1, **kw)
        with pytest.raises(ValueError, match="v_prediction"):
            genfast.add_noise(x0, torch.tensor([0.5, 0.5]), flow, seed=1,
                              prediction_type="v_prediction", **kw)


def test_raw_op_checks_timesteps():
    if "cpu" not in BACKENDS:
        pytest.skip("no cpu backend")
    _, g = ddpm()
    x0 = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"timesteps\[1\] = 1000 is out of range"):
        torch.ops.genfast.training_add_noise_seeded(x0, torch.tensor([0, 1000]), g.table("cpu"),
                                                    0, 0, 1, 0, 0)


# ---------------------------------------------------------------- GPU only

requires_cuda = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")


@requires_cuda
def test_cuda_out_of_range_timesteps_poison_their_item():
    # no host check on the GPU (it would sync): the item turns NaN, the others stay right
    _, g = ddpm()
    x0 = torch.randn(3, 4, 5, device="cuda")
    t = torch.tensor([5, 1000, -1], device="cuda")
    x_t, noise, target = genfast.add_noise(x0, t, g, seed=1, backend="cuda")
    assert torch.isfinite(x_t[0]).all() and torch.isnan(x_t[1:]).all()
    loss = genfast.diffusion_loss(x0, noise, t, g, reduction="none", backend="cuda")
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1:]).all()


@requires_cuda
def test_cuda_matches_cpu_bits_of_noise():
    _, g = ddpm()
    x0 = torch.randn(3, 4, 5)
    t = torch.tensor([5, 10, 999])
    cpu = genfast.add_noise(x0, t, g, seed=3, stream=2, backend="cpu")[1]
    gpu = genfast.add_noise(x0.cuda(), t.cuda(), g, seed=3, stream=2, backend="cuda")[1]
    assert torch.equal(cpu, gpu.cpu())


@requires_cuda
def test_cuda_training_step_captures_in_a_graph():
    _, g = ddpm()
    x0 = torch.randn(4, 4, 8, 8, device="cuda")
    t = torch.randint(0, 1000, (4,), device="cuda")
    g.table("cuda")

    def step():
        x_t, noise, target = genfast.add_noise(x0, t, g, seed=1, prediction_type="v_prediction")
        return genfast.diffusion_loss(x_t, target, t, g, weighting="min_snr",
                                      prediction_type="v_prediction")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, step())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_bench_suite_cases_run_in_half_dtypes(dtype):
    """The training suite builds in float16 / bfloat16 and its eager providers
    run once (timing is `genfast bench --suite training`'s job)."""
    from genfast.bench import training as bench_training
    for case in bench_training.cases(torch.device("cpu"), sizes=[1024], dtype=dtype):
        for p in case.providers:
            if not p.skip and "compile" not in p.name:
                p.make()()
