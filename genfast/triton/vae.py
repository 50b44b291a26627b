"""genfast.vae.reparameterize_kl in Triton (genfast/ops/vae.py has the op's
docs). The forward launches the training family's kernels
(genfast/triton/training.py: the seeded reparameterize, the per-item KL), so
z and kl equal genfast.vae.reparameterize / kl_divergence on this backend; the
backward is one kernel here giving both gradients (genfast/reference/vae.py:
grad_mu = gz + s mu, grad_lv = (gz d + s (exp(clamp lv) - 1)) / 2 inside the
clamp). Grid (blocks, items): each program reads its item's KL grad once, on
the device (no sync). Compute in float32; float16 / bfloat16 in and out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import training as _tt
from .noise import RN_PRODUCTS, _block as _launch_block, launch_words


@triton.jit
def _backward_kernel(gz_ptr, gk_ptr, mu_ptr, lv_ptr, d_ptr, gm_ptr, gv_ptr, numel, items,
                     GZ: tl.constexpr, HAS_GK: tl.constexpr, RED: tl.constexpr,
                     BLOCK: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = e < numel
    off = item * numel + e
    mu = tl.load(mu_ptr + off, mask=live, other=0.0).to(tl.float32)
    lv = tl.load(lv_ptr + off, mask=live, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + off, mask=live, other=0.0).to(tl.float32)
    if HAS_GK:
        if RED == 0:
            s = tl.load(gk_ptr + item).to(tl.float64)
        else:
            s = tl.load(gk_ptr).to(tl.float64)
        if RED == 1:
            s = s / items.to(tl.float64)
        sf = s.to(tl.float32)
    else:
        sf = 0.0
    if GZ == 0:
        g = mu * 0.0
    elif GZ == 1:
        g = tl.load(gz_ptr).to(tl.float32) + mu * 0.0
    else:
        g = tl.load(gz_ptr + off, mask=live, other=0.0).to(tl.float32)
    inside = (lv >= -30.0) & (lv <= 20.0)
    lvc = tl.minimum(tl.maximum(lv, -30.0), 20.0)
    gv = tl.where(inside, 0.5 * (g * d + sf * (tl.exp(lvc) - 1.0)), 0.0)
    tl.store(gm_ptr + off, (g + sf * mu).to(gm_ptr.dtype.element_ty), mask=live)
    tl.store(gv_ptr + off, gv.to(gv_ptr.dtype.element_ty), mask=live)


@torch.library.triton_op("genfast::vae_reparameterize_kl_triton", mutates_args=())
def _forward(mu: torch.Tensor, logvar: torch.Tensor, seed: int, stream: int, sample_offset: int,
             reduction: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m, v = _tt._c(mu), _tt._c(logvar)
    z = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    d = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    items, numel = _tt._items(mu)
    qpi = (numel + 3) // 4
    if items * qpi:
        k0, k1, stream32, offset32 = launch_words(seed, stream, sample_offset)
        block = _launch_block(qpi, _tt.BLOCK_GPU)
        _tt._launch(_tt._reparam_kernel, (triton.cdiv(qpi, block), items), m, v, z, d, numel,
                    qpi, k0, k1, stream32, offset32, BLOCK=block, RN=RN_PRODUCTS)
    items, numel = _tt._reduce_items(mu)
    per = torch.zeros(items, dtype=torch.float32, device=mu.device)
    if items and numel:
        _tt._launch(_tt._item_reduce_kernel, (items,), m, v, per, per, per, 0, numel, 0.0, 0.0,
                    KL=True, KIND=0, W=0, PRED=0, BLOCK=_launch_block(numel, _tt.BLOCK_GPU))
    return z, _tt._finish(per, reduction), d


@torch.library.triton_op("genfast::vae_reparameterize_kl_backward_triton", mutates_args=())
def _backward(grad_z: torch.Tensor | None, grad_kl: torch.Tensor | None, mu: torch.Tensor,
              logvar: torch.Tensor, d: torch.Tensor,
              reduction: int) -> tuple[torch.Tensor, torch.Tensor]:
    gm = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    gv = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    items, numel = _tt._reduce_items(mu)
    if items * numel:
        if grad_z is None:
            gz, mode = gm, 0
        elif grad_z.numel() and all(s == 0 or n == 1 for s, n in zip(grad_z.stride(),
                                                                      grad_z.shape)):
            gz, mode = grad_z.as_strided((1,), (1,)), 1  # one value expanded (z.sum()'s grad)
        else:
            gz, mode = _tt._c(grad_z), 2
        gk = _tt._c(grad_kl.float()) if grad_kl is not None else gm
        block = _launch_block(numel, _tt.BLOCK_GPU)
        _tt._launch(_backward_kernel, (triton.cdiv(numel, block), items), gz, gk, _tt._c(mu),
                    _tt._c(logvar), _tt._c(d), gm, gv, numel, items, GZ=mode,
                    HAS_GK=grad_kl is not None, RED=reduction, BLOCK=block)
    return gm, gv


OPS = {"forward": _forward, "backward": _backward}

from ..ops.vae import register_autograd  # noqa: E402

register_autograd(OPS)
