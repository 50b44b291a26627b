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
their multistep state. lms has this form with derivatives in place of D1,
D2 (and a third, ``c_d3``; STAGE_COLUMNS).
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

# The second, per-stage table (``plan.stage_table``, (n, len(STAGE_COLUMNS))
# float64 on the device): what the multistep / two-stage kernels
# (genfast/ops/multistep.py) read beyond PLAN_COLUMNS. A separate table keeps
# the single-step kernels' row stride (steps.h kPlanCols) as it is.
#
# x_scale: the sample lives in "VP space" (x = alpha x0 + sigma_vp eps:
# ddim, ddpm, dpmpp, unipc on discrete / flow schedules) or in "sigma space"
# (x = x0 + sigma eps: Euler-type samplers, every plan_from_sigmas plan and
# EDM schedules); x_vp = x_scale * x (1 or alpha). The x0 of a model output
# then follows from (alpha, sigma_vp, x_scale) of the model's input, and
# every linear coefficient of the plan is already in the plan's sample space.
#
# Two-stage samplers (heun, dpm_2; Karras et al. 2022 alg. 1 and k-diffusion's
# sample_dpm_2): stage 0 is the Euler step to the stage-1 sigma (c_x, c_d0 of
# PLAN_COLUMNS) and saves the sample x_i; stage 1 evaluates the model at that
# prediction (s1_*) and returns x_next = s1_c_x x + s1_c_p x_i + s1_c_d0 D.
STAGE_COLUMNS = (
    "stages",         # 0  model evaluations in this step (1 or 2)
    "x_scale",        # 1  x_vp = x_scale x for the stage-0 input
    "s1_timestep",    # 2  stage 1: the model's timestep input
    "s1_sigma",       # 3  ... sigma of the model's input (sigma space)
    "s1_alpha",       # 4
    "s1_sigma_vp",    # 5
    "s1_x_scale",     # 6
    "s1_c_in",        # 7  ... model input scale
    "s1_c_x",         # 8  x_next = s1_c_x x + s1_c_p x_saved + s1_c_d0 D
    "s1_c_p",         # 9
    "s1_c_d0",        # 10
    # lms (k-diffusion's sample_lms, diffusers' LMSDiscreteScheduler): the
    # ring holds derivatives d = h_x x + h_d D = (x - D)/sigma, and
    # x_next = c_x x + c_d0 D + c_d1 d_{i-1} + c_d2 d_{i-2} + c_d3 d_{i-3}
    "h_x",            # 11
    "h_d",            # 12
    "c_d3",           # 13
)
SCOL = {name: j for j, name in enumerate(STAGE_COLUMNS)}

SAMPLERS = ("ddim", "ddpm", "euler", "euler_ancestral", "flow_match_euler", "dpmpp",
            "unipc", "heun", "dpm_2", "lcm", "lms")
_FAMILY = {"ddim": "ddim", "ddpm": "ddim", "lcm": "ddim", "euler": "euler",
           "euler_ancestral": "euler", "heun": "euler", "dpm_2": "euler", "dpmpp": "dpm",
           "unipc": "dpm", "lms": "euler"}


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
    stage_table: torch.Tensor | None = None
    stage_host: torch.Tensor | None = None
    sample_space: str = "vp"

    col = COL
    scol = SCOL

    def __post_init__(self):
        if self.stage_host is None:  # a plan built by hand: single-stage defaults
            sh = torch.zeros((self.num_steps, len(STAGE_COLUMNS)), dtype=torch.float64)
            sh[:, SCOL["stages"]] = 1.0
            sh[:, SCOL["x_scale"]] = 1.0
            self.stage_host = sh
        if self.stage_table is None:
            self.stage_table = self.stage_host.to(self.table.device)
        self._model = None

    def column(self, name: str) -> torch.Tensor:
        """One column of the host table (for tests and Python samplers)."""
        if name in SCOL:
            return self.stage_host[:, SCOL[name]]
        return self.host[:, COL[name]]

    def to(self, device) -> "SamplingPlan":
        return SamplingPlan(self.sampler, self.num_steps, self.host.to(device), self.host,
                            self.timesteps, self.sigmas, self.options,
                            self.stage_host.to(device), self.stage_host, self.sample_space)

    @property
    def device(self) -> torch.device:
        return self.table.device

    # -- what a sampling loop feeds the model (host ints in, device scalars out: no sync)

    def stages(self, i: int) -> int:
        """Model evaluations in step ``i``: 2 for heun / dpm_2 (1 for a step
        that ends at sigma 0: plain Euler, as diffusers and k-diffusion), else 1."""
        return int(self._stages[i])

    def _model_values(self):
        if self._model is None:
            s0 = torch.stack([self.host[:, COL["timestep"]], self.host[:, COL["sigma"]],
                              self.host[:, COL["c_in"]]], 1)
            sh = self.stage_host
            s1 = torch.stack([sh[:, SCOL["s1_timestep"]], sh[:, SCOL["s1_sigma"]],
                              sh[:, SCOL["s1_c_in"]]], 1)
            vals = torch.stack([s0, s1], 1).to(torch.float32).to(self.table.device)
            # one 0-d view per value, made once: a loop's lookups are list indexing
            self._model = [[[vals[i, k, j] for j in range(3)] for k in range(2)]
                           for i in range(self.num_steps)]
        return self._model

    @property
    def _stages(self):
        st = self.__dict__.get("_stage_list")
        if st is None:
            st = self.__dict__["_stage_list"] = \
                self.stage_host[:, SCOL["stages"]].to(torch.int64).tolist()
        return st

    def _model_value(self, i, stage, j):
        if not 0 <= stage < self.stages(i):
            raise ValueError(f"stage {stage} of step {i}: the step has {self.stages(i)} "
                             f"model evaluation(s)")
        return self._model_values()[i][stage][j]

    def model_timestep(self, i: int, stage: int = 0) -> torch.Tensor:
        """The timestep to give the model at step ``i``, stage ``stage``: a 0-d
        float32 tensor on the plan's device (plan_from_sigmas plans: sigma)."""
        return self._model_value(i, stage, 0)

    def model_sigma(self, i: int, stage: int = 0) -> torch.Tensor:
        """The sigma (sigma space) of the model's input at step ``i``, stage ``stage``."""
        return self._model_value(i, stage, 1)

    def model_scale(self, i: int, stage: int = 0) -> torch.Tensor:
        """c_in: the factor the sample is multiplied by before the model
        (diffusers' scale_model_input: 1/sqrt(sigma^2 + 1) for Euler-type
        samplers on discrete schedules; 1 for ddim, ddpm, dpmpp, unipc, flow
        and every plan_from_sigmas plan)."""
        return self._model_value(i, stage, 2)


def _vp_from_sigma(s):
    alpha = 1.0 / np.sqrt(s * s + 1.0)
    return alpha, s * alpha


def _lambda(alpha, svp):
    with np.errstate(divide="ignore"):
        return np.log(alpha) - np.log(svp)


_SIGMA_KEYS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
               "final_sigmas_type")
_TWO_STAGE = ("heun", "dpm_2")
_SIGMA_SPACE = ("euler", "euler_ancestral", "heun", "dpm_2", "lms")


def _check_n(n):
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"num_inference_steps must be a positive int, got {n!r}")


def build_plan(schedule, n, sampler: str, device: torch.device, opts: dict, sigmas=None,
               timesteps=None) -> SamplingPlan:
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    custom = _custom_values(schedule, n, sampler, sigmas, timesteps)
    if custom is not None:
        n = len(custom.timesteps)
    _check_n(n)
    over = {k: opts[k] for k in _SIGMA_KEYS if k in opts}
    if over and schedule.kind == "vp" and any(schedule.config.get(k) != v for k, v in over.items()):
        from .schedules import from_config  # the config's sigma options, overridden
        schedule = from_config({**schedule.config, **over})
    kind = schedule.kind
    if sampler == "flow_match_euler" and kind != "flow":
        raise ValueError("sampler 'flow_match_euler' needs a flow-matching schedule")
    if kind == "flow" and sampler not in ("flow_match_euler", "euler", "dpmpp", "unipc"):
        raise ValueError(f"sampler {sampler!r} does not run on a flow-matching schedule")
    space = "sigma" if (sampler in _SIGMA_SPACE or kind == "sigma") else "vp"
    rows = _new_rows(n)
    cols = {name: rows[:, j] for j, name in enumerate(PLAN_COLUMNS)}
    stage = _new_stage_rows(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "vp" and _FAMILY[sampler] == "ddim":
            if custom is not None:
                raise ValueError(f"custom sigmas= / timesteps= are not supported for {sampler}")
            inf = _ddim_rows(schedule, n, sampler, cols, opts)
        else:
            if custom is not None:
                inf = custom
            else:
                family = {"vp": _FAMILY.get(sampler, "euler"), "sigma": "edm", "flow": "flow"}[kind]
                if sampler == "unipc" and kind == "vp":
                    family = "unipc"
                inf = schedule.set_timesteps(n, family, mu=opts.get("mu"))
            if sampler in _TWO_STAGE and custom is None:
                inf.sigmas[-1] = 0.0  # diffusers' Heun / KDPM2 always end at sigma 0
            _sigma_rows(kind, inf, cols)
            _fill_rows(cols, stage, sampler, opts, kind, space,
                       (schedule._sampler_sigmas() if kind == "vp" else None), from_sigmas=False)
    if kind == "flow":
        opts = {**opts, "_flow": True}  # default prediction_type "flow"
    return _finish(sampler, n, rows, stage, inf, opts, device, space)


def plan_from_sigmas(sigmas, sampler: str, *, device="cpu", **opts) -> SamplingPlan:
    """A plan over a k-diffusion-style sigma sequence (1-d, length n + 1,
    descending, the last may be 0) with no discrete schedule behind it. The
    sample lives in sigma space (x = x0 + sigma eps, as k-diffusion's samplers
    have it), the model's time input is sigma itself (``model_timestep`` =
    ``model_sigma``) and its input scale 1: a k-diffusion denoiser returns x0,
    so such loops usually pass prediction_type="sample".

    Samplers: euler, euler_ancestral, heun, dpm_2 (k-diffusion's sample_euler,
    _euler_ancestral, _heun, _dpm_2), dpmpp (sample_dpmpp_2m with the default
    midpoint form; algorithm_type="sde-dpmsolver++" is sample_dpmpp_2m_sde
    with eta 1; solver_order=3 with solver_type="heun" and
    lower_order_final=False is sample_dpmpp_3m_sde with eta 0), unipc and
    lms (sample_lms; ``order`` 1-4, default 4).
    DPM-Solver++ in sigma space is the VP form with its coefficients rescaled
    by alpha = 1/sqrt(sigma^2 + 1): c_x alpha/alpha_next, c_d / alpha_next,
    c_noise / alpha_next (Lu et al. 2022; k-diffusion's t = -log sigma is
    DPM-Solver's lambda).
    """
    allowed = ("euler", "euler_ancestral", "heun", "dpm_2", "dpmpp", "unipc", "lms")
    if sampler not in allowed:
        raise ValueError(f"plan_from_sigmas: sampler must be one of {', '.join(allowed)}, got "
                         f"{sampler!r}")
    s = _check_sigmas("sigmas", sigmas, final_zero_ok=True)
    n = len(s) - 1
    from .schedules import Inference
    inf = Inference(s[:-1].copy(), s.copy())
    rows = _new_rows(n)
    cols = {name: rows[:, j] for j, name in enumerate(PLAN_COLUMNS)}
    stage = _new_stage_rows(n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        _sigma_rows("vp", inf, cols)
        cols["c_in"][:] = 1.0
        _fill_rows(cols, stage, sampler, opts, "vp", "sigma", None, from_sigmas=True)
    return _finish(sampler, n, rows, stage, inf, opts, torch.device(device), "sigma")


def _check_sigmas(name, sigmas, final_zero_ok):
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).numpy()
    s = np.asarray(sigmas, dtype=np.float64)
    if s.ndim != 1 or len(s) < 2:
        raise ValueError(f"{name} must be 1-d with n + 1 >= 2 values (the last the final "
                         f"sigma), got shape {s.shape}")
    if not np.isfinite(s).all() or (s[:-1] <= 0).any() or s[-1] < 0:
        raise ValueError(f"{name} must be finite, positive (the last may be 0), got {s.tolist()}")
    if (np.diff(s) > 0).any():
        raise ValueError(f"{name} must be descending, got {s.tolist()}")
    return s


def _custom_values(schedule, n, sampler, sigmas, timesteps):
    """set_timesteps(sigmas=...) / (timesteps=...) as diffusers' Euler, Heun,
    DPM-Solver and UniPC schedulers take them: timesteps (n values) give
    sigmas by interpolation over the train sigmas and the config's final
    sigma; sigmas (n + 1 values, the last the final one) give timesteps by
    interpolating log sigma (rounded to ints for dpmpp / unipc)."""
    if sigmas is None and timesteps is None:
        return None
    if sigmas is not None and timesteps is not None:
        raise ValueError("pass at most one of sigmas= and timesteps=")
    if schedule.kind != "vp":
        raise ValueError("custom sigmas= / timesteps= need a discrete (beta) schedule; "
                         "use genfast.schedules.plan_from_sigmas for a bare sigma sequence")
    from .schedules import Inference
    sig = schedule._sampler_sigmas().astype(np.float64)
    dpm = sampler in ("dpmpp", "unipc")
    if timesteps is not None:
        ts = np.asarray(timesteps.cpu() if isinstance(timesteps, torch.Tensor) else timesteps,
                        dtype=np.float64)
        T = schedule.num_train_timesteps
        if ts.ndim != 1 or len(ts) < 1 or not np.isfinite(ts).all() or (ts < 0).any() \
                or (ts > T - 1).any():
            raise ValueError(f"timesteps must be 1-d values in [0, {T - 1}], got {ts.tolist()}")
        if dpm:
            ts = ts.astype(np.int64).astype(np.float64)
        s = np.interp(ts, np.arange(len(sig)), sig)
        last = 0.0 if schedule.final_sigmas_type == "zero" else float(sig[0])
        s = np.concatenate([s, [last]])
    else:
        s = _check_sigmas("sigmas", sigmas, final_zero_ok=True)
        from .schedules import _interp_t
        ts = _interp_t(s[:-1], np.log(sig))
        if dpm:
            ts = ts.round()
    if n is not None and n != len(ts):
        raise ValueError(f"num_inference_steps={n} but {len(ts)} custom steps were given "
                         f"(pass n=None or the matching count)")
    return Inference(np.asarray(ts, dtype=np.float64), np.asarray(s, dtype=np.float64))


def _new_rows(n):
    rows = np.zeros((n, len(PLAN_COLUMNS)))
    rows[:, COL["order"]] = 1.0
    rows[-1, COL["last"]] = 1.0
    rows[:, COL["cc_self"]] = 1.0
    return rows


def _new_stage_rows(n):
    st = np.zeros((n, len(STAGE_COLUMNS)))
    st[:, SCOL["stages"]] = 1.0
    st[:, SCOL["x_scale"]] = 1.0
    return st


def _fill_rows(cols, stage, sampler, opts, kind, space, train_sigmas, from_sigmas):
    st = {name: stage[:, j] for j, name in enumerate(STAGE_COLUMNS)}
    if space == "sigma":
        st["x_scale"][:] = cols["alpha"]
    if from_sigmas:
        cols["timestep"][:] = cols["sigma"]
    if sampler in ("euler", "flow_match_euler"):
        _euler(cols)
    elif sampler == "euler_ancestral":
        _euler_ancestral(cols, float(opts.get("eta", 1.0)))
    elif sampler in _TWO_STAGE:
        _two_stage(cols, st, sampler, train_sigmas, from_sigmas)
    elif sampler == "lms":
        _lms(cols, st, opts)
    elif sampler in ("dpmpp", "unipc"):
        if kind == "vp" and not from_sigmas:
            cols["c_in"][:] = 1.0  # diffusers' DPM-Solver / UniPC: no input scaling
        _multistep(cols, sampler, opts)
        if space == "sigma":
            _to_sigma_space(cols)


def _two_stage(c, st, sampler, train_sigmas, from_sigmas):
    """Heun (Karras et al. 2022 alg. 1; diffusers' HeunDiscreteScheduler) and
    DPM2 (k-diffusion's sample_dpm_2, diffusers' KDPM2DiscreteScheduler) in
    sigma space; a step ending at sigma 0 is one Euler stage."""
    s, sn = c["sigma"], c["sigma_next"]
    two = sn > 0
    mid = np.sqrt(s * sn) if sampler == "dpm_2" else sn  # exp(lerp(log s, log sn, 1/2))
    target = np.where(two, mid, sn)
    r = target / s
    c["c_x"][:], c["c_d0"][:] = r, 1 - r
    st["stages"][:] = np.where(two, 2.0, 1.0)
    s1 = np.where(two, mid, 1.0)  # a stage that does not run keeps finite placeholders
    a1 = 1.0 / np.sqrt(s1 * s1 + 1.0)
    st["s1_sigma"][:] = np.where(two, s1, 0.0)
    st["s1_alpha"][:], st["s1_sigma_vp"][:], st["s1_x_scale"][:] = a1, s1 * a1, a1
    st["s1_c_in"][:] = 1.0 if from_sigmas else a1
    if from_sigmas:
        st["s1_timestep"][:] = st["s1_sigma"]
    elif sampler == "heun":  # diffusers: timesteps [t0, t1, t1, t2, t2, ...]
        st["s1_timestep"][:] = np.concatenate([c["timestep"][1:], [0.0]])
    else:  # KDPM2: the timestep interpolated at sigma_mid
        from .schedules import _interp_t
        st["s1_timestep"][:] = np.where(two, _interp_t(s1, np.log(train_sigmas)), 0.0)
    dt = sn - s
    nan = np.where(two, 0.0, np.nan)  # stage 1 of a one-stage step: NaN, never a silent 0
    st["s1_c_p"][:] = st["s1_c_x"][:] = st["s1_c_d0"][:] = 0.0
    if sampler == "heun":
        # x_next = x_i + dt (d1 + d2)/2 with x_p = x_i + dt d1, d2 = (x_p - D)/sn:
        # = x_i/2 + x_p/2 + dt/2 (x_p - D)/sn
        k = np.where(two, 0.5 * dt / s1, 0.0)
        st["s1_c_p"][:] = np.where(two, 0.5, 0.0)
        st["s1_c_x"][:] = np.where(two, 0.5, 0.0) + k
        st["s1_c_d0"][:] = -k
    else:
        # x_next = x_i + dt (x_mid - D)/sigma_mid
        k = np.where(two, dt / s1, 0.0)
        st["s1_c_p"][:] = np.where(two, 1.0, 0.0)
        st["s1_c_x"][:] = k
        st["s1_c_d0"][:] = -k
    for name in ("s1_c_x", "s1_c_p", "s1_c_d0"):
        st[name][:] += nan


# Two-point Gauss-Legendre on [-1, 1]: exact for polynomials of degree <= 3
_GL_X, _GL_W = np.polynomial.legendre.leggauss(2)


def _lms_coefs(nodes, a, b):
    """The integrals over [a, b] of the Lagrange basis polynomials of
    ``nodes`` (t_0 = sigma_i, t_1 = sigma_{i-1}, ...; at most 4, distinct):
    c_j = int_a^b prod_{k != j} (tau - t_k)/(t_j - t_k) dtau. The integrand
    has degree <= 3, so two-point Gauss-Legendre gives the integral itself
    up to float64 rounding (the product form is well conditioned); scipy's
    quad, which k-diffusion and diffusers call, agrees to ~1e-12 relative
    (tests/test_lms.py)."""
    half, mid = 0.5 * (b - a), 0.5 * (a + b)
    taus = mid + half * _GL_X
    out = []
    for j, tj in enumerate(nodes):
        vals = _GL_W.copy()
        for k, tk in enumerate(nodes):
            if k != j:
                vals *= (taus - tk) / (tj - tk)
        out.append(half * float(vals.sum()))
    return out


def _lms_order(order):
    """``order`` as an int in 1..4 (any integer type; bool and floats are refused)."""
    if isinstance(order, bool) or not hasattr(order, "__index__") or not 1 <= order <= 4:
        raise ValueError(f"order must be an int in 1..4 for lms (the ring keeps three past "
                         f"derivatives), got {order!r}")
    return int(order)


def _lms(c, st, opts):
    """Linear multistep (k-diffusion's sample_lms; diffusers'
    LMSDiscreteScheduler): Adams-Bashforth on dx/dsigma = d = (x - D)/sigma,
    x_next = x + sum_j c_j d_{i-j} with c_j the integral of the Lagrange basis
    over [sigma_i, sigma_next] (`_lms_coefs`), order min(i + 1, order). The
    ring holds d (h_x = 1/sigma, h_d = -1/sigma), so x + c_0 d_i is
    (1 + c_0/sigma) x - (c_0/sigma) D. A sigma repeated in the history (a
    zero-length step) would make the basis singular (k-diffusion: NaN): the
    order drops to the distinct nodes there."""
    order = _lms_order(opts.get("order", 4))
    s, sn = c["sigma"], c["sigma_next"]
    for i in range(len(s)):
        nodes = [float(s[i - k]) for k in range(min(i + 1, order))]
        o = 1
        while o < len(nodes) and nodes[o] > nodes[o - 1]:
            o += 1
        coefs = _lms_coefs(nodes[:o], float(s[i]), float(sn[i])) + [0.0] * (4 - o)
        inv = 1.0 / s[i]
        c["order"][i] = o
        c["c_x"][i], c["c_d0"][i] = 1.0 + coefs[0] * inv, -coefs[0] * inv
        c["c_d1"][i], c["c_d2"][i], st["c_d3"][i] = coefs[1:]
        st["h_x"][i], st["h_d"][i] = inv, -inv


def _to_sigma_space(c):
    """VP-space linear coefficients to the sigma-space sample x_vp / alpha."""
    a, an = c["alpha"], c["alpha_next"]
    c["c_x"][:] *= a / an
    for name in ("c_d0", "c_d1", "c_d2", "c_noise"):
        c[name][:] /= an
    a_prev = np.concatenate([[1.0], a[:-1]])
    c["cc_x"][:] *= a_prev / a
    for name in ("cc_dnew", "cc_d0", "cc_d1", "cc_d2"):
        c[name][:] /= a


def _finish(sampler, n, rows, stage, inf, opts, device, space):
    host = torch.from_numpy(rows)
    sh = torch.from_numpy(stage)
    ts = torch.from_numpy(np.asarray(inf.timesteps, dtype=np.float64).copy())
    sig = None if inf.sigmas is None else torch.from_numpy(np.asarray(inf.sigmas, np.float64).copy())
    return SamplingPlan(sampler, n, host.to(device), host, ts, sig, dict(opts), sh.to(device), sh,
                        space)


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
        # diffusers' sde-dpmsolver++ third-order term: + at ((e2 - 2h)/(2h)^2 - 0.5) D2
        third = at * ((e2 - 2.0 * h) / (2.0 * h) ** 2 - 0.5) if math.isfinite(h) else -0.5 * at
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
