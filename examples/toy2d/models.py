"""The five model families of the comparison, small MLPs on 2-D points, and
the two ways of running their training: with genfast's ops, or with the
eager PyTorch a user would otherwise write (`GenfastOps` / `EagerOps`).

Every model has ``train_step(batch, it) -> loss`` (one optimiser step on a
batch, ``it`` the iteration: the noise stream index) and
``sample(n, seed) -> (n, 2)``; the flows add ``log_prob``, the VAE ``elbo``.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

import genfast
import genfast.flows as gflows


# ---------------------------------------------------------------- op sets

class GenfastOps:
    """genfast's fused ops: in-kernel noise from the counter-based stream."""

    name = "genfast"

    def __init__(self, seed: int):
        self.seed = seed

    def randn(self, shape, stream: int) -> torch.Tensor:
        return genfast.randn(shape, seed=self.seed, stream=stream)

    def add_noise(self, x0, t, schedule, stream: int):
        x_t, _, target = genfast.add_noise(x0, t, schedule, seed=self.seed, stream=stream)
        return x_t, target

    def diffusion_loss(self, pred, target, t, schedule):
        return genfast.diffusion_loss(pred, target, t, schedule)

    def reparameterize(self, mu, logvar, stream: int):
        return genfast.vae.reparameterize(mu, logvar, seed=self.seed, stream=stream)

    def kl(self, mu, logvar):
        return genfast.vae.kl_divergence(mu, logvar, reduction="mean")

    def flows(self):
        return contextlib.nullcontext()


class EagerOps:
    """The same maths in the plain PyTorch a training script would contain
    (torch.randn noise, textbook formulas), and the flow layers on genfast's
    pure-PyTorch reference backend (the spline and coupling maths written
    out in tensor ops, as nflows does)."""

    name = "eager"

    def __init__(self, seed: int):
        self.gen = torch.Generator().manual_seed(seed)

    def randn(self, shape, stream: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen)

    def add_noise(self, x0, t, schedule, stream: int):
        table = schedule.table(x0.device).to(x0.dtype)  # [sqrt(abar), sqrt(1 - abar), ...]
        eps = torch.randn(x0.shape, generator=self.gen)
        return table[t, 0:1] * x0 + table[t, 1:2] * eps, eps

    def diffusion_loss(self, pred, target, t, schedule):
        return F.mse_loss(pred, target)

    def reparameterize(self, mu, logvar, stream: int):
        return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=self.gen)

    def kl(self, mu, logvar):
        return (0.5 * (mu * mu + logvar.exp() - 1 - logvar)).sum(1).mean()

    def flows(self):
        return genfast.use_backend("reference")


OPS = {"genfast": GenfastOps, "eager": EagerOps}


def mlp(n_in: int, n_out: int, hidden: int, layers: int, act=nn.SiLU) -> nn.Sequential:
    mods, width = [], n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, n_out))


# ---------------------------------------------------------------- VAE

class VAE(nn.Module):
    """Gaussian encoder q(z|x) and decoder p(x|z) = N(dec(z), diag(sigma_x^2))
    with a learned global sigma_x (Kingma & Welling 2014); 2-D latent.
    Trained on the negative ELBO; samples are decoder draws (mean + noise),
    the model's actual distribution."""

    def __init__(self, ops, hidden=128, layers=3, latent=2, lr=1e-3):
        super().__init__()
        self.ops, self.latent = ops, latent
        self.enc = mlp(2, 2 * latent, hidden, layers)
        self.dec = mlp(latent, 2, hidden, layers)
        self.log_sigma_x = nn.Parameter(torch.zeros(2))
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def _log_lik(self, x, z):
        mean = self.dec(z)
        r = (x - mean) * torch.exp(-self.log_sigma_x)
        return (-0.5 * r * r - self.log_sigma_x - 0.5 * math.log(2 * math.pi)).sum(1)

    def train_step(self, x, it):
        mu, logvar = self.enc(x).chunk(2, 1)
        z = self.ops.reparameterize(mu, logvar, stream=it)
        loss = -self._log_lik(x, z).mean() + self.ops.kl(mu, logvar)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def elbo(self, x, draws: int = 16, seed: int = 99) -> torch.Tensor:
        """Per-point ELBO (nats): mean over ``draws`` posterior samples of
        log p(x|z), minus the closed-form KL(q(z|x) || N(0, I))."""
        mu, logvar = self.enc(x).chunk(2, 1)
        ll = torch.stack([self._log_lik(x, genfast.vae.reparameterize(
            mu, logvar, seed=seed, stream=k)) for k in range(draws)]).mean(0)
        return ll - genfast.vae.kl_divergence(mu, logvar, reduction="none")

    @torch.no_grad()
    def sample(self, n, seed):
        z = genfast.randn((n, self.latent), seed=seed, stream=0)
        return self.dec(z) + torch.exp(self.log_sigma_x) * genfast.randn((n, 2), seed=seed,
                                                                         stream=1)


# ---------------------------------------------------------------- GAN

class GAN(nn.Module):
    """Generator and discriminator MLPs with the non-saturating loss of
    Goodfellow et al. 2014 (G maximises log D(G(z))); latent z ~ N(0, I_8)
    from genfast.randn (torch.randn in the eager run)."""

    def __init__(self, ops, hidden=128, layers=3, latent=8, lr=2e-4):
        super().__init__()
        self.ops, self.latent = ops, latent
        self.gen = mlp(latent, 2, hidden, layers, nn.ReLU)
        # He init keeps the generator's output spread at ~1 (PyTorch's default
        # shrinks it ~3x per layer): a generator that starts as one tight blob
        # is pushed around whole by D and collapses to a mode hopping around.
        for m in self.gen.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.disc = mlp(2, 1, hidden, layers, lambda: nn.LeakyReLU(0.2))
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.9))

    def train_step(self, x, it):
        n = x.shape[0]
        fake = self.gen(self.ops.randn((n, self.latent), stream=2 * it))
        d_loss = F.softplus(-self.disc(x)).mean() + F.softplus(self.disc(fake.detach())).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        fake = self.gen(self.ops.randn((n, self.latent), stream=2 * it + 1))
        g_loss = F.softplus(-self.disc(fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return g_loss.detach()

    @torch.no_grad()
    def sample(self, n, seed):
        return self.gen(genfast.randn((n, self.latent), seed=seed, stream=0))


# ---------------------------------------------------------------- flows

class Flow(nn.Module):
    """A normalizing flow x -> z on genfast.flows layers: ActNorm, then
    ``couplings`` coupling layers with alternating masks, each followed by
    an ActNorm. log p(x) = log N(f(x); 0, I) + log|det df/dx| (exact);
    samples are f^{-1}(z). ``kind``: "realnvp" (affine couplings, Dinh et al.
    2017, FrEIA's atan soft clamp of the log-scale at +-2) or "spline"
    (rational-quadratic splines with linear tails, Durkan et al. 2019)."""

    def __init__(self, ops, kind="realnvp", hidden=128, couplings=None, bins=8, lr=1e-3):
        super().__init__()
        self.ops = ops
        couplings = couplings or (6 if kind == "realnvp" else 4)
        layers = [gflows.ActNorm(2)]
        for k in range(couplings):
            mask = torch.tensor([1.0, 0.0]) if k % 2 == 0 else torch.tensor([0.0, 1.0])
            net = gflows.simple_net(hidden, 2)
            if kind == "realnvp":
                layers.append(gflows.AffineCoupling(mask, net, activation="atan", clamp=2.0))
            elif kind == "spline":
                layers.append(gflows.RQSplineCoupling(mask, net, num_bins=bins, tails="linear",
                                                      tail_bound=4.0))
            else:
                raise ValueError(f"kind must be realnvp or spline, got {kind!r}")
            layers.append(gflows.ActNorm(2))
        self.flow = gflows.Sequential(*layers)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def log_prob(self, x):
        z, lad = self.flow(x)
        return gflows.standard_normal_log_prob(z) + lad

    def train_step(self, x, it):
        with self.ops.flows():
            loss = -self.log_prob(x).mean()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def sample(self, n, seed):
        x, _ = self.flow.inverse(genfast.randn((n, 2), seed=seed, stream=0))
        return x


# ---------------------------------------------------------------- diffusion

def timestep_embedding(t: torch.Tensor, dim: int = 32, period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features of the (float) timestep, as in DDPM's U-Net."""
    half = dim // 2
    freqs = torch.exp(-math.log(period) * torch.arange(half, dtype=torch.float32) / half)
    arg = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(arg), torch.cos(arg)], 1)


class EpsNet(nn.Module):
    """eps_theta(x_t, t): an MLP on [x_t, embedding(t)]."""

    def __init__(self, hidden=128, layers=3):
        super().__init__()
        self.net = mlp(2 + 32, 2, hidden, layers)

    def forward(self, x, t):
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return self.net(torch.cat([x, timestep_embedding(t)], 1))


DIFFUSION_SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear",
                      "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon"}


class Diffusion(nn.Module):
    """DDPM (Ho et al. 2020): eps-prediction on a 1000-step linear VP
    schedule, trained with genfast.add_noise (noise drawn in the kernel) and
    genfast.diffusion_loss (plain MSE weighting); sampled with genfast.sample."""

    def __init__(self, ops, hidden=128, layers=3, lr=1e-3, seed=0):
        super().__init__()
        self.ops = ops
        self.net = EpsNet(hidden, layers)
        self.schedule = genfast.schedules.from_config(DIFFUSION_SCHEDULE)
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.Adam(self.parameters(), lr=lr)

    def train_step(self, x0, it):
        t = torch.randint(0, self.schedule.num_train_timesteps, (x0.shape[0],),
                          generator=self.gen)
        x_t, target = self.ops.add_noise(x0, t, self.schedule, stream=it)
        loss = self.ops.diffusion_loss(self.net(x_t, t), target, t, self.schedule)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def sample(self, n, seed, sampler="ddpm", steps=1000):
        return genfast.sample(self.net, (n, 2), sampler=sampler, steps=steps,
                              schedule=self.schedule, seed=seed)


MODELS = {
    "vae": lambda ops: VAE(ops),
    "gan": lambda ops: GAN(ops),
    "realnvp": lambda ops: Flow(ops, "realnvp"),
    "spline_flow": lambda ops: Flow(ops, "spline"),
    "diffusion": lambda ops: Diffusion(ops),
}
TITLES = {"vae": "VAE", "gan": "GAN", "realnvp": "RealNVP", "spline_flow": "RQ-spline flow",
          "diffusion": "diffusion"}
# (sampler, steps) of genfast.sample for the diffusion rows
DIFFUSION_SAMPLERS = [("ddpm", 1000), ("ddim", 50), ("dpmpp_2m", 20), ("dpmpp_2m", 10)]

