"""What every drop-in scheduler shares: the plan next to diffusers' own state,
the step index without a host sync, the noise of a step, fast output objects.

A drop-in class subclasses diffusers' class of the same name and puts
`Dropin` first in its bases. ``set_timesteps`` runs diffusers' own
(``timesteps``, ``sigmas`` and every other attribute stay diffusers'), then
builds the genfast `SamplingPlan` of the same config and checks that its
timesteps (and sigmas) are diffusers' values: a config whose schedule genfast
would compute differently raises NotImplementedError instead of stepping on
another schedule. ``step`` reads its coefficients from the plan by step index
and runs one fused ``genfast.steps.step`` call.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections import OrderedDict

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from genfast import backend as _backend
from genfast import schedules as _schedules
from genfast.ops import steps as _steps_ops

FAST_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_Tensor = torch.Tensor
_tf_mode = torch._C._is_torch_function_mode_enabled
_is_compiling = torch.compiler.is_compiling
_SETITEM = OrderedDict.__setitem__
_SETATTR = object.__setattr__


def output(cls, **fields):
    """``cls(**fields)`` for a diffusers BaseOutput dataclass, the same object
    (keys, attributes, tuple view, pickling) without the dataclass
    ``__post_init__`` walk over ``fields()`` (~20 us a step)."""
    o = cls.__new__(cls)
    for k, v in fields.items():
        _SETATTR(o, k, v)
        if v is not None:
            _SETITEM(o, k, v)
    return o


def _key(v) -> float:
    # diffusers compares timesteps as float32 tensors (or int64: exact below 2^24)
    return float(np.float32(v))


def checked_init(parent_init):
    """The diffusers ``__init__`` (signature, ``register_to_config``) followed
    by the class's check of its config: an option genfast cannot run raises
    NotImplementedError naming it, at construction / ``from_config``."""
    @functools.wraps(parent_init)
    def __init__(self, *args, **kwargs):
        parent_init(self, *args, **kwargs)
        bad = type(self).unsupported(self.config)
        if bad:
            raise NotImplementedError(f"genfast.diffusers.{type(self).__name__}: {bad}")
    return __init__


def _given(schedule, timesteps, sigmas):
    """``schedule`` whose inference timesteps / sigmas are the given ones
    (diffusers' own from a custom set_timesteps): the plan's rows follow
    from them as from the schedule's."""
    ts = np.asarray(timesteps.detach().cpu().double() if isinstance(timesteps, torch.Tensor)
                    else timesteps, dtype=np.float64)
    sg = None if sigmas is None else np.asarray(
        sigmas.detach().cpu().double() if isinstance(sigmas, torch.Tensor) else sigmas,
        dtype=np.float64)
    s = copy.copy(schedule)
    s.set_timesteps = lambda n, family=None, **kw: _schedules.Inference(
        ts.copy(), None if sg is None else sg.copy())
    return s


class Dropin:
    """Mixin of the drop-in schedulers (module docstring)."""

    _gf_sampler = ""        # genfast plan sampler
    _gf_output = None       # diffusers' output class of step()
    noise_seed: int | None = None
    _gf_plan = None         # host plan of the last set_timesteps (None: diffusers' own step)
    _gf_seed = 0

    # ------------------------------------------------------------ config

    @classmethod
    def unsupported(cls, config) -> str | None:
        """A message naming the first config option genfast cannot run, or None."""
        return None

    def _gf_schedule_config(self) -> dict:
        return dict(self.config, _class_name=type(self).__name__)

    def _gf_schedule(self):
        return self._gf_cached()[1]

    def _gf_cached(self):
        """(config, schedule, plans): rebuilt when the config changes (pipelines
        replace ``_internal_dict``); plans of earlier set_timesteps calls are
        kept per (n, options) with their copies on each device."""
        cached = self.__dict__.get("_gf_sched")
        cfg = self._gf_schedule_config()
        if cached is None or cached[0] != cfg:
            cached = self.__dict__["_gf_sched"] = (cfg, _schedules.from_config(cfg), {})
        return cached

    def _gf_new_plan(self, n, opts):
        given = opts.pop("given", None)
        rows_of = opts.pop("rows_of", None)
        custom = (given is not None or opts.get("sigmas") is not None
                  or opts.get("timesteps") is not None)
        _, sched, plans = self._gf_cached()
        if given is not None:
            sched = _given(sched, *given)
        key = None if custom else (n, repr(sorted(opts.items())))
        hit = plans.get(key) if key is not None else None
        if hit is None:
            plan = sched.plan(n, sampler=rows_of or self._gf_sampler, device="cpu", **opts)
            if rows_of:  # rows built as another sampler's that hold every column this one reads
                plan = dataclasses.replace(plan, sampler=self._gf_sampler)
            hit = (plan, {torch.device("cpu"): plan})
            if key is not None:
                plans[key] = hit
        return hit

    # ------------------------------------------------------------ plan

    def _gf_set_plan(self, n: int, *, check_timesteps: bool = True, expect=None,
                     **opts) -> None:
        """Build the plan for diffusers' fresh ``timesteps`` / ``sigmas`` and
        the lookup tables of the step index; called at the end of set_timesteps.
        ``expect``: (timesteps, sigmas) of the plan where they are not
        diffusers' attributes as they stand (Heun interleaves its stages)."""
        plan, plans = self._gf_new_plan(n, opts)
        ts = self.timesteps.detach().to("cpu", torch.float64)
        sig = getattr(self, "sigmas", None)
        if expect is not None:
            ts, sig = expect
        self._gf_check(plan, ts, sig, check_timesteps)
        ts = self.timesteps.detach().to("cpu", torch.float64)
        self._gf_plan = plan
        self._gf_plans = plans
        vals = [_key(v) for v in ts.tolist()]
        where: dict = {}
        for i, v in enumerate(vals):
            where.setdefault(v, []).append(i)
        # diffusers' index_for_timestep takes the second match where a value repeats
        self._gf_index = {v: p[1] if len(p) > 1 else p[0] for v, p in where.items()}
        self._gf_vals = vals
        self._gf_dev_ts = {}
        self._gf_seed = (self.noise_seed if self.noise_seed is not None
                         else int(torch.randint(0, 2 ** 62, (1,))[0]))

    def _gf_check(self, plan, ts, sig, check_timesteps):
        name = type(self).__name__
        n = plan.num_steps
        if ts.shape[0] != n or (check_timesteps and not torch.allclose(plan.timesteps, ts,
                                                                       rtol=1e-6, atol=1e-3)):
            raise NotImplementedError(
                f"genfast.diffusers.{name}: genfast's plan for this config has other timesteps "
                f"than diffusers' set_timesteps ({plan.timesteps[:4].tolist()}... vs "
                f"{ts[:4].tolist()}...); config: {dict(self.config)}")
        if isinstance(sig, torch.Tensor) and plan.sigmas is not None:
            sig = sig.detach().to("cpu", torch.float64)
            if sig.shape != plan.sigmas.shape or not torch.allclose(plan.sigmas, sig, rtol=2e-5,
                                                                    atol=1e-6):
                raise NotImplementedError(
                    f"genfast.diffusers.{name}: genfast's plan for this config has other sigmas "
                    f"than diffusers' set_timesteps; config: {dict(self.config)}")

    def _gf_plan_on(self, device):
        plans = self._gf_plans
        plan = plans.get(device)
        if plan is None:
            plan = plans[device] = self._gf_plan.to(device)
        return plan

    def _gf_bound(self, i, model_output, sample, key, seed=None):
        """The fused step for options ``key`` (genfast.ops.steps.bind's) as one
        direct call of the op's eager entry point, cached per (plan, options,
        device); None where genfast.steps.step must run: a tensor index, a
        tensor subclass, a torch function mode, tracing, another backend.
        Callers have checked the dtypes (``_fast``)."""
        if (type(i) is not int or type(sample) is not _Tensor
                or type(model_output) is not _Tensor or _tf_mode() or _is_compiling()):
            return None
        dev = "cpu" if sample.is_cpu else "cuda" if sample.is_cuda else None
        if dev is None or _backend.resolve(None, dev) != dev:
            return None
        where = dev if dev == "cpu" else sample.device
        cache = self.__dict__.setdefault("_gf_bound_steps", {})
        plan = self._gf_plan
        hit = cache.get((id(plan), key, where, seed))
        if hit is None or hit[0] is not plan:
            if len(cache) >= 32:
                cache.clear()
            hit = (plan, _steps_ops.bind(self._gf_plan_on(sample.device), key, seed))
            cache[(id(plan), key, where, seed)] = hit  # (the plan held: its id stays its own)
        return hit[1]

    # ------------------------------------------------------------ step index

    def _gf_lookup(self, timestep):
        """diffusers' ``index_for_timestep`` (the second match where a value
        repeats) without ``nonzero().item()``: a number or a CPU tensor is
        looked up on the host; an element of ``self.timesteps`` (what
        pipelines pass: they iterate over it) is found by its address; any
        other device tensor is compared on the device and gives a 0-d index
        tensor there. None when a host-known value is not a timestep."""
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1:
                raise ValueError(f"timestep must be a number, a 0-d tensor or a one-element "
                                 f"tensor, got shape {tuple(timestep.shape)}")
            ts = self.timesteps
            size = ts.element_size()
            off = timestep.data_ptr() - ts.data_ptr()
            if (0 <= off < ts.shape[0] * size and timestep.dtype == ts.dtype
                    and timestep.device == ts.device):
                return self._gf_index[self._gf_vals[off // size]]
            if timestep.device.type != "cpu":
                return self._gf_device_lookup(timestep)
            timestep = timestep.item()
        return self._gf_index.get(_key(timestep))

    def _gf_device_lookup(self, timestep):
        dev = timestep.device
        ts = self._gf_dev_ts.get(dev)
        if ts is None:
            ts = self._gf_dev_ts[dev] = torch.tensor(self._gf_vals, dtype=torch.float32,
                                                     device=dev)
        hits = (ts == timestep.reshape(()).to(torch.float32)).to(torch.int32).cumsum(0)
        want = torch.where(hits[-1] > 1, 2, 1)
        # positions before the wanted match: its index (num_steps if none: past the plan)
        return (hits < want).sum()

    def _init_step_index(self, timestep) -> None:
        if self.begin_index is not None:
            self._step_index = self._begin_index
            return
        i = self._gf_lookup(timestep) if self._gf_plan is not None else None
        if i is None:  # diffusers' own (it raises for a value that is no timestep)
            super()._init_step_index(timestep)
        else:
            self._step_index = i

    # ------------------------------------------------------------ noise

    def _gf_noise(self, generator, draws, like, dtype=None):
        """Step noise: diffusers' own draw from ``generator`` (the same
        randn_tensor call, so the same numbers as diffusers) as noise=, or the
        genfast stream (seed=) when there is no generator or no draw."""
        if generator is None or not draws:
            return {"seed": self._gf_seed}
        z = randn_tensor(like.shape, generator=generator, device=like.device,
                         dtype=dtype or like.dtype)
        return {"noise": z if z.dtype == like.dtype else z.to(like.dtype)}
