"""`genfast bench` report features: --dtype, suites with and without a dtype
keyword, the JSON rows' setup, --compare's threshold and dtype keys, the plot
of several suites. (test_bench.py has the CLI basics and the planted regression.)"""

import json

import pytest
import torch

import genfast.cli
from genfast.bench import SUITES, call_suite, noise, takes_dtype
from genfast.bench import compare as C
from genfast.bench.runner import Case, Provider


def test_every_registered_suite_is_callable_and_noise_takes_dtype():
    assert {"noise", "training", "flows", "steps"} <= set(SUITES)
    assert takes_dtype(noise.cases) and takes_dtype(SUITES["steps"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_noise_suite_in_half_precision(dtype):
    cases = noise.cases(torch.device("cpu"), sizes=[64], dtype=dtype)
    assert all(c.bytes_moved == 64 * 2 for c in cases if c.bytes_moved)
    for case in cases:
        for p in case.providers:
            out = p.make()()
            if p.name != "raw op":  # the raw op writes its buffer and returns nothing
                assert out.dtype == dtype, (case.mode, p.name)
    with pytest.raises(ValueError, match="dtype"):
        noise.cases(torch.device("cpu"), dtype=torch.float64)


def test_call_suite_labels_dtype_and_tolerates_suites_without_it(capsys):
    def legacy(device, full=False, sizes=None):  # a suite not yet updated
        return [Case("legacy", "op", 4, "m", [Provider("genfast", lambda: (lambda: None))])]
    legacy.__module__ = "genfast.bench.legacy"
    assert [c.dtype for c in call_suite(legacy, "cpu")] == ["float32"]
    assert call_suite(legacy, "cpu", dtype=torch.float16) == []
    assert "legacy suite runs float32 only" in capsys.readouterr().err
    cases = call_suite(noise.cases, "cpu", sizes=[64], dtype=torch.bfloat16)
    assert {c.dtype for c in cases} == {"bfloat16"}


def test_dtype_run_json_rows(tmp_path, capsys):
    path = tmp_path / "r.json"
    rc = genfast.cli.main(["bench", "--device", "cpu", "--suite", "noise", "--sizes", "1024",
                           "--size", "1K", "--provider", "torch.randn", "--dtype", "float16",
                           "--json", str(path)])
    assert rc == 0
    doc = json.loads(path.read_text())
    assert doc["meta"]["dtype"] == "float16" and "--dtype float16" in doc["meta"]["command"]
    for r in doc["rows"]:
        assert r["dtype"] == "float16" and r["median_ms"] > 0
        assert r["machine"] and r["versions"]["python"] and "diffusers" in r["versions"]
        assert r["torch_version"] == torch.__version__
    assert "genfast bench (quick, float16)" in capsys.readouterr().out


def _row(provider, ms, dtype="float32"):
    return dict(suite="s", op="op", size="1M", mode="m", provider=provider, median_ms=ms,
                dtype=dtype)


def test_compare_threshold_edges_and_dtype_keys():
    base = {"rows": [_row("genfast", 10.0), _row("x", 10.0), _row("genfast", 10.0, "float16")]}
    base["rows"][1].pop("dtype")  # a baseline saved before rows had a dtype: float32
    now = [_row("genfast", 11.5), _row("x", 10.9), _row("genfast", 30.0, "bfloat16")]
    changes, only_now, only_base = C.compare(now, base)
    assert len(changes) == 2 and len(only_now) == 1 and len(only_base) == 1
    text, n = C.format_comparison(changes, only_now, only_base, 10.0, {}, {})
    assert n == 1 and "SLOWER op 1M m genfast: 10 ms -> 11.5 ms (+15.0%)" in text
    assert "new    op 1M m genfast bfloat16" in text and "gone   op 1M m genfast float16" in text
    _, n = C.format_comparison(changes, [], [], 15.0, {}, {})
    assert n == 0  # +15.0% is not more than a 15% threshold


def test_plot_of_several_suites(tmp_path):
    pytest.importorskip("matplotlib")
    from genfast.bench import plot
    rows = []
    for suite, op, n, ms in (("noise", "randn", 1 << 20, 1.0), ("noise", "randn", 16 << 20, 20.0),
                             ("steps", "ddim", 16384, 0.05), ("steps", "ddim", 1 << 20, 3.0)):
        for provider, f in (("genfast", 1.0), ("torch.randn", 4.0), ("raw op", 0.5)):
            rows.append(dict(suite=suite, op=op, size=str(n), numel=n, mode="m",
                             provider=provider, median_ms=ms * f, ratio=f, overhead_us=None))
    png = tmp_path / "p.png"
    plot.plot(rows, str(png), "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot._speedups(rows)["noise"]["randn 1048576 m"] == [("torch.randn", 4.0)]
    plot.plot([], str(tmp_path / "empty.png"), "nothing")


def test_quick_runs_compile_at_each_ops_largest_size_only():
    from genfast.bench.cli import compile_at_largest_size
    mk = lambda: (lambda: None)  # noqa: E731
    provs = lambda: [Provider("genfast", mk), Provider("torch.compile(reference)", mk)]  # noqa
    cases = [Case("s", "a", n, "m", provs()) for n in (16, 1024)] + [Case("s", "b", 16, "m", provs())]
    out = compile_at_largest_size(cases)
    assert [[p.name for p in c.providers] for c in out] == [
        ["genfast"], ["genfast", "torch.compile(reference)"],
        ["genfast", "torch.compile(reference)"]]
    assert len(cases[0].providers) == 2  # the suite's cases are not changed in place


def test_nothing_to_run_is_an_error(monkeypatch, capsys):
    import genfast.bench.cli as cli

    def legacy(device, full=False, sizes=None):
        return []
    monkeypatch.setitem(cli.SUITES, "noise", legacy)
    rc = genfast.cli.main(["bench", "--device", "cpu", "--suite", "noise"])
    assert rc == 2 and "nothing to run" in capsys.readouterr().err
