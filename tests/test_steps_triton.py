"""The Triton step kernel (genfast/triton/steps.py) against the reference, on
Triton's CPU interpreter when there is no GPU (small shapes; opcheck and
torch.compile of triton ops only with a GPU, see tests/test_noise_triton.py).
Tolerances as tests/test_steps.py for float32 and float16; the interpreter
truncates float32 -> bfloat16, so bf16 gets two ulps of the output's scale."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import genfast  # noqa: E402
from genfast import backend as gf_backend  # noqa: E402
from genfast import schedules as S  # noqa: E402

_ok, _why = gf_backend.availability()["triton"]
if not _ok:
    pytest.skip(f"triton backend unavailable: {_why}", allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
CASES = [
    ("ddpm", "epsilon", {"variance_type": "learned_range", "thresholding": True}),
    ("ddim", "v_prediction", {"eta": 0.5, "clip_sample": True, "guidance_rescale": 0.7}),
    ("euler", "epsilon", {"s_churn": 2.0}),
    ("euler_ancestral", "sample", {}),
    ("lcm", "epsilon", {}),
    ("flow_match_euler", "flow", {"stochastic_sampling": True}),
]


def rnd(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(DEVICE, dtype)


def _plan(sampler):
    cfg = ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
           if sampler == "flow_match_euler" else SD)
    return S.from_config(cfg).plan(6, sampler=sampler, device=DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_triton_matches_reference(case, dtype):
    sampler, pred, kw = case
    plan = _plan(sampler)
    learned = kw.get("variance_type") == "learned_range"
    x = rnd((2, 4, 5, 3), dtype=dtype)
    mo = rnd((4, 8 if learned else 4, 5, 3), 1, dtype)  # batched [uncond; cond]
    for i in (0, 3, torch.tensor(5, device=DEVICE)):
        common = dict(prediction_type=pred, guidance_scale=4.0, seed=11, stream=2, **kw)
        got = genfast.steps.step(plan, i, mo, x, backend="triton", **common)
        ref = genfast.steps.step(plan, i, mo, x, backend="reference", **common)
        for g, r in zip(got, ref):
            scale = r.float().abs().max().item()
            tol = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
            torch.testing.assert_close(g.float(), r.float(), atol=tol * scale, rtol=tol)
