"""Four 2-D densities, generated in code from a seed (no downloads).

All live roughly in [-4, 4]^2, the plotting window. Each sampler takes
``(n, generator)`` and returns an (n, 2) float32 tensor; `split` draws the
training and held-out sets from two fixed seeds, so every run and every model
sees the same points.
"""

from __future__ import annotations

import math

import torch

LIMIT = 4.5  # plotting window [-LIMIT, LIMIT]^2

# eight Gaussians on a ring (the mode-collapse benchmark of Metz et al. 2017,
# "Unrolled Generative Adversarial Networks"), here with radius 2.5, std 0.15
RING_RADIUS, RING_STD = 2.5, 0.15
RING_CENTERS = torch.tensor([[RING_RADIUS * math.cos(2 * math.pi * k / 8),
                              RING_RADIUS * math.sin(2 * math.pi * k / 8)] for k in range(8)])


def eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    return RING_CENTERS[k] + RING_STD * torch.randn(n, 2, generator=g)


def two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    """Two interleaved half circles (the shape of scikit-learn's make_moons),
    centred and scaled by 2, Gaussian jitter 0.1 before scaling."""
    upper = torch.rand(n, generator=g) < 0.5
    t = math.pi * torch.rand(n, generator=g)
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x - 0.5, y - 0.25], 1) + 0.1 * torch.randn(n, 2, generator=g)
    return 2.0 * pts


def checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    """Uniform on the 8 black cells of a 4 x 4 board of side-2 squares over
    [-4, 4]^2 (cells (i, j) with i + j even)."""
    cell = torch.randint(0, 8, (n,), generator=g)
    row = cell // 2
    col = 2 * (cell % 2) + row % 2  # the even-parity column in this row
    offset = torch.rand(n, 2, generator=g)
    return torch.stack([col, row], 1).float() * 2.0 - 4.0 + 2.0 * offset


def two_spirals(n: int, g: torch.Generator) -> torch.Tensor:
    """Two interleaved Archimedean spirals (one turn and a half each), the
    second the first rotated by pi, Gaussian jitter 0.1. Radius grows as
    sqrt(u) so points spread evenly along the arm."""
    u = torch.rand(n, generator=g)
    theta = 3 * math.pi * torch.sqrt(u) + 0.5
    r = theta / (3 * math.pi + 0.5) * 3.8
    sign = torch.where(torch.rand(n, generator=g) < 0.5, 1.0, -1.0)
    pts = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], 1) * sign[:, None]
    return pts + 0.1 * torch.randn(n, 2, generator=g)


DENSITIES = {
    "eight_gaussians": eight_gaussians,
    "two_moons": two_moons,
    "checkerboard": checkerboard,
    "two_spirals": two_spirals,
}
TITLES = {"eight_gaussians": "8 Gaussians", "two_moons": "two moons",
          "checkerboard": "checkerboard", "two_spirals": "two spirals"}

TRAIN_SEED, TEST_SEED = 1234, 5678


def sample(name: str, n: int, seed: int) -> torch.Tensor:
    if name not in DENSITIES:
        raise ValueError(f"density must be one of {', '.join(DENSITIES)}, got {name!r}")
    g = torch.Generator().manual_seed(seed)
    return DENSITIES[name](n, g).float()


def split(name: str, n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held_out): independent draws from two fixed seeds (one per set,
    the same for every density, offset by the density's index)."""
    k = list(DENSITIES).index(name)
    return sample(name, n_train, TRAIN_SEED + k), sample(name, n_test, TEST_SEED + k)
