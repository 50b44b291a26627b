"""Training suite: the fused training ops against the code a training loop
runs today (float32 unless ``dtype`` says otherwise; latents of 1x4x64x64,
1x4x128x128, 16x4x64x64 and 16x4x128x128 = 1M elements, the size of the
issue's targets; other ``sizes``: see `_shape`). Quick mode times
torch.compile at 1M only and the reference (slow: Philox in int64 torch ops)
at the two single-latent sizes only.

Cases (mode "fwd" or "fwd+bwd"):
* add_noise: in-kernel noise + x_t + v target. Providers: "genfast";
  "randn_like+diffusers" (``noise = torch.randn_like(x0)``, then diffusers'
  ``DDPMScheduler.add_noise`` and ``get_velocity``, when diffusers is
  installed; else the same formulas in eager PyTorch, "randn_like+eager");
  "torch.compile(...)" of that same code; "genfast[reference]".
  Bytes moved: read x0, write x_t, noise, target (16 B per element in
  float32; every byte count here scales with the dtype's size).
* min_snr_loss fwd+bwd: ``mse_loss(reduction="none").mean(features) * w``,
  w = min(snr, 5)/snr, ``.mean()``, backward to pred. Providers: "genfast",
  "eager", "torch.compile(eager)", "genfast[reference]". Bytes: the least any
  implementation moves: read pred and target, write the gradient (12 B per
  element in float32; the older count of 20 assumed a second read in the
  backward, which the CPU kernels no longer do).
* reparam+kl fwd+bwd: z = mu + exp(lv/2) eps with fresh noise, KL summed,
  backward of z.sum() + kl to mu and logvar. Providers as for the loss, eager
  drawing with ``torch.randn_like``, plus "genfast (fused reparameterize_kl)":
  the pair as one op (genfast.vae.reparameterize_kl, one forward pass, one
  backward pass giving each gradient once); "genfast" calls the two ops. Bytes: the least any implementation
  moves: read mu and lv, write z and the two gradients (20 B per element in
  float32; the noise is drawn in the kernel). The older count of 56 summed
  the passes of one particular implementation and flattered the floor.
* overhead: add_noise (given noise) on one (1, 4, 8, 8) latent, the Python
  wrapper against the raw ``torch.ops.genfast`` call (no floor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import genfast
from .. import schedules as S
from .runner import Case, Provider

CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
          "beta_end": 0.012, "prediction_type": "v_prediction"}
QUICK_SIZES = (1 << 14, 1 << 16, 1 << 18, 1 << 20)
FULL_SIZES = (1 << 14, 1 << 16, 1 << 18, 1 << 20, 4 << 20)
LARGE = 1 << 20  # torch.compile in quick mode: at the targets' size only
REFERENCE_MAX = 1 << 16  # the reference in quick mode: up to this size
REFERENCE_REPS = 5


def _shape(n: int):
    """Latents of n elements: 16 x 4 x 128 x 128 at 1M, else batches of 4 x 64 x 64
    (or one item of 4 x n/4 below that)."""
    if n == 1 << 20:
        return (16, 4, 128, 128)
    if n == 1 << 16:
        return (1, 4, 128, 128)
    if n % 16384 == 0:
        return (n // 16384, 4, 64, 64)
    return (1, 4, max(1, n // 4))


def _diffusers_scheduler():
    try:
        from diffusers import DDPMScheduler
    except ImportError:
        return None
    return DDPMScheduler(**{k: v for k, v in CONFIG.items() if k != "prediction_type"})


def _inputs(n, device, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shape = _shape(n)
    x = torch.randn(shape, generator=g).to(device, dtype)
    t = torch.randint(0, 1000, (shape[0],), generator=g).to(device)
    return x, t


def _esize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def _providers(n, full, genfast_, name, today):
    """genfast, today's code, its torch.compile (quick: at LARGE only) and
    the reference (quick: up to REFERENCE_MAX, a few repetitions)."""
    out = [Provider("genfast", genfast_()), Provider(name, today(False))]
    if full or n == LARGE:
        out.append(Provider(f"torch.compile({name})", today(True)))
    if full or n <= REFERENCE_MAX:
        out.append(Provider("genfast[reference]", genfast_("reference"),
                            max_reps=None if full else REFERENCE_REPS))
    return out


# ---------------------------------------------------------------- add_noise

def _today_add_noise(sched, device):
    if sched is not None:
        def f(x0, t):
            noise = torch.randn_like(x0)
            return sched.add_noise(x0, noise, t), noise, sched.get_velocity(x0, noise, t)
        return f
    ac = S.from_config(CONFIG).alphas_cumprod.float().to(device)

    def f(x0, t):
        noise = torch.randn_like(x0)
        a = ac[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
        return a * x0 + s * noise, noise, a * noise - s * x0
    return f


def _add_noise_cases(n, device, full, dtype=torch.float32):
    sched = _diffusers_scheduler()
    name = "randn_like+diffusers" if sched is not None else "randn_like+eager"
    g = S.from_config(CONFIG)

    def genfast_(backend=None):
        def make():
            x0, t = _inputs(n, device, dtype=dtype)
            g.table(device)
            return lambda: genfast.add_noise(x0, t, g, seed=1234, stream=1,
                                             prediction_type="v_prediction", backend=backend)
        return make

    def today(compiled):
        def make():
            x0, t = _inputs(n, device, dtype=dtype)
            f = _today_add_noise(sched, device)
            if compiled:
                f = torch.compile(f, dynamic=False)
                f(x0, t)
            return lambda: f(x0, t)
        return make

    providers = _providers(n, full, genfast_, name, today)
    return Case("training", "add_noise", n, "fwd", providers, bytes_moved=4 * _esize(dtype) * n)


# ---------------------------------------------------------------- min-SNR loss

def _eager_loss(ac):
    def f(pred, target, t):
        a = ac[t]
        snr = a / (1 - a)
        w = torch.clamp(snr, max=5.0) / snr
        loss = F.mse_loss(pred, target, reduction="none").mean(dim=list(range(1, pred.dim())))
        loss = (loss * w).mean()
        loss.backward()
        return loss
    return f


def _loss_case(n, device, full, dtype=torch.float32):
    g = S.from_config(CONFIG)
    ac = g.alphas_cumprod.float().to(device)

    def make_inputs():
        pred, t = _inputs(n, device, dtype=dtype)
        target, _ = _inputs(n, device, seed=1, dtype=dtype)
        return pred.requires_grad_(), target, t

    def genfast_(backend=None):
        def make():
            pred, target, t = make_inputs()
            g.table(device)

            def step():
                loss = genfast.diffusion_loss(pred, target, t, g, weighting="min_snr",
                                              backend=backend)
                loss.backward()
                pred.grad = None
                return loss
            return step
        return make

    def eager(compiled):
        def make():
            pred, target, t = make_inputs()
            f = _eager_loss(ac)
            if compiled:
                f = torch.compile(f, dynamic=False)
                f(pred, target, t)

            def step():
                out = f(pred, target, t)
                pred.grad = None
                return out
            return step
        return make

    providers = _providers(n, full, genfast_, "eager", eager)
    return Case("training", "min_snr_loss", n, "fwd+bwd", providers,
                bytes_moved=3 * _esize(dtype) * n)


# ---------------------------------------------------------------- VAE

def _eager_vae(mu, lv):
    z = mu + torch.exp(0.5 * lv) * torch.randn_like(mu)
    kl = -0.5 * torch.sum(1 + lv - mu.pow(2) - lv.exp())
    (z.sum() + kl).backward()
    return kl


def _vae_case(n, device, full, dtype=torch.float32):
    def make_inputs():
        mu, _ = _inputs(n, device, dtype=dtype)
        lv, _ = _inputs(n, device, seed=1, dtype=dtype)
        return mu.requires_grad_(), lv.requires_grad_()

    def genfast_(backend=None):
        def make():
            mu, lv = make_inputs()

            def step():
                z = genfast.vae.reparameterize(mu, lv, seed=7, backend=backend)
                kl = genfast.vae.kl_divergence(mu, lv, backend=backend)
                (z.sum() + kl).backward()
                mu.grad = lv.grad = None
                return kl
            return step
        return make

    def eager(compiled):
        def make():
            mu, lv = make_inputs()
            f = _eager_vae
            if compiled:
                f = torch.compile(f, dynamic=False)
                f(mu, lv)

            def step():
                out = f(mu, lv)
                mu.grad = lv.grad = None
                return out
            return step
        return make

    def fused():
        def make():
            mu, lv = make_inputs()

            def step():
                z, kl = genfast.vae.reparameterize_kl(mu, lv, seed=7)
                (z.sum() + kl).backward()
                mu.grad = lv.grad = None
                return kl
            return step
        return make

    providers = _providers(n, full, genfast_, "eager", eager)
    providers.insert(1, Provider("genfast (fused reparameterize_kl)", fused()))
    return Case("training", "reparam+kl", n, "fwd+bwd", providers,
                bytes_moved=5 * _esize(dtype) * n)


# ---------------------------------------------------------------- wrapper overhead

def _overhead_case(device):
    g = S.from_config(CONFIG)
    n = 4 * 8 * 8

    def make(raw):
        def build():
            x0 = torch.randn(1, 4, 8, 8, device=device)
            noise = torch.randn_like(x0)
            t = torch.tensor([500], device=device)
            table = g.table(device)
            if raw:
                op = torch.ops.genfast.training_add_noise.default
                return lambda: op(x0, noise, t, table, 0, 1)
            return lambda: genfast.add_noise(x0, t, g, noise=noise, prediction_type="v_prediction")
        return build

    return Case("training", "add_noise overhead", n, "fwd",
                [Provider("genfast", make(False)), Provider("raw torch.ops", make(True))])


def cases(device, full: bool = False, sizes=None, dtype=torch.float32) -> list[Case]:
    """The training cases on ``device`` in ``dtype`` (float32, float16, bfloat16)."""
    device = torch.device(device)
    every = full or bool(sizes)  # asked for sizes: every provider at each
    sizes = tuple(sizes) if sizes else (FULL_SIZES if full else QUICK_SIZES)
    out = []
    for n in sizes:
        out += [_add_noise_cases(n, device, every, dtype),
                _loss_case(n, device, every, dtype), _vae_case(n, device, every, dtype)]
    out.append(_overhead_case(device))
    return out
