"""Fused reverse-diffusion steps (the sampler side): one op call per step,
classifier-free guidance, guidance_rescale, clip_sample and dynamic
thresholding fused in, no host sync. Implemented in genfast/ops/steps.py.

    plan = genfast.schedules.from_config(pipe.scheduler.config).plan(50, sampler="ddim")
    for i in range(50):
        eps = unet(torch.cat([x, x]) * plan_c_in, ...)       # [uncond; cond]
        x, x0 = genfast.steps.ddim(plan, i, eps, x, guidance_scale=7.5)
"""

from .ops.steps import (StepOutput, ddim, ddpm, euler, euler_ancestral, flow_match_euler, lcm,
                        step)

__all__ = ["step", "StepOutput", "ddpm", "ddim", "euler", "euler_ancestral", "lcm",
           "flow_match_euler"]
