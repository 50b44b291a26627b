"""The multistep / two-stage drop-ins: DPMSolverMultistep (DPM-Solver++),
UniPCMultistep, Heun, LMSDiscrete. The solver history lives in a genfast ``StepState``
(made at the loop's first step, dropped by ``set_timesteps``); each step is
one ``genfast.steps.step(..., state=, stage=)`` call. A loop that does not
start at step 0 (img2img with ``set_begin_index``), float64 or mixed-dtype
tensors run diffusers' own step for the whole loop: the plan's order warm-up
counts from step 0."""

from __future__ import annotations

import math
import warnings

import diffusers as _d
import torch
from diffusers.schedulers import scheduling_heun_discrete, scheduling_lms_discrete
from diffusers.schedulers.scheduling_utils import SchedulerOutput

from genfast import steps as _steps

from ._core import Dropin, checked_init, output
from ._single import _SigmaSpace, _VPNoise, _fast


class _Multistep(Dropin):
    _gf_state = None
    _gf_off = False

    def _gf_reset(self):
        self._gf_plan = None
        self._gf_state = None
        self._gf_off = False

    def _gf_begin(self, i, sample, model_output) -> bool:
        """At the loop's first step: genfast's state, or diffusers' own step
        for the whole loop (False)."""
        if self._gf_off:
            return False
        if self._gf_state is None:
            if type(i) is not int or i != 0 or not _fast(self._gf_plan, sample, model_output):
                self._gf_off = True
                return False
            self._gf_state = _steps.new_state(self._gf_plan_on(sample.device), sample)
        return True


def _pred(cfg):
    p = cfg.prediction_type
    if p not in ("epsilon", "v_prediction", "sample"):
        return f"prediction_type={p!r} is not supported (epsilon, v_prediction, sample are)"
    return None


def _no_flow(cfg):
    for key in ("use_flow_sigmas", "use_lu_lambdas", "thresholding"):
        if cfg.get(key):
            return f"{key}=True is not supported"
    if cfg.get("lambda_min_clipped", -math.inf) != -math.inf:
        return "lambda_min_clipped (a finite value) is not supported"
    return None


class DPMSolverMultistepScheduler(_Multistep, _VPNoise, _d.DPMSolverMultistepScheduler):
    """diffusers' DPMSolverMultistepScheduler (Lu et al. 2022, DPM-Solver++:
    orders 1-3, midpoint / heun, dpmsolver++ / sde-dpmsolver++) with a fused
    genfast step. Not supported: algorithm_type dpmsolver / sde-dpmsolver,
    thresholding, use_lu_lambdas, use_flow_sigmas, a finite lambda_min_clipped."""

    __init__ = checked_init(_d.DPMSolverMultistepScheduler.__init__)
    _gf_sampler = "dpmpp"

    @classmethod
    def unsupported(cls, config):
        alg = config.get("algorithm_type", "dpmsolver++")
        if alg not in ("dpmsolver++", "sde-dpmsolver++"):
            return (f"algorithm_type={alg!r} is not supported (dpmsolver++ and sde-dpmsolver++ "
                    f"are)")
        return _no_flow(config) or _pred(config)

    def set_timesteps(self, num_inference_steps=None, device=None, mu=None, timesteps=None):
        self._gf_reset()
        super().set_timesteps(num_inference_steps, device, mu, timesteps)
        cfg = self.config
        self._gf_sde = cfg.algorithm_type == "sde-dpmsolver++"
        self._gf_learned = (cfg.variance_type in ("learned", "learned_range")
                            and cfg.prediction_type == "epsilon")
        self._gf_set_plan(None if timesteps is not None else self.num_inference_steps,
                          timesteps=timesteps, solver_order=cfg.solver_order,
                          solver_type=cfg.solver_type, algorithm_type=cfg.algorithm_type,
                          lower_order_final=cfg.lower_order_final,
                          euler_at_final=cfg.euler_at_final)

    def step(self, model_output, timestep, sample, generator=None, variance_noise=None,
             return_dict=True):
        if self._gf_plan is not None and self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if self._gf_plan is None or not self._gf_begin(i, sample, model_output):
            return super().step(model_output, timestep, sample, generator, variance_noise,
                                return_dict)
        if self._gf_learned:  # diffusers keeps the first 3 channels of the output
            model_output = model_output[:, :3]
        kw = {}
        if self._gf_sde:
            if variance_noise is not None:
                kw = {"noise": variance_noise.to(sample.dtype)}
            else:  # diffusers draws in float32
                kw = self._gf_noise(generator, True, sample, torch.float32)
        prev = _steps.step(self._gf_plan_on(sample.device), i, model_output, sample,
                           state=self._gf_state, prediction_type=self.config.prediction_type,
                           return_x0=False, **kw).prev_sample
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return output(SchedulerOutput, prev_sample=prev)


class UniPCMultistepScheduler(_Multistep, _VPNoise, _d.UniPCMultistepScheduler):
    """diffusers' UniPCMultistepScheduler (Zhao et al. 2023: bh1 / bh2,
    orders 1-3, disable_corrector) with the corrector and predictor fused in
    one genfast step. Not supported: predict_x0=False, solver_p,
    thresholding, use_flow_sigmas."""

    __init__ = checked_init(_d.UniPCMultistepScheduler.__init__)
    _gf_sampler = "unipc"

    @classmethod
    def unsupported(cls, config):
        if not config.get("predict_x0", True):
            return "predict_x0=False is not supported"
        if config.get("solver_p") is not None:
            return "solver_p is not supported"
        return _no_flow(config) or _pred(config)

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None):
        self._gf_reset()
        super().set_timesteps(num_inference_steps, device, sigmas, mu)
        cfg = self.config
        self._gf_set_plan(None if sigmas is not None else self.num_inference_steps,
                          sigmas=sigmas, solver_order=cfg.solver_order,
                          solver_type=cfg.solver_type, lower_order_final=cfg.lower_order_final,
                          disable_corrector=list(cfg.disable_corrector or ()))

    def step(self, model_output, timestep, sample, return_dict=True):
        if self._gf_plan is not None and self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if self._gf_plan is None or not self._gf_begin(i, sample, model_output):
            return super().step(model_output, timestep, sample, return_dict)
        prev = _steps.step(self._gf_plan_on(sample.device), i, model_output, sample,
                           state=self._gf_state, prediction_type=self.config.prediction_type,
                           return_x0=False).prev_sample
        self._step_index += 1
        if not return_dict:
            return (prev,)
        return output(SchedulerOutput, prev_sample=prev)


class HeunDiscreteScheduler(_Multistep, _SigmaSpace, _d.HeunDiscreteScheduler):
    """diffusers' HeunDiscreteScheduler (Karras et al. 2022, alg. 1) with one
    fused genfast step per model evaluation. diffusers' step j (timesteps
    [t0, t1, t1, t2, t2, ...]) is stage j % 2 of the plan's step j // 2.
    Not supported: clip_sample."""

    __init__ = checked_init(_d.HeunDiscreteScheduler.__init__)
    _gf_sampler = "heun"

    @classmethod
    def unsupported(cls, config):
        if config.get("clip_sample"):
            return "clip_sample=True is not supported"
        return _pred(config)

    def set_timesteps(self, num_inference_steps=None, device=None, num_train_timesteps=None,
                      timesteps=None):
        self._gf_reset()
        super().set_timesteps(num_inference_steps, device, num_train_timesteps, timesteps)
        if num_train_timesteps not in (None, self.config.num_train_timesteps):
            self._gf_plan = None
            raise NotImplementedError("genfast.diffusers.HeunDiscreteScheduler.set_timesteps("
                                      "num_train_timesteps=...) other than the config's")
        ts = self.timesteps.detach().to("cpu", torch.float64)
        sig = self.sigmas.detach().to("cpu", torch.float64)
        n = (ts.shape[0] + 1) // 2
        self._gf_set_plan(None if timesteps is not None else n, timesteps=timesteps,
                          expect=(ts[::2], torch.cat([sig[:-1:2], sig[-1:]])))
        self._gf_after_set()
        plan = self._gf_plan
        self._gf_two = [plan.stages(i) == 2 for i in range(plan.num_steps)]

    def step(self, model_output, timestep, sample, return_dict=True):
        if self._gf_plan is not None and self._step_index is None:
            self._init_step_index(timestep)
        j = self._step_index
        if self._gf_plan is None or not self._gf_begin(j, sample, model_output):
            return super().step(model_output, timestep, sample, return_dict)
        i, k = divmod(j, 2)
        prev, x0 = _steps.step(self._gf_plan_on(sample.device), i, model_output, sample,
                               state=self._gf_state, stage=k,
                               prediction_type=self.config.prediction_type)
        # diffusers' state_in_first_order reads dt: not None between the two stages
        self.dt = True if k == 0 and self._gf_two[i] else None
        self._step_index += 1
        if not return_dict:
            return prev, x0
        return output(scheduling_heun_discrete.HeunDiscreteSchedulerOutput, prev_sample=prev,
                      pred_original_sample=x0)


class LMSDiscreteScheduler(_Multistep, _SigmaSpace, _d.LMSDiscreteScheduler):
    """diffusers' LMSDiscreteScheduler (the linear multistep method of
    k-diffusion's sample_lms, Karras et al. 2022: x <- x + sum_j c_j d_{i-j}
    over the last ``order`` derivatives d = (x - x0)/sigma, c_j the integral
    of the Lagrange basis over [sigma_i, sigma_{i+1}]) with a fused genfast
    step: the coefficients come from the plan (exact float64 integrals, where
    diffusers calls scipy's quad every step, a host round trip per term), the
    derivatives live in the step's history ring. ``order`` is 1 to 4 and
    fixed for a loop (the plan is built for it at step 0); another order in
    the middle of a loop raises NotImplementedError naming it."""

    __init__ = checked_init(_d.LMSDiscreteScheduler.__init__)
    _gf_sampler = "lms"
    _gf_order = 4

    @classmethod
    def unsupported(cls, config):
        return _pred(config)

    def set_timesteps(self, num_inference_steps, device=None):
        self._gf_reset()
        super().set_timesteps(num_inference_steps, device)
        self._gf_order = 4
        self._gf_set_plan(self.num_inference_steps, order=4)
        self._gf_after_set()

    def step(self, model_output, timestep, sample, order=4, return_dict=True):
        if self._gf_plan is not None and self._step_index is None:
            self._init_step_index(timestep)
        i = self._step_index
        if (self._gf_plan is not None and self._gf_state is None and i == 0
                and order != self._gf_order and type(order) is int and 1 <= order <= 4):
            self._gf_order = order  # the loop's order, chosen at its first step
            self._gf_set_plan(self.num_inference_steps, order=order)
            self._gf_after_set()
        if self._gf_plan is None or not (order == self._gf_order and
                                         self._gf_begin(i, sample, model_output)):
            if self._gf_state is not None:
                raise NotImplementedError(
                    f"genfast.diffusers.LMSDiscreteScheduler: order={order!r} in the middle of "
                    f"a loop started with order={self._gf_order} (the history is genfast's)")
            self._gf_off = True
            return super().step(model_output, timestep, sample, order, return_dict)
        if not self.is_scale_input_called:
            warnings.warn("The `scale_model_input` function should be called before `step` to "
                          "ensure correct denoising. See `StableDiffusionPipeline` for a usage "
                          "example.")
        prev, x0 = _steps.step(self._gf_plan_on(sample.device), i, model_output, sample,
                               state=self._gf_state, prediction_type=self.config.prediction_type)
        self._step_index += 1
        if not return_dict:
            return prev, x0
        return output(scheduling_lms_discrete.LMSDiscreteSchedulerOutput, prev_sample=prev,
                      pred_original_sample=x0)


MULTI = (HeunDiscreteScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler,
         LMSDiscreteScheduler)
