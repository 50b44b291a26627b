"""`genfast bench`: run the benchmark suites, print a table, optionally write JSON.

Columns: median time per call; spread = (p80 - p20) / 2 relative to the
median; ratio = median / the genfast median of the same op, size and mode
(above 1: slower than genfast); floor = the fraction of the memory-traffic
floor reached, (bytes moved / copy bandwidth) / median, for bandwidth-bound
ops (100% would be an op as fast as copying its bytes: ``x.clone()`` for
allocating modes, ``y.copy_(x)`` for out= modes). See runner.py for the
timing method.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
from dataclasses import asdict

import torch

from . import SUITES, call_suite
from . import compare as _compare
from . import malloc as _malloc
from . import plot as _plot
from .runner import FULL, QUICK, Case, Progress, Report, Settings, run_cases, size_label


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class UsageError(ValueError):
    """A bad argument of `genfast bench`: reported in one line, exit code 2."""


def _sizes(text: str) -> list[int]:
    """"4096,1M,16M" -> element counts (K, M, G are powers of 1024)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    out = []
    for part in text.split(","):
        p = part.strip().upper()
        scale = units.get(p[-1:], 1)
        digits = p[:-1] if p[-1:] in units else p
        if not digits.isdigit() or int(digits) * scale < 1:
            raise UsageError(f"--sizes: {part.strip()!r} is not a positive element count "
                             f"(e.g. 4096, 64K, 1M)")
        out.append(int(digits) * scale)
    return out


def _device(text: str | None) -> torch.device:
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device: {text!r} is not a device (cpu, cuda, cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device: genfast benchmarks run on cpu or cuda, not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device: {text} requested but torch sees no GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device: {text} requested but there are only "
                             f"{torch.cuda.device_count()} GPUs")
    return device


def _output_path(option: str, path: str | None) -> None:
    """Check an output file can be written before hours of timing, not after."""
    if path is None:
        return
    if os.path.isdir(path):
        raise UsageError(f"{option}: {path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option}: {path} is not writable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--suite", action="append", choices=sorted(SUITES), metavar="NAME",
                   help=f"suite to run (repeatable; default all: {', '.join(sorted(SUITES))})")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                   help="dtype of the tensors (default float32)")
    p.add_argument("--full", action="store_true",
                   help="longer, larger run with more providers (default: quick, < 3 min)")
    p.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first")
    p.add_argument("--allocator", choices=["tuned", "system"], default="tuned",
                   help="tuned (default): glibc keeps freed blocks, so fresh outputs do not "
                        "page-fault on every call (genfast/bench/malloc.py); system: as is")
    p.add_argument("--quick", action="store_true",
                   help="the default: the whole report in a few minutes")
    p.add_argument("--op", action="append", metavar="NAME",
                   help="only these ops (repeatable), e.g. --op randn")
    p.add_argument("--size", action="append", metavar="LABEL",
                   help="only these sizes (repeatable), as the table labels them, e.g. 1M")
    p.add_argument("--provider", action="append", metavar="NAME",
                   help="only these providers besides genfast (repeatable), e.g. torch.randn")
    p.add_argument("--json", metavar="PATH", help="also write every row and the setup to PATH")
    p.add_argument("--markdown", metavar="PATH",
                   help="also write the report as Markdown (to paste into an issue)")
    p.add_argument("--plot", metavar="PATH.png",
                   help="also draw the speed-ups and time against size (needs matplotlib)")
    p.add_argument("--compare", metavar="BASELINE.json",
                   help="compare each row with a saved --json run; exit 1 if any is slower "
                        "than --threshold")
    p.add_argument("--threshold", type=float, default=10.0, metavar="PERCENT",
                   help="slow-down that counts as a regression with --compare (default 10)")
    # For tests and quick looks: element counts (e.g. 4096,1M) instead of the suites' own.
    p.add_argument("--sizes", help=argparse.SUPPRESS)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict:
    """Versions of the libraries a row's providers come from (None: not installed)."""
    from importlib import metadata
    out = {"python": platform.python_version()}
    for dist in ("numpy", "triton", "diffusers", "k-diffusion", "nflows", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def environment(device: torch.device) -> dict:
    """What the numbers depend on: device, machine, versions, threads, genfast backend."""
    from .. import __version__
    from .. import backend as _backend

    used = _backend.resolve(None, device)
    why = ""
    if used == "reference":  # say why no compiled backend ran
        avail = _backend.availability()
        names = ("cpu",) if device.type == "cpu" else ("cuda", "triton")
        why = "; ".join(f"{n}: {avail[n][1]}" for n in names if not avail[n][0])
    return {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else _cpu_name()),
        "machine": f"{_cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} "
                   f"{platform.release()} {platform.machine()}",
        "versions": _versions(),
        "torch_version": torch.__version__,
        "genfast_version": __version__,
        "threads": torch.get_num_threads(),
        "backend": used,
        "backend_note": why,
        "cpu_isa": torch.ops.genfast._cpu_isa("") if used == "cpu" else None,
    }


def _fmt_time(ms: float) -> str:
    """Three significant digits in s, ms or us."""
    v, unit = (ms / 1e3, "s") if ms >= 1e3 else (ms, "ms") if ms >= 1 else (ms * 1e3, "us")
    return f"{v:.{2 if v < 10 else 1 if v < 100 else 0}f} {unit}"


def _fmt_ratio(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def _fmt_fraction(f: float | None) -> str:
    if f is None:
        return "-"
    return f"{f * 100:.0f}%" if f >= 0.1 else f"{f * 100:.1f}%" if f >= 0.001 else f"{f * 100:.2f}%"


def format_table(rows) -> str:
    """Rows (Row objects or their dicts) as an aligned text table."""
    rows = [r if isinstance(r, dict) else asdict(r) for r in rows]
    head = ("op", "size", "mode", "provider", "median", "spread", "ratio", "floor")
    lines = []
    for r in rows:
        cells = [r["op"], r["size"], r["mode"], r["provider"]]
        if r["median_ms"] is None:
            cells.append(f"skipped: {r.get('skipped') or 'no result'}")
        else:
            spread = (r["p80_ms"] - r["p20_ms"]) / 2 / r["median_ms"] if r["median_ms"] else 0.0
            cells += [_fmt_time(r["median_ms"]), f"±{spread * 100:.0f}%",
                      _fmt_ratio(r["ratio"]), _fmt_fraction(r["floor_fraction"])]
        lines.append(cells)
    widths = [max([len(head[i])] + [len(c[i]) for c in lines if len(c) > i and len(c) == 8])
              for i in range(len(head))]
    right = {4, 5, 6, 7}  # numbers align right

    def fmt(cells):
        out = [c.rjust(widths[i]) if i in right and len(cells) == 8 else c.ljust(widths[i])
               for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()
    return "\n".join([fmt(list(head)), *(fmt(c) for c in lines)])


def _setup_lines(report: Report, env: dict, mode: str) -> list[str]:
    bw = "; ".join(f"{size_label(n)} {g:.1f} GB/s clone, {report.copy_gbps['copy_'][n]:.1f} "
                   f"GB/s copy_" for n, g in report.copy_gbps["clone"].items())
    backend = env["backend"] + (f" ({env['backend_note']})" if env["backend_note"] else "")
    if env.get("cpu_isa"):
        backend += f", SIMD {env['cpu_isa']}"
    libs = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()
                     if v and k not in ("python", "numpy", "matplotlib"))
    return [
        f"genfast bench ({mode}, {env.get('dtype', 'float32')}) on {env['device']} "
        f"({env['device_name']}): torch {env['torch_version']}, genfast "
        f"{env['genfast_version']}, {env['threads']} threads",
        f"machine: {env.get('machine', '?')}; anchors: {libs or 'none installed'}",
        f"genfast backend: {backend}",
        *([f"allocator: {env['allocator']}"] if env.get("allocator") else []),
        f"copy bandwidth (float32, read + write): {bw or 'not measured'}",
    ]


def format_report(report: Report, env: dict, mode: str) -> str:
    tables = []
    for suite in dict.fromkeys(r.suite for r in report.rows):
        tables += ["", f"[{suite}]", format_table([r for r in report.rows if r.suite == suite])]
    return "\n".join([
        *_setup_lines(report, env, mode),
        *tables,
        "",
        "ratio = median / genfast median (same op, size, mode); "
        "spread = (p80 - p20) / 2 / median;",
        "floor = (bytes moved / copy bandwidth) / median, copy = x.clone() for alloc, "
        "y.copy_(x) for out=",
        *(["quick run: torch.compile providers at each op's largest size only (--full: all)"]
          if mode == "quick" else []),
        *[f"wrapper overhead: {r.op} {r.size} {r.provider} costs {r.overhead_us:+.2f} us over "
          f"the raw op" for r in report.rows if r.overhead_us is not None],
    ])


def run(args: argparse.Namespace, settings: Settings | None = None) -> int:
    """Runs the chosen suites; returns the exit code. Every argument is
    checked before anything runs: a mistake costs one line, not a run."""
    try:
        if args.threads is not None and args.threads < 1:
            raise UsageError(f"--threads must be >= 1, got {args.threads}")
        device = _device(args.device)
        sizes = _sizes(args.sizes) if args.sizes else None
        if args.full and args.quick:
            raise UsageError("--quick and --full exclude each other")
        _output_path("--json", args.json)
        _output_path("--markdown", args.markdown)
        _output_path("--plot", args.plot)
        if args.plot and not _plot.available():
            raise UsageError("--plot needs matplotlib: pip install 'genfast[plot]'")
        if args.threshold < 0:
            raise UsageError(f"--threshold must be >= 0, got {args.threshold:g}")
        baseline = _compare.load(args.compare) if args.compare else None
    except (UsageError, _compare.BaselineError) as e:
        print(f"genfast bench: {e}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    allocator = _malloc.describe(getattr(args, "allocator", "tuned"))
    settings = settings or (FULL if args.full else QUICK)
    suites = list(dict.fromkeys(args.suite or SUITES))
    dtype = DTYPES[args.dtype]
    cases = [c for name in suites
             for c in call_suite(SUITES[name], device, args.full, sizes, dtype)]
    try:
        cases = select(cases, args.op, args.size, args.provider)
    except UsageError as e:
        print(f"genfast bench: {e}", file=sys.stderr)
        return 2
    if not args.full:
        cases = compile_at_largest_size(cases)
    if not cases:
        print(f"genfast bench: nothing to run: no case of {', '.join(suites)} at "
              f"{args.dtype}", file=sys.stderr)
        return 2
    steps = sum(len(c.providers) for c in cases)
    steps += len({c.numel for c in cases if c.bytes_moved is not None})  # copy bandwidth
    report = run_cases(cases, device, settings, Progress(steps))
    env = {**environment(device), "allocator": allocator}
    mode = "full" if args.full else "quick"
    meta = {**env, "mode": mode, "dtype": args.dtype, "suites": suites,
            "command": command_line(args)}
    print(format_report(report, meta, mode))
    rows = [{**asdict(r), **env} for r in report.rows]
    if args.json:
        doc = {"meta": meta,
               "copy_bandwidth": [{"size": size_label(n), "numel": n, "clone_gbps": g,
                                   "copy__gbps": report.copy_gbps["copy_"][n]}
                                  for n, g in report.copy_gbps["clone"].items()],
               "rows": rows}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(format_markdown(report, meta, mode))
    if args.plot:
        _plot.plot([asdict(r) for r in report.rows], args.plot,
                   f"genfast bench ({mode}, {args.dtype}) on {env['device']} "
                   f"({env['device_name']}), {env['threads']} threads, "
                   f"torch {env['torch_version']}")
    if baseline is not None:
        changes, only_now, only_base = _compare.compare(rows, baseline)
        text, regressions = _compare.format_comparison(
            changes, only_now, only_base, args.threshold, env, baseline.get("meta", {}))
        print("\n" + text)
        if regressions:
            return 1
    return 0


def command_line(args: argparse.Namespace) -> str:
    """The `genfast bench` command that repeats this run (output options left out)."""
    parts = ["genfast bench"]
    for name in ("suite", "op", "size", "provider"):
        for v in getattr(args, name) or ():
            parts.append(f"--{name} {v}")
    if args.device:
        parts.append(f"--device {args.device}")
    if args.dtype != "float32":
        parts.append(f"--dtype {args.dtype}")
    if args.threads:
        parts.append(f"--threads {args.threads}")
    if args.full:
        parts.append("--full")
    if getattr(args, "allocator", "tuned") != "tuned":
        parts.append(f"--allocator {args.allocator}")
    if args.sizes:
        parts.append(f"--sizes {args.sizes}")
    return " ".join(parts)


def compile_at_largest_size(cases: list[Case]) -> list[Case]:
    """Quick runs time the torch.compile providers of an op (suite, op, mode)
    at its largest size only: compiling costs seconds per case, and the quick
    report must fit in a few minutes on 2 cores. --full keeps them all."""
    largest: dict[tuple, int] = {}
    for c in cases:
        key = (c.suite, c.op, c.mode)
        largest[key] = max(largest.get(key, 0), c.numel)
    out = []
    for c in cases:
        if c.numel < largest[(c.suite, c.op, c.mode)]:
            keep = [p for p in c.providers if not p.name.startswith("torch.compile")]
            if len(keep) != len(c.providers):
                c = dataclasses.replace(c, providers=keep)
        out.append(c)
    return out


def select(cases: list[Case], ops, sizes, providers) -> list[Case]:
    """The cases and providers asked for with --op / --size / --provider. The
    baseline provider (genfast) is always kept, so every row has its ratio."""
    known_ops = {c.op for c in cases}
    known_sizes = {size_label(c.numel) for c in cases}
    known_providers = {p.name for c in cases for p in c.providers}
    for opt, asked, known in (("--op", ops, known_ops), ("--size", sizes, known_sizes),
                              ("--provider", providers, known_providers)):
        unknown = sorted(set(asked or ()) - known)
        if unknown:
            raise UsageError(f"{opt}: no case has {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
    out = []
    for c in cases:
        if (ops and c.op not in ops) or (sizes and size_label(c.numel) not in sizes):
            continue
        if providers:
            keep = [p for p in c.providers if p.name == c.baseline or p.name in providers
                    or p.name == c.overhead_of]
            c = dataclasses.replace(c, providers=keep)
        out.append(c)
    return out


def format_markdown(report: Report, env: dict, mode: str) -> str:
    """The report as Markdown to paste into an issue: the command, the setup,
    one table per suite, then the rows that did not run and why."""
    head = ["op", "size", "mode", "provider", "median", "p20 - p80", "vs genfast", "floor"]
    lines = [f"### genfast bench ({mode}, {env.get('dtype', 'float32')})", ""]
    if env.get("command"):
        lines += [f"`{env['command']}`", ""]
    setup = _setup_lines(report, env, mode)
    lines += [f"- {line}" for line in setup[1:]]
    lines += [f"- device: {env['device']} ({env['device_name']}), {env['threads']} threads, "
              f"torch {env['torch_version']}, genfast {env['genfast_version']}",
              *([f"- allocator: {env['allocator']}"] if env.get("allocator") else []),
              "- vs genfast = median / genfast median of the same op, size and mode (above 1: "
              "genfast is faster); floor = (bytes moved / copy bandwidth) / median"]
    skipped = []
    for suite in dict.fromkeys(r.suite for r in report.rows):
        lines += ["", f"**{suite}**", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * 4 + "--:|" * 4]
        for r in report.rows:
            if r.suite != suite:
                continue
            if r.median_ms is None:
                skipped.append(r)
                cells = [r.op, r.size, r.mode, r.provider, "skipped", "", "", ""]
            else:
                cells = [r.op, r.size, r.mode, r.provider, _fmt_time(r.median_ms),
                         f"{_fmt_time(r.p20_ms)} - {_fmt_time(r.p80_ms)}", _fmt_ratio(r.ratio),
                         _fmt_fraction(r.floor_fraction)]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if skipped:
        lines += ["", "Not run here:"]
        lines += [f"- {r.suite} {r.op} {r.size} {r.mode} {r.provider}: {r.skipped}"
                  for r in skipped]
    over = [r for r in report.rows if r.overhead_us is not None]
    if over:
        lines.append("")
        lines += [f"- wrapper overhead: {r.op} {r.size} costs {r.overhead_us:+.2f} us over the "
                  f"raw op" for r in over]
    return "\n".join(lines) + "\n"
