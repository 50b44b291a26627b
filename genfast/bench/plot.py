"""`genfast bench --plot PATH.png`: the report as a picture (matplotlib, an
optional extra: `pip install genfast[plot]`).

One row of panels per suite. Left: genfast's speed-up over every other
provider of each case (op, size, mode): a bar is provider median / genfast
median, labelled with its value, so right of the 1x line genfast is faster.
Overhead cases and "raw ..." providers (the wrapper against the raw op) are
left out: the text report has them. Right, for suites timed at two sizes or more: median time against size
(log-log), genfast solid, every other provider of the same op dashed in the
op's colour.
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


def _fmt(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def _speedups(rows):
    """suite -> case label -> [(provider, ratio)], in report order."""
    out: dict[str, dict[str, list]] = defaultdict(dict)
    overhead = {(r["suite"], r["op"], r["size"], r["mode"]) for r in rows
                if r.get("overhead_us") is not None}
    for r in rows:
        key = (r["suite"], r["op"], r["size"], r["mode"])
        if key in overhead or not r.get("median_ms") or not r.get("ratio"):
            continue
        label = f"{r['op']} {r['size']} {r['mode']}"
        bars = out[r["suite"]].setdefault(label, [])
        # "raw op" rows time the op without its wrapper: overhead, not a speed-up
        if r["provider"] != "genfast" and not r["provider"].startswith("raw "):
            bars.append((r["provider"], r["ratio"]))
    return {s: {k: v for k, v in cases.items() if v} for s, cases in out.items()}


def _series(rows):
    """suite -> op + mode -> provider -> sorted [(numel, ms)] (two sizes or more)."""
    out: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if r.get("median_ms") and r.get("overhead_us") is None:
            out[r["suite"]][f"{r['op']} {r['mode']}"][r["provider"]].append(
                (r["numel"], r["median_ms"]))
    keep = {}
    for suite, ops in out.items():
        ops = {op: {p: sorted(v) for p, v in provs.items() if len({n for n, _ in v}) >= 2}
               for op, provs in ops.items()}
        ops = {op: provs for op, provs in ops.items() if "genfast" in provs}
        if ops:
            keep[suite] = ops
    return keep


def plot(rows: list[dict], path: str, title: str, dpi: int = 100) -> None:
    plt = _require()
    speed = _speedups(rows)
    series = _series(rows)
    suites = [s for s in dict.fromkeys(r["suite"] for r in rows) if s in speed or s in series]
    if not suites:
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "nothing to plot: no case has genfast and another provider timed",
                ha="center", va="center")
        fig.suptitle(title)
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        return
    providers = sorted({p for cases in speed.values() for bars in cases.values() for p, _ in bars})
    cmap = plt.get_cmap("tab20" if len(providers) > 10 else "tab10")
    color = {p: cmap(i % cmap.N) for i, p in enumerate(providers)}
    # height of a suite's row: its bars (0.22 in each) plus a gap per case
    heights = [max(2.2, sum(0.22 * len(b) + 0.25 for b in speed.get(s, {}).values()) + 0.9)
               for s in suites]
    wide = bool(series)
    fig, axes = plt.subplots(len(suites), 2 if wide else 1, squeeze=False,
                             figsize=(17 if wide else 10, sum(heights) + 0.8),
                             gridspec_kw={"height_ratios": heights,
                                          **({"width_ratios": [1.35, 1]} if wide else {})})
    for row, suite in enumerate(suites):
        ax = axes[row][0]
        cases = speed.get(suite, {})
        y, ticks, labels, seen = 0.0, [], [], set()
        for label, bars in cases.items():
            start = y
            for provider, ratio in bars:
                ax.barh(y, ratio, height=0.2, color=color[provider],
                        label=None if provider in seen else provider)
                seen.add(provider)
                ax.text(ratio * 1.04, y, _fmt(ratio), va="center", fontsize=7)
                y += 0.22
            ticks.append((start + y - 0.22) / 2)
            labels.append(label)
            y += 0.25
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.set_ylim(y - 0.1, -0.3)
        lo = min([r for b in cases.values() for _, r in b] + [0.5])
        hi = max([r for b in cases.values() for _, r in b] + [2.0])
        ax.set_xlim(lo / 1.6, hi * 2.2)  # room for the value labels
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.set_title(f"{suite}: speed-up of genfast (provider time / genfast time; "
                     f"right of 1: genfast faster)", fontsize=9, loc="left")
        if cases:
            ax.legend(fontsize=7, loc="lower right", framealpha=0.85)
        else:
            ax.axis("off")
        if wide:
            _time_panel(axes[row][1], plt, suite, series.get(suite))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (sum(heights) + 0.8)))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _time_panel(ax, plt, suite, ops):
    if not ops:
        ax.axis("off")
        return
    cmap = plt.get_cmap("tab10")
    for j, (op, provs) in enumerate(ops.items()):
        for provider, pts in provs.items():
            main = provider == "genfast"
            ax.plot([n for n, _ in pts], [t for _, t in pts], color=cmap(j % 10),
                    linestyle="-" if main else "--", marker="o" if main else ".",
                    linewidth=2 if main else 0.9, alpha=1 if main else 0.6,
                    label=op if main else None)
    ax.plot([], [], color="gray", linestyle="--", label="other providers")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("elements", fontsize=8)
    ax.set_ylabel("median time (ms)", fontsize=8)
    ax.set_title(f"{suite}: time against size (genfast solid)", fontsize=9, loc="left")
    ax.grid(which="both", alpha=0.25)
    ax.tick_params(labelsize=7)
    from matplotlib.ticker import NullFormatter
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend(fontsize=7, ncol=2 if len(ops) > 6 else 1)
