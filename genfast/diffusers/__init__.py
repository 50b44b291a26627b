"""``genfast.diffusers``: drop-in schedulers for diffusers 0.42: change an
import (or add one line), keep the pipeline and the images.

    from genfast.diffusers import DDIMScheduler   # instead of: from diffusers import ...
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    # or, for any pipeline:
    genfast.diffusers.accelerate(pipe)

Importing this module imports diffusers (``pip install genfast[diffusers]``);
``import genfast`` does not. Written and tested against diffusers 0.42.1 (the
test extra's pin): the classes override its set_timesteps / step signatures.

Each class subclasses diffusers' class of the same name, so ``from_config``,
``from_pretrained(path, subfolder="scheduler")``, ``save_config``,
``config``, ``compatibles``, ``isinstance`` checks in pipelines and every
attribute (``timesteps``, ``sigmas``, ``init_noise_sigma``, ``order``,
``step_index``, ``set_begin_index`` ...) are diffusers'. ``set_timesteps``
runs diffusers' own and builds the genfast sampling plan of the same config
next to it (checking that its timesteps and sigmas are diffusers'); ``step``
is one fused ``genfast.steps.step`` call (x0, clipping / thresholding and the
update in one pass), returns diffusers' output class with the same fields and
makes no host sync: the step index comes from a Python counter (diffusers'
``_step_index``, with ``begin_index``) or, for the stateless DDPM / DDIM, from
the timestep: a number or CPU tensor is looked up on the host, an element of
``scheduler.timesteps`` (what pipelines pass) by its address, any other
device tensor by a comparison on the device (the index stays a device
tensor). ``timestep`` may be an int, a float, a 0-d or a one-element tensor.
``scale_model_input`` of the Euler-type classes is one multiply by a host
float; ``add_noise`` / ``get_velocity`` of the VP classes are one fused
``genfast.add_noise`` call.

Noise. When ``step`` gets a ``torch.Generator`` (pipelines pass one), the
drop-in draws exactly what diffusers draws from it (diffusers'
``randn_tensor``, same shape, dtype, device and order; only on the steps
where diffusers draws) and hands it to the fused step: the same images as
diffusers. Without a generator (diffusers would draw from torch's global
RNG) the noise comes from genfast's counter-based stream inside the kernel
(fast, and the same numbers on every device and batch size): step i uses
``genfast.randn(shape, seed=scheduler.noise_seed, stream=i)``. Set
``scheduler.noise_seed`` to fix it; left None, each ``set_timesteps`` draws
a fresh seed from torch's global CPU generator (so ``torch.manual_seed``
still makes a run repeatable).

Precision: the step computes in float32 for float32 / float16 / bfloat16
tensors (diffusers' DDPM / DDIM / LCM compute fp16 inputs in fp16) from
float64 schedule coefficients (diffusers' are float32): results agree with
diffusers to float32 rounding in float32 and to about one fp16 / bf16 ulp
otherwise (tests/test_diffusers_dropin.py gives the tolerances). float64
tensors, mixed dtypes and the rare arguments named in each class run
diffusers' own step. A config option genfast cannot run raises
NotImplementedError naming it when the scheduler is built.
"""

from __future__ import annotations

from ._multi import (DPMSolverMultistepScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler,
                     UniPCMultistepScheduler)
from ._pipeline import accelerate
from ._single import (DDIMScheduler, DDPMScheduler, EulerAncestralDiscreteScheduler,
                      EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler)

CLASSES = {c.__name__: c for c in (DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler,
                                   EulerAncestralDiscreteScheduler, HeunDiscreteScheduler,
                                   DPMSolverMultistepScheduler, UniPCMultistepScheduler,
                                   LCMScheduler, FlowMatchEulerDiscreteScheduler,
                                   LMSDiscreteScheduler)}

for _c in CLASSES.values():  # pickles and pipeline configs name the public module
    _c.__module__ = __name__
del _c

__all__ = ["accelerate", "CLASSES", *CLASSES]
