"""The single-step drop-ins: DDPM, DDIM, Euler, Euler ancestral, LCM,
FlowMatch Euler. Each ``step`` is one ``genfast.steps.step`` call on the plan
of ``set_timesteps``; anything the fused step does not cover (float64
tensors, mixed dtypes, FlowMatch's ``per_token_timesteps``, a timestep that is
not one of ``self.timesteps`` for the stateless DDPM / DDIM, a step before
``set_timesteps``) runs diffusers' own code unchanged."""

from __future__ import annotations

import diffusers as _d
import torch
from diffusers.schedulers import (scheduling_ddim, scheduling_ddpm,
                                  scheduling_euler_ancestral_discrete, scheduling_euler_discrete,
                                  scheduling_flow_match_euler_discrete, scheduling_lcm)
from diffusers.utils import logging as _logging

import genfast
from genfast.ops.steps import step as _step

from ._core import FAST_DTYPES, Dropin, checked_init, output

_INT_TIMESTEP = (int, torch.IntTensor, torch.LongTensor)
_SCALE_WARNING = ("The `scale_model_input` function should be called before `step` to ensure "
                  "correct denoising. See `StableDiffusionPipeline` for a usage example.")


def _fast(plan, sample, model_output) -> bool:
    return (plan is not None and sample.dtype in FAST_DTYPES
            and model_output.dtype == sample.dtype)


class _VPNoise:
    """add_noise / get_velocity of the VP schedulers as one fused
    ``genfast.add_noise`` pass (float64 schedule table; diffusers indexes its
    float32 ``alphas_cumprod`` in the sample's dtype)."""

    def _gf_train_ok(self, x, noise, timesteps):
        return (isinstance(timesteps, torch.Tensor) and timesteps.dim() == 1
                and timesteps.dtype in (torch.int64, torch.int32) and x.dim() >= 2
                and timesteps.shape[0] == x.shape[0] and x.dtype in FAST_DTYPES
                and noise.dtype == x.dtype and noise.shape == x.shape
                and timesteps.device == x.device == noise.device)

    def add_noise(self, original_samples, noise, timesteps):
        if not self._gf_train_ok(original_samples, noise, timesteps):
            return super().add_noise(original_samples, noise, timesteps)
        return genfast.add_noise(original_samples, timesteps, self._gf_schedule(), noise=noise)[0]

    def get_velocity(self, sample, noise, timesteps):
        if not self._gf_train_ok(sample, noise, timesteps):
            return super().get_velocity(sample, noise, timesteps)
        return genfast.add_noise(sample, timesteps, self._gf_schedule(), noise=noise,
                                 prediction_type="v_prediction")[2]


def _bind_base(kw: dict):
    """(prediction_type, clip_sample, clip_sample_range) for genfast.ops.steps.bind's
    key, or None where the wrapper must run (thresholding: a per-item pass)."""
    if kw.get("thresholding") or kw.get("variance_type", "fixed_small") != "fixed_small":
        return None
    return kw["prediction_type"], kw["clip_sample"], kw["clip_sample_range"]


def _clip_kw(cfg) -> dict:
    return dict(prediction_type=cfg.prediction_type, clip_sample=bool(cfg.clip_sample),
                clip_sample_range=float(cfg.clip_sample_range),
                thresholding=bool(cfg.thresholding),
                dynamic_thresholding_ratio=float(cfg.dynamic_thresholding_ratio),
                sample_max_value=float(cfg.sample_max_value))


class DDPMScheduler(Dropin, _VPNoise, _d.DDPMScheduler):
    """diffusers' DDPMScheduler (Ho et al. 2020) with a fused genfast step.
    Not supported: variance_type fixed_large_log and learned."""

    __init__ = checked_init(_d.DDPMScheduler.__init__)
    _gf_sampler = "ddpm"

    @classmethod
    def unsupported(cls, config):
        vt = config.get("variance_type", "fixed_small")
        if vt in ("fixed_large_log", "learned"):
            return (f"variance_type={vt!r} is not supported (fixed_small, fixed_small_log, "
                    f"fixed_large and learned_range are)")
        return None

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device, timesteps)
        cfg = self.config
        self._gf_kw = dict(_clip_kw(cfg), variance_type=cfg.variance_type)
        if timesteps is not None:  # custom: x_prev at the next one in the list
            self._gf_set_plan(len(self.timesteps), given=(self.timesteps, None))
        else:
            self._gf_set_plan(self.num_inference_steps)

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        i = self._gf_lookup(timestep) if _fast(self._gf_plan, sample, model_output) else None
        if i is None:
            return super().step(model_output, timestep, sample, generator=generator,
                                return_dict=return_dict)
        # diffusers draws only when t > 0 (a device-tensor index cannot tell: it draws)
        draws = type(i) is not int or self._gf_vals[i] > 0
        kw = self._gf_noise(generator, draws, sample)
        base = _bind_base(self._gf_kw)
        f = None if base is None or "noise" in kw else self._gf_bound(
            i, model_output, sample, (base[0], 10.0, True, None, base[1], base[2], False),
            kw["seed"])
        if f is not None:
            prev, x0 = f(i, model_output, sample)
        else:
            prev, x0 = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                             **self._gf_kw, **kw)
        if not return_dict:
            return prev, x0
        return output(scheduling_ddpm.DDPMSchedulerOutput, prev_sample=prev,
                      pred_original_sample=x0)


class DDIMScheduler(Dropin, _VPNoise, _d.DDIMScheduler):
    """diffusers' DDIMScheduler (Song et al. 2021) with a fused genfast step
    (eta, use_clipped_model_output, variance_noise as diffusers)."""

    __init__ = checked_init(_d.DDIMScheduler.__init__)
    _gf_sampler = "ddim"

    def set_timesteps(self, num_inference_steps, device=None):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device)
        self._gf_kw = _clip_kw(self.config)
        self._gf_set_plan(self.num_inference_steps)

    def step(self, model_output, timestep, sample, eta=0.0, use_clipped_model_output=False,
             generator=None, variance_noise=None, return_dict=True):
        i = self._gf_lookup(timestep) if _fast(self._gf_plan, sample, model_output) else None
        if i is None or isinstance(eta, torch.Tensor):
            return super().step(model_output, timestep, sample, eta, use_clipped_model_output,
                                generator, variance_noise, return_dict)
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("Cannot pass both generator and variance_noise. Please make sure "
                                 "that either `generator` or `variance_noise` stays `None`.")
            if variance_noise is not None:
                kw = {"noise": variance_noise.to(sample.dtype)}
            else:
                kw = self._gf_noise(generator, True, sample)
        else:
            kw = {}
        base = _bind_base(self._gf_kw)
        f = None if base is None or "noise" in kw else self._gf_bound(
            i, model_output, sample, (base[0], 10.0, True, float(eta), base[1], base[2],
                                      bool(use_clipped_model_output)), kw.get("seed"))
        if f is not None:
            prev, x0 = f(i, model_output, sample)
        else:
            prev, x0 = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                             eta=float(eta), use_clipped_model_output=bool(use_clipped_model_output),
                             **self._gf_kw, **kw)
        if not return_dict:
            return prev, x0
        return output(scheduling_ddim.DDIMSchedulerOutput, prev_sample=prev,
                      pred_original_sample=x0)


class _SigmaSpace(Dropin):
    """Euler-type: a step counter as diffusers keeps it, the model input
    scaled by 1/sqrt(sigma^2 + 1) (the divisor in float32, as diffusers')."""

    _gf_logger = None

    def _gf_after_set(self):
        self._gf_div = ((self.sigmas.float() ** 2 + 1) ** 0.5).tolist()
        self._gf_sig = self.sigmas.tolist()
        self._gf_div_dev = {}

    def scale_model_input(self, sample, timestep):
        if self._gf_plan is None:
            return super().scale_model_input(sample, timestep)
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        self.is_scale_input_called = True
        if type(i) is int:
            return sample / self._gf_div[i]
        div = self._gf_div_dev.get(i.device)
        if div is None:
            div = self._gf_div_dev[i.device] = torch.tensor(self._gf_div, device=i.device)
        return sample / div[i]

    def _gf_counter(self, timestep):
        if isinstance(timestep, _INT_TIMESTEP):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                f"`{type(self).__name__}.step()` is not supported. Make sure to pass one of the "
                "`scheduler.timesteps` as a timestep.")
        if not self.is_scale_input_called:
            self._gf_logger.warning(_SCALE_WARNING)
        if self._step_index is None:
            self._init_step_index(timestep)
        return self._step_index

    def _gf_x0(self, x0, model_output):
        # diffusers computes x0 from the float32 sample: a float32 tensor
        return x0 if x0.dtype == torch.float32 else x0.float()


class EulerDiscreteScheduler(_SigmaSpace, _d.EulerDiscreteScheduler):
    """diffusers' EulerDiscreteScheduler (Karras et al. 2022, alg. 2: s_churn,
    s_tmin, s_tmax, s_noise) with a fused genfast step. Not supported:
    interpolation_type log_linear."""

    __init__ = checked_init(_d.EulerDiscreteScheduler.__init__)
    _gf_sampler = "euler"
    _gf_logger = _logging.get_logger(scheduling_euler_discrete.__name__)

    @classmethod
    def unsupported(cls, config):
        if config.get("interpolation_type", "linear") != "linear":
            # diffusers 0.42.1's log_linear gives n + 2 ascending sigmas for n steps
            return (f"interpolation_type={config.get('interpolation_type')!r} is not supported "
                    f"(diffusers' log_linear sigmas are not a descending schedule)")
        return None

    def set_timesteps(self, num_inference_steps=None, device=None, timesteps=None, sigmas=None):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device, timesteps, sigmas)
        pred = self.config.prediction_type
        self._gf_pred = "sample" if pred == "original_sample" else pred
        # continuous timesteps (0.25 log sigma, for v-prediction) are only the
        # model's input: the plan steps on the same sigmas
        continuous = self.config.timestep_type == "continuous" and pred == "v_prediction"
        custom = {"sigmas": sigmas} if sigmas is not None else {"timesteps": timesteps}
        self._gf_set_plan(self.num_inference_steps if sigmas is None and timesteps is None
                          else None, check_timesteps=not continuous, **custom)
        self._gf_after_set()

    def step(self, model_output, timestep, sample, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
             s_noise=1.0, generator=None, return_dict=True):
        if not _fast(self._gf_plan, sample, model_output):
            return super().step(model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise,
                                generator, return_dict)
        i = self._gf_counter(timestep)
        draws = s_churn > 0 and (type(i) is not int or s_tmin <= self._gf_sig[i] <= s_tmax)
        kw = self._gf_noise(generator, draws, sample)
        f = None if s_churn or "noise" in kw else self._gf_bound(
            i, model_output, sample, (self._gf_pred, 10.0, True, None, False, 1.0, False),
            kw["seed"])
        if f is not None:
            prev, x0 = f(i, model_output, sample)
        else:
            prev, x0 = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                             prediction_type=self._gf_pred, s_churn=float(s_churn),
                             s_tmin=float(s_tmin), s_tmax=float(s_tmax), s_noise=float(s_noise),
                             **kw)
        self._step_index += 1
        x0 = self._gf_x0(x0, model_output)
        if not return_dict:
            return prev, x0
        return output(scheduling_euler_discrete.EulerDiscreteSchedulerOutput, prev_sample=prev,
                      pred_original_sample=x0)


class EulerAncestralDiscreteScheduler(_SigmaSpace, _d.EulerAncestralDiscreteScheduler):
    """diffusers' EulerAncestralDiscreteScheduler (k-diffusion's ancestral
    Euler, eta 1) with a fused genfast step."""

    __init__ = checked_init(_d.EulerAncestralDiscreteScheduler.__init__)
    _gf_sampler = "euler_ancestral"
    _gf_logger = _logging.get_logger(scheduling_euler_ancestral_discrete.__name__)

    def set_timesteps(self, num_inference_steps, device=None):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device)
        self._gf_set_plan(self.num_inference_steps)
        self._gf_after_set()

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if not _fast(self._gf_plan, sample, model_output):
            return super().step(model_output, timestep, sample, generator, return_dict)
        i = self._gf_counter(timestep)
        kw = self._gf_noise(generator, True, sample)
        pred = self.config.prediction_type
        f = None if "noise" in kw else self._gf_bound(
            i, model_output, sample, (pred, 10.0, True, None, False, 1.0, False), kw["seed"])
        if f is not None:
            prev, x0 = f(i, model_output, sample)
        else:
            prev, x0 = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                             prediction_type=pred, **kw)
        self._step_index += 1
        x0 = self._gf_x0(x0, model_output)
        if not return_dict:
            return prev, x0
        return output(scheduling_euler_ancestral_discrete.EulerAncestralDiscreteSchedulerOutput,
                      prev_sample=prev, pred_original_sample=x0)


class LCMScheduler(Dropin, _VPNoise, _d.LCMScheduler):
    """diffusers' LCMScheduler (Luo et al. 2023) with a fused genfast step."""

    __init__ = checked_init(_d.LCMScheduler.__init__)
    _gf_sampler = "lcm"

    def set_timesteps(self, num_inference_steps=None, device=None, original_inference_steps=None,
                      timesteps=None, strength=1.0):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device, original_inference_steps, timesteps,
                              strength)
        self._gf_kw = dict(_clip_kw(self.config),
                           timestep_scaling=float(self.config.timestep_scaling))
        if timesteps is not None or strength != 1.0:
            # diffusers' own timesteps (img2img strength, custom): LCM reads the
            # timestep, alpha / sigma now and at the next timestep and the last-step
            # flag, which DDPM's rows over the same timesteps hold
            self._gf_set_plan(len(self.timesteps), given=(self.timesteps, None), rows_of="ddpm")
            return
        opts = {}
        if original_inference_steps is not None:
            opts["original_inference_steps"] = original_inference_steps
        self._gf_set_plan(self.num_inference_steps, **opts)

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if not _fast(self._gf_plan, sample, model_output):
            return super().step(model_output, timestep, sample, generator, return_dict)
        if self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        draws = type(i) is not int or i != self.num_inference_steps - 1
        kw = self._gf_noise(generator, draws, sample)
        base = _bind_base(self._gf_kw)
        f = None if base is None or "noise" in kw else self._gf_bound(
            i, model_output, sample,
            (base[0], self._gf_kw["timestep_scaling"], True, None, base[1], base[2], False),
            kw["seed"])
        if f is not None:
            prev, denoised = f(i, model_output, sample)
        else:
            prev, denoised = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                                   **self._gf_kw, **kw)
        self._step_index += 1
        if not return_dict:
            return prev, denoised
        return output(scheduling_lcm.LCMSchedulerOutput, prev_sample=prev, denoised=denoised)


class FlowMatchEulerDiscreteScheduler(Dropin, _d.FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler (Lipman et al. 2023; Esser
    et al. 2024) with a fused genfast step. Not supported: invert_sigmas."""

    __init__ = checked_init(_d.FlowMatchEulerDiscreteScheduler.__init__)
    _gf_sampler = "flow_match_euler"

    @classmethod
    def unsupported(cls, config):
        if config.get("invert_sigmas"):
            return "invert_sigmas=True is not supported"
        return None

    def _gf_schedule_config(self):
        return dict(self.config, shift=self.shift, _class_name=type(self).__name__)

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None,
                      timesteps=None):
        self._gf_plan = None
        super().set_timesteps(num_inference_steps, device, sigmas, mu, timesteps)
        if sigmas is not None or timesteps is not None:  # diffusers' shifted custom values
            self._gf_set_plan(len(self.timesteps), given=(self.timesteps, self.sigmas))
        else:
            self._gf_set_plan(self.num_inference_steps, mu=mu)

    def step(self, model_output, timestep, sample, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"),
             s_noise=1.0, generator=None, per_token_timesteps=None, return_dict=True):
        # s_churn ... s_noise: accepted and unused, as in diffusers
        if per_token_timesteps is not None or not _fast(self._gf_plan, sample, model_output):
            return super().step(model_output, timestep, sample, s_churn, s_tmin, s_tmax, s_noise,
                                generator, per_token_timesteps, return_dict)
        if isinstance(timestep, _INT_TIMESTEP):
            raise ValueError(
                "Passing integer indices (e.g. from `enumerate(timesteps)`) as timesteps to "
                "`FlowMatchEulerDiscreteScheduler.step()` is not supported. Make sure to pass "
                "one of the `scheduler.timesteps` as a timestep.")
        if self._step_index is None:
            self._init_step_index(timestep)
        stochastic = bool(self.config.stochastic_sampling)
        # diffusers draws in float32, from the float32 copy of the sample
        kw = self._gf_noise(generator, stochastic, sample, torch.float32) if stochastic else {}
        i = self._step_index
        f = None if stochastic else self._gf_bound(i, model_output, sample,
                                                   (None, 10.0, False, None, False, 1.0, False))
        if f is not None:
            prev = f(i, model_output, sample)[0]
        else:
            prev = _step(self._gf_plan_on(sample.device), i, model_output, sample,
                         stochastic_sampling=stochastic, return_x0=False, **kw).prev_sample
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return output(scheduling_flow_match_euler_discrete.FlowMatchEulerDiscreteSchedulerOutput,
                      prev_sample=prev)


SINGLE = (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler, EulerAncestralDiscreteScheduler,
          LCMScheduler, FlowMatchEulerDiscreteScheduler)
