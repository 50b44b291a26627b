"""Sampling plans: every per-step scalar a reverse-step kernel reads, as one
small float64 tensor on the device (built in float64 on the host, once).

Layout: ``plan.table`` has shape (n, len(PLAN_COLUMNS)), row i = step i
(sample at noise level ``sigma`` -> ``sigma_next``), column j = PLAN_COLUMNS[j]
(``plan.col[name]`` gives j; the order is fixed, so a C++/CUDA/Triton step
kernel can hard-code the indices: see `PLAN_COLUMNS`). A step kernel takes the
table and the step index i (a Python int or a 0-d int tensor on the device)
and loads ``table[i, j]``: no host sync, no per-step upload, one compile for
every step. Warm-up and cool-down of multistep solvers are in the ``order``
column and in the linear coefficients (zero where a history term is unused),
never in a Python branch on a tensor.

The noise-level convention of every column: a sample is x = alpha x0 + s_vp eps
(``alpha``, ``sigma_vp``), or equivalently in sigma space x / alpha = x0 + sigma
eps with sigma = s_vp / alpha (``sigma``; flow matching has sigma = s_vp = t
and alpha = 1 - t, so there "sigma" is the flow time). lambda = log(alpha /
s_vp) is the half log-SNR of DPM-Solver (Lu et al. 2022).

Linear form of a step (``c_x`` ... ``c_noise``): with D0 = the x0 prediction
of this step (after clipping / thresholding), D1, D2 those of the previous two
steps, and z standard noise,
    x_next = c_x x + c_d0 D0 + c_d1 D1 + c_d2 D2 + c_noise z,
in the sample space the matching diffusers scheduler steps in: x itself for
ddim, ddpm and dpmpp (diffusers' DPM-Solver works on the VP sample) and for
flow samplers; x / alpha (sigma space, init noise sigma_max) for Euler-type. Filled for ddim, ddpm,
euler, euler_ancestral, flow_match_euler and dpmpp (orders 1-3, midpoint /
heun, dpmsolver++ / sde-dpmsolver++, lower_order_final, euler_at_final). The
samplers whose update is not this linear form (Heun and DPM2 substeps, LCM,
UniPC's corrector) read the scalar columns; ``order``, ``r0``, ``r1`` carry
their multistep state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PLAN_COLUMNS = (
    "timestep",       # 0  the model's timestep input at this step
    "sigma",          # 1  sigma-space noise level of the sample at this step
    "sigma_next",     # 2  ... after the step (the final sigma for the last step)
    "alpha",          # 3  x = alpha x0 + sigma_vp eps, now
    "sigma_vp",       # 4
    "alpha_next",     # 5  ... after the step
    "sigma_vp_next",  # 6
    "lambda",         # 7  log(alpha / sigma_vp)
    "lambda_next",    # 8
    "h",              # 9  lambda_next - lambda
    "c_in",           # 10 model input scale (1/sqrt(sigma^2 + 1) in sigma space, else 1)
    "order",          # 11 solver order used at this step (1 for single-step samplers)
    "last",           # 12 1.0 at the last step
    "c_x",            # 13 linear form (module docstring)
    "c_d0",           # 14
    "c_d1",           # 15
    "c_d2",           # 16
    "c_noise",        # 17
    "r0",             # 18 h_{i-1} / h_i (history step ratio; 0 without history)
    "r1",             # 19 h_{i-2} / h_i
    # UniPC corrector of the sample x_i this step starts from, applied before
    # the predictor (fused: both read D_i): x_i <- cc_self x_i + cc_x x_{i-1}
    # + cc_dnew D_i + cc_d0 D_{i-1} + cc_d1 D_{i-2} + cc_d2 D_{i-3}
    # (identity, cc_self = 1, where there is no corrector).
    "cc_self",        # 20
    "cc_x",           # 21
    "cc_dnew",        # 22
    "cc_d0",          # 23
    "cc_d1",          # 24
    "cc_d2",          # 25
)
COL = {name: j for j, name in enumerate(PLAN_COLUMNS)}

SAMPLERS = ("ddim", "ddpm", "euler", "euler_ancestral", "flow_match_euler", "dpmpp",
            "unipc", "heun", "dpm_2", "lcm")
_FAMILY = {"ddim": "ddim", "ddpm": "ddim", "lcm": "ddim", "euler": "euler",
           "euler_ancestral": "euler", "heun": "euler", "dpm_2": "euler", "dpmpp": "dpm",
           "unipc": "dpm"}


@dataclass
class SamplingPlan:
    """Per-step coefficients of one sampler for n steps (module docstring).

    ``table``: (n, len(PLAN_COLUMNS)) float64 on ``device``; ``host``: the same
    on the CPU; ``timesteps`` (n,) and ``sigmas`` (n + 1,) float64 host
    tensors as diffusers' ``set_timesteps`` gives them (its sigmas in float32).
    """
    sampler: str
    num_steps: int
    table: torch.Tensor
    host: torch.Tensor
    timesteps: torch.Tensor
    sigmas: torch.Tensor | None
    options: dict

    col = COL

    def column(self, name: str) -> torch.Tensor:
        """One column of the host table (for tests and Python samplers)."""
        return self.host[:, COL[name]]

    def to(self, device) -> "SamplingPlan":
        return SamplingPlan(self.sampler, self.num_steps, self.host.to(device), self.host,
                            self.timesteps, self.sigmas, self.options)


def _vp_from_sigma(s):
    alpha = 1.0 / np.sqrt(s * s + 1.0)
    return alpha, s * alpha


def _lambda(alpha, svp):
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(svp)


def build_plan(schedule, n: int, sampler: str, device: torch.device, opts: dict) -> SamplingPlan:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {n!r}")
    kind = schedule.kind
    if sampler == "flow_match_euler" and kind != "flow":
        raise ValueError("sampler 'flow_match_euler' needs a flow-matching schedule")
    if kind == "flow" and sampler not in ("flow_match_euler", "euler", "dpmpp", "unipc"):
        raise ValueError(f"sampler {sampler!r} does not run on a flow-matching schedule")
    rows = np.zeros((n, len(PLAN_COLUMNS)))
    cols = {name: rows[:, j] for j, name in enumerate(PLAN_COLUMNS)}
    cols["order"][:] = 1.0
    cols["last"][-1] = 1.0
    cols["cc_self"][:] = 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "vp" and _FAMILY[sampler] == "ddim":
            inf = _ddim_rows(schedule, n, sampler, cols, opts)
        else:
            family = {"vp": _FAMILY.get(sampler, "euler"), "sigma": "edm", "flow": "flow"}[kind]
            inf = schedule.set_timesteps(n, family, mu=opts.get("mu"))
            _sigma_rows(kind, inf, cols)
            if sampler in ("euler", "flow_match_euler", "heun", "dpm_2"):
                _euler(cols)
            elif sampler == "euler_ancestral":
                _euler_ancestral(cols, float(opts.get("eta", 1.0)))
            elif sampler in ("dpmpp", "unipc"):
                _multistep(cols, sampler, opts)
    host = torch.from_numpy(rows)
    ts = torch.from_numpy(np.asarray(inf.timesteps, dtype=np.float64).copy())
    sig = None if inf.sigmas is None else torch.from_numpy(np.asarray(inf.sigmas, np.float64).copy())
    return SamplingPlan(sampler, n, host.to(device), host, ts, sig, dict(opts))


def _lcm_timesteps(schedule, n, opts):
    """LCMScheduler.set_timesteps (Luo et al. 2023): n of the distillation's
    ``original_inference_steps`` timesteps (k = T // original, t = j k - 1),
    evenly skipped; strength 1."""
    T = schedule.num_train_timesteps
    orig = int(opts.get("original_inference_steps",
                        schedule.config.get("original_inference_steps") or 50))
    if not 1 <= n <= orig <= T:
        raise ValueError(f"lcm: need 1 <= num_inference_steps ({n}) <= original_inference_steps "
                         f"({orig}) <= num_train_timesteps ({T})")
    origin = (np.arange(1, orig + 1) * (T // orig) - 1)[::-1]
    idx = np.floor(np.linspace(0, len(origin), num=n, endpoint=False)).astype(np.int64)
    from .schedules import Inference
    return Inference(origin[idx].astype(np.float64))


def _ddim_rows(schedule, n, sampler, c, opts):
    inf = _lcm_timesteps(schedule, n, opts) if sampler == "lcm" else schedule.set_timesteps(n, "ddim")
    ts = inf.timesteps.astype(np.int64)
    a_all = schedule.alphas_cumprod.numpy()
    T = schedule.num_train_timesteps
    if sampler == "ddim":
        one = opts.get("set_alpha_to_one", schedule.config.get("set_alpha_to_one", True))
        final = 1.0 if one else float(a_all[0])
        prev = ts - T // n
    elif sampler == "lcm":  # the next timestep; the last step re-uses its own
        final = 1.0
        prev = np.concatenate([ts[1:], ts[-1:]])
    else:
        final = 1.0
        prev = np.concatenate([ts[1:], [-1]])
    a = a_all[ts]
    ap = np.where(prev >= 0, a_all[np.clip(prev, 0, None)], final)
    c["timestep"][:] = ts
    c["alpha"][:], c["sigma_vp"][:] = np.sqrt(a), np.sqrt(1 - a)
    c["alpha_next"][:], c["sigma_vp_next"][:] = np.sqrt(ap), np.sqrt(1 - ap)
    c["sigma"][:] = np.sqrt((1 - a) / a)
    c["sigma_next"][:] = np.sqrt((1 - ap) / ap)
    c["lambda"][:] = _lambda(c["alpha"], c["sigma_vp"])
    c["lambda_next"][:] = _lambda(c["alpha_next"], c["sigma_vp_next"])
    c["h"][:] = c["lambda_next"] - c["lambda"]
    c["c_in"][:] = 1.0
    sq1a = np.sqrt(1 - a)
    if sampler == "ddim":
        # Song et al. 2021 eq. 12: x_prev = sqrt(a_p) x0 + sqrt(1 - a_p - std^2) eps + std z,
        # eps = (x - sqrt(a) x0) / sqrt(1 - a)
        var = (1 - ap) / (1 - a) * (1 - a / ap)
        std = float(opts.get("eta", 0.0)) * np.sqrt(var)
        k = np.sqrt(np.maximum(1 - ap - std ** 2, 0.0))
        c["c_x"][:] = k / sq1a
        c["c_d0"][:] = np.sqrt(ap) - k * np.sqrt(a) / sq1a
        c["c_noise"][:] = std
    elif sampler == "ddpm":
        # Ho et al. 2020 eq. 7 (posterior mean and the fixed_small variance)
        b = 1 - a / ap
        c["c_d0"][:] = np.sqrt(ap) * b / (1 - a)
        c["c_x"][:] = np.sqrt(a / ap) * (1 - ap) / (1 - a)
        var = np.maximum((1 - ap) / (1 - a) * b, 1e-20)
        c["c_noise"][:] = np.where(ts > 0, np.sqrt(var), 0.0)
    return inf


def _sigma_rows(kind, inf, c):
    s = np.asarray(inf.sigmas, dtype=np.float64)
    c["timestep"][:] = inf.timesteps
    c["sigma"][:], c["sigma_next"][:] = s[:-1], s[1:]
    if kind == "flow":
        c["alpha"][:], c["sigma_vp"][:] = 1 - s[:-1], s[:-1]
        c["alpha_next"][:], c["sigma_vp_next"][:] = 1 - s[1:], s[1:]
        c["c_in"][:] = 1.0
    else:
        c["alpha"][:], c["sigma_vp"][:] = _vp_from_sigma(s[:-1])
        c["alpha_next"][:], c["sigma_vp_next"][:] = _vp_from_sigma(s[1:])
        c["c_in"][:] = c["alpha"]  # 1/sqrt(sigma^2 + 1)
    c["lambda"][:] = _lambda(c["alpha"], c["sigma_vp"])
    c["lambda_next"][:] = _lambda(c["alpha_next"], c["sigma_vp_next"])
    c["h"][:] = c["lambda_next"] - c["lambda"]


def _euler(c):
    # Karras et al. 2022 alg. 1 without churn: x + (x - x0)/s (s_next - s)
    r = c["sigma_next"] / c["sigma"]
    c["c_x"][:], c["c_d0"][:] = r, 1 - r


def _euler_ancestral(c, eta):
    s, sn = c["sigma"], c["sigma_next"]
    up = np.minimum(sn, eta * np.sqrt(np.maximum(sn ** 2 * (s ** 2 - sn ** 2) / s ** 2, 0.0)))
    down = np.sqrt(np.maximum(sn ** 2 - up ** 2, 0.0))
    c["c_x"][:], c["c_d0"][:], c["c_noise"][:] = down / s, 1 - down / s, up


def _multistep(c, sampler, opts):
    """DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for
    Guided Sampling of Diffusion Probabilistic Models"), in diffusers' form, with
    its order warm-up and lower_order_final; UniPC (Zhao et al. 2023) gets the
    same order schedule and its predictor / corrector coefficients."""
    n = len(c["sigma"])
    order = int(opts.get("solver_order", 2 if sampler == "dpmpp" else 2))
    if order not in (1, 2, 3):
        raise ValueError(f"solver_order must be 1, 2 or 3, got {order}")
    lof = bool(opts.get("lower_order_final", True))
    final_zero = c["sigma_next"][-1] == 0.0
    euler_final = bool(opts.get("euler_at_final", False))
    lam, h = c["lambda"], c["h"]
    done = 0
    for i in range(n):
        low_final = i == n - 1 and (euler_final or (lof and n < 15) or
                                    (final_zero and sampler == "dpmpp"))
        low_second = i == n - 2 and lof and n < 15
        if sampler == "unipc":
            o = min(order, n - i) if lof else order
            o = min(o, done + 1)
        elif order == 1 or done < 1 or low_final:
            o = 1
        elif order == 2 or done < 2 or low_second:
            o = 2
        else:
            o = 3
        c["order"][i] = o
        if i >= 1:
            c["r0"][i] = (lam[i] - lam[i - 1]) / h[i]
        if i >= 2:
            c["r1"][i] = (lam[i - 1] - lam[i - 2]) / h[i]
        done = min(done + 1, order)
        if sampler == "dpmpp":
            _dpmpp_row(c, i, o, opts)
        else:
            _unipc_row(c, i, o, opts)


def _dpmpp_row(c, i, o, opts):
    alg = opts.get("algorithm_type", "dpmsolver++")
    solver = opts.get("solver_type", "midpoint")
    if alg not in ("dpmsolver++", "sde-dpmsolver++"):
        raise ValueError(f"algorithm_type must be dpmsolver++ or sde-dpmsolver++, got {alg!r}")
    if solver not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be midpoint or heun, got {solver!r}")
    at, st, ss = c["alpha_next"][i], c["sigma_vp_next"][i], c["sigma_vp"][i]
    h = c["h"][i]
    r0, r1 = c["r0"][i], c["r1"][i]
    if h == 0.0:
        # a step of zero length (final_sigmas_type="sigma_min" with Karras
        # sigmas repeats the last sigma) is the identity: the finite limit of
        # every coefficient. diffusers evaluates 0/0 there and returns NaN for
        # second and third order with the heun form (tests/test_schedules.py).
        c["c_x"][i], c["c_d0"][i], c["c_d1"][i], c["c_d2"][i], c["c_noise"][i] = 1, 0, 0, 0, 0
        return
    if alg == "dpmsolver++":
        em = math.expm1(-h) if math.isfinite(h) else -1.0  # e^-h - 1
        cx = st / ss
        base = -at * em                 # coefficient of D0 (first order)
        mid = -0.5 * at * em            # midpoint coefficient of D1
        heun = at * (em / h + 1.0) if math.isfinite(h) else at
        third = -at * ((em + h) / h ** 2 - 0.5) if math.isfinite(h) else 0.0
        noise = 0.0
    else:
        e2 = -math.expm1(-2 * h) if math.isfinite(h) else 1.0  # 1 - e^-2h
        cx = st / ss * math.exp(-h) if math.isfinite(h) else 0.0
        base = at * e2
        mid = 0.5 * at * e2
        heun = at * (e2 / (-2.0 * h) + 1.0) if math.isfinite(h) else at
        third = 0.0
        noise = st * math.sqrt(e2)
    d0, d1, d2 = base, 0.0, 0.0
    if o == 2:
        k = mid if solver == "midpoint" else heun
        # D1 = (D0 - m1) / r0
        d0 += k / r0
        d1 -= k / r0
    elif o == 3:
        # D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1, D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1),
        # D2 = (D1_0 - D1_1)/(r0 + r1); x += heun D1 + third D2 (diffusers' 3M update)
        u = heun * (1 + r0 / (r0 + r1)) + third / (r0 + r1)   # coefficient of D1_0
        v = -heun * r0 / (r0 + r1) - third / (r0 + r1)        # coefficient of D1_1
        d0 += u / r0
        d1 += -u / r0 + v / r1
        d2 += -v / r1
    c["c_x"][i], c["c_d0"][i], c["c_d1"][i], c["c_d2"][i] = cx, d0, d1, d2
    c["c_noise"][i] = noise


def _unipc_rhos(lam, s0, t, order, ks, predict, bh):
    """diffusers' UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector
    Framework for Fast Sampling of Diffusion Models") in float64: r_k, h_phi_1,
    B_h and the rho weights, for the update from lambda[s0] to lambda[t] with
    history points s0 - k (k in ks)."""
    h = lam[t] - lam[s0]
    rks = [(lam[s0 - k] - lam[s0]) / h for k in ks] + [1.0]
    hh = -h  # predict_x0
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    B_h = hh if bh == "bh1" else math.expm1(hh)
    fact = 1
    R, b = [], []
    for j in range(1, order + 1):
        R.append([r ** (j - 1) for r in rks])
        b.append(h_phi_k * fact / B_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    R, b = np.array(R), np.array(b)
    if predict:
        if order == 1:
            rhos = np.zeros(0)
        elif order == 2:
            rhos = np.array([0.5])
        else:
            rhos = np.linalg.solve(R[:-1, :-1], b[:-1])
    else:
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
    return rks, h_phi_1, B_h, rhos


def _unipc_row(c, i, o, opts):
    bh = opts.get("solver_type", "bh2")
    if bh not in ("bh1", "bh2"):
        raise ValueError(f"solver_type must be bh1 or bh2 for unipc, got {bh!r}")
    lam = c["lambda"].tolist() + [c["lambda_next"][-1]]
    svp = c["sigma_vp"].tolist() + [c["sigma_vp_next"][-1]]
    alpha = c["alpha"].tolist() + [c["alpha_next"][-1]]
    # predictor i -> i + 1 from D_i (m0) and D_{i-k} (k < o)
    at = alpha[i + 1]
    try:
        rks, phi1, B, rhos = _unipc_rhos(lam, i, i + 1, o, range(1, o), True, bh)
        d = [-at * phi1, 0.0, 0.0]
        for k, rho in enumerate(rhos, start=1):
            d[0] += at * B * rho / rks[k - 1]
            d[k] -= at * B * rho / rks[k - 1]
        row = [svp[i + 1] / svp[i]] + d
    except np.linalg.LinAlgError:  # r_k all 0: singular system
        row = [math.nan]
    if not all(math.isfinite(v) for v in row):
        # sigma_next = 0 with order > 1 (lower_order_final off): diffusers'
        # r_k -> 0 and B_h / h blow up (NaN); the plan takes the first-order
        # finite limit, x_next = D_i.
        row = [svp[i + 1] / svp[i], -at * math.expm1(-(lam[i + 1] - lam[i])), 0.0, 0.0]
        if not math.isfinite(row[1]):
            row[1] = at
    c["c_x"][i], c["c_d0"][i], c["c_d1"][i], c["c_d2"][i] = row
    # corrector of x_i (from x_{i-1}, order of step i - 1), as diffusers' step i
    disabled = opts.get("disable_corrector", ())
    if i == 0 or (i - 1) in disabled:
        return
    q = int(c["order"][i - 1])
    rks, phi1, B, rhos = _unipc_rhos(lam, i - 1, i, q, range(1, q), False, bh)
    a_i = alpha[i]
    cc = {"cc_self": 0.0, "cc_x": svp[i] / svp[i - 1], "cc_dnew": -a_i * B * rhos[-1],
          "cc_d0": -a_i * phi1 + a_i * B * rhos[-1], "cc_d1": 0.0, "cc_d2": 0.0}
    for k in range(1, q):
        w = a_i * B * rhos[k - 1] / rks[k - 1]
        cc["cc_d0"] += w
        cc["cc_d" + str(k)] -= w
    for name, v in cc.items():
        c[name][i] = v
