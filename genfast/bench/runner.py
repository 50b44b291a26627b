"""Timing machinery shared by every suite: Case, Provider, the interleaved timer.

What is measured: the wall time of one call of a provider's callable, i.e. the
op as a user calls it (in "alloc" modes that includes allocating the result
and, on the CPU, the page faults of fresh memory). On CUDA the clock is read
between ``torch.cuda.synchronize()`` calls, so it covers the kernels' run
time, not just their launch.

How: each provider is built (inputs allocated, compiled: untimed) and warmed
up; the warm-up also estimates the cost of a call. From that estimate every
provider gets a repetition count sized to ``Settings.target_s`` of timed work
(at least ``min_reps``, at most ``max_reps``); a sample is a batch of calls
lasting at least ``min_sample_s`` so timer and synchronize overhead vanish.
The samples of all providers of one case are then taken round-robin, spread
evenly over the rounds, so slow drift of a shared, noisy machine (other jobs,
clock changes) hits all providers alike. We report the median per-call time
and the 20th/80th percentiles, which ignore the odd preempted sample.

Bandwidth-bound cases also get the fraction of the memory-traffic floor:
floor = bytes the op must move / copy bandwidth; fraction = floor / time. The
copy bandwidth is timed the same way in the same run, on a float32 tensor with
the op's element count, counting bytes read + written, in two flavours:
``x.clone()`` (allocates, so on the CPU it pays the same page faults as an
allocating op: the floor of "alloc" modes) and ``y.copy_(x)`` (into an
existing tensor: the floor of "out=" modes; measured against clone, an out=
op can beat its "floor").
"""

from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


@dataclass(frozen=True)
class Settings:
    target_s: float = 0.3  # timed seconds per provider per case
    min_reps: int = 3
    max_reps: int = 100
    warmup_s: float = 0.05
    min_sample_s: float = 1e-3


QUICK = Settings()
FULL = Settings(target_s=1.0, min_reps=5, max_reps=1000, warmup_s=0.2)


@dataclass
class Provider:
    """One way to compute a case. ``make`` does the untimed set-up (allocate
    inputs, compile) and returns the callable that is timed; ``skip`` is the
    reason a provider cannot run here (then ``make`` is never called)."""
    name: str
    make: Callable[[], Callable[[], object]] | None = None
    max_reps: int | None = None  # cap for providers too slow to repeat much
    skip: str | None = None


@dataclass
class Case:
    """One op at one size in one mode; its providers are compared with the one
    named ``baseline``. ``bytes_moved`` (None: not bandwidth-bound) is the
    minimum memory traffic of the op, for the floor fraction."""
    suite: str
    op: str
    numel: int
    mode: str
    providers: list[Provider]
    bytes_moved: int | None = None
    baseline: str = "genfast"
    floor_copy: str = "clone"  # which copy is the floor: "clone" or "copy_" (see above)
    # For "overhead" cases: the provider calling the raw op; the baseline's row
    # then reports how much its Python wrapper adds (overhead_us).
    overhead_of: str | None = None
    dtype: str = "float32"  # of the case's tensors (set by the CLI from the suite's dtype=)


@dataclass
class Row:
    suite: str
    op: str
    size: str
    numel: int
    mode: str
    provider: str
    median_ms: float | None = None
    p20_ms: float | None = None
    p80_ms: float | None = None
    reps: int = 0
    ratio: float | None = None
    floor_fraction: float | None = None
    skipped: str | None = None
    overhead_us: float | None = None  # wrapper time over the raw op (overhead cases)
    dtype: str = "float32"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    # "clone" / "copy_" -> numel -> GB/s
    copy_gbps: dict[str, dict[int, float]] = field(
        default_factory=lambda: {"clone": {}, "copy_": {}})


def size_label(n: int) -> str:
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of a sorted list."""
    pos = q * (len(sorted_xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


class Progress:
    """``[ 3/12] noise 16M torch.randn out= ...`` on stderr: redrawn in place
    on a terminal, one line per step otherwise (logs, CI)."""

    def __init__(self, total: int, stream=None):
        self.total, self.i, self.label = total, 0, ""
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = self.drawn = time.perf_counter()

    def step(self, label: str) -> None:
        self.i, self.label = self.i + 1, label
        self._draw("")

    def note(self, extra: str) -> None:
        # sub-step detail only where it costs no lines, and at most 10 times a second
        if self.tty and time.perf_counter() - self.drawn >= 0.1:
            self._draw(extra)

    def _draw(self, extra: str) -> None:
        w = len(str(self.total))
        line = (f"[{self.i:>{w}}/{self.total}] {self.label}{' ' + extra if extra else ''}"
                f"  ({time.perf_counter() - self.t0:.0f}s)")
        self.stream.write(f"\r\x1b[K{line}" if self.tty else line + "\n")
        self.stream.flush()
        self.drawn = time.perf_counter()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, inner: int, device: torch.device) -> float:
    """Seconds per call over a batch of ``inner`` calls."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()  # the result is dropped at once, so "alloc" modes free as they go
    _sync(device)
    return (time.perf_counter() - t0) / inner


def _warm_up(fn, device: torch.device, s: Settings) -> float:
    """Call ``fn`` until warm; returns the cost of a warm call. A call slower
    than the whole timing budget is warmed up once only: we cannot afford more."""
    times = [_time(fn, 1, device)]
    while times[0] <= s.target_s and len(times) < 50 and (len(times) < 3 or sum(times) < s.warmup_s):
        times.append(_time(fn, 1, device))
    return min(times[1:]) if len(times) > 1 else times[0]


def measure(fns: dict[str, Callable], device: torch.device, s: Settings,
            max_reps: dict[str, int | None] | None = None, progress: Progress | None = None,
            estimates: dict[str, float] | None = None) -> dict[str, list[float]]:
    """Per-call times (s) of each callable, sampled round-robin. ``estimates``
    are warm per-call costs from warm-up (measured here when absent)."""
    est = dict(estimates or {})
    for name, fn in fns.items():
        if name not in est:
            est[name] = _warm_up(fn, device, s)
    inner, reps = {}, {}
    for name, t in est.items():
        t = max(t, 1e-9)
        inner[name] = max(1, min(10_000, math.ceil(s.min_sample_s / t)))
        cap = min(s.max_reps, (max_reps or {}).get(name) or s.max_reps)
        reps[name] = max(1, min(cap, max(s.min_reps, round(s.target_s / (t * inner[name])))))
    rounds = max(reps.values(), default=0)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection inside a sample would be charged to whoever is unlucky
    try:
        for r in range(rounds):
            if progress is not None:
                progress.note(f"round {r + 1}/{rounds}")
            for name, fn in fns.items():
                # provider with k reps samples in k of the rounds, evenly spread
                if (r + 1) * reps[name] // rounds > r * reps[name] // rounds:
                    samples[name].append(_time(fn, inner[name], device))
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def copy_bandwidth(numel: int, device: torch.device, s: Settings,
                   progress: Progress | None = None) -> dict[str, float]:
    """Bytes/s of ``x.clone()`` and of ``y.copy_(x)`` for float32 ``x`` of
    ``numel`` elements, counting the read and the write."""
    x = torch.ones(numel, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    times = measure({"clone": x.clone, "copy_": lambda: y.copy_(x)}, device, s, progress=progress)
    return {k: 2 * numel * x.element_size() / percentile(sorted(t), 0.5) for k, t in times.items()}


def run_cases(cases: list[Case], device: torch.device, s: Settings,
              progress: Progress | None = None) -> Report:
    """Times every case; the copy bandwidth of a size is measured just before
    the first bandwidth-bound case of that size."""
    report = Report()
    for case in cases:
        label = size_label(case.numel)
        if case.bytes_moved is not None and case.numel not in report.copy_gbps["clone"]:
            if progress is not None:
                progress.step(f"copy {label} x.clone(), y.copy_(x)")
            for kind, bw in copy_bandwidth(case.numel, device, s, progress).items():
                report.copy_gbps[kind][case.numel] = bw / 1e9
        rows = {p.name: Row(case.suite, case.op, label, case.numel, case.mode, p.name,
                            skipped=p.skip, dtype=case.dtype) for p in case.providers}
        fns, est = {}, {}
        for p in case.providers:
            if progress is not None:
                progress.step(f"{case.suite} {label} {p.name} {case.mode}")
            if p.skip is not None:
                continue
            try:  # a provider that cannot run here is reported, not fatal
                fns[p.name] = p.make()
                est[p.name] = _warm_up(fns[p.name], device, s)
            except Exception as e:  # noqa: BLE001
                fns.pop(p.name, None)
                rows[p.name].skipped = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if progress is not None:
            progress.label = f"{case.suite} {label} {case.mode} interleaved: {', '.join(fns)}"
        samples = measure(fns, device, s, {p.name: p.max_reps for p in case.providers},
                          progress, est)
        del fns  # free this case's buffers before the next one allocates
        for name, ts in samples.items():
            ts = sorted(ts)
            row = rows[name]
            row.median_ms, row.p20_ms, row.p80_ms = (percentile(ts, q) * 1e3 for q in (0.5, 0.2, 0.8))
            row.reps = len(ts)
            if case.bytes_moved is not None:
                gbps = report.copy_gbps[case.floor_copy][case.numel]
                floor_ms = case.bytes_moved / (gbps * 1e9) * 1e3
                row.floor_fraction = floor_ms / row.median_ms
        base = rows.get(case.baseline)
        raw = rows.get(case.overhead_of) if case.overhead_of else None
        if base is not None and raw is not None and None not in (base.median_ms, raw.median_ms):
            base.overhead_us = (base.median_ms - raw.median_ms) * 1e3
        for row in rows.values():
            if row.median_ms is not None and base is not None and base.median_ms:
                row.ratio = row.median_ms / base.median_ms
        report.rows.extend(rows.values())
    if progress is not None:
        progress.close()
    return report
