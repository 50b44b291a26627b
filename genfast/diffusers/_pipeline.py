"""``accelerate(pipe)``: swap a diffusers pipeline's scheduler for the genfast
drop-in of the same class and config."""

from __future__ import annotations

import warnings


def accelerate(pipe, *, name: str = "scheduler"):
    """Replace ``pipe.scheduler`` (in place) by the genfast class of the same
    name built ``from_config`` of its config, and return ``pipe``.

    The pipeline then samples with one fused genfast step per scheduler step
    and draws its noise as before (from the ``generator`` it is given; see
    `genfast.diffusers`). A scheduler class genfast has no drop-in for, or a
    config option it cannot run, leaves the pipeline unchanged with one
    warning naming the class (or the option). The pipeline's saved config
    keeps naming diffusers' class, so ``save_pretrained`` output loads
    anywhere (without genfast: with diffusers' scheduler).
    """
    from . import CLASSES  # the package imports this module
    sched = getattr(pipe, name, None)
    if sched is None:
        raise TypeError(f"pipe has no {name!r} attribute (a diffusers pipeline with a scheduler "
                        f"was expected, got {type(pipe).__name__})")
    cls_name = type(sched).__name__
    cls = CLASSES.get(cls_name)
    if cls is None:
        warnings.warn(f"genfast.diffusers.accelerate: genfast has no drop-in for {cls_name}; "
                      f"the pipeline is left unchanged", stacklevel=2)
        return pipe
    if isinstance(sched, cls):
        return pipe
    bad = cls.unsupported(sched.config)
    if bad:
        warnings.warn(f"genfast.diffusers.accelerate: {cls_name}: {bad}; the pipeline is left "
                      f"unchanged", stacklevel=2)
        return pipe
    # Without "_use_default_values": from_config drops the keys it lists and
    # applies the class defaults, but pipelines patch some of those keys in
    # place (StableDiffusionPipeline sets clip_sample=False and steps_offset=1
    # on old configs), so the values in effect would be lost and DDIM / DDPM
    # would clip where the pipeline's own scheduler does not.
    new = cls.from_config({k: v for k, v in sched.config.items() if k != "_use_default_values"})
    for attr in ("_shift",):  # state set after construction (FlowMatch set_shift)
        if hasattr(sched, attr):
            setattr(new, attr, getattr(sched, attr))
    setattr(pipe, name, new)
    config = getattr(pipe, "config", None)
    if config is not None and isinstance(config.get(name), (tuple, list)) and hasattr(
            pipe, "register_to_config"):
        pipe.register_to_config(**{name: ("diffusers", cls_name)})
    return pipe
