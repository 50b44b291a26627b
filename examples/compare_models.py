"""VAE, GAN, RealNVP, a spline flow and a diffusion model on the same 2-D
densities, trained with genfast's ops in ordinary PyTorch training loops.

    python examples/compare_models.py --out compare_out --quick   # < 3 min, 2 CPU cores
    python examples/compare_models.py --out compare_out           # full, < 30 min

Writes DIR/report.md (one table: energy distance to held-out data, mode
coverage, exact NLL of the flows, ELBO of the VAE, training time with genfast
and with eager PyTorch, sampling latency) and DIR/samples.png (rows: models,
columns: densities, samples over the true density). The diffusion model is
sampled with genfast.sample at DDPM 1000, DDIM 50 and DPM++ 2M 20 and 10 steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genfast  # noqa: E402
from toy2d import data, metrics, models, report  # noqa: E402

# Training iterations per model (batch 256, Adam). The per-iteration costs
# differ by model (a RealNVP step is ~5 diffusion steps), so the counts give
# each model a similar share of the time; diffusion gets the most steps because
# its regression loss needs them. Data sizes; samples drawn per model (the
# energy distance uses at most `n_metric` of them).
SETTINGS = {
    "full": dict(iters={"vae": 1000, "gan": 1000, "realnvp": 600, "spline_flow": 600,
                        "diffusion": 2500},
                 batch=256, n_train=20_000, n_test=4_000, n_gen=10_000, n_metric=4_000,
                 speed_block=20, speed_rounds=2, speed_densities=None, ddpm_densities=None),
    "quick": dict(iters={"vae": 60, "gan": 60, "realnvp": 30, "spline_flow": 30,
                         "diffusion": 150},
                  batch=256, n_train=5_000, n_test=1_000, n_gen=500, n_metric=500,
                  speed_block=10, speed_rounds=2, speed_densities=1, ddpm_densities=1),
}
SAMPLER_LABELS = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp_2m": "DPM++ 2M"}


def _clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _new_model(name, ops_name, seed):
    torch.manual_seed(seed)  # the same init for the genfast and the eager model
    return models.MODELS[name](models.OPS[ops_name](seed))


def train(name: str, x: torch.Tensor, iters: int, batch: int, seed: int):
    """One model, genfast ops, from a fixed init on fixed batches; returns
    (model, per-iteration losses, wall seconds)."""
    model = _new_model(name, "genfast", seed)
    g = torch.Generator().manual_seed(seed + 1)
    losses = []
    model.train()
    t0 = time.perf_counter()
    for it in range(iters):
        idx = torch.randint(0, x.shape[0], (batch,), generator=g)
        losses.append(model.train_step(x[idx], it))
    wall = time.perf_counter() - t0
    model.eval()
    return model, torch.stack(losses).float(), wall


def train_speed(name: str, x: torch.Tensor, batch: int, seed: int, block: int, rounds: int):
    """Seconds per training iteration with genfast ops and with eager PyTorch:
    the same model (same init) trained in alternating blocks of ``block``
    iterations, ``rounds`` blocks each, the order swapped every round; the
    fastest block of each counts (least disturbed by other load). Returns
    (genfast s/iter, eager s/iter, eager losses finite)."""
    runs = {k: _new_model(name, k, seed) for k in ("genfast", "eager")}
    g = torch.Generator().manual_seed(seed + 1)
    batches = [x[torch.randint(0, x.shape[0], (batch,), generator=g)] for _ in range(block)]
    best = {k: math.inf for k in runs}
    finite = True
    it = {k: 0 for k in runs}
    for r in range(rounds + 1):  # round 0 warms up (allocator, first ActNorm call)
        for k in (("genfast", "eager") if r % 2 else ("eager", "genfast")):
            t0 = time.perf_counter()
            for b in batches:
                loss = runs[k].train_step(b, it[k])
                it[k] += 1
            dt = (time.perf_counter() - t0) / block
            finite = finite and bool(torch.isfinite(loss))
            if r:
                best[k] = min(best[k], dt)
    return best["genfast"], best["eager"], finite


def _progress(losses: torch.Tensor) -> tuple[float, float]:
    k = max(1, losses.numel() // 10)
    return float(losses[:k].mean()), float(losses[-k:].mean())


def evaluate(model, name, density, test, n_gen, n_metric, seed, notes, ddpm=True):
    """Rows of metrics for one trained model (one per sampler for diffusion)
    and the samples to plot; ``ddpm=False`` leaves out the 1000-step DDPM."""
    variants = ([(s, n) for s, n in models.DIFFUSION_SAMPLERS if ddpm or s != "ddpm"]
                if name == "diffusion" else [(None, None)])
    out = []
    for sampler, steps in variants:
        if sampler is None:
            x, wall = _clock(lambda: model.sample(n_gen, seed))
            label = models.TITLES[name]
        else:
            label = f"diffusion {SAMPLER_LABELS[sampler]} {steps}"
            try:
                x, wall = _clock(lambda: model.sample(n_gen, seed, sampler=sampler,
                                                      steps=steps))
            except (ValueError, NotImplementedError) as e:  # a sampler this genfast lacks
                note = f"{label}: not run, genfast.sample refused it ({e})"
                if note not in notes:
                    notes.append(note)
                continue
        row = {"density": density, "model": name, "label": label, "sampler": sampler,
               "steps": steps, "energy": metrics.energy_distance(x[:n_metric], test),
               "sample_s_10k": wall * 10_000 / n_gen}
        if density == "eight_gaussians":
            row["modes"], row["hq"] = metrics.mode_coverage(x, data.RING_CENTERS, data.RING_STD)
        with torch.no_grad():
            if isinstance(model, models.Flow):
                row["nll"] = float(-model.log_prob(test).mean())
            if isinstance(model, models.VAE):
                row["elbo"] = float(model.elbo(test).mean())
        out.append((row, x))
    return out


def run(densities, model_names, mode, out_dir, iters=None, speed=True, seed=0, n_gen=None,
        log=print):
    s = copy.deepcopy(SETTINGS[mode])
    s["mode"] = mode
    if iters:
        s["iters"].update(iters)
        s["mode"] = f"{mode}, --iters " + ",".join(f"{k}={v}" for k, v in iters.items())
    if n_gen:
        s["n_gen"] = n_gen
        s["n_metric"] = min(s["n_metric"], n_gen)
    os.makedirs(out_dir, exist_ok=True)
    rows, panels, energies, notes = [], {}, {}, []
    t_start = time.perf_counter()
    for di, density in enumerate(densities):
        train_x, test = data.split(density, s["n_train"], s["n_test"])
        timed = speed and (s["speed_densities"] is None or di < s["speed_densities"])
        for name in model_names:
            n_it = s["iters"][name]
            model, losses, wall = train(name, train_x, n_it, s["batch"], seed)
            first, last = _progress(losses)
            extra = {"iters": n_it, "train_s": wall, "loss_first": first, "loss_last": last}
            if timed:
                gf, eg, finite = train_speed(name, train_x, s["batch"], seed,
                                             s["speed_block"], s["speed_rounds"])
                extra.update(ms_iter_genfast=gf * 1e3, ms_iter_eager=eg * 1e3,
                             eager_finite=finite)
            if name == "gan":
                # Adversarial losses are no descent objective (G's loss rises as D
                # learns), so its progress is the distance of its samples to the
                # data, before and after training (results.json).
                fresh = _new_model(name, "genfast", seed).eval()
                x_init = fresh.sample(s["n_metric"], seed)
                extra["energy_init"] = metrics.energy_distance(x_init, test)
                extra["nn_dist_init"] = metrics.mean_nearest_distance(x_init, test)
                extra["nn_dist"] = metrics.mean_nearest_distance(
                    model.sample(s["n_metric"], seed), test)
            ddpm = s["ddpm_densities"] is None or di < s["ddpm_densities"]
            for row, x in evaluate(model, name, density, test, s["n_gen"], s["n_metric"], seed,
                                   notes, ddpm):
                row.update(extra)
                rows.append(row)
                panels[(row["label"], density)] = x
                energies[(row["label"], density)] = row["energy"]
                sp = (f"  ms/iter {extra['ms_iter_genfast']:.1f} vs eager "
                      f"{extra['ms_iter_eager']:.1f}" if timed else "")
                log(f"[{time.perf_counter() - t_start:6.1f}s] {density:15s} {row['label']:22s} "
                    f"ED {row['energy']:.4f}  train {wall:.1f}s ({n_it} it){sp}  "
                    f"loss {first:.3f} -> {last:.3f}  sample {row['sample_s_10k']:.2f}s/10k",
                    flush=True)
        panels[("data", density)] = test
    labels = list(dict.fromkeys(r["label"] for r in rows))
    if not speed:
        notes.append("The genfast-vs-eager training speed comparison was skipped (--no-speed).")
    elif s["speed_densities"] is not None and len(densities) > s["speed_densities"]:
        notes.append(f"Quick mode times genfast against eager training on the first "
                     f"{s['speed_densities']} density only.")
    if s["ddpm_densities"] is not None and len(densities) > s["ddpm_densities"]:
        notes.append(f"Quick mode samples DDPM 1000 on the first {s['ddpm_densities']} "
                     f"density only (its 1000 model calls dominate a quick run).")
    report.plot_grid(os.path.join(out_dir, "samples.png"), panels, labels, densities, energies)
    total = time.perf_counter() - t_start
    machine = (f"Machine: {_cpu_name()}, {torch.get_num_threads()} torch thread(s), "
               f"torch {torch.__version__}, genfast {genfast.__version__} (backend auto -> "
               f"{genfast.backend.resolve(None, torch.device('cpu'))}). Total run time "
               f"{total:.0f} s.")
    report.write_markdown(os.path.join(out_dir, "report.md"), rows, densities, s, machine, notes)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"settings": s, "rows": rows, "notes": notes, "total_s": total}, f, indent=1)
    log(f"wrote {out_dir}/report.md and {out_dir}/samples.png in {total:.0f} s")
    return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parse_iters(p, text):
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        key, _, val = part.rpartition("=")
        keys = [key] if key else list(models.MODELS)
        if key and key not in models.MODELS:
            p.error(f"--iters: unknown model {key!r} (one of {', '.join(models.MODELS)})")
        try:
            n = int(val)
        except ValueError:
            p.error(f"--iters: {part!r} is not N or MODEL=N")
        if n < 10:
            p.error(f"--iters: {part!r}: at least 10 iterations")
        for k in keys:
            if key or k not in out:
                out[k] = n
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="compare_out", help="output folder (default compare_out)")
    p.add_argument("--quick", action="store_true", help="small run: < 3 min on 2 CPU cores")
    p.add_argument("--densities", default=",".join(data.DENSITIES),
                   help=f"comma-separated subset of {','.join(data.DENSITIES)}")
    p.add_argument("--models", default=",".join(models.MODELS),
                   help=f"comma-separated subset of {','.join(models.MODELS)}")
    p.add_argument("--iters", default=None,
                   help="training iterations: N for every model, and/or MODEL=N "
                        "(e.g. 60,gan=200)")
    p.add_argument("--no-speed", action="store_true",
                   help="skip the eager-PyTorch training run (no speed comparison)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples drawn per model (default 10000 full, 2000 quick)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: these MLPs are too small to gain from "
                        "more, and extra threads stall badly on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    dens = [d for d in a.densities.split(",") if d]
    names = [m for m in a.models.split(",") if m]
    for d in dens:
        if d not in data.DENSITIES:
            p.error(f"--densities: unknown density {d!r} (one of {', '.join(data.DENSITIES)})")
    for m in names:
        if m not in models.MODELS:
            p.error(f"--models: unknown model {m!r} (one of {', '.join(models.MODELS)})")
    iters = _parse_iters(p, a.iters)
    if a.samples is not None and a.samples < 10:
        p.error("--samples must be >= 10")
    if a.threads < 1:
        p.error("--threads must be >= 1")
    torch.set_num_threads(a.threads)
    return run(dens, names, "quick" if a.quick else "full", a.out, iters, not a.no_speed,
               a.seed, n_gen=a.samples)


if __name__ == "__main__":
    main()
