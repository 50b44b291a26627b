"""The text table and the per-step plot of `genfast profile` (genfast/profile.py)."""

from __future__ import annotations

from .profile import PHASES, ProfileResult  # noqa: F401  (ProfileResult: types)


def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def format_result(r: ProfileResult) -> str:
    su = r.setup
    lines = [f"genfast profile: {su['sampler']}, {su['steps']} steps, batch {su['batch']}, latent "
             f"{'x'.join(map(str, su['shape'][1:]))}, guidance {su['guidance']:g}, "
             f"{su['dtype']} on {su['device']} ({su['threads']} threads, torch "
             f"{su['torch_version']})",
             f"model: {su['model']}; {su['runs']} timed runs after {su['warmup']} warm-up"]
    loops = list(r.loops.values())
    top, head = [""], ["phase, per step"]
    for lp in loops:
        top += [lp.name, "", "", ""]
        head += ["p50 ms", "p95 ms", "syncs", "allocs"]
    rows = []
    for p in PHASES:
        if p == "guidance" and su["guidance"] == 1.0:
            continue  # off: nothing to show
        row = [p]
        for lp in loops:
            if lp.error:
                row += ["-", "-", "-", "-"]
                continue
            st = lp.phases[p]
            row += [_ms(st.p50_ms), _ms(st.p95_ms), str(st.syncs),
                    f"{st.allocs} ({st.alloc_mb:.1f} MB)"]
        rows.append(row)
    row = ["loop (p50, p95 ms)"]
    for lp in loops:
        row += ["-", "-", "-", "-"] if lp.error else [_ms(lp.loop_ms), _ms(lp.loop_p95_ms),
                                                     "", ""]
    rows.append(row)
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    # a loop's name spans its four columns
    for j in range(1, len(top), 4):
        span = sum(widths[j:j + 4]) + 6
        if len(top[j]) > span:
            widths[j + 3] += len(top[j]) - span

    def fmt(cells, names=False):
        out = []
        for j, c in enumerate(cells):
            if names and j:
                out.append(c.ljust(sum(widths[j:j + 4]) + 6) if c else "")
                continue
            if names and not j:
                out.append(c.ljust(widths[0]))
                continue
            out.append(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]))
        return "  ".join(x for k, x in enumerate(out) if not names or k == 0 or x).rstrip()
    lines += ["", fmt(top, names=True), fmt(head), *(fmt(x) for x in rows), ""]
    for lp in loops:
        if lp.error:
            lines.append(f"{lp.name}: not run: {lp.error}")
    g, d = r.loops.get("genfast"), r.loops.get("diffusers")
    if g and d and not d.error and g.loop_ms:
        sg, sd = g.phases["step"].total_ms, d.phases["step"].total_ms
        lines.append(f"scheduler steps per loop: genfast {_ms(sg)} ms, diffusers {_ms(sd)} ms "
                     f"({sd / sg:.1f}x); whole loop {d.loop_ms / g.loop_ms:.2f}x")
    lines.append("p50 / p95 over all steps of all timed runs; syncs: host syncs per loop (on a "
                 "CPU: the ops that would block on a GPU: .item(), data-dependent shapes); "
                 "allocs: new tensors per loop")
    return "\n".join(lines)


def plot_result(r: ProfileResult, path: str) -> None:
    """Stacked bars per step of the median run of each loop, side by side:
    top row every phase, bottom row the same without the model, so the
    scheduler step, guidance and the rest are visible beside a costly model."""
    from .bench.plot import _require
    plt = _require()
    loops = [lp for lp in r.loops.values() if not lp.error]
    colors = {"model": "#4c72b0", "guidance": "#dd8452", "step": "#c44e52", "rest": "#8c8c8c"}
    fig, axes = plt.subplots(2, len(loops), squeeze=False, sharey="row",
                             figsize=(6.5 * len(loops), 7.5))
    shown = [p for p in PHASES if any(any(lp.timeline[p]) for lp in loops)]
    for col, lp in enumerate(loops):
        xs = list(range(lp.steps))
        for row, phases in enumerate((shown, [p for p in shown if p != "model"])):
            ax = axes[row][col]
            bottom = [0.0] * lp.steps
            for p in phases:
                ys = lp.timeline[p]
                ax.bar(xs, ys, bottom=bottom, color=colors[p], width=0.8,
                       label=p if (row, col) == (0, 0) else None)
                bottom = [b + y for b, y in zip(bottom, ys)]
            ax.set_xlabel("step")
            ax.grid(axis="y", alpha=0.3)
            if lp.steps <= 30:
                ax.set_xticks(xs)
        totals = ", ".join(f"{p} {sum(lp.timeline[p]):.1f}" for p in shown)
        axes[0][col].set_title(f"{lp.name}\nthis run: {sum(sum(lp.timeline[p]) for p in shown):.1f}"
                               f" ms ({totals} ms)", fontsize=9)
        axes[1][col].set_title("without the model", fontsize=9)
    axes[0][0].set_ylabel("time per step (ms)")
    axes[1][0].set_ylabel("time per step (ms)")
    su = r.setup
    fig.suptitle(f"genfast profile: {su['sampler']}, {su['steps']} steps, batch {su['batch']}, "
                 f"latent {'x'.join(map(str, su['shape'][1:]))}, guidance {su['guidance']:g}, "
                 f"{su['dtype']} on {su['device']}; {su['model']}", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[p]) for p in shown]
    fig.legend(handles, shown, loc="lower center", ncol=len(shown), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


