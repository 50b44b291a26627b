"""k-diffusion's sampler functions on genfast's fused steps.

Drop-in for ``k_diffusion.sampling`` (Crowson's k-diffusion 0.1.1.post1): the
same names, signatures, defaults and callback dict
(``{'x', 'i', 'sigma', 'sigma_hat', 'denoised'}``), ``model(x, sigma * s_in,
**extra_args)`` a denoiser returning x0 (Karras et al. 2022, "Elucidating the
Design Space of Diffusion-Based Generative Models": x = x0 + sigma eps). Each
model evaluation is followed by one fused step (``genfast.steps.step`` with
``prediction_type="sample"`` on a plan over the given sigmas) instead of
k-diffusion's chain of small tensor ops and host syncs (``if sigmas[i + 1] >
0`` reads the device). The sigmas are read to the host once, at the start;
the plans are built from them in float64 there.

Noise: with ``noise_sampler`` (k-diffusion's argument) its tensors are used,
so results match k-diffusion's given the same noise. Without it, noise comes
from the genfast stream: ``seed=`` (an addition; default 0), step i draws
``genfast.randn(x.shape, seed=seed, stream=1 + i)`` (item b is sample b), so
a seed gives the same samples on every device and batch size. (k-diffusion
draws with torch.randn_like, or a Brownian tree for the SDE samplers.)

Noise scale ``s_noise`` != 1 costs one multiply of the noise tensor; the
default 1 keeps the step a single call. Which samplers are fused how: see
each function.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import steps as _steps
from ._plan import PLAN_COLUMNS, SCOL, SamplingPlan, _lms_order, plan_from_sigmas
from .ops.noise import randn

STEP_STREAM = 1  # step i draws stream STEP_STREAM + i (stream 0: an initial latent)
# k-diffusion's 2M: second order from the second step on, first order only into sigma 0
_DPMPP_2M = {"solver_order": 2, "lower_order_final": False}


# ---------------------------------------------------------------- sigma schedules

def _append_zero(x):
    return torch.cat([x, x.new_zeros([1])])


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
    """Karras et al. 2022 eq. 5: (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho,
    then a final 0."""
    ramp = torch.linspace(0, 1, n)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho).to(device)


def get_sigmas_exponential(n, sigma_min, sigma_max, device='cpu'):
    """Log-uniform sigmas from sigma_max down to sigma_min, then 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n,
                                       device=device).exp())


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1., device='cpu'):
    """log sigma a polynomial (degree rho) ramp from log sigma_max to log sigma_min, then 0."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    return _append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min))
                                  + math.log(sigma_min)))


def get_sigmas_vp(n, beta_d=19.9, beta_min=0.1, eps_s=1e-3, device='cpu'):
    """The continuous VP SDE's sigmas (Song et al. 2021): sigma(t) = sqrt(exp(beta_d t^2 / 2
    + beta_min t) - 1) for t from 1 to eps_s, then 0."""
    t = torch.linspace(1, eps_s, n, device=device)
    return _append_zero(torch.sqrt(torch.exp(beta_d * t ** 2 / 2 + beta_min * t) - 1))


# ---------------------------------------------------------------- plans over sigma pairs

_PLANS: dict = {}  # (builder, sigmas, sampler, options, device) -> plan


def _cached(build, values, sampler, device, **opts) -> SamplingPlan:
    """``build(values, sampler, device, **opts)`` (plan_from_sigmas or
    _pair_plan), built once per distinct float64 sigma values and options: a
    front end calls a sampler with the same sigmas for every image, and a
    plan is a read-only table."""
    # the float64 values themselves (a pair plan's two rows have one length each)
    key = (build, np.asarray(values, dtype=np.float64).tobytes(), sampler,
           tuple(sorted(opts.items())), str(device))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= 64:
            _PLANS.clear()
        if build is _pair_plan:
            plan = _pair_plan(values[0], values[1], sampler, device)
        else:
            plan = plan_from_sigmas(values, sampler, device=device, **opts)
        _PLANS[key] = plan
    return plan


def _pair_plan(frm, to, sampler, device) -> SamplingPlan:
    """A plan whose row j steps from sigma ``frm[j]`` to ``to[j]`` in sigma
    space (x = x0 + sigma eps: alpha = 1/sqrt(sigma^2 + 1) on the VP side,
    c_in = 1, the model's "timestep" is sigma itself). The single-step kernels
    read sigma and sigma_next of the row, so any pairs work (sub-steps,
    churned sigma_hat), not only a descending sequence."""
    frm = np.asarray(frm, dtype=np.float64)
    to = np.asarray(to, dtype=np.float64)
    n = len(frm)
    rows = np.zeros((n, len(PLAN_COLUMNS)))
    c = {name: rows[:, j] for j, name in enumerate(PLAN_COLUMNS)}
    c["timestep"][:] = frm
    c["sigma"][:], c["sigma_next"][:] = frm, to
    with np.errstate(divide="ignore", invalid="ignore"):
        for key, s in (("", frm), ("_next", to)):
            a = 1.0 / np.sqrt(s * s + 1.0)
            c["alpha" + key][:], c["sigma_vp" + key][:] = a, s * a
            c["lambda" + key][:] = np.log(a) - np.log(s * a)
        c["h"][:] = c["lambda_next"] - c["lambda"]
        r = to / frm
    c["c_in"][:] = 1.0
    c["order"][:] = 1.0
    c["last"][-1] = 1.0
    c["cc_self"][:] = 1.0
    c["c_x"][:], c["c_d0"][:] = r, 1 - r  # Euler's linear form (the kernel reads sigma columns)
    host = torch.from_numpy(rows)
    return SamplingPlan(sampler, n, host.to(device), host, torch.from_numpy(frm.copy()),
                        torch.from_numpy(np.append(frm, to[-1:])), {}, sample_space="sigma")


def _ancestral(s, sn, eta):
    """k-diffusion's get_ancestral_step in float64: (sigma_down, sigma_up)."""
    if not eta:
        return sn, 0.0
    up = min(sn, eta * math.sqrt(max(sn * sn * (s * s - sn * sn) / (s * s), 0.0)))
    return math.sqrt(max(sn * sn - up * up, 0.0)), up


class _Setup:
    """What every sampler needs: host sigmas, the per-step model sigma inputs
    (device views), the noise source."""

    def __init__(self, x, sigmas, extra_args, seed, noise_sampler):
        if not isinstance(x, torch.Tensor) or x.dim() < 2:
            raise ValueError("x must be a tensor of shape (batch, channels, ...)")
        if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or len(sigmas) < 2:
            raise ValueError("sigmas must be a 1-d tensor of at least 2 noise levels "
                             "(n steps: n + 1, the last usually 0)")
        self.host = sigmas.detach().to("cpu", torch.float64).tolist()  # the one host read
        if any(not math.isfinite(s) or s < 0 for s in self.host) or self.host[0] <= 0:
            raise ValueError("sigmas must be finite, >= 0, with sigmas[0] > 0")
        self.x, self.sigmas = x, sigmas
        self.n = len(self.host) - 1
        self.extra = {} if extra_args is None else extra_args
        self.s_in = x.new_ones([x.shape[0]])
        self.seed, self.noise_sampler = seed, noise_sampler
        if noise_sampler is None and (type(seed) is not int or not 0 <= seed < 1 << 64):
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")

    def sigma_in(self, values):
        """``sigma * s_in`` for each value (as k-diffusion computes it: in x's
        dtype), computed as one device tensor and handed out as a list of its
        rows (views made once: indexing a tensor per step costs a few us)."""
        return list((torch.tensor(values, dtype=self.sigmas.dtype, device=self.x.device)[:, None]
                     * self.s_in).unbind(0))

    def noise(self, i, s_noise, needed=True):
        """keywords for the step: the noise of step i (noise= or seed=).
        ``needed`` False (sigma_up = 0): nothing is drawn, as k-diffusion."""
        if not needed:  # the kernel draws nothing when the noise coefficient is 0
            return {"seed": 0, "stream": STEP_STREAM}
        if self.noise_sampler is not None:
            z = self.noise_sampler(self.sigmas[i], self.sigmas[i + 1])
            z = z if z.dtype == self.x.dtype else z.to(self.x.dtype)
            return {"noise": z if s_noise == 1 else z * s_noise}
        if s_noise == 1:
            return {"seed": self.seed, "stream": STEP_STREAM}
        # the plan's step index i would shift the stream: draw it here instead
        z = randn(self.x.shape, seed=self.seed, stream=STEP_STREAM + i, dtype=self.x.dtype,
                  device=self.x.device)
        return {"noise": z.mul_(s_noise)}


def _step(plan, j, denoised, x, **kw):
    return _steps.step(plan, j, denoised, x, prediction_type="sample", return_x0=False,
                       **kw).prev_sample


def _bound_mstep(plan, x, state):
    """A deterministic multistep loop's step bound once, as genfast.sample
    binds its own (genfast.sample._bind: the op's entry point with the codes
    resolved, (i, stage, denoised, x) -> x); None where the wrapper must run
    (another backend, a tensor subclass, tracing). Results are the wrapper's
    bit for bit (tests/test_k_diffusion.py)."""
    from .sample import _bind
    return _bind(plan, x, {"seed": 0, "stream": STEP_STREAM, "sample_offset": 0,
                           "prediction_type": "sample", "state": state})


def _mstep_with(bound, plan, j, denoised, x, state):
    """``_mstep`` through ``bound`` when the tensors are plain and of x's dtype."""
    if bound is not None and type(denoised) is torch.Tensor and denoised.dtype == x.dtype:
        return bound(j, 0, denoised, x)
    return _mstep(plan, j, denoised.to(x.dtype), x, state)


def _deterministic_multistep(model, x, sigmas, extra_args, callback, disable, sampler, **opts):
    """The loop of sample_dpmpp_2m and sample_lms: one plan over the sigmas
    (``plan_from_sigmas(sigmas, sampler, **opts)``), the history in a step
    state, one bound fused step per model evaluation, no noise."""
    st = _Setup(x, sigmas, extra_args, 0, None)
    plan = _cached(plan_from_sigmas, st.host, sampler, x.device, **opts)
    state = _steps.new_state(plan, x)
    bound = _bound_mstep(plan, x, state)
    sig_in = st.sigma_in(st.host[:-1])
    for i in _trange(st.n, disable):
        denoised = model(x, sig_in[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i],
                      'denoised': denoised})
        x = _mstep_with(bound, plan, i, denoised, x, state)
    return x


def _mstep(plan, j, denoised, x, state, **kw):
    """A multistep / two-stage genfast step (the sampler's history in ``state``)."""
    return _steps.step(plan, j, denoised, x, state=state, prediction_type="sample",
                       return_x0=False, **kw).prev_sample


def _churn(st, s_churn, s_tmin, s_tmax):
    """Karras et al. 2022 alg. 2's gamma per step and sigma_hat = sigma (1 + gamma)."""
    n, h = st.n, st.host
    gammas = [min(s_churn / n, 2 ** 0.5 - 1) if s_tmin <= h[i] <= s_tmax else 0.
              for i in range(n)]
    return gammas, [h[i] * (g + 1) for i, g in enumerate(gammas)]


def _add_churn(st, x, i, gamma, hat, s_noise):
    """x + s_noise sqrt(sigma_hat^2 - sigma^2) z (one op; z as the step's noise)."""
    if gamma <= 0:
        return x
    c = s_noise * math.sqrt(hat ** 2 - st.host[i] ** 2)
    if st.noise_sampler is not None:
        z = st.noise_sampler(st.sigmas[i], st.sigmas[i + 1])
    else:
        z = randn(x.shape, seed=st.seed, stream=STEP_STREAM + i, dtype=x.dtype, device=x.device)
    return torch.add(x, z.to(x.dtype), alpha=c)


def _trange(n, disable):
    from tqdm.auto import trange
    return trange(n, disable=disable)


# ---------------------------------------------------------------- samplers

@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.,
                 s_tmin=0., s_tmax=float('inf'), s_noise=1., *, seed=0, noise_sampler=None):
    """Karras et al. 2022 algorithm 2 with Euler steps: churn sigma to
    sigma_hat = sigma (1 + gamma), gamma = min(s_churn / n, sqrt 2 - 1) inside
    [s_tmin, s_tmax], adding s_noise sqrt(sigma_hat^2 - sigma^2) z; then
    x <- x + (x - denoised)/sigma_hat (sigma_next - sigma_hat).

    Fused: the Euler step is one call per step; a churned step adds one op
    (x + c z, its noise from ``seed=`` or ``noise_sampler``, an addition to
    k-diffusion's signature, which always draws torch.randn_like)."""
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    gammas, hat = _churn(st, s_churn, s_tmin, s_tmax)
    plan = _cached(_pair_plan, (hat, h[1:]), "euler", x.device)
    sig_in = st.sigma_in(hat)
    hat_t = sigmas.new_tensor(hat) if any(gammas) else None
    for i in _trange(n, disable):
        x = _add_churn(st, x, i, gammas[i], hat[i], s_noise)
        denoised = model(x, sig_in[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i],
                      'sigma_hat': hat_t[i] if hat_t is not None else sigmas[i],
                      'denoised': denoised})
        x = _step(plan, i, denoised.to(x.dtype), x)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1., s_noise=1., noise_sampler=None, *, seed=0):
    """Ancestral Euler: sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 -
    sigma_next^2) / sigma^2)), sigma_down = sqrt(sigma_next^2 - sigma_up^2);
    x <- x + (x - denoised)/sigma (sigma_down - sigma) + s_noise sigma_up z.

    Fused: one call per step (the genfast euler_ancestral step, noise
    in-kernel from ``seed=`` or the ``noise_sampler`` tensor)."""
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    plan = _cached(_pair_plan, (h[:-1], h[1:]), "euler_ancestral", x.device)
    sig_in = st.sigma_in(h[:-1])
    for i in _trange(n, disable):
        denoised = model(x, sig_in[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i],
                      'denoised': denoised})
        noise = st.noise(i, s_noise, h[i + 1] > 0)
        x = _step(plan, i, denoised.to(x.dtype), x, eta=float(eta), **noise)
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                              eta=1., s_noise=1., noise_sampler=None, *, seed=0):
    """DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++", alg. 1 with r = 1/2)
    with ancestral noise: sigma_down / sigma_up as `sample_euler_ancestral`,
    an exponential-integrator half step to s = sqrt(sigma sigma_down),
    x_2 = (s/sigma) x + (1 - s/sigma) denoised, the model at (x_2, s), then
    x <- (sigma_down/sigma) x + (1 - sigma_down/sigma) denoised_2 + s_noise sigma_up z.

    Fused: both are genfast steps on plans over sigma pairs (in sigma space the
    data-prediction exponential integrator is the Euler map): the half step an
    Euler step sigma -> s, the full step the euler_ancestral step sigma ->
    sigma_next with denoised_2 as x0 (same sigma_down / sigma_up), noise in-kernel.
    One call per model evaluation; steps with sigma_down = 0 take one evaluation."""
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    downs = [_ancestral(h[i], h[i + 1], eta)[0] for i in range(n)]
    mids = [math.sqrt(h[i] * d) for i, d in enumerate(downs)]
    half = _cached(_pair_plan, (h[:-1], mids), "euler", x.device)
    full = _cached(_pair_plan, (h[:-1], h[1:]), "euler_ancestral", x.device)
    sig_in = st.sigma_in(h[:-1])
    mid_in = st.sigma_in(mids)
    for i in _trange(n, disable):
        denoised = model(x, sig_in[i], **st.extra).to(x.dtype)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i],
                      'denoised': denoised})
        if downs[i] != 0:
            x_2 = _step(half, i, denoised, x)
            denoised = model(x_2, mid_in[i], **st.extra).to(x.dtype)
        noise = st.noise(i, s_noise, h[i + 1] > 0)
        x = _step(full, i, denoised, x, eta=float(eta), **noise)
    return x


def _two_stage(sampler, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin,
               s_tmax, s_noise, seed, noise_sampler):
    """heun / dpm_2: genfast's two-stage step (stage 0 the Euler predictor to
    sigma_next (Heun) or to the geometric midpoint (DPM2), stage 1 the
    corrector from the saved x), on one plan over the sigmas, or with churn
    on one-step plans from each sigma_hat."""
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    gammas, hat = _churn(st, s_churn, s_tmin, s_tmax)
    if any(gammas):
        plans = [(plan_from_sigmas([hat[i], h[i + 1]], sampler, device=x.device), 0)
                 for i in range(n)]
    else:
        whole = _cached(plan_from_sigmas, h, sampler, x.device)
        plans = [(whole, i) for i in range(n)]
    state = _steps.new_state(plans[0][0], x)
    sig0 = st.sigma_in(hat)
    sig1 = st.sigma_in([float(p.stage_host[j, SCOL["s1_sigma"]]) for p, j in plans])
    hat_t = sigmas.new_tensor(hat) if any(gammas) else None
    for i in _trange(n, disable):
        x = _add_churn(st, x, i, gammas[i], hat[i], s_noise)
        denoised = model(x, sig0[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i],
                      'sigma_hat': hat_t[i] if hat_t is not None else sigmas[i],
                      'denoised': denoised})
        plan, j = plans[i]
        x2 = _mstep(plan, j, denoised.to(x.dtype), x, state)
        if plan.stages(j) == 1:  # the step to sigma 0: plain Euler
            x = x2
            continue
        denoised_2 = model(x2, sig1[i], **st.extra)
        x = _mstep(plan, j, denoised_2.to(x.dtype), x2, state, stage=1)
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.,
                s_tmin=0., s_tmax=float('inf'), s_noise=1., *, seed=0, noise_sampler=None):
    """Karras et al. 2022 algorithm 2 (Heun steps): the Euler predictor
    x_2 = x + d dt to sigma_next, the model at x_2, x <- x + (d + d_2)/2 dt;
    a plain Euler step where sigma_next = 0. Churn as `sample_euler`.

    Fused: each model evaluation is followed by one genfast heun step (stage 0
    the predictor, stage 1 the corrector from the saved x and d); churn adds
    one op."""
    return _two_stage("heun", model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin,
                      s_tmax, s_noise, seed, noise_sampler)


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.,
                 s_tmin=0., s_tmax=float('inf'), s_noise=1., *, seed=0, noise_sampler=None):
    """k-diffusion's DPM-Solver-2-inspired step (Lu et al. 2022; Karras et al.
    2022 alg. 2): Euler to sigma_mid = sqrt(sigma_hat sigma_next), the model
    there, x <- x + d_2 (sigma_next - sigma_hat); plain Euler where
    sigma_next = 0. Churn as `sample_euler`.

    Fused: one genfast dpm_2 step per model evaluation; churn adds one op."""
    return _two_stage("dpm_2", model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin,
                      s_tmax, s_noise, seed, noise_sampler)


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None,
                           eta=1., s_noise=1., noise_sampler=None, *, seed=0):
    """DPM2 steps to sigma_down with ancestral noise: sigma_down / sigma_up as
    `sample_euler_ancestral`, the `sample_dpm_2` step from sigma to sigma_down,
    then x + s_noise sigma_up z (no noise on a step whose sigma_down is 0, as
    k-diffusion).

    Composed: the genfast dpm_2 step (fused, one call per model evaluation)
    on one-step plans sigma -> sigma_down, then one add of the scaled noise
    (genfast.randn from ``seed=``, stream 1 + i, or ``noise_sampler``)."""
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    anc = [_ancestral(h[i], h[i + 1], eta) for i in range(n)]
    plans = [_cached(plan_from_sigmas, [h[i], d], "dpm_2", x.device) for i, (d, _) in
             enumerate(anc)]
    state = _steps.new_state(plans[0], x)
    sig0 = st.sigma_in(h[:-1])
    sig1 = st.sigma_in([float(p.stage_host[0, SCOL["s1_sigma"]]) for p in plans])
    for i in _trange(n, disable):
        denoised = model(x, sig0[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i],
                      'denoised': denoised})
        plan = plans[i]
        x2 = _mstep(plan, 0, denoised.to(x.dtype), x, state)
        if plan.stages(0) == 1:  # sigma_down = 0: Euler to 0, no noise
            x = x2
            continue
        denoised_2 = model(x2, sig1[i], **st.extra)
        x = _mstep(plan, 0, denoised_2.to(x.dtype), x2, state, stage=1)
        if st.noise_sampler is not None:
            z = st.noise_sampler(sigmas[i], sigmas[i + 1]).to(x.dtype)
        else:
            z = randn(x.shape, seed=seed, stream=STEP_STREAM + i, dtype=x.dtype, device=x.device)
        x = torch.add(x, z, alpha=s_noise * anc[i][1])
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """DPM-Solver++(2M) (Lu et al. 2022) in k-diffusion's form: t = -log sigma,
    h = t_next - t, r = h_last / h, D = (1 + 1/(2r)) denoised - 1/(2r)
    old_denoised, x <- (sigma_next/sigma) x - expm1(-h) D; first order at the
    first step and where sigma_next = 0.

    Fused: one genfast dpmpp step per step (plan_from_sigmas; the previous
    denoised lives in the step's state). Deterministic: no noise."""
    return _deterministic_multistep(model, x, sigmas, extra_args, callback, disable, "dpmpp",
                                    **_DPMPP_2M)


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4):
    """Linear multistep on the probability-flow ODE dx/dsigma = d = (x -
    denoised)/sigma (Karras et al. 2022 eq. 3 in the denoiser form): x <- x +
    sum_j c_j d_{i-j}, j < min(i + 1, order), with c_j the integral over
    [sigma_i, sigma_next] of the Lagrange basis polynomial of the nodes
    sigma_i, ..., sigma_{i-order+1} (Adams-Bashforth with variable steps).

    Fused: one genfast lms step per step (plan_from_sigmas; the last three
    derivatives live in the step's state, the coefficients in the plan,
    computed once in float64 on the host: exact integrals of the degree <= 3
    Lagrange polynomials where k-diffusion calls scipy's quad every step).
    Deterministic: no noise."""
    return _deterministic_multistep(model, x, sigmas, extra_args, callback, disable, "lms",
                                    order=_lms_order(order))


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.,
                        s_noise=1., noise_sampler=None, solver_type='midpoint', *, seed=0):
    """DPM-Solver++(2M) SDE (Lu et al. 2022): with eta_h = eta h,
    x <- (sigma_next/sigma) e^-eta_h x + (1 - e^(-h - eta_h)) denoised
    (+ the midpoint or heun D1 term) + s_noise sigma_next sqrt(1 - e^(-2 eta_h)) z;
    x = denoised where sigma_next = 0.

    Fused: one genfast dpmpp step per step (algorithm_type sde-dpmsolver++
    for eta = 1, the ODE form for eta = 0; other eta values raise: the fused
    plan has these two). Noise in-kernel from ``seed=`` (stream 1 + i) or the
    ``noise_sampler`` tensor; k-diffusion's default is a Brownian tree."""
    if solver_type not in {'heun', 'midpoint'}:
        raise ValueError('solver_type must be \'heun\' or \'midpoint\'')
    if eta not in (0, 1):
        raise ValueError(f"eta must be 0 or 1 for genfast's fused DPM-Solver++(2M) SDE step, "
                         f"got {eta!r}")
    st = _Setup(x, sigmas, extra_args, seed, noise_sampler)
    n, h = st.n, st.host
    opts = dict(_DPMPP_2M, solver_type=solver_type)
    if eta:
        opts["algorithm_type"] = "sde-dpmsolver++"
    plan = _cached(plan_from_sigmas, h, "dpmpp", x.device, **opts)
    state = _steps.new_state(plan, x)
    sig_in = st.sigma_in(h[:-1])
    for i in _trange(n, disable):
        denoised = model(x, sig_in[i], **st.extra)
        if callback is not None:
            callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i],
                      'denoised': denoised})
        noise = st.noise(i, s_noise, h[i + 1] > 0 and bool(eta))
        x = _mstep(plan, i, denoised.to(x.dtype), x, state, **noise)
    return x


__all__ = ["get_sigmas_karras", "get_sigmas_exponential", "get_sigmas_polyexponential",
           "get_sigmas_vp", "sample_euler", "sample_euler_ancestral", "sample_heun",
           "sample_dpm_2", "sample_dpm_2_ancestral", "sample_dpmpp_2m", "sample_dpmpp_2m_sde",
           "sample_dpmpp_2s_ancestral", "sample_lms"]
