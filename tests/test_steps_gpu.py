"""GPU-only checks of genfast.steps (skipped without a GPU; scripts/gpu_check.sh
runs them): the CUDA kernel against the CPU kernel (same in-kernel noise bits:
the stream is the same on both), a 50-step loop with no device-to-host sync
(torch.cuda.set_sync_debug_mode("error")) that captures in one CUDA graph and
replays, an index past the plan giving NaN, opcheck on strided CUDA inputs."""

import math

import pytest
import torch

import genfast
from genfast import schedules as S
from genfast.reference import steps as R

if not torch.cuda.is_available() or not genfast.backend.availability()["cuda"][0]:
    pytest.skip("needs a GPU and the cuda backend", allow_module_level=True)

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SAMPLERS = ["ddpm", "ddim", "euler", "euler_ancestral", "lcm"]


def rnd(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cuda_equals_cpu(sampler, dtype):
    plan = S.from_config(SD).plan(8, sampler=sampler)
    x, mo = rnd((2, 4, 9, 7), dtype=dtype), rnd((4, 4, 9, 7), 1, dtype)
    kw = dict(guidance_scale=5.0, guidance_rescale=0.5, seed=3, stream=1)
    if sampler in ("ddpm", "ddim", "lcm"):
        kw["thresholding"] = True
    for i in (0, 4, 7):
        a = genfast.steps.step(plan, i, mo, x, backend="cpu", **kw)
        b = genfast.steps.step(plan.to("cuda"), torch.tensor(i, device="cuda"), mo.cuda(),
                               x.cuda(), backend="cuda", **kw)
        for u, v in zip(a, b):
            scale = u.float().abs().max().item()
            torch.testing.assert_close(v.cpu().float(), u.float(), atol=4e-6 * scale + 1e-6,
                                       rtol=1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_50_step_loop_no_sync_and_cuda_graph(backend):
    plan = S.from_config(SD).plan(50, sampler="euler_ancestral", device="cuda")
    x0 = torch.randn(2, 4, 16, 16, device="cuda")
    static_x = x0.clone()
    idx = torch.zeros((), dtype=torch.int64, device="cuda")

    def loop(x):
        i = idx.clone()
        for _ in range(50):
            out = 0.5 * torch.tanh(x)
            x = genfast.steps.euler_ancestral(plan, i, torch.cat([out, 0.9 * out]), x,
                                              guidance_scale=5.0, guidance_rescale=0.5, seed=3,
                                              backend=backend).prev_sample
            i = i + 1
        return x

    want = loop(x0)  # warm-up (and Triton compiles) outside capture
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop(x0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = loop(static_x)
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want)


def test_index_past_the_plan_is_nan():
    plan = S.from_config(SD).plan(5, sampler="ddim", device="cuda")
    x = torch.randn(1, 4, 8, 8, device="cuda")
    out = genfast.steps.ddim(plan, torch.tensor(5, device="cuda"), x, x, backend="cuda")
    assert torch.isnan(out.prev_sample).all()


def test_opcheck_cuda_strided():
    plan = S.from_config(SD).plan(5, sampler="ddpm", device="cuda")
    x = torch.randn(2, 8, 4, 4, device="cuda").transpose(2, 3)
    mo = torch.randn(4, 16, 4, 4, device="cuda")[:, ::2].transpose(2, 3)
    flags = R.CFG_BATCHED | R.NOISE_SEEDED | R.WANT_X0 | R.RESCALE | R.THRESHOLD
    params = [4.0, 0.5, 0.0, 1.0, 0.9, 1.5, 0.0, 0.0, math.inf, 1.0, 10.0]
    args = (x, mo, None, None, None, plan.table, torch.tensor(2, device="cuda"), 0, 0, 0, 0,
            flags, params, 7, 1, 0)
    torch.library.opcheck(torch.ops.genfast.steps_step.default, args)
