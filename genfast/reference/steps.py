"""Reference (pure PyTorch) reverse-diffusion steps: the spec the kernels are
tested against, written in diffusers 0.42.1's own form (x0 from the model
output, clip / threshold, then each scheduler's update), not in the folded
affine form of csrc/include/genfast/steps.h.

Codes (shared with steps.h and the op schema): sampler ddpm 0 / ddim 1 /
euler 2 / euler_ancestral 3 / lcm 4 / flow_match_euler 5; prediction epsilon
0 / v_prediction 1 / sample 2 / flow 3; variance fixed_small 0 /
fixed_small_log 1 / fixed_large 2 / learned_range 3; flags and params as in
steps.h.

The per-step scalars come from the sampling plan's row ``table[i]`` (float64;
``i`` a Python int or a 0-d integer tensor: indexing with it is a gather, no
host sync). They are rounded to the compute dtype once and the element maths
runs in it: float32 by default (what the kernels do); ``dtype=float16`` gives
diffusers' own fp16 chain (the tests' measure of the error a low-precision
step makes), float64 the ground truth.
"""

from __future__ import annotations

import torch

SAMPLERS = {"ddpm": 0, "ddim": 1, "euler": 2, "euler_ancestral": 3, "lcm": 4,
            "flow_match_euler": 5}
PREDICTIONS = {"epsilon": 0, "v_prediction": 1, "sample": 2, "flow": 3}
VARIANCES = {"fixed_small": 0, "fixed_small_log": 1, "fixed_large": 2, "learned_range": 3}

CFG_BATCHED, CFG_SEPARATE, CLIP, THRESHOLD, USE_CLIPPED = 1, 2, 4, 8, 16
NOISE_GIVEN, NOISE_SEEDED, STOCHASTIC, RESCALE, GUIDANCE_TENSOR, WANT_X0 = \
    32, 64, 128, 256, 512, 1024
(P_GUIDANCE, P_RESCALE, P_ETA, P_CLIP, P_RATIO, P_SAMPLE_MAX, P_CHURN, P_TMIN, P_TMAX, P_SNOISE,
 P_TSCALE) = range(11)
NUM_PARAMS = 11
ALPHA_FLOOR = 2.0 ** -12  # steps.h kAlphaFloor: zero-terminal SNR with epsilon prediction

# plan columns (genfast/_plan.py)
C_T, C_SIG, C_SIGN, C_A, C_S, C_AN, C_SN, C_LAST = 0, 1, 2, 3, 4, 5, 6, 12


def _items(x):
    return x.reshape(x.shape[0], -1)


def _per_item(v, x):
    return v.reshape((-1,) + (1,) * (x.dim() - 1))


def guided_output(model_output, uncond, guidance, flags, params, channels, dtype):
    """(m, v): the guided model output (Ho & Salimans 2022: u + g (c - u)) with
    guidance_rescale (Lin et al. 2024, section 3.4: phi (m std_c / std_m) +
    (1 - phi) m, unbiased stds over each item's features), and the learned
    variance channels (of the conditional output) or None."""
    mo = model_output.to(dtype)
    if flags & CFG_BATCHED:
        u, c = mo.chunk(2)
    elif flags & CFG_SEPARATE:
        u, c = uncond.to(dtype), mo
    else:
        u, c = None, mo
    v = None
    if c.shape[1] == 2 * channels:  # learned variance: second half of the channels
        c, v = c.split(channels, dim=1)
        u = None if u is None else u.split(channels, dim=1)[0]
    if u is None:
        return c, v
    g = guidance.to(dtype) if flags & GUIDANCE_TENSOR else torch.tensor(params[P_GUIDANCE], dtype=dtype)
    g = _per_item(g, c) if g.dim() else g
    m = u + g * (c - u)
    if flags & RESCALE:
        phi = params[P_RESCALE]
        dims = list(range(1, c.dim()))
        std_c = c.std(dim=dims, keepdim=True)
        std_m = m.std(dim=dims, keepdim=True)
        ratio = torch.where(std_m > 0, std_c / std_m, torch.ones_like(std_m))
        m = phi * (m * ratio) + (1 - phi) * m
    return m, v


def threshold(x0, ratio, sample_max):
    """diffusers' _threshold_sample (Saharia et al. 2022, "Photorealistic
    Text-to-Image Diffusion Models with Deep Language Understanding", sec. 2.3):
    per item s = clamp(quantile(|x0|, ratio), 1, sample_max); x0 = clamp(x0, -s, s)/s.
    The quantile is taken in float32 (float64 for float64), as diffusers does."""
    qd = torch.float64 if x0.dtype == torch.float64 else torch.float32
    flat = _items(x0).to(qd)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(1.0, sample_max)
    s = _per_item(s, x0)
    return (torch.clamp(x0.to(qd), -s, s) / s).to(x0.dtype)


def _vp_x0(pred, x, m, a, s):
    if pred == 0:
        return (x - s * m) / torch.clamp(a, min=ALPHA_FLOOR)
    if pred == 1:
        return a * x - s * m
    if pred == 2:
        return m
    raise ValueError("prediction_type 'flow' is for flow-matching samplers")


def _vp_eps(pred, x, m, a, s):
    if pred == 0:
        return m
    if pred == 1:
        return a * m + s * x
    return (x - a * m) / s


def _clip(x0, flags, params):
    if flags & THRESHOLD:
        return threshold(x0, params[P_RATIO], params[P_SAMPLE_MAX])
    if flags & CLIP:
        return x0.clamp(-params[P_CLIP], params[P_CLIP])
    return x0


def step(table, index, sample, model_output, *, sampler: int, prediction: int, variance: int,
         flags: int, params, num_steps: int, uncond=None, guidance=None, noise=None,
         dtype=torch.float32):
    """One step: (prev_sample, x0) where x0 is diffusers' pred_original_sample
    (LCM: its ``denoised``). ``noise``: the step's standard normals (needed
    when the step draws noise)."""
    row = table[index].to(dtype)
    col = lambda j: row[j]  # noqa: E731  (0-d tensors: no host sync)
    x = sample.to(dtype)
    m, v = guided_output(model_output, uncond, guidance, flags, params, sample.shape[1], dtype)
    z = None if noise is None else noise.to(dtype)
    zero = torch.zeros((), dtype=dtype, device=sample.device)
    if sampler in (0, 1, 4):
        a, s, an, sn = col(C_A), col(C_S), col(C_AN), col(C_SN)
        x0 = _clip(_vp_x0(prediction, x, m, a, s), flags, params)
        if sampler == 1:  # DDIM (Song et al. 2021 eq. 12)
            eps = _vp_eps(prediction, x, m, a, s)
            var = (sn * sn) / (s * s) * (1 - (a * a) / (an * an))
            std = params[P_ETA] * var.clamp(min=0).sqrt()
            if flags & USE_CLIPPED:
                eps = (x - a * x0) / s
            prev = an * x0 + (sn * sn - std * std).clamp(min=0).sqrt() * eps
            if params[P_ETA] > 0:
                prev = prev + std * z
            return prev, x0
        if sampler == 0:  # DDPM (Ho et al. 2020 eqs. 6-7)
            abar, abar_p = a * a, an * an
            beta = 1 - abar / abar_p
            prev = (an * beta / (s * s)) * x0 + ((a / an) * (sn * sn) / (s * s)) * x
            var = torch.clamp((sn * sn) / (s * s) * beta, min=1e-20)
            if variance == 3:
                frac = (v + 1) / 2
                lv = frac * torch.log(beta) + (1 - frac) * torch.log(var)
                std = torch.exp(0.5 * lv)
            elif variance == 2:
                std = beta.sqrt()
            elif variance == 1:
                std = torch.exp(0.5 * torch.log(var))
            else:
                std = var.sqrt()
            prev = prev + torch.where(col(C_T) > 0, std, zero) * z
            return prev, x0
        # LCM (Luo et al. 2023, "Latent Consistency Models")
        st = col(C_T) * params[P_TSCALE]
        c_skip = 0.25 / (st * st + 0.25)
        c_out = st / torch.sqrt(st * st + 0.25)
        denoised = c_out * x0 + c_skip * x
        last = col(C_LAST) != 0
        if z is None:
            return denoised, denoised
        prev = torch.where(last, denoised, an * denoised + sn * z)
        return prev, denoised
    sig, sig_n = col(C_SIG), col(C_SIGN)
    if sampler == 5:  # FlowMatch Euler (Lipman et al. 2023; Liu et al. 2023)
        x0 = x - sig * m
        if flags & STOCHASTIC:
            return (1 - sig_n) * x0 + sig_n * z, x0
        return x + (sig_n - sig) * m, x0
    if sampler == 2:  # Euler (Karras et al. 2022 alg. 2, diffusers' EulerDiscreteScheduler)
        inside = (params[P_TMIN] <= sig) & (sig <= params[P_TMAX])
        gamma = torch.where(inside, torch.tensor(min(params[P_CHURN] / num_steps, 2 ** 0.5 - 1),
                                                 dtype=dtype), zero)
        sh = sig * (gamma + 1)
        if z is not None:
            x = x + torch.where(gamma > 0, params[P_SNOISE] * torch.sqrt(sh * sh - sig * sig), zero) * z
        sigma_for_x0 = sh
    else:  # Euler ancestral (k-diffusion sample_euler_ancestral; eta = 1 is diffusers')
        sn2, s2 = sig_n * sig_n, sig * sig
        up = torch.minimum(sig_n, params[P_ETA] * (sn2 * (s2 - sn2) / s2).clamp(min=0).sqrt())
        down = (sn2 - up * up).clamp(min=0).sqrt()
        sh = sig
        sigma_for_x0 = sig
    if prediction == 0:
        x0 = x - sigma_for_x0 * m
    elif prediction == 1:
        x0 = m * (-sig / torch.sqrt(sig * sig + 1)) + x / (sig * sig + 1)
    elif prediction == 2:
        x0 = m
    else:
        raise ValueError("prediction_type 'flow' is for flow-matching samplers")
    d = (x - x0) / sh
    if sampler == 2:
        return x + d * (sig_n - sh), x0
    prev = x + d * (down - sig)
    return (prev if z is None else prev + z * up), x0


def stream_of(stream: int, index):
    """The noise stream of step ``index``: stream + index (mod 2**32)."""
    if isinstance(index, torch.Tensor):
        return (index.to(torch.int64) + stream) & 0xFFFFFFFF
    return (stream + index) & 0xFFFFFFFF


__all__ = ["step", "threshold", "guided_output", "stream_of", "SAMPLERS", "PREDICTIONS",
           "VARIANCES"]
