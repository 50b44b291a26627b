"""`genfast bench --plot PATH.png`: the report as a picture (matplotlib, an
optional extra: `pip install genfast[plot]`).

Left: genfast's speed-up over every other provider, one group of bars per
case (op, size, mode); a bar is provider median / genfast median, so right of
the 1x line genfast is faster. Right: median time against size for every op,
mode and provider timed at two sizes or more (log-log).
"""

from __future__ import annotations

from collections import defaultdict


def _require():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'genfast[plot]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def available() -> bool:
    try:
        _require()
    except ImportError:
        return False
    return True


def plot(rows: list[dict], path: str, title: str) -> None:
    plt = _require()
    cases: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.get("median_ms") and r.get("ratio"):
            cases[(r["op"], r["size"], r["mode"])][r["provider"]] = r["ratio"]
    labels = [" ".join(k) for k in cases]
    others = sorted({p for ratios in cases.values() for p in ratios} - {"genfast"})
    series: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    for r in rows:
        if r.get("median_ms"):
            series[(r["op"], r["mode"], r["provider"])].append((r["numel"], r["median_ms"]))
    series = {k: sorted(v) for k, v in series.items() if len({n for n, _ in v}) >= 2}

    fig, axes = plt.subplots(1, 2 if series else 1, squeeze=False,
                             figsize=(15 if series else 9, max(4.0, 0.45 * len(labels) + 1.5)))
    ax = axes[0][0]
    height = 0.8 / max(1, len(others))
    colors = plt.get_cmap("tab10")
    for j, provider in enumerate(others):
        ys, xs = [], []
        for i, ratios in enumerate(cases.values()):
            if provider in ratios:
                ys.append(i + (j - (len(others) - 1) / 2) * height)
                xs.append(ratios[provider])
        ax.barh(ys, xs, height=height, color=colors(j % 10), label=provider)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("provider time / genfast time  (right of 1: genfast faster)")
    ax.set_title("speed-up of genfast")
    ax.grid(axis="x", which="both", alpha=0.3)
    if others:
        ax.legend(fontsize="small", loc="lower right")
    if series:
        ax = axes[0][1]
        for j, ((op, mode, provider), pts) in enumerate(series.items()):
            ax.plot([n for n, _ in pts], [t for _, t in pts], marker="o",
                    color=colors(j % 10), label=f"{op} {mode} {provider}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel("median time (ms)")
        ax.set_title("time against size")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize="x-small")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
