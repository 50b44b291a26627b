"""Outputs of the comparison: the Markdown report and the PNG grid."""

from __future__ import annotations

import math

import torch

from . import data

METRIC_NOTE = (
    "**Energy distance** D^2 = 2E|X-Y| - E|X-X'| - E|Y-Y'| (Szekely & Rizzo 2013), "
    "Euclidean norm, between the model's samples and the held-out set; U-statistic "
    "(unbiased, can be slightly negative at a perfect fit). It equals the squared MMD "
    "with the distance kernel k(x, y) = -|x - y|, so there is no bandwidth to choose. "
    "Lower is better. **Modes**: of the 8 ring Gaussians, those receiving at least 20% "
    "of their fair share of samples within 3 std of the centre; **HQ**: the fraction "
    "of samples within 3 std of some centre (Srivastava et al. 2017). **NLL**: exact "
    "held-out negative log-likelihood in nats per point (flows). **ELBO**: held-out "
    "evidence lower bound in nats per point, 16 posterior draws (VAE; -ELBO >= NLL). "
    "**Train s**: wall time of the training run (genfast ops). **ms/iter genfast / eager**: "
    "one training iteration of the same model (same init and batches) with genfast's ops "
    "and with the eager PyTorch a script would contain (torch.randn noise, textbook "
    "add-noise / MSE / reparameterisation / KL formulas; the flow layers on genfast's "
    "pure-PyTorch reference backend), timed in alternating blocks, fastest block each. "
    "The diffusion rows share one trained model. **Sample s/10k**: wall time to draw "
    "10,000 samples (genfast.sample for diffusion).")


def _fmt(v, spec=".3f"):
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


def _ratio(a, b):
    return "-" if a is None or b is None or a <= 0 else f"{b / a:.2f}x"


def markdown_table(rows: list[dict]) -> str:
    head = ("| density | model | energy dist. | modes (of 8) | HQ | NLL | ELBO | train s | "
            "ms/iter genfast | ms/iter eager | eager / genfast | sample s/10k |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        cov = r.get("modes")
        lines.append("| " + " | ".join([
            data.TITLES[r["density"]], r["label"], _fmt(r["energy"], ".4f"),
            "-" if cov is None else str(cov), _fmt(r.get("hq"), ".2f"),
            _fmt(r.get("nll")), _fmt(r.get("elbo")),
            _fmt(r["train_s"], ".1f"), _fmt(r.get("ms_iter_genfast"), ".2f"),
            _fmt(r.get("ms_iter_eager"), ".2f"),
            _ratio(r.get("ms_iter_genfast"), r.get("ms_iter_eager")),
            _fmt(r["sample_s_10k"], ".2f")]) + " |")
    return "\n".join(lines)


def energy_pivot(rows: list[dict], densities: list[str]) -> str:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    by = {(r["label"], r["density"]): r["energy"] for r in rows}
    lines = ["| model | " + " | ".join(data.TITLES[d] for d in densities) + " |",
             "|---|" + "---|" * len(densities)]
    for lab in labels:
        lines.append(f"| {lab} | " + " | ".join(_fmt(by.get((lab, d)), ".4f")
                                             for d in densities) + " |")
    return "\n".join(lines)


def write_markdown(path, rows, densities, settings: dict, machine: str, notes: list[str]):
    s = settings
    text = [
        "# VAE, GAN, flows and diffusion on 2-D densities",
        "",
        f"Mode: **{s['mode']}**. {machine}",
        "",
        f"Data: {s['n_train']} training and {s['n_test']} held-out points per density "
        f"(fixed seeds). Training iterations (batch {s['batch']}, Adam): "
        + ", ".join(f"{k} {v}" for k, v in s["iters"].items())
        + f". MLPs with 128 hidden units. {s['n_gen']} samples per model, energy distance "
        f"on {s['n_metric']} of them" + (f"; latency measured on {s['n_gen']} samples and "
                                          f"scaled to 10k" if s["n_gen"] != 10000 else "") + ".",
        "",
        "## Results",
        "",
        markdown_table(rows),
        "",
        "Energy distance by model and density (lower is better):",
        "",
        energy_pivot(rows, densities),
        "",
        "## Metrics",
        "",
        METRIC_NOTE,
        "",
    ]
    if notes:
        text += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    text += ["![samples over the true densities](samples.png)", ""]
    with open(path, "w") as f:
        f.write("\n".join(text))


def plot_grid(path, panels: dict, labels: list[str], densities: list[str],
              energies: dict, max_points: int = 2000):
    """Rows: the held-out data, then each model; columns: densities. Each
    panel: the true density (a 2-D histogram of 200k fresh points, grey) under
    up to ``max_points`` of the row's samples (dots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ["data"] + labels
    fig, axes = plt.subplots(len(rows), len(densities), squeeze=False,
                             figsize=(2.3 * len(densities) + 1.2, 2.3 * len(rows)))
    lim = data.LIMIT
    for j, d in enumerate(densities):
        truth = data.sample(d, 200_000, seed=4242)
        hist = torch.histogramdd(truth, bins=[120, 120], range=[-lim, lim, -lim, lim]).hist
        img = hist.T.sqrt()  # sqrt: faint tails stay visible next to sharp modes
        for i, row in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(img.numpy(), origin="lower", extent=(-lim, lim, -lim, lim), cmap="Greys",
                      vmax=float(img.max()) * 2.5, interpolation="bilinear")
            pts = panels.get((row, d))
            if pts is not None:
                pts = pts[:max_points].numpy()
                ax.scatter(pts[:, 0], pts[:, 1], s=2.0, c="tab:red" if i else "tab:blue",
                           alpha=0.45, linewidths=0, rasterized=True)
            elif i:
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center",
                        va="center", fontsize=10, color="dimgray",
                        bbox=dict(facecolor="white", alpha=0.85, lw=0))
            if (row, d) in energies:
                ax.text(0.03, 0.03, f"ED {energies[(row, d)]:.3f}", transform=ax.transAxes,
                        fontsize=8, color="black",
                        bbox=dict(facecolor="white", alpha=0.75, lw=0, pad=1.5))
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(data.TITLES[d], fontsize=11)
            if j == 0:
                ax.set_ylabel("held-out data" if row == "data" else row, fontsize=10)
    fig.suptitle("Samples (dots) over the true density (grey); ED = energy distance to "
                 "held-out data", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=80)
    plt.close(fig)
