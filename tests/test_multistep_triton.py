"""The Triton multistep kernel (genfast/triton/multistep.py) against the
reference, on Triton's CPU interpreter when there is no GPU (small shapes;
opcheck and torch.compile of triton ops only with a GPU, see
tests/test_noise_triton.py). Tolerances, relative to the output's largest
value, per step: float32 2e-5; float16 1e-3 and bfloat16 8e-3 (two ulps: the
state is stored in the sample's dtype, and the interpreter truncates float32
-> bfloat16 where the reference rounds)."""

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
    ("dpmpp", "epsilon", {"solver_order": 3}, {}),
    ("dpmpp", "v_prediction", {"algorithm_type": "sde-dpmsolver++"}, {"seed": 5}),
    ("dpmpp", "epsilon", {"algorithm_type": "sde-dpmsolver++"}, {"guidance_scale": 4.0}),
    ("unipc", "epsilon", {"solver_order": 3}, {"guidance_rescale": 0.5, "guidance_scale": 3.0}),
    ("unipc", "sample", {"solver_type": "bh1", "disable_corrector": [2]}, {}),
    ("heun", "epsilon", {}, {}),
    ("dpm_2", "v_prediction", {}, {}),
    ("lms", "epsilon", {}, {}),
    ("lms", "sample", {"order": 3}, {"guidance_scale": 3.0}),
]


def rnd(shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(DEVICE, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{len(c[2])}")
def test_triton_matches_reference(case, dtype):
    """Step by step (the reference's sample and state fed to both), a loop
    through warm-up, steady state and the last step, index as a tensor."""
    sampler, pred, opts, kw = case
    plan = S.from_config(SD).plan(5, sampler=sampler, device=DEVICE, **opts)
    x = rnd((2, 3, 5, 7), 1, dtype)  # odd sizes: masked tails
    st = genfast.steps.new_state(plan, x)
    tol_of = {torch.float32: 2e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    for i in range(plan.num_steps):
        for k in range(plan.stages(i)):
            cfg = "guidance_scale" in kw
            mo = rnd((2 * x.shape[0],) + x.shape[1:] if cfg else x.shape, 100 + 10 * i + k, dtype)
            extra = dict(kw)
            if plan.options.get("algorithm_type") and "seed" not in kw:
                extra["noise"] = rnd(x.shape, 300 + i, dtype)
            mine = genfast.steps.StepState(plan.sampler, st.buffer.clone())
            got = genfast.steps.step(plan, torch.tensor(i, device=DEVICE), mo, x, state=mine,
                                     stage=k, prediction_type=pred, backend="triton", **extra)
            want = genfast.steps.step(plan, i, mo, x, state=st, stage=k, prediction_type=pred,
                                      backend="reference", **extra)
            tol = tol_of * max(float(want.prev_sample.abs().max()), 1.0)
            torch.testing.assert_close(got.prev_sample.float(), want.prev_sample.float(),
                                       rtol=0, atol=tol)
            torch.testing.assert_close(mine.buffer.float(), st.buffer.float(), rtol=0,
                                       atol=tol_of * max(float(st.buffer.abs().max()), 1.0))
            torch.testing.assert_close(got.pred_original_sample.float(),
                                       want.pred_original_sample.float(), rtol=0,
                                       atol=tol_of * max(float(
                                           want.pred_original_sample.abs().max()), 1.0))
            x = want.prev_sample
