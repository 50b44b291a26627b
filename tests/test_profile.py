"""`genfast profile` / genfast.profile: the loop runs on the built-in model, a
user's `module:callable` and a tiny diffusers pipeline directory; the JSON,
trace and PNG outputs exist and parse; host syncs and allocations are counted
where they happen. Timing is `genfast profile`'s job, not a test's: only the
structure and the counts are checked."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import genfast
import genfast.cli
from genfast import profile as P

SMALL = dict(steps=3, size=8, runs=1, warmup=0)


def test_builtin_model_returns_the_numbers():
    r = genfast.profile(sampler="ddim", guidance=7.5, **SMALL)
    assert r.setup["shape"] == [1, 4, 8, 8] and r.setup["guidance"] == 7.5
    g = r.loops["genfast"]
    assert g.steps == 3 and g.loop_ms > 0 and g.error is None
    assert set(g.phases) == set(P.PHASES)
    for p in P.PHASES:
        st = g.phases[p]
        assert 0 <= st.p50_ms <= st.p95_ms and len(g.timeline[p]) == 3
    assert g.phases["model"].p50_ms > 0 and g.phases["model"].allocs > 0
    # the genfast step makes one tensor (prev_sample; return_x0=False) and never syncs
    assert g.phases["step"].allocs == 3 and g.phases["step"].syncs == 0
    d = json.loads(json.dumps(r.to_dict()))
    assert d["loops"]["genfast"]["phases"]["step"]["allocs"] == 3
    assert "genfast profile: ddim, 3 steps" in str(r)


def test_diffusers_loop_side_by_side():
    pytest.importorskip("diffusers")
    r = P.profile(sampler="euler", guidance=2.0, **SMALL)
    d = r.loops["diffusers"]
    assert d.error is None and d.name == "diffusers EulerDiscreteScheduler" and d.steps == 3
    # diffusers' Euler step makes more tensors than the fused step; guidance is done outside
    assert d.phases["step"].allocs > r.loops["genfast"].phases["step"].allocs
    assert d.phases["guidance"].allocs > r.loops["genfast"].phases["guidance"].allocs
    text = str(r)
    assert "diffusers EulerDiscreteScheduler" in text and "scheduler steps per loop" in text


def test_syncs_are_counted_in_their_phase():
    """A model that calls .item() once per call: one host sync per step, in
    "model" (on a CPU counted as the op that would block on a GPU)."""
    class Syncing(torch.nn.Module):
        def forward(self, x, t):
            scale = float(x.abs().max())  # .item() under the hood
            return x / (1.0 + scale)
    r = P.profile(Syncing(), sampler="ddim", guidance=1.0, diffusers=False, **SMALL)
    g = r.loops["genfast"]
    assert g.phases["model"].syncs == 3
    assert g.phases["step"].syncs == g.phases["rest"].syncs == 0
    assert "diffusers" not in r.loops


def test_user_model_module_callable(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_denoiser.py").write_text(textwrap.dedent("""
        import torch
        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            def forward(self, x, t):
                return self.conv(x)
        def make():
            return Net()
        def plain(x, t):
            return 0.5 * x
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    r = P.profile("my_denoiser:make", sampler="euler_ancestral", diffusers=False, **SMALL)
    assert "my_denoiser:make" in r.setup["model"] and "parameters" in r.setup["model"]
    r = P.profile("my_denoiser:plain", sampler="lcm", diffusers=False, **SMALL)
    assert r.loops["genfast"].steps == 3
    rc = genfast.cli.main(["profile", "--model", "my_denoiser:Net", "--steps", "2", "--size", "8",
                           "--runs", "1", "--warmup", "0", "--no-diffusers"])
    assert rc == 0 and "my_denoiser:Net" in capsys.readouterr().out


def test_cli_outputs(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    js, png, trace = tmp_path / "p.json", tmp_path / "p.png", tmp_path / "trace.json"
    rc = genfast.cli.main(["profile", "--sampler", "euler", "--steps", "3", "--size", "8",
                           "--runs", "2", "--warmup", "0", "--json", str(js), "--plot", str(png),
                           "--trace", str(trace)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "model" in out and "loop (p50, p95 ms)" in out
    doc = json.loads(js.read_text())
    assert doc["setup"]["sampler"] == "euler" and doc["loops"]["genfast"]["steps"] == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = json.loads(trace.read_text())["traceEvents"]
    names = {e.get("name") for e in events}
    assert {"step 0: model", "step 2: step", "step 1: rest"} <= names


def test_tiny_diffusers_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3,
                                 layers_per_block=1, block_out_channels=(8, 16),
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(
        tmp_path / "pipe")
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "genfast", "profile", "--pipeline",
                        str(tmp_path / "pipe"), "--sampler", "ddpm", "--steps", "3", "--runs",
                        "1", "--warmup", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    # the pipeline's U-Net and sample size; unconditional, so guidance defaults to off
    assert doc["setup"]["shape"] == [1, 3, 8, 8] and doc["setup"]["guidance"] == 1.0
    assert "UNet2DModel" in doc["setup"]["model"]
    assert doc["loops"]["diffusers"]["name"] == "diffusers DDPMScheduler"
    assert doc["loops"]["diffusers"]["error"] is None
    assert "guidance" not in r.stdout.split("phase, per step")[1].split("loop")[0]


def test_multistep_samplers_when_merged():
    if "dpmpp_2m" not in P.available_samplers():
        with pytest.raises(ValueError, match="multistep"):
            P.profile(sampler="dpmpp_2m", **SMALL)
        pytest.skip("the multistep step API (genfast.steps.new_state) is not in this genfast")
    for s in ("dpmpp_2m", "unipc", "heun"):
        r = P.profile(sampler=s, diffusers=False, **SMALL)
        assert r.loops["genfast"].steps == 3 and r.loops["genfast"].phases["model"].p50_ms > 0


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "steps"), (["--batch", "-1"], "batch"), (["--size", "1"], "size"),
    (["--guidance", "-2"], "guidance"), (["--model", "nocolon"], "module:callable"),
    (["--model", "no_such_module_xyz:f"], "cannot import"),
    (["--pipeline", "/no/such/pipeline"], "not a directory"),
    (["--model", "os:sep"], "not callable"),
    (["--json", "/no/such/folder/p.json"], "--json"),
    (["--device", "bogus"], "device"), (["--device", "cuda:9"], "device"),
])
def test_bad_arguments_one_line(args, message, capsys):
    rc = genfast.cli.main(["profile", *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("genfast profile: ") and message in err, err
    assert err.count("\n") == 1
