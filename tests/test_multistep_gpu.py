"""GPU-only checks of the multistep samplers (skipped without a GPU): the
CUDA kernel against the CPU kernel (same in-kernel noise bits), and a 50-step
loop with no device-to-host sync (torch.cuda.set_sync_debug_mode("error"))
that captures in one CUDA graph and replays to the eager result."""

import pytest
import torch

import genfast
from genfast import schedules as S

if not torch.cuda.is_available() or not genfast.backend.availability()["cuda"][0]:
    pytest.skip("needs a GPU and the cuda backend", allow_module_level=True)

SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
CASES = [("dpmpp", {"solver_order": 3, "algorithm_type": "sde-dpmsolver++"}),
         ("unipc", {"solver_order": 3}), ("heun", {}), ("dpm_2", {}), ("lms", {})]


def rnd(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_cuda_equals_cpu(case, dtype):
    sampler, opts = case
    plan = S.from_config(SD).plan(8, sampler=sampler, **opts)
    gplan = plan.to("cuda")
    x = rnd((2, 4, 9, 7), dtype=dtype)
    s_cpu, s_gpu = genfast.steps.new_state(plan, x), genfast.steps.new_state(gplan, x.cuda())
    for i in range(8):
        for k in range(plan.stages(i)):
            mo = rnd((4, 4, 9, 7), 10 + i, dtype)
            kw = dict(guidance_scale=5.0, guidance_rescale=0.5, seed=3, stream=1, stage=k)
            a = genfast.steps.step(plan, i, mo, x, state=s_cpu, backend="cpu", **kw)
            b = genfast.steps.step(gplan, torch.tensor(i, device="cuda"), mo.cuda(), x.cuda(),
                                   state=s_gpu, backend="cuda", **kw)
            tol = 2 * torch.finfo(dtype).eps * max(float(a.prev_sample.abs().max()), 1.0)
            torch.testing.assert_close(b.prev_sample.cpu(), a.prev_sample, rtol=0, atol=tol)
            # the state at its own scale too (lms keeps derivatives (x - D)/sigma)
            st_tol = 4 * torch.finfo(dtype).eps * max(float(s_cpu.buffer.abs().max()), 1.0)
            torch.testing.assert_close(s_gpu.buffer.cpu(), s_cpu.buffer, rtol=0,
                                       atol=max(2 * tol, st_tol))
            x = a.prev_sample


def test_50_steps_no_sync_and_one_cuda_graph():
    plan = S.from_config(SD).plan(50, sampler="dpmpp", solver_order=3,
                                  algorithm_type="sde-dpmsolver++", device="cuda")
    x0 = rnd((1, 4, 32, 32)).cuda()

    def loop(x, state):
        for i in range(50):
            mo = 0.5 * torch.tanh(x)
            x = genfast.steps.step(plan, i, mo, x, state=state, seed=7).prev_sample
        return x

    st = genfast.steps.new_state(plan, x0)
    want = loop(x0, st)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        st.reset()
        loop(x0, st)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    st.reset()
    static_x = x0.clone()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up outside the capture
        loop(static_x, st)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    st.reset()
    with torch.cuda.graph(graph):
        st.buffer.zero_()
        out = loop(static_x, st)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, want)
