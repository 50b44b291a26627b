"""Reference (pure PyTorch) multistep and two-stage reverse steps: the spec
the kernels (csrc/include/genfast/multistep.h) are tested against.

Samplers (codes shared with multistep.h and the op schema):
  dpmpp 0  DPM-Solver++ multistep, orders 1-3, midpoint / heun, dpmsolver++ /
           sde-dpmsolver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for
           Guided Sampling of Diffusion Probabilistic Models")
  unipc 1  UniPC bh1 / bh2, the corrector of this step's input fused with the
           predictor (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
           Framework for Fast Sampling of Diffusion Models")
  heun 2   Heun's second-order method (Karras et al. 2022, "Elucidating the
           Design Space of Diffusion-Based Generative Models", alg. 1)
  dpm_2 3  k-diffusion's DPM2 (the midpoint method at sigma_mid = sqrt(sigma
           sigma_next); Karras et al. 2022 appendix / Lu et al. 2022 DPM-Solver-2)
  lms 4    linear multistep on the derivative d = (x - D)/sigma, orders 1-4, the
           coefficients the integrals of the Lagrange basis over [sigma_i,
           sigma_{i+1}] (Adams-Bashforth on the probability-flow ODE dx/dsigma
           = d; Karras et al. 2022; k-diffusion's sample_lms, diffusers'
           LMSDiscreteScheduler)

All of them are linear in the step's x0 prediction D (from the model output
by prediction type), the sample x and the state. The per-step coefficients
are in the plan (genfast/_plan.py: PLAN_COLUMNS and STAGE_COLUMNS), so warm-up
and lower-order final steps are zero coefficients, never a branch:

  dpmpp          x' = c_x x + c_d0 D + c_d1 H[i-1] + c_d2 H[i-2] + c_noise z
  unipc          xc = cc_self x + cc_x P + cc_dnew D + cc_d0 H[i-1] + cc_d1 H[i-2]
                      + cc_d2 H[i-3]                       (corrector of x)
                 x' = c_x xc + c_d0 D + c_d1 H[i-1] + c_d2 H[i-2],  P <- xc
  heun / dpm_2   stage 0: x' = c_x x + c_d0 D, P <- x      (Euler to the stage-1 sigma)
                 stage 1: x' = s1_c_x x + s1_c_p P + s1_c_d0 D
  lms            x' = c_x x + c_d0 D + c_d1 H[i-1] + c_d2 H[i-2] + c_d3 H[i-3],
                 H[i] <- h_x x + h_d D   (c_d3, h_x, h_d: STAGE_COLUMNS)

State (``genfast.steps.StepState``, one tensor of shape (slots,) + sample
shape, in the sample's dtype): H, a ring of the last three x0 predictions,
D of step i in slot i mod 3 (dpmpp: 3 slots; unipc: 3 + P), for lms the
last three derivatives d = h_x x + h_d D = (x - D)/sigma (3 slots); P, the
saved sample (unipc: the corrected sample of the previous step; heun /
dpm_2: the step's input for stage 1). The op writes D (lms: d) into slot
i mod 3 after reading H[i-3] from it.

x0 from a model output m at the input's (alpha, sigma_vp) with x_vp = k x
(k = ``x_scale``: 1 in VP space, alpha in sigma space):
epsilon (k x - sigma_vp m)/alpha; v_prediction alpha k x - sigma_vp m
(Salimans & Ho 2022); sample m; flow k x - sigma_vp m (x0 = x - t v).
"""

from __future__ import annotations

import torch

from .._plan import COL, SCOL
from . import steps as _st

SAMPLERS = {"dpmpp": 0, "unipc": 1, "heun": 2, "dpm_2": 3, "lms": 4}
SLOTS = {0: 3, 1: 4, 2: 1, 3: 1, 4: 3}  # state slots per sampler code
TWO_STAGE = (2, 3)  # heun, dpm_2: stage 0 and stage 1
P_GUIDANCE, P_RESCALE = 0, 1
NUM_PARAMS = 2


def x0_of(pred, x, m, a, s, k):
    """The x0 prediction of model output m for the sample x (module docstring)."""
    if pred == 0:
        return (k * x - s * m) / torch.clamp(a, min=_st.ALPHA_FLOOR)
    if pred == 1:
        return a * k * x - s * m
    if pred == 2:
        return m
    return k * x - s * m


def _guided(model_output, uncond, guidance, flags, params, dtype):
    """CFG (Ho & Salimans 2022): r (u + g (c - u)); ``guidance`` is (2, N):
    the per-item scale g and guidance_rescale factor r (computed by the
    wrapper, genfast/ops/multistep.py), else params[P_GUIDANCE] and r = 1."""
    mo = model_output.to(dtype)
    if flags & _st.CFG_BATCHED:
        u, c = mo.chunk(2)
    elif flags & _st.CFG_SEPARATE:
        u, c = uncond.to(dtype), mo
    else:
        return mo
    if flags & _st.GUIDANCE_TENSOR:
        shape = (-1,) + (1,) * (c.dim() - 1)
        g, r = guidance[0].to(dtype).reshape(shape), guidance[1].to(dtype).reshape(shape)
        return r * (u + g * (c - u))
    return u + params[P_GUIDANCE] * (c - u)


def _slot(index, back):
    """Ring slot of step index - back (a Python int or a 0-d tensor: no sync)."""
    return (index - back) % 3


def _pick(t, i):
    """t[i] for a Python int or a 0-d tensor (index_select: traceable, no sync)."""
    if isinstance(i, torch.Tensor):
        return t.index_select(0, i.reshape(1).to(torch.int64)).squeeze(0)
    return t[i]


def _read(state, index, back):
    return _pick(state, _slot(index, back))


def step(table, stage_table, index, sample, model_output, state, *, sampler: int, stage: int,
         prediction: int, flags: int, params, uncond=None, guidance=None, noise=None,
         dtype=torch.float32):
    """One step (stage) of a multistep / two-stage sampler: (prev_sample, x0).
    Writes the state in place. ``noise``: the step's standard normals
    (sde-dpmsolver++ only)."""
    row = _pick(table, index).to(dtype)
    srow = _pick(stage_table, index).to(dtype)
    col = lambda j: row[COL[j]]  # noqa: E731  (0-d tensors: no host sync)
    scol = lambda j: srow[SCOL[j]]  # noqa: E731
    x = sample.to(dtype)
    m = _guided(model_output, uncond, guidance, flags, params, dtype)
    hist = state.to(dtype)  # a copy: every read sees the state before this step
    if sampler in (2, 3) and stage == 1:
        d = x0_of(prediction, x, m, scol("s1_alpha"), scol("s1_sigma_vp"), scol("s1_x_scale"))
        prev = scol("s1_c_x") * x + scol("s1_c_p") * hist[0] + scol("s1_c_d0") * d
        return prev, d
    d = x0_of(prediction, x, m, col("alpha"), col("sigma_vp"), scol("x_scale"))
    if sampler in (2, 3):
        state[0].copy_(sample)
        return col("c_x") * x + col("c_d0") * d, d
    h1, h2 = _read(hist, index, 1), _read(hist, index, 2)
    if sampler == 4:
        prev = (col("c_x") * x + col("c_d0") * d + col("c_d1") * h1 + col("c_d2") * h2
                + scol("c_d3") * _read(hist, index, 3))
        _write(state, index, scol("h_x") * x + scol("h_d") * d)
        return prev, d
    if sampler == 1:
        xc = (col("cc_self") * x + col("cc_x") * hist[3] + col("cc_dnew") * d
              + col("cc_d0") * h1 + col("cc_d1") * h2 + col("cc_d2") * _read(hist, index, 3))
        state[3].copy_(xc)
        x = xc
    prev = col("c_x") * x + col("c_d0") * d + col("c_d1") * h1 + col("c_d2") * h2
    if noise is not None:
        prev = prev + col("c_noise") * noise.to(dtype)
    _write(state, index, d)
    return prev, d


def _write(state, index, v):
    """state[index mod 3] <- v (in place; a 0-d tensor index without a sync)."""
    slot = _slot(index, 0)
    if isinstance(slot, torch.Tensor):
        state.index_copy_(0, slot.reshape(1), v.to(state.dtype).unsqueeze(0))
    else:
        state[slot].copy_(v)


__all__ = ["step", "x0_of", "SAMPLERS", "SLOTS", "TWO_STAGE"]
