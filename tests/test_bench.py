"""`genfast bench`: the CLI end to end on tiny sizes, the table, the runner."""

import json
import os
import subprocess
import sys

import pytest
import torch

import genfast.cli
from genfast.bench import SUITES, noise
from genfast.bench.cli import format_table
from genfast.bench.runner import Case, Provider, Settings, percentile, run_cases, size_label

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROW_KEYS = {"op", "size", "mode", "provider", "median_ms", "p20_ms", "p80_ms", "ratio",
            "floor_fraction", "device", "torch_version", "genfast_version", "threads"}


def test_bench_json(tmp_path, capsys, restore_threads):
    path = tmp_path / "bench.json"
    rc = genfast.cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", "4096",
                           "--suite", "noise", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    rows = doc["rows"]
    assert {(r["mode"], r["provider"]) for r in rows} == {
        (m, p) for m in ("alloc", "out=") for p in ("genfast", "torch.randn", "genfast[reference]")}
    for r in rows:
        assert ROW_KEYS <= r.keys()
        assert r["device"] == "cpu" and r["threads"] == 1 and r["size"] == "4K"
        assert r["skipped"] is None
        assert 0 < r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        # tiny sizes are overhead-bound, far below the floor; 5 allows for copy-timing noise
        assert 0 < r["floor_fraction"] <= 5
        if r["provider"] == "genfast":
            assert r["ratio"] == 1.0
    assert doc["meta"]["backend"] == genfast.backend.resolve(None, torch.device("cpu"))
    assert doc["copy_bandwidth"][0]["clone_gbps"] > 0
    out = capsys.readouterr()
    assert "genfast backend:" in out.out and "1.00x" in out.out and "torch.randn" in out.out
    assert "[" in out.err and "noise 4K" in out.err  # the progress lines


def test_help_exits_0():
    r = subprocess.run([sys.executable, "-m", "genfast", "bench", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--json" in r.stdout and "--suite" in r.stdout and "--sizes" not in r.stdout


def test_format_table():
    base = dict(op="randn", size="16M", mode="out=", p20_ms=9.0, p80_ms=11.0, skipped=None)
    rows = [dict(base, provider="genfast", median_ms=10.0, ratio=1.0, floor_fraction=0.384),
            dict(base, provider="torch.randn", median_ms=0.5, ratio=0.05, floor_fraction=None),
            dict(base, provider="torch.compile(reference)", median_ms=None, p20_ms=None,
                 p80_ms=None, ratio=None, floor_fraction=None, skipped="no C++ compiler")]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["op", "size", "mode", "provider", "median", "spread", "ratio",
                                "floor"]
    assert lines[1].split()[3:] == ["genfast", "10.0", "ms", "±10%", "1.00x", "38%"]
    assert lines[2].split()[3:] == ["torch.randn", "500", "us", "±200%", "0.05x", "-"]
    assert lines[3].endswith("skipped: no C++ compiler")
    # numbers are right-aligned: the ratio column ends at the same place on every row
    ends = {line.rindex("x") for line in lines[1:3]}
    assert len(ends) == 1


def test_runner_interleaves_and_reports_failures():
    calls = []
    providers = [Provider("genfast", lambda: (lambda: calls.append("g"))),
                 Provider("slow", lambda: (lambda: calls.append("s")), max_reps=3),
                 Provider("broken", lambda: 1 / 0),
                 Provider("absent", skip="not here")]
    s = Settings(target_s=0.005, min_reps=3, max_reps=20, warmup_s=0.0, min_sample_s=0.0)
    report = run_cases([Case("t", "op", 10, "m", providers)], torch.device("cpu"), s)
    rows = {r.provider: r for r in report.rows}
    assert rows["genfast"].ratio == 1.0 and rows["genfast"].reps == 20
    assert rows["slow"].reps == 3 and rows["slow"].floor_fraction is None
    assert rows["broken"].skipped.startswith("ZeroDivisionError") and rows["broken"].ratio is None
    assert rows["absent"].skipped == "not here"
    timed = "".join(calls)[-23:]  # the slow provider's 3 samples are spread, not bunched
    assert timed.count("s") == 3 and "ss" not in timed


def test_noise_cases():
    quick = noise.cases(torch.device("cpu"))
    assert {(c.numel, c.mode) for c in quick} == {(n, m) for n in (1 << 20, 16 << 20)
                                                  for m in ("alloc", "out=")}
    for c in quick:
        names = [p.name for p in c.providers]
        assert names[:2] == ["genfast", "torch.randn"] and c.bytes_moved == c.numel * 4
        assert ("genfast[reference]" in names) == (c.numel <= 1 << 20)
    full = noise.cases(torch.device("cpu"), full=True, sizes=[64])
    assert all("torch.compile(reference)" in [p.name for p in c.providers] for c in full)
    assert "noise" in SUITES


def test_helpers():
    assert [size_label(n) for n in (4096, 1 << 20, 16 << 20, 1000)] == ["4K", "1M", "16M", "1000"]
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert percentile([1.0, 2.0], 0.2) == pytest.approx(1.2)
    assert percentile([7.0], 0.8) == 7.0


def test_pytest_benchmark_suites_run():
    """`pytest benchmarks/` collects and runs every suite (once each, untimed)."""
    env = dict(os.environ, GENFAST_BENCH_SIZES="4096")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "benchmarks", "--benchmark-disable"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and " failed" not in r.stdout
