"""Train a small RealNVP and a small spline flow on a 2-D toy density (two
moons) for N steps, once with nflows 0.14's coupling layers and once with the
genfast.nflows drop-ins (the same model: only the import differs), and print
the wall time of each and the ratio.

    python benchmarks/flows_toy_train.py [--steps 300] [--batch 512] [--threads 2]

Same seed, same data and the same initial weights for both; the final
negative log-likelihoods are printed to show they train alike.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from nflows.nn import nets
from nflows.transforms import coupling as nf_coupling
from nflows.transforms.base import CompositeTransform
from nflows.transforms.permutations import ReversePermutation

import genfast.nflows as gnf


def two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    t = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x, y], 1) + 0.05 * torch.randn(n, 2, generator=g)


def net(i, o):
    return nets.ResidualNet(i, o, hidden_features=64, num_blocks=2)


def build(lib, kind: str, layers: int = 6):
    mods = []
    for k in range(layers):
        mask = torch.tensor([k % 2, 1 - k % 2])
        if kind == "realnvp":
            mods.append(lib.AffineCouplingTransform(mask, net))
        else:
            mods.append(lib.PiecewiseRationalQuadraticCouplingTransform(
                mask, net, num_bins=8, tails="linear", tail_bound=4.0))
        mods.append(ReversePermutation(2))
    return CompositeTransform(mods)


def nll(transform, x):
    z, lad = transform(x)
    return (0.5 * (z * z).sum(1) + math.log(2 * math.pi) - lad).mean()


def train(transform, steps, batch, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(transform.parameters(), lr=1e-3)
    data = [two_moons(batch, g) for _ in range(steps)]
    t0 = time.perf_counter()
    for x in data:
        opt.zero_grad(set_to_none=True)
        loss = nll(transform, x)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, loss.item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.steps} steps, batch {args.batch}, {args.threads} threads, torch {torch.__version__}")
    for kind in ("realnvp", "spline"):
        torch.manual_seed(0)
        ref = build(nf_coupling, kind)
        ours = build(gnf, kind)
        ours.load_state_dict(ref.state_dict())
        train(ref, 5, args.batch, 1)  # warm-up on both, then restore the same start
        start = {k: v.clone() for k, v in ref.state_dict().items()}
        train(ours, 5, args.batch, 1)
        ours.load_state_dict(start)
        ref.load_state_dict(start)
        t_ref, l_ref = train(ref, args.steps, args.batch, 2)
        t_ours, l_ours = train(ours, args.steps, args.batch, 2)
        print(f"{kind:8s} nflows {t_ref:7.2f} s (final NLL {l_ref:.3f})  genfast.nflows "
              f"{t_ours:7.2f} s (final NLL {l_ours:.3f})  ratio {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
