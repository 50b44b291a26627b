"""`genfast bench`: the CLI end to end on tiny sizes, the table, the runner."""

import json
import os
import re
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
            "floor_fraction", "device", "torch_version", "genfast_version", "threads", "dtype",
            "machine", "versions"}


def test_bench_json(tmp_path, capsys, restore_threads):
    path = tmp_path / "bench.json"
    rc = genfast.cli.main(["bench", "--device", "cpu", "--threads", "1", "--sizes", "4096",
                           "--suite", "noise", "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    rows = [r for r in doc["rows"] if r["mode"] != "overhead"]
    assert {(r["mode"], r["provider"]) for r in rows} == {
        (m, p) for m in ("alloc", "out=") for p in ("genfast", "torch.randn", "genfast[reference]")}
    over = {r["provider"]: r for r in doc["rows"] if r["mode"] == "overhead"}
    assert set(over) == {"genfast", "raw op", "torch.randn"}
    assert over["genfast"]["size"] == "256" and over["genfast"]["overhead_us"] is not None
    assert over["genfast"]["overhead_us"] == pytest.approx(
        (over["genfast"]["median_ms"] - over["raw op"]["median_ms"]) * 1e3)
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
    assert "wrapper overhead: randn 256 genfast costs" in out.out
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
    over = quick.pop(0)
    assert (over.mode, over.numel, over.overhead_of) == ("overhead", 256, "raw op")
    assert {(c.numel, c.mode) for c in quick} == {(n, m) for n in (1 << 20, 16 << 20)
                                                  for m in ("alloc", "out=")}
    for c in quick:
        names = [p.name for p in c.providers]
        assert names[:2] == ["genfast", "torch.randn"] and c.bytes_moved == c.numel * 4
        assert ("genfast[reference]" in names) == (c.numel <= 1 << 20)
    full = noise.cases(torch.device("cpu"), full=True, sizes=[64])[1:]
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
    # the summary line, not the whole output: warnings of other libraries may say "failed"
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and not re.search(r"\d+ (failed|error)", summary), summary


@pytest.mark.parametrize("args,message", [
    (["--device", "tpu:0"], "--device"), (["--device", "bogus"], "--device"),
    (["--device", "cuda:7"], "--device"), (["--sizes", "12Q"], "--sizes"),
    (["--sizes", "-4"], "--sizes"), (["--sizes", "0"], "--sizes"),
    (["--json", "/no/such/folder/out.json"], "--json"), (["--json", "."], "--json"),
    (["--threads", "0"], "--threads"),
])
def test_bad_arguments_fail_fast_in_one_line(args, message, capsys):
    rc = genfast.cli.main(["bench", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("genfast bench: ") and message in err, err
    assert "Traceback" not in err and "[" not in err  # nothing ran: no progress line


def test_bad_arguments_from_the_command_line():
    r = subprocess.run([sys.executable, "-m", "genfast", "bench", "--sizes", "1X"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "genfast bench: --sizes: '1X' is not a positive element count (e.g. 4096, 64K, 1M)"]


# ------------------------------------------------------------------ selection, Markdown, --compare
def _quick_run(tmp_path, *extra):
    path = tmp_path / "run.json"
    rc = genfast.cli.main(["bench", "--device", "cpu", "--sizes", "4096", "--op", "randn",
                           "--size", "4K", "--provider", "torch.randn", "--json", str(path),
                           *extra])
    return rc, path


def test_selection_and_markdown(tmp_path, capsys):
    md = tmp_path / "report.md"
    rc, path = _quick_run(tmp_path, "--markdown", str(md))
    assert rc == 0
    rows = json.loads(path.read_text())["rows"]
    assert {(r["size"], r["provider"]) for r in rows} == {("4K", "genfast"), ("4K", "torch.randn")}
    text = md.read_text()
    assert text.startswith("### genfast bench (quick, float32)")
    assert "`genfast bench --op randn --size 4K --provider torch.randn --device cpu --sizes 4096`" in text
    table = [line for line in text.splitlines() if line.startswith("| randn")]
    assert len(table) == 4 and all(line.count("|") == 9 for line in table)


def test_compare_catches_a_planted_regression(tmp_path, capsys):
    rc, path = _quick_run(tmp_path)
    assert rc == 0
    doc = json.loads(path.read_text())
    # Plant it: the baseline says genfast's out= row used to take a tenth of the time.
    for r in doc["rows"]:
        r["median_ms"] *= 10
        if r["provider"] == "genfast" and r["mode"] == "out=":
            r["median_ms"] /= 100
    base = tmp_path / "base.json"
    base.write_text(json.dumps(doc))
    capsys.readouterr()
    rc, _ = _quick_run(tmp_path, "--compare", str(base), "--threshold", "50")
    out = capsys.readouterr().out
    assert rc == 1, out
    slower = [line for line in out.splitlines() if "SLOWER" in line]
    assert len(slower) == 1 and "randn 4K out= genfast" in slower[0], out
    assert "1 of 4 rows slower than the baseline by more than 50%" in out


def test_compare_passes_without_regression(tmp_path, capsys):
    rc, path = _quick_run(tmp_path)
    doc = json.loads(path.read_text())
    for r in doc["rows"]:
        r["median_ms"] *= 100  # everything used to be far slower
    base = tmp_path / "base.json"
    base.write_text(json.dumps(doc))
    rc, _ = _quick_run(tmp_path, "--compare", str(base))
    assert rc == 0
    assert "0 of 4 rows slower" in capsys.readouterr().out


@pytest.mark.parametrize("content,message", [(None, "cannot read"), ("{", "not JSON"),
                                             ('{"rows": [{"op": 1}]}', "not a `genfast bench")])
def test_compare_bad_baseline_fails_fast(tmp_path, capsys, content, message):
    base = tmp_path / "base.json"
    if content is not None:
        base.write_text(content)
    rc = genfast.cli.main(["bench", "--compare", str(base)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_unknown_selection_fails_fast(capsys):
    rc = genfast.cli.main(["bench", "--device", "cpu", "--op", "nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "--op: no case has nope" in err and "[" not in err


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    rc = genfast.cli.main(["bench", "--device", "cpu", "--sizes", "1024,4096", "--op", "randn",
                           "--provider", "torch.randn", "--plot", str(png)])
    assert rc == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

def test_training_suite_cases_run():
    """The training suite's cases build and every non-compiled provider runs
    once (timing is `genfast bench --suite training`'s job, not a test's)."""
    from genfast.bench import training
    cases = training.cases(torch.device("cpu"), sizes=[16384])
    assert {c.op for c in cases} == {"add_noise", "min_snr_loss", "reparam+kl",
                                     "add_noise overhead"}
    for case in cases:
        names = [p.name for p in case.providers]
        assert names[0] == "genfast" and case.baseline == "genfast"
        for p in case.providers:
            if "compile" not in p.name:
                p.make()()
