"""The training family in Triton: add_noise (given or in-kernel noise),
diffusion_loss, VAE reparameterize / kl_divergence, each with its backward.

Math: genfast/reference/training.py (the spec) and
csrc/include/genfast/training.h (the same formulas for the C++ kernels).
Noise: the jit helpers of genfast/triton/noise.py (Philox4x32-10, Box-Muller)
with the same counters as ``genfast.randn``: element e of item b is normal
(e % 4) of Philox counter (e // 4, sample_offset + b, stream, 0), so the
in-kernel noise equals ``genfast.randn(backend="triton")``.

Grids are (blocks, items): each program works inside one item and loads that
item's timestep and table row once (per-item coefficients gathered in the
kernel, no host sync). The loss / KL forward runs one program per item,
looping over its features in a fixed order (deterministic). Compute in float32;
float16 / bfloat16 in and out (float64 is the reference's and the CPU's).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._checks import as_int64_bits  # noqa: F401  (seeds arrive as int64 bits)
from .noise import RN_PRODUCTS, _block as _launch_block, launch_words, quad_normals

BLOCK_GPU = 1024


@triton.jit
def _timestep(t_ptr, item, KIND: tl.constexpr):
    return tl.load(t_ptr + item).to(tl.float64)


@triton.jit
def _coefs(t, table_ptr, rows, KIND: tl.constexpr, PRED: tl.constexpr):
    """(a, b, c, d) in float64: x_t = a x0 + b eps, target = c x0 + d eps; NaN
    for an out-of-range timestep."""
    if KIND == 0:
        ok = (t >= 0) & (t < rows)
        idx = tl.where(ok, t, 0.0).to(tl.int64)
        a = tl.load(table_ptr + 4 * idx + 0)
        b = tl.load(table_ptr + 4 * idx + 1)
        v_eps = a
        v_x0 = -b
    elif KIND == 1:
        ok = (t >= 0) & (t < 1e30)
        a = t * 0.0 + 1.0
        b = t
        s = 1.0 / tl.sqrt(t * t + 1.0)
        v_eps = s
        v_x0 = -t * s
    else:
        ok = (t >= 0) & (t <= 1)
        a = 1.0 - t
        b = t
        v_eps = t * 0.0
        v_x0 = t * 0.0
    if PRED == 0:
        c = t * 0.0
        d = t * 0.0 + 1.0
    elif PRED == 1:
        c = v_x0
        d = v_eps
    elif PRED == 2:
        c = t * 0.0 + 1.0
        d = t * 0.0
    else:
        c = t * 0.0 - 1.0
        d = t * 0.0 + 1.0
    nan = float("nan")
    return tl.where(ok, a, nan), tl.where(ok, b, nan), tl.where(ok, c, nan), tl.where(ok, d, nan)


@triton.jit
def _add_noise_kernel(x_ptr, y_ptr, o1_ptr, o2_ptr, t_ptr, table_ptr, rows, numel,
                      KIND: tl.constexpr, PRED: tl.constexpr, WRT: tl.constexpr,
                      HAS_X: tl.constexpr, HAS_Y: tl.constexpr, BLOCK: tl.constexpr):
    """WRT -1: (o1, o2) = (a x + b y, c x + d y); WRT 0 / 1: o1 = the gradient
    wrt x0 / noise from (x, y) = (grad_x_t, grad_target)."""
    item = tl.program_id(1).to(tl.int64)
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = e < numel
    off = item * numel + e
    a, b, c, d = _coefs(_timestep(t_ptr, item, KIND), table_ptr, rows, KIND, PRED)
    if WRT < 0:
        k0, k1 = a.to(tl.float32), b.to(tl.float32)
    elif WRT == 0:
        k0, k1 = a.to(tl.float32), c.to(tl.float32)
    else:
        k0, k1 = b.to(tl.float32), d.to(tl.float32)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    x = tl.zeros([BLOCK], dtype=tl.float32)
    y = tl.zeros([BLOCK], dtype=tl.float32)
    if HAS_X:
        x = tl.load(x_ptr + off, mask=live, other=0.0).to(tl.float32)
        acc += k0 * x
    if HAS_Y:
        y = tl.load(y_ptr + off, mask=live, other=0.0).to(tl.float32)
        acc += k1 * y
    tl.store(o1_ptr + off, acc.to(o1_ptr.dtype.element_ty), mask=live)
    if WRT < 0:
        tgt = c.to(tl.float32) * x + d.to(tl.float32) * y
        tl.store(o2_ptr + off, tgt.to(o2_ptr.dtype.element_ty), mask=live)


@triton.jit(do_not_specialize=["k0", "k1", "stream", "sample_offset"])
def _add_noise_seeded_kernel(x_ptr, xt_ptr, n_ptr, tg_ptr, t_ptr, table_ptr, rows, numel, qpi,
                             k0, k1, stream, sample_offset, KIND: tl.constexpr,
                             PRED: tl.constexpr, BLOCK: tl.constexpr, RN: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    vals = quad_normals(q, item, k0, k1, stream, sample_offset, BLOCK, RN)
    elem = (4 * q)[:, None] + tl.arange(0, 4).to(tl.int64)[None, :]
    mask = (q < qpi)[:, None] & (elem < numel)
    off = item * numel + elem
    # the stored (rounded) noise is the one x_t and the target use
    eps = vals.to(n_ptr.dtype.element_ty)
    tl.store(n_ptr + off, eps, mask=mask)
    e = eps.to(tl.float32)
    a, b, c, d = _coefs(_timestep(t_ptr, item, KIND), table_ptr, rows, KIND, PRED)
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(xt_ptr + off, (a.to(tl.float32) * x + b.to(tl.float32) * e).to(xt_ptr.dtype.element_ty),
             mask=mask)
    if PRED != 0:  # epsilon: the target is the noise (tg_ptr is an empty placeholder)
        tl.store(tg_ptr + off,
                 (c.to(tl.float32) * x + d.to(tl.float32) * e).to(tg_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def _weight(t, table_ptr, rows, gamma, sigma_data, KIND: tl.constexpr, W: tl.constexpr,
            PRED: tl.constexpr):
    """Per-item loss weight, float64 (training.h loss_weight)."""
    if KIND == 0:
        ok = (t >= 0) & (t < rows)
        snr = tl.load(table_ptr + 4 * tl.where(ok, t, 0.0).to(tl.int64) + 2)
    elif KIND == 1:
        ok = (t >= 0) & (t < 1e30)
        snr = 1.0 / (t * t)
    else:
        ok = (t >= 0) & (t <= 1)
        snr = ((1.0 - t) / t) * ((1.0 - t) / t)
    if W == 0:
        w = t * 0.0 + 1.0
    elif W == 2:
        sd2 = sigma_data * sigma_data
        w = (t * t + sd2) / (t * t * sd2)
    else:
        m = tl.minimum(snr, gamma)
        if PRED == 0:
            w = tl.where(snr > 0, m / snr, 1.0)
        elif PRED == 1:
            w = m / (snr + 1.0)
        else:
            w = m
    return tl.where(ok, w, float("nan"))


@triton.jit
def _kl_elem(mu, lv):
    lvc = tl.minimum(tl.maximum(lv, -30.0), 20.0)
    return 0.5 * (mu * mu + tl.exp(lvc) - 1.0 - lvc)


@triton.jit
def _item_reduce_kernel(a_ptr, b_ptr, out_ptr, t_ptr, table_ptr, rows, numel, gamma, sigma_data,
                        KL: tl.constexpr, KIND: tl.constexpr, W: tl.constexpr,
                        PRED: tl.constexpr, BLOCK: tl.constexpr):
    item = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(0, numel, BLOCK):
        e = start + tl.arange(0, BLOCK)
        live = e < numel
        a = tl.load(a_ptr + item * numel + e, mask=live, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + item * numel + e, mask=live, other=0.0).to(tl.float32)
        if KL:
            v = _kl_elem(a, b)
        else:
            v = (a - b) * (a - b)
        acc += tl.where(live, v, 0.0)
    s = tl.sum(acc, axis=0).to(tl.float64)
    if not KL:
        w = _weight(_timestep(t_ptr, item, KIND), table_ptr, rows, gamma, sigma_data, KIND, W, PRED)
        s = s * w / tl.maximum(numel, 1).to(tl.float64)
    tl.store(out_ptr + item, s.to(tl.float32))


@triton.jit
def _item_reduce_backward_kernel(g_ptr, a_ptr, b_ptr, o1_ptr, o2_ptr, t_ptr, table_ptr, rows,
                                 numel, items, gamma, sigma_data, KL: tl.constexpr,
                                 KIND: tl.constexpr, W: tl.constexpr, PRED: tl.constexpr,
                                 RED: tl.constexpr, BLOCK: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = e < numel
    off = item * numel + e
    if RED == 0:
        s = tl.load(g_ptr + item).to(tl.float64)
    else:
        s = tl.load(g_ptr).to(tl.float64)
    if RED == 1:
        s = s / items.to(tl.float64)
    if not KL:
        w = _weight(_timestep(t_ptr, item, KIND), table_ptr, rows, gamma, sigma_data, KIND, W, PRED)
        s = 2.0 * s * w / tl.maximum(numel, 1).to(tl.float64)
    sf = s.to(tl.float32)
    a = tl.load(a_ptr + off, mask=live, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + off, mask=live, other=0.0).to(tl.float32)
    if KL:
        tl.store(o1_ptr + off, (sf * a).to(o1_ptr.dtype.element_ty), mask=live)
        inside = (b >= -30.0) & (b <= 20.0)
        lvc = tl.minimum(tl.maximum(b, -30.0), 20.0)
        gv = tl.where(inside, sf * 0.5 * (tl.exp(lvc) - 1.0), 0.0)
        tl.store(o2_ptr + off, gv.to(o2_ptr.dtype.element_ty), mask=live)
    else:
        tl.store(o1_ptr + off, (sf * (a - b)).to(o1_ptr.dtype.element_ty), mask=live)


@triton.jit(do_not_specialize=["k0", "k1", "stream", "sample_offset"])
def _reparam_kernel(mu_ptr, lv_ptr, z_ptr, eps_ptr, numel, qpi, k0, k1, stream, sample_offset,
                    BLOCK: tl.constexpr, RN: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    vals = quad_normals(q, item, k0, k1, stream, sample_offset, BLOCK, RN)
    elem = (4 * q)[:, None] + tl.arange(0, 4).to(tl.int64)[None, :]
    mask = (q < qpi)[:, None] & (elem < numel)
    off = item * numel + elem
    eps = vals.to(eps_ptr.dtype.element_ty).to(tl.float32)
    lv = tl.load(lv_ptr + off, mask=mask, other=0.0).to(tl.float32)
    d = tl.exp(0.5 * tl.minimum(tl.maximum(lv, -30.0), 20.0)) * eps
    tl.store(eps_ptr + off, d.to(eps_ptr.dtype.element_ty), mask=mask)  # for the backward
    mu = tl.load(mu_ptr + off, mask=mask, other=0.0).to(tl.float32)
    tl.store(z_ptr + off, (mu + d).to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _reparam_backward_kernel(g_ptr, lv_ptr, eps_ptr, out_ptr, total, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = i < total
    lv = tl.load(lv_ptr + i, mask=live, other=0.0).to(tl.float32)
    inside = (lv >= -30.0) & (lv <= 20.0)
    g = tl.load(g_ptr + i, mask=live, other=0.0).to(tl.float32)
    d = tl.load(eps_ptr + i, mask=live, other=0.0).to(tl.float32)  # std * eps
    tl.store(out_ptr + i, tl.where(inside, g * 0.5 * d, 0.0).to(out_ptr.dtype.element_ty),
             mask=live)


# ---------------------------------------------------------------- launch helpers

def _items(x):
    if x.dim() <= 1:
        return 1, x.numel()
    return x.shape[0], (x.numel() // x.shape[0] if x.shape[0] else 0)


def _reduce_items(x):
    if x.dim() == 0:
        return 1, 1
    return x.shape[0], (x.numel() // x.shape[0] if x.shape[0] else 0)


def _c(x):
    return x if x.is_contiguous() else x.contiguous()


def _launch(kernel, grid, *args, **kw):
    torch.library.wrap_triton(kernel)[grid](*args, **kw, enable_fp_fusion=False)


# ---------------------------------------------------------------- ops

@torch.library.triton_op("genfast::training_add_noise_triton", mutates_args=())
def _add_noise(x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
               table: torch.Tensor, kind: int, prediction: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, n = _c(x0), _c(noise)
    xt, tg = torch.empty_like(x), torch.empty_like(x)
    items, numel = _items(x)
    if items * numel:
        block = _launch_block(numel, BLOCK_GPU)
        _launch(_add_noise_kernel, (triton.cdiv(numel, block), items), x, n, xt, tg,
                _c(timesteps), table, table.shape[0], numel, KIND=kind, PRED=prediction, WRT=-1,
                HAS_X=True, HAS_Y=True, BLOCK=block)
    return xt, tg


@torch.library.triton_op("genfast::training_add_noise_seeded_triton", mutates_args=())
def _add_noise_seeded(x0: torch.Tensor, timesteps: torch.Tensor, table: torch.Tensor, kind: int,
                      prediction: int, seed: int, stream: int, sample_offset: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = _c(x0)
    # epsilon: the target is the noise; returned empty (see csrc/bindings/ops.cpp)
    xt, n = torch.empty_like(x), torch.empty_like(x)
    tg = x.new_empty((0,)) if prediction == 0 else torch.empty_like(x)
    items, numel = _items(x)
    qpi = (numel + 3) // 4
    if items * qpi:
        k0, k1, stream32, offset32 = launch_words(seed, stream, sample_offset)
        block = _launch_block(qpi, BLOCK_GPU)
        _launch(_add_noise_seeded_kernel, (triton.cdiv(qpi, block), items), x, xt, n, tg,
                _c(timesteps), table, table.shape[0], numel, qpi, k0, k1, stream32, offset32,
                KIND=kind, PRED=prediction, BLOCK=block, RN=RN_PRODUCTS)
    return xt, n, tg


@torch.library.triton_op("genfast::training_add_noise_backward_triton", mutates_args=())
def _add_noise_backward(grad_x_t: torch.Tensor | None, grad_target: torch.Tensor | None,
                        timesteps: torch.Tensor, table: torch.Tensor, kind: int, prediction: int,
                        wrt: int) -> torch.Tensor:
    like = grad_x_t if grad_x_t is not None else grad_target
    gx = _c(grad_x_t) if grad_x_t is not None else None
    gt = _c(grad_target) if grad_target is not None else None
    out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
    items, numel = _items(like)
    if items * numel:
        block = _launch_block(numel, BLOCK_GPU)
        _launch(_add_noise_kernel, (triton.cdiv(numel, block), items),
                gx if gx is not None else out, gt if gt is not None else out, out, out,
                _c(timesteps), table, table.shape[0], numel, KIND=kind, PRED=prediction, WRT=wrt,
                HAS_X=gx is not None, HAS_Y=gt is not None, BLOCK=block)
    return out


def _finish(per_item: torch.Tensor, reduction: int) -> torch.Tensor:
    if reduction == 0:
        return per_item
    return per_item.mean() if reduction == 1 else per_item.sum()


@torch.library.triton_op("genfast::training_diffusion_loss_triton", mutates_args=())
def _loss(pred: torch.Tensor, target: torch.Tensor, timesteps: torch.Tensor, table: torch.Tensor,
          kind: int, weighting: int, prediction: int, gamma: float, sigma_data: float,
          reduction: int) -> torch.Tensor:
    items, numel = _reduce_items(pred)
    per = torch.zeros(items, dtype=torch.float32, device=pred.device)
    if items and numel:
        _launch(_item_reduce_kernel, (items,), _c(pred), _c(target), per, _c(timesteps), table,
                table.shape[0], numel, gamma, sigma_data, KL=False, KIND=kind, W=weighting,
                PRED=prediction, BLOCK=_launch_block(numel, BLOCK_GPU))
    return _finish(per, reduction)


@torch.library.triton_op("genfast::training_diffusion_loss_backward_triton", mutates_args=())
def _loss_backward(grad: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                   timesteps: torch.Tensor, table: torch.Tensor, kind: int, weighting: int,
                   prediction: int, gamma: float, sigma_data: float, reduction: int) -> torch.Tensor:
    out = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)
    items, numel = _reduce_items(pred)
    if items * numel:
        block = _launch_block(numel, BLOCK_GPU)
        _launch(_item_reduce_backward_kernel, (triton.cdiv(numel, block), items),
                _c(grad.float()), _c(pred), _c(target), out, out, _c(timesteps), table,
                table.shape[0], numel, items, gamma, sigma_data, KL=False, KIND=kind, W=weighting,
                PRED=prediction, RED=reduction, BLOCK=block)
    return out


@torch.library.triton_op("genfast::training_kl_divergence_triton", mutates_args=())
def _kl(mu: torch.Tensor, logvar: torch.Tensor, reduction: int) -> torch.Tensor:
    items, numel = _reduce_items(mu)
    per = torch.zeros(items, dtype=torch.float32, device=mu.device)
    if items and numel:
        _launch(_item_reduce_kernel, (items,), _c(mu), _c(logvar), per, per, per, 0, numel, 0.0,
                0.0, KL=True, KIND=0, W=0, PRED=0, BLOCK=_launch_block(numel, BLOCK_GPU))
    return _finish(per, reduction)


@torch.library.triton_op("genfast::training_kl_divergence_backward_triton", mutates_args=())
def _kl_backward(grad: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                 reduction: int) -> tuple[torch.Tensor, torch.Tensor]:
    gm = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    gv = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    items, numel = _reduce_items(mu)
    if items * numel:
        block = _launch_block(numel, BLOCK_GPU)
        _launch(_item_reduce_backward_kernel, (triton.cdiv(numel, block), items),
                _c(grad.float()), _c(mu), _c(logvar), gm, gv, gm, gm, 0, numel, items, 0.0, 0.0,
                KL=True, KIND=0, W=0, PRED=0, RED=reduction, BLOCK=block)
    return gm, gv


@torch.library.triton_op("genfast::training_reparameterize_triton", mutates_args=())
def _reparam(mu: torch.Tensor, logvar: torch.Tensor, seed: int, stream: int,
             sample_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    eps = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    items, numel = _items(mu)
    qpi = (numel + 3) // 4
    if items * qpi:
        k0, k1, stream32, offset32 = launch_words(seed, stream, sample_offset)
        block = _launch_block(qpi, BLOCK_GPU)
        _launch(_reparam_kernel, (triton.cdiv(qpi, block), items), _c(mu), _c(logvar), z, eps,
                numel, qpi, k0, k1, stream32, offset32, BLOCK=block, RN=RN_PRODUCTS)
    return z, eps


@torch.library.triton_op("genfast::training_reparameterize_backward_triton", mutates_args=())
def _reparam_backward(grad: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    out = torch.empty(grad.shape, dtype=grad.dtype, device=grad.device)
    n = grad.numel()
    if n:
        block = _launch_block(n, BLOCK_GPU)
        _launch(_reparam_backward_kernel, (triton.cdiv(n, block),), _c(grad), _c(logvar), _c(eps),
                out, n, BLOCK=block)
    return out


OPS = {
    "add_noise": _add_noise, "add_noise_seeded": _add_noise_seeded,
    "add_noise_backward": _add_noise_backward, "diffusion_loss": _loss,
    "diffusion_loss_backward": _loss_backward, "kl_divergence": _kl,
    "kl_divergence_backward": _kl_backward, "reparameterize": _reparam,
    "reparameterize_backward": _reparam_backward,
}

from ..ops.training import register_autograd  # noqa: E402

register_autograd(OPS)
