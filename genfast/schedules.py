"""Noise schedules and sampling plans, computed in float64 on the host.

Three kinds of schedule, each built with `from_config` from a diffusers
scheduler's ``.config`` (or a plain dict) so users pass what they have:

* `DiscreteSchedule` (variance preserving, Ho et al. 2020 "Denoising
  Diffusion Probabilistic Models"): betas over ``num_train_timesteps``;
  abar_t = prod_{s<=t} (1 - beta_s); x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.
  Beta schedules linear, scaled_linear (Rombach et al. 2022), squaredcos_cap_v2
  (Nichol & Dhariwal 2021), sigmoid (GeoDiff), laplace, ``trained_betas``, and
  ``rescale_betas_zero_snr`` (Lin et al. 2024, "Common Diffusion Noise
  Schedules and Sample Steps are Flawed", algorithm 1).
* `SigmaSchedule` (Karras et al. 2022, "Elucidating the Design Space of
  Diffusion-Based Generative Models", EDM): x_t = x0 + sigma eps with sigma in
  [sigma_min, sigma_max], Karras rho-spacing or exponential spacing.
* `FlowMatchSchedule` (Lipman et al. 2023 "Flow Matching for Generative
  Modeling"; Liu et al. 2023 "Flow Straight and Fast"): x_t = (1 - s) x0 + s eps,
  with the static shift s' = k s / (1 + (k - 1) s), the dynamic (resolution
  dependent) shift e^mu / (e^mu + (1/s - 1)) and ``shift_terminal`` (Esser et
  al. 2024, "Scaling Rectified Flow Transformers", SD3).

Precision: genfast computes every table in float64. diffusers 0.42.1 builds
its betas and ``alphas_cumprod`` in float32 (the cumulative product of 1000
float32 factors drifts by up to ~1e-5 relative at the end of the schedule) and
casts inference sigmas to float32; genfast's float64 values are the more exact
ones there, and tests/test_schedules.py compares with tolerances that say so.
Timestep indices (integers) match diffusers exactly.

`Schedule.plan(n, ...)` returns a `SamplingPlan`: every per-step scalar a
reverse-step kernel needs, one small float64 tensor on the device (see
`SamplingPlan` for the layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
SPACINGS = ("linspace", "leading", "trailing")
SIGMA_KINDS = ("default", "karras", "exponential", "beta")
# which diffusers set_timesteps a plan reproduces
FAMILIES = ("ddim", "euler", "dpm", "flow", "edm")


class ScheduleError(ValueError):
    """A schedule configuration genfast cannot build (the message names the key)."""


# ---------------------------------------------------------------- config

def _get(cfg: Mapping[str, Any], key: str, default):
    v = cfg.get(key, default)
    return default if v is None and default is not None else v


def from_config(config) -> "Schedule":
    """Build a schedule from a diffusers scheduler config (``scheduler.config``,
    a FrozenDict) or a plain dict with the same keys.

    The kind is read from ``_class_name`` when present (FlowMatch* -> flow,
    EDM* -> sigma), else from the keys (``shift`` / ``base_shift`` -> flow,
    ``sigma_data`` -> sigma; diffusers' ``.config`` carries no class name);
    anything else is a discrete (beta) schedule. A scheduler object works too.
    """
    if not isinstance(config, Mapping) and hasattr(config, "config"):
        name = type(config).__name__
        config = dict(config.config, _class_name=name)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a diffusers scheduler config or a dict, got "
                        f"{type(config).__name__}")
    cfg = dict(config)
    name = str(cfg.get("_class_name", ""))
    if name.startswith("FlowMatch") or (not name and ("shift" in cfg or "base_shift" in cfg)):
        return FlowMatchSchedule(cfg)
    if name.startswith("EDM") or (not name and "sigma_data" in cfg):
        return SigmaSchedule(cfg)
    if name and name not in _DISCRETE_CLASSES:
        raise ScheduleError(f"config: unknown scheduler class {name!r}")
    return DiscreteSchedule(cfg)


_DISCRETE_CLASSES = {
    "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "LCMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
    "DEISMultistepScheduler", "DPMSolverSinglestepScheduler", "DDIMInverseScheduler",
}


# ---------------------------------------------------------------- helpers (float64)

def _interp_t(sigma, log_sigmas):
    """diffusers' ``_sigma_to_t``: the fractional train timestep whose sigma is
    ``sigma``, by linear interpolation of log sigma."""
    sigma = np.asarray(sigma, dtype=np.float64)
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high]), 0, 1)
    return ((1 - w) * low + w * high).reshape(sigma.shape)


def karras_sigmas(sigma_min: float, sigma_max: float, n: int, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 eq. 5: (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho."""
    ramp = np.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def exponential_sigmas(sigma_min: float, sigma_max: float, n: int) -> np.ndarray:
    """Log-uniform sigmas from sigma_max down to sigma_min."""
    return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), n))


def beta_sigmas(sigma_min: float, sigma_max: float, n: int, alpha: float = 0.6,
                beta: float = 0.6) -> np.ndarray:
    """Beta(0.6, 0.6) quantile spacing (Lee et al. 2024, "Beta Sampling is All
    You Need"), as diffusers' ``_convert_to_beta``; needs scipy."""
    try:
        import scipy.stats
    except ImportError:  # pragma: no cover
        raise ScheduleError("use_beta_sigmas needs scipy (pip install scipy)") from None
    ppf = scipy.stats.beta.ppf(1 - np.linspace(0, 1, n), alpha, beta)
    return sigma_min + ppf * (sigma_max - sigma_min)


def _sigma_kind(cfg) -> str:
    flags = [k for k in ("karras", "exponential", "beta") if cfg.get(f"use_{k}_sigmas")]
    if len(flags) > 1:
        raise ScheduleError("config: only one of use_karras_sigmas, use_exponential_sigmas, "
                            "use_beta_sigmas can be set")
    return flags[0] if flags else "default"


def _convert(kind: str, sigmas: np.ndarray, n: int, cfg) -> np.ndarray:
    smin = cfg.get("sigma_min") if cfg.get("sigma_min") is not None else float(sigmas[-1])
    smax = cfg.get("sigma_max") if cfg.get("sigma_max") is not None else float(sigmas[0])
    if kind == "karras":
        return karras_sigmas(smin, smax, n)
    if kind == "exponential":
        return exponential_sigmas(smin, smax, n)
    return beta_sigmas(smin, smax, n)


@dataclass
class Inference:
    """What diffusers' ``set_timesteps`` produces: ``timesteps`` (n, the value
    fed to the model at each step) and ``sigmas`` (n + 1, the last one the final
    noise level), float64 numpy arrays."""
    timesteps: np.ndarray
    sigmas: np.ndarray | None = None


# ---------------------------------------------------------------- schedules

class Schedule:
    """Base of the three kinds. ``kind`` is "vp", "sigma" or "flow"."""

    kind: str = ""
    kind_code: int = -1

    def __init__(self, cfg: Mapping[str, Any]):
        self.config = dict(cfg)
        self.num_train_timesteps = int(_get(cfg, "num_train_timesteps", 1000))
        if self.num_train_timesteps < 1:
            raise ScheduleError(f"config: num_train_timesteps must be >= 1, got "
                                f"{self.num_train_timesteps}")
        self.prediction_type = _get(cfg, "prediction_type", "epsilon")
        self._tables: dict = {}
        self._last = None

    # The (T, 4) float64 training table [sqrt(abar), sqrt(1 - abar), snr, sigma],
    # moved to each device once and cached: add_noise / diffusion_loss gather
    # from it by timestep inside the kernel, with no host sync.
    def _table_host(self) -> torch.Tensor:
        return torch.zeros((0, 4), dtype=torch.float64)

    def table(self, device) -> torch.Tensor:
        """The training table on ``device`` (moved there once, then cached)."""
        last = self._last
        if last is not None and last[0] == device:
            return last[1]
        device = torch.device(device)
        key = (device.type, device.index)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = self._table_host().to(device)
        self._last = (device, t)
        return t

    def set_timesteps(self, n: int, family: str | None = None, **kw) -> Inference:
        raise NotImplementedError

    def plan(self, num_inference_steps: int | None = None, *, sampler: str = "euler",
             device="cpu", sigmas=None, timesteps=None, **options) -> "SamplingPlan":
        """The per-step coefficients of ``sampler`` for ``num_inference_steps``
        steps, as float64 tensors on ``device`` (see `SamplingPlan`).

        ``sigmas=`` (n + 1 values, the last the final sigma) or ``timesteps=``
        (n values): custom steps, as diffusers' ``set_timesteps(sigmas=...)`` /
        ``(timesteps=...)`` take them (sigma-space and multistep samplers on a
        discrete schedule); ``num_inference_steps`` may then be None."""
        from ._plan import build_plan
        return build_plan(self, num_inference_steps, sampler, torch.device(device), options,
                          sigmas=sigmas, timesteps=timesteps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.num_train_timesteps})"


class DiscreteSchedule(Schedule):
    """Variance-preserving discrete schedule (DDPM / DDIM / Euler / DPM-Solver /
    UniPC configs). Tables (float64 tensors of length T): ``betas``,
    ``alphas``, ``alphas_cumprod``, ``sigmas`` = sqrt((1 - abar)/abar),
    ``log_snr`` = log(abar / (1 - abar))."""

    kind, kind_code = "vp", 0

    def __init__(self, cfg):
        super().__init__(cfg)
        T = self.num_train_timesteps
        b0 = float(_get(cfg, "beta_start", 0.0001))
        b1 = float(_get(cfg, "beta_end", 0.02))
        sched = _get(cfg, "beta_schedule", "linear")
        trained = cfg.get("trained_betas")
        if trained is not None:
            betas = np.asarray(trained, dtype=np.float64)
            if betas.ndim != 1 or len(betas) != T:
                raise ScheduleError(f"config: trained_betas must have num_train_timesteps={T} "
                                    f"values, got shape {betas.shape}")
        elif sched == "linear":
            betas = np.linspace(b0, b1, T)
        elif sched == "scaled_linear":
            betas = np.linspace(b0 ** 0.5, b1 ** 0.5, T) ** 2
        elif sched == "squaredcos_cap_v2":
            betas = _betas_for_alpha_bar(T, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2)
        elif sched == "laplace":
            def laplace(t):
                lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
                snr = math.exp(lmb)
                return math.sqrt(snr / (1 + snr))
            betas = _betas_for_alpha_bar(T, laplace)
        elif sched == "sigmoid":
            betas = 1 / (1 + np.exp(-np.linspace(-6, 6, T))) * (b1 - b0) + b0
        else:
            raise ScheduleError(f"config: unknown beta_schedule {sched!r} (one of "
                                f"{', '.join(BETA_SCHEDULES)})")
        for key in ("use_flow_sigmas", "use_lu_lambdas"):
            if cfg.get(key):
                raise ScheduleError(f"config: {key}=True is not supported")
        self.zero_snr = bool(_get(cfg, "rescale_betas_zero_snr", False))
        if self.zero_snr:
            betas = rescale_zero_terminal_snr(betas)
        self.betas = torch.from_numpy(betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        if self.zero_snr:
            self.alphas_cumprod[-1] = 0.0  # exact: the cumprod leaves ~1e-17 rounding
        a = self.alphas_cumprod
        with np.errstate(divide="ignore"):
            self.sigmas = ((1 - a) / a).sqrt()
            self.log_snr = torch.log(a) - torch.log1p(-a)
        self._sig32 = None
        self.timestep_spacing = _get(cfg, "timestep_spacing", "leading")
        self.steps_offset = int(_get(cfg, "steps_offset", 0))
        self.sigma_kind = _sigma_kind(cfg)
        self.final_sigmas_type = _get(cfg, "final_sigmas_type", "zero")
        self.interpolation_type = _get(cfg, "interpolation_type", "linear")
        if self.timestep_spacing not in SPACINGS:
            raise ScheduleError(f"config: unknown timestep_spacing {self.timestep_spacing!r}")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            raise ScheduleError(f"config: unknown final_sigmas_type {self.final_sigmas_type!r}")

    def _table_host(self):
        a = self.alphas_cumprod
        with np.errstate(divide="ignore"):
            snr = a / (1 - a)
        return torch.stack([a.sqrt(), (1 - a).sqrt(), snr, self.sigmas], 1).contiguous()

    def _sampler_sigmas(self) -> np.ndarray:
        """Train sigmas as diffusers' sigma-space samplers compute them: from its
        float32 ``alphas_cumprod`` (with abar[-1] = 2^-24 for zero-terminal-SNR
        schedules, so sigma stays finite). Inference timesteps come from these
        so that they, and the integer timesteps interpolated from them, are
        diffusers' own; float32 numpy array, as in diffusers."""
        if self._sig32 is None:
            a = _diffusers_alphas_cumprod_f32(self.config, self.num_train_timesteps)
            if self.zero_snr:
                a[-1] = 2.0 ** -24
            self._sig32 = (((1 - a) / a) ** 0.5).numpy()
        return self._sig32

    def set_timesteps(self, n: int, family: str = "ddim", **kw) -> Inference:
        """Inference timesteps (and sigmas) exactly as diffusers' set_timesteps of
        the family's schedulers: "ddim" (DDIM, DDPM, LCM-like integer timesteps),
        "euler" (Euler, Euler ancestral, Heun, DPM2: float timesteps, sigmas
        interpolated), "dpm" (DPM-Solver multistep: n + 1 points), "unipc" (as
        dpm, with UniPC's rounding and final sigma). Sigmas are float64 arrays
        holding diffusers' float32 values (its ``scheduler.sigmas``)."""
        T, sp, off = self.num_train_timesteps, self.timestep_spacing, self.steps_offset
        if not 1 <= n <= T:
            raise ScheduleError(f"num_inference_steps must be in [1, {T}], got {n}")
        if family == "ddim":
            if sp == "linspace":
                ts = np.linspace(0, T - 1, n).round()[::-1]
            elif sp == "leading":
                ts = (np.arange(n) * (T // n)).round()[::-1] + off
            else:
                ts = np.round(np.arange(T, 0, -T / n)) - 1
            return Inference(ts.astype(np.int64).astype(np.float64))
        sig = self._sampler_sigmas()
        log_sig = np.log(sig)
        if family == "euler":
            if sp == "linspace":
                ts = np.linspace(0, T - 1, n, dtype=np.float64)[::-1].copy()
            elif sp == "leading":
                ts = (np.arange(n) * (T // n)).round()[::-1].astype(np.float64) + off
            else:
                ts = np.arange(T, 0, -T / n).round() - 1
            if self.interpolation_type != "linear":
                # diffusers 0.42.1's log_linear gives n + 2 sigmas for n steps (n + 1
                # log-spaced ones and the final zero), so its last step stops short of
                # its smallest sigma: no schedule to reproduce.
                raise ScheduleError(f"config: interpolation_type {self.interpolation_type!r} is "
                                    f"not supported (only 'linear')")
            s = np.interp(ts, np.arange(len(sig)), sig)
            if self.sigma_kind != "default":
                s = _convert(self.sigma_kind, s, n, self.config)
                ts = _interp_t(s, log_sig)
        elif family in ("dpm", "unipc"):
            if sp == "linspace":
                ts = np.linspace(0, T - 1, n + 1).round()[::-1][:-1].astype(np.int64)
            elif sp == "leading":
                ts = (np.arange(n + 1) * (T // (n + 1))).round()[::-1][:-1].astype(np.int64) + off
            else:
                ts = np.arange(T, 0, -T / n).round().astype(np.int64) - 1
            if self.sigma_kind != "default":
                s = _convert(self.sigma_kind, np.flip(sig).copy(), n, self.config)
                ts = _interp_t(s, log_sig)
                if self.sigma_kind == "karras" and (family == "unipc" or _get(
                        self.config, "beta_schedule", "linear") != "squaredcos_cap_v2"):
                    ts = ts.round()
                ts = ts.astype(np.int64)
            else:
                s = np.interp(ts, np.arange(len(sig)), sig)
            ts = ts.astype(np.float64)
        else:
            raise ScheduleError(f"family must be one of ddim, euler, dpm, unipc for a discrete "
                                f"schedule, got {family!r}")
        if self.final_sigmas_type == "zero":
            last = 0.0
        elif family == "unipc" and self.sigma_kind != "default":
            last = float(s[-1])  # UniPC repeats its last converted sigma
        else:
            last = float(sig[0])
        return Inference(np.asarray(ts, dtype=np.float64), np.concatenate([s, [last]]))


def _diffusers_alphas_cumprod_f32(cfg, T) -> torch.Tensor:
    """diffusers' own float32 recipe for alphas_cumprod, op for op (its
    DDPMScheduler.__init__), so inference sigmas can match it exactly."""
    b0 = float(_get(cfg, "beta_start", 0.0001))
    b1 = float(_get(cfg, "beta_end", 0.02))
    sched = _get(cfg, "beta_schedule", "linear")
    f32 = torch.float32
    if cfg.get("trained_betas") is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=f32)
    elif sched == "linear":
        betas = torch.linspace(b0, b1, T, dtype=f32)
    elif sched == "scaled_linear":
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=f32) ** 2
    elif sched == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (b1 - b0) + b0
    else:  # squaredcos_cap_v2 / laplace: float64 Python maths, stored float32
        betas = torch.from_numpy(DiscreteSchedule({**cfg, "rescale_betas_zero_snr": False}
                                                  ).betas.numpy()).to(f32)
    if _get(cfg, "rescale_betas_zero_snr", False):
        s = torch.cumprod(1.0 - betas, 0).sqrt()
        s0, sT = s[0].clone(), s[-1].clone()
        s -= sT
        s *= s0 / (s0 - sT)
        a = s ** 2
        betas = 1 - torch.cat([a[0:1], a[1:] / a[:-1]])
    return torch.cumprod(1.0 - betas, 0)


def _betas_for_alpha_bar(T, f, max_beta=0.999):
    return np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)])


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2024, algorithm 1: shift and scale sqrt(abar) so the last
    timestep has zero SNR and the first keeps its value; back to betas."""
    s = np.sqrt(np.cumprod(1.0 - betas))
    s0, sT = s[0], s[-1]
    s = (s - sT) * s0 / (s0 - sT)
    a = s ** 2
    alphas = np.concatenate([a[:1], a[1:] / a[:-1]])
    return 1 - alphas


class SigmaSchedule(Schedule):
    """Sigma-space (EDM) schedule: sigma_min, sigma_max, sigma_data, rho,
    sigma_schedule karras / exponential; model timestep c_noise = log(sigma)/4."""

    kind, kind_code = "sigma", 1

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sigma_min = float(_get(cfg, "sigma_min", 0.002))
        self.sigma_max = float(_get(cfg, "sigma_max", 80.0))
        self.sigma_data = float(_get(cfg, "sigma_data", 0.5))
        self.rho = float(_get(cfg, "rho", 7.0))
        self.sigma_schedule = _get(cfg, "sigma_schedule", "karras")
        self.final_sigmas_type = _get(cfg, "final_sigmas_type", "zero")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ScheduleError(f"config: need 0 < sigma_min < sigma_max, got {self.sigma_min}, "
                                f"{self.sigma_max}")
        if self.sigma_schedule not in ("karras", "exponential"):
            raise ScheduleError(f"config: unknown sigma_schedule {self.sigma_schedule!r}")

    def sigmas_from_ramp(self, ramp: np.ndarray) -> np.ndarray:
        if self.sigma_schedule == "karras":
            lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
            return (hi + ramp * (lo - hi)) ** self.rho
        return np.exp(np.linspace(math.log(self.sigma_min), math.log(self.sigma_max),
                                  len(ramp)))[::-1].copy()

    def set_timesteps(self, n: int, family: str = "edm", **kw) -> Inference:
        s = self.sigmas_from_ramp(np.linspace(0, 1, n))
        last = float(s[-1]) if self.final_sigmas_type == "sigma_min" else 0.0
        return Inference(0.25 * np.log(s), np.concatenate([s, [last]]))


class FlowMatchSchedule(Schedule):
    """Flow-matching schedule: sigma in [1/T, 1] shifted; timesteps = sigma T."""

    kind, kind_code = "flow", 2

    def __init__(self, cfg):
        super().__init__(cfg)
        self.shift = float(_get(cfg, "shift", 1.0))
        self.use_dynamic_shifting = bool(_get(cfg, "use_dynamic_shifting", False))
        self.shift_terminal = cfg.get("shift_terminal")
        self.time_shift_type = _get(cfg, "time_shift_type", "exponential")
        self.sigma_kind = _sigma_kind(cfg)
        if cfg.get("invert_sigmas"):
            raise ScheduleError("config: invert_sigmas is not supported")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ScheduleError(f"config: unknown time_shift_type {self.time_shift_type!r}")
        T = self.num_train_timesteps
        s = np.linspace(1, T, T)[::-1] / T
        if not self.use_dynamic_shifting:
            s = self.shift * s / (1 + (self.shift - 1) * s)
        self.train_sigmas = s.copy()  # diffusers' scheduler.sigmas before set_timesteps
        self.sigma_min, self.sigma_max = float(s[-1]), float(s[0])

    def shift_sigmas(self, s, mu: float | None = None) -> np.ndarray:
        """The static or (given mu) dynamic shift, then shift_terminal."""
        s = np.asarray(s, dtype=np.float64)
        if self.use_dynamic_shifting:
            if mu is None:
                raise ScheduleError("mu is required with use_dynamic_shifting=True")
            m = math.exp(mu) if self.time_shift_type == "exponential" else mu
            s = m / (m + (1 / s - 1))
        else:
            s = self.shift * s / (1 + (self.shift - 1) * s)
        if self.shift_terminal:
            one_minus = 1 - s
            s = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        return s

    def set_timesteps(self, n: int, family: str = "flow", mu: float | None = None,
                      **kw) -> Inference:
        T = self.num_train_timesteps
        s = np.linspace(self.sigma_max * T, self.sigma_min * T, n) / T
        s = self.shift_sigmas(s, mu)
        if self.sigma_kind != "default":
            s = _convert(self.sigma_kind, s, n, {})
        return Inference(s * T, np.concatenate([s, [0.0]]))


from ._plan import PLAN_COLUMNS, STAGE_COLUMNS, SamplingPlan, plan_from_sigmas  # noqa: E402

__all__ = ["from_config", "plan_from_sigmas", "STAGE_COLUMNS", "Schedule", "DiscreteSchedule", "SigmaSchedule", "FlowMatchSchedule",
           "SamplingPlan", "PLAN_COLUMNS", "Inference", "ScheduleError", "karras_sigmas",
           "exponential_sigmas", "beta_sigmas", "rescale_zero_terminal_snr"]
