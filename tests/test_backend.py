"""Backend selection, extension loading and fallback, `genfast info`."""

import json
import os
import subprocess
import sys

import pytest
import torch

import genfast
from genfast import backend as B
from genfast._extension import check_build_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=300)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        genfast.set_backend("metal")
    with pytest.raises(ValueError, match="backend must be one of"):
        genfast.randn((2,), seed=0, backend="gpu")


def test_unavailable_backend_says_why():
    for name, (ok, why) in B.availability().items():
        if ok:
            continue
        assert why, name
        with pytest.raises(genfast.BackendUnavailableError, match=name):
            genfast.set_backend(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_backend_without_gpu():
    with pytest.raises(genfast.BackendUnavailableError, match="cuda") as e:
        genfast.randn((2,), seed=0, backend="cuda")
    assert any(w in str(e.value) for w in ("no GPU", "not built", "did not load", "no CUDA"))


def test_set_and_use_backend():
    assert genfast.get_backend() == "auto"
    with genfast.use_backend("reference"):
        assert genfast.get_backend() == "reference"
        x = genfast.randn((3, 4), seed=5)
    assert genfast.get_backend() == "auto"
    torch.testing.assert_close(x, genfast.reference.noise.randn((3, 4), 5), rtol=0, atol=0)
    genfast.set_backend("reference")
    try:
        assert genfast.get_backend() == "reference"
    finally:
        genfast.set_backend("auto")


def test_use_backend_restores_on_error():
    with pytest.raises(RuntimeError):
        with genfast.use_backend("reference"):
            raise RuntimeError("boom")
    assert genfast.get_backend() == "auto"


def test_auto_prefers_the_extension_on_cpu():
    want = "cpu" if B.availability()["cpu"][0] else "reference"
    assert B.resolve(None, torch.device("cpu")) == want
    assert B.resolve("reference", torch.device("cpu")) == "reference"


def test_backend_device_mismatch():
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    with pytest.raises(genfast.BackendUnavailableError, match="CPU tensors"):
        B.resolve("cpu", torch.device("cuda"))


def test_build_info_check_names_both_versions():
    why = check_build_info({"torch_version": "2.6.0+cpu"}, "2.13.0+cpu")
    assert "2.6.0+cpu" in why and "2.13.0+cpu" in why
    assert check_build_info({"torch_version": "2.13.0"}, "2.13.0") is None
    assert "no torch version" in check_build_info({}, "2.13.0")


def test_disabled_extension_falls_back_with_one_warning():
    code = ("import warnings, genfast\n"
            "from genfast.reference.noise import randn\n"
            "x = genfast.randn((2, 3), seed=1)\n"
            "assert genfast.info()['backends']['cpu']['available'] is False\n"
            "assert (x == randn((2, 3), 1)).all()\n"
            "print('OK')\n")
    r = run_python(code, GENFAST_DISABLE_EXTENSION="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK"
    assert r.stderr.count("GenfastFallbackWarning") == 1, r.stderr
    assert "reference" in r.stderr and "GENFAST_DISABLE_EXTENSION" in r.stderr


def test_extension_loads_without_warning():
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    r = run_python("import genfast")
    assert r.returncode == 0, r.stderr
    assert "GenfastFallbackWarning" not in r.stderr, r.stderr


def test_info_dict():
    d = genfast.info()
    assert d["genfast"] == genfast.__version__
    assert d["torch"] == torch.__version__
    assert set(d["backends"]) == {"reference", "cpu", "cuda", "triton"}
    for name, b in d["backends"].items():
        assert isinstance(b["available"], bool)
        assert b["available"] or b["reason"], name
    assert d["cpu"]["threads"] == torch.get_num_threads()
    if d["backends"]["cpu"]["available"]:
        assert d["cpu"]["isa"] in ("baseline", "avx2", "avx512")
        assert d["cpu"]["isa"] in d["cpu"]["isas"]
        assert d["extension"]["_C"]["build"]["torch_version"] == torch.__version__


def test_cli_info():
    r = subprocess.run([sys.executable, "-m", "genfast", "info"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    for word in ("genfast", "torch", "backends", "reference", "cpu", "cuda", "triton", "threads"):
        assert word in r.stdout
    r = subprocess.run([sys.executable, "-m", "genfast", "info", "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)["backends"]) == {"reference", "cpu", "cuda", "triton"}


def test_cpu_isa_override_env():
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    r = run_python("import genfast; print(genfast.info()['cpu']['isa'])", GENFAST_CPU_ISA="baseline")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "baseline"


# ------------------------------------------------------------------ scopes and threads
def test_overlapping_scopes_in_two_threads_restore():
    """Thread A opens, B opens, A closes, B closes: before, the process was
    left on A's backend; now each thread sees only its own scopes."""
    import threading

    seen = {}
    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()

    def a():
        with genfast.use_backend("reference"):
            a_open.set()
            b_open.wait(10)
            seen["a"] = genfast.get_backend()
        a_closed.set()

    def b():
        a_open.wait(10)
        with genfast.use_backend("auto"):
            b_open.set()
            a_closed.wait(10)
            seen["b"] = genfast.get_backend()
        seen["b_after"] = genfast.get_backend()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"a": "reference", "b": "auto", "b_after": "auto"}
    assert genfast.get_backend() == "auto"


def test_scope_is_local_to_its_thread():
    import threading

    seen = []
    with genfast.use_backend("reference"):
        t = threading.Thread(target=lambda: seen.append(genfast.get_backend()))
        t.start()
        t.join(10)
        assert genfast.get_backend() == "reference"
    assert seen == ["auto"]


def test_scopes_closing_out_of_order():
    # Generators (or coroutines) can close scopes in any order.
    def scoped(name):
        with genfast.use_backend(name):
            yield

    outer, inner = scoped("reference"), scoped("auto")
    next(outer)
    next(inner)
    assert genfast.get_backend() == "auto"
    outer.close()  # the outer scope closes first
    assert genfast.get_backend() == "auto"
    inner.close()
    assert genfast.get_backend() == "auto" and B._scopes.stack.open == []
    next(outer := scoped("reference"))
    assert genfast.get_backend() == "reference"
    outer.close()
    assert genfast.get_backend() == "auto"


def test_set_backend_is_process_wide_and_scopes_win():
    import threading

    seen = []
    genfast.set_backend("reference")
    try:
        t = threading.Thread(target=lambda: seen.append(genfast.get_backend()))
        t.start()
        t.join(10)
        with genfast.use_backend("auto"):
            assert genfast.get_backend() == "auto"
        assert genfast.get_backend() == "reference"
    finally:
        genfast.set_backend("auto")
    assert seen == ["reference"]


def test_compiled_code_follows_the_scope():
    """torch.compile reads the backend at trace time and guards on it: the
    same compiled function runs the reference inside a scope."""
    f = torch.compile(lambda x: x + 1 if genfast.get_backend() == "reference" else x - 1,
                      fullgraph=True, backend="eager")
    x = torch.zeros(2)
    assert f(x).tolist() == [-1.0, -1.0]
    with genfast.use_backend("reference"):
        assert f(x).tolist() == [1.0, 1.0]
    assert f(x).tolist() == [-1.0, -1.0]


# ------------------------------------------------------------------ environment switches
@pytest.mark.parametrize("value,level_word", [("avx9000", "not a level"),
                                              ("AVX2", "not a level")])
def test_unknown_cpu_isa_warns_once(value, level_word):
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    r = run_python("import genfast; print(genfast.info()['cpu']['isa'])", GENFAST_CPU_ISA=value)
    assert r.returncode == 0, r.stderr
    best = genfast.info()["cpu"]["best_isa"]
    assert r.stdout.strip() == best
    assert r.stderr.count("GenfastConfigWarning") == 1, r.stderr
    assert repr(value) in r.stderr and level_word in r.stderr and f"using {best}" in r.stderr


def test_unsupported_cpu_isa_warns_once():
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    missing = [x for x in ("avx2", "avx512") if x not in genfast.info()["cpu"]["isas"]]
    if not missing:
        pytest.skip("this CPU supports every level")
    r = run_python("import genfast", GENFAST_CPU_ISA=missing[-1])
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("GenfastConfigWarning") == 1, r.stderr
    assert "not supported by this CPU" in r.stderr and missing[-1] in r.stderr


@pytest.mark.parametrize("value,disabled", [("1", True), ("true", True), ("TRUE", True),
                                            ("0", False), ("false", False), ("", False)])
def test_disable_extension_values(value, disabled):
    if not B.availability()["cpu"][0]:
        pytest.skip("cpu backend not built")
    r = run_python("import genfast; print(genfast.info()['backends']['cpu']['available'])",
                   GENFAST_DISABLE_EXTENSION=value)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(not disabled)
    if disabled:
        assert "disabled on purpose" in r.stderr and "rebuild" not in r.stderr, r.stderr
    else:
        assert "Warning" not in r.stderr, r.stderr


def test_disable_extension_unknown_value_warns():
    r = run_python("import genfast", GENFAST_DISABLE_EXTENSION="maybe")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("GenfastConfigWarning") == 1 and "'maybe'" in r.stderr, r.stderr


def test_scope_closed_from_another_thread():
    """A generator holding a scope, closed from another thread, closes its own
    thread's scope, not the closer's."""
    import threading

    def scoped():
        with genfast.use_backend("reference"):
            yield

    g = scoped()
    next(g)
    assert genfast.get_backend() == "reference"
    t = threading.Thread(target=g.close)
    t.start()
    t.join(10)
    assert genfast.get_backend() == "auto"
