"""The multistep / two-stage reverse steps in Triton: one elementwise kernel
per step (stage) that reads the step's plan rows by index (a Python int, or
a 0-d tensor read in the kernel: no host sync), computes the coefficients
(csrc/include/genfast/multistep.h step_coefs, ported below as a jit
function), and applies the linear form of multistep.h with CFG, in-kernel
noise (the genfast stream, stream + index, as genfast.randn) and the
in-place history update (lms writes its derivative h_x x + h_d D to the
ring, the others D). History terms whose coefficient is zero are masked
loads (no memory traffic). Compute in float32; float16 / bfloat16 in and out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._inplace import register_inplace
from .._plan import PLAN_COLUMNS, STAGE_COLUMNS
from ..reference import steps as _rs
from .noise import RN_PRODUCTS, _block as _launch_block, launch_words, quad_normals

_PLAN_COLS = tl.constexpr(len(PLAN_COLUMNS))
_STAGE_COLS = tl.constexpr(len(STAGE_COLUMNS))
BLOCK_GPU = 256  # quads per program
_TWO_STAGE = (2, 3)  # heun, dpm_2: stage 0 saves x, stage 1 reads it
_RING = (0, 1, 4)    # dpmpp, unipc, lms: the history ring


@triton.jit
def _x0(a, s, k, PRED: tl.constexpr):
    if PRED == 0:
        a_s = tl.maximum(a, 2.44140625e-4)
        return k / a_s, -s / a_s
    elif PRED == 1:
        return a * k, -s
    elif PRED == 2:
        return a * 0.0, a * 0.0 + 1.0
    else:
        return k, -s


@triton.jit
def _used(mask, a, b):
    """mask where a term with coefficients a, b is read at all (a masked-off
    load moves no memory); built as a full tensor (the interpreter cannot
    AND a block with a scalar predicate)."""
    use = ((tl.abs(a) + tl.abs(b)) != 0.0).to(tl.int32)
    return mask & ((mask.to(tl.int32) * 0 + use) != 0)


@triton.jit
def _ring(i, back):
    return ((i - back) % 3 + 3) % 3


@triton.jit(do_not_specialize=["step", "rows", "k0", "k1", "stream", "sample_offset"])
def _multistep_kernel(x_ptr, c_ptr, u_ptr, z_ptr, prev_ptr, x0_ptr, st_ptr, g_ptr,
                      plan_ptr, splan_ptr, idx_ptr, step, rows, numel, qpi, slot_stride, gscale,
                      k0, k1, stream, sample_offset,
                      SAMPLER: tl.constexpr, STAGE: tl.constexpr, PRED: tl.constexpr,
                      TWO: tl.constexpr, RING: tl.constexpr,
                      HAS_IDX: tl.constexpr, CFG: tl.constexpr, GT: tl.constexpr,
                      NOISE: tl.constexpr, SEEDED: tl.constexpr, X0: tl.constexpr,
                      BLOCK: tl.constexpr, RN: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    if HAS_IDX:
        i = tl.load(idx_ptr).to(tl.int64)
    else:
        i = step.to(tl.int64)
    ok = (i >= 0) & (i < rows)
    ir = tl.where(ok, i, 0)
    row = plan_ptr + _PLAN_COLS * ir
    srow = splan_ptr + _STAGE_COLS * ir
    zero = tl.load(row + 3) * 0.0
    cs, cp, cd, ch0, ch1, ch2 = zero, zero, zero, zero, zero, zero
    ax, ap, ad, ah0, ah1, ah2, az = zero, zero, zero, zero, zero, zero, zero
    hx = zero
    hd = zero + 1.0
    if TWO and (STAGE == 1):
        px, pm = _x0(tl.load(srow + 4), tl.load(srow + 5), tl.load(srow + 6), PRED)
        ax = tl.load(srow + 8)
        ap = tl.load(srow + 9)
        ad = tl.load(srow + 10)
    else:
        px, pm = _x0(tl.load(row + 3), tl.load(row + 4), tl.load(srow + 1), PRED)
        if TWO:
            ax = tl.load(row + 13)
            ad = tl.load(row + 14)
            cs = zero + 1.0
        elif SAMPLER == 4:  # lms: the ring holds d = hx x + hd D
            ax = tl.load(row + 13)
            ad = tl.load(row + 14)
            ah0 = tl.load(row + 15)
            ah1 = tl.load(row + 16)
            ah2 = tl.load(srow + 13)
            hx = tl.load(srow + 11)
            hd = tl.load(srow + 12)
        else:
            cx = tl.load(row + 13)
            if SAMPLER == 1:
                cs = tl.load(row + 20)
                cp = tl.load(row + 21)
                cd = tl.load(row + 22)
                ch0 = tl.load(row + 23)
                ch1 = tl.load(row + 24)
                ch2 = tl.load(row + 25)
            else:
                cs = zero + 1.0
            ax = cx * cs
            ap = cx * cp
            ad = cx * cd + tl.load(row + 14)
            ah0 = cx * ch0 + tl.load(row + 15)
            ah1 = cx * ch1 + tl.load(row + 16)
            ah2 = cx * ch2
            if SAMPLER == 0:
                az = tl.load(row + 17)
    bad = tl.where(ok, 1.0, float("nan"))
    px, pm, ax, ad = px * bad, pm * bad, ax * bad, ad * bad

    elem = (4 * q)[:, None] + tl.arange(0, 4).to(tl.int64)[None, :]
    mask = (q < qpi)[:, None] & (elem < numel)
    off = item * numel + elem
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(c_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if CFG:
        u = tl.load(u_ptr + off, mask=mask, other=0.0).to(tl.float32)
        if GT:
            g = tl.load(g_ptr + item)
            r = tl.load(g_ptr + tl.num_programs(1) + item)  # row 1: rescale factors
        else:
            g = gscale
            r = 1.0
        m = r * (u + g * (c - u))
    else:
        m = c
    d = px.to(tl.float32) * x + pm.to(tl.float32) * m
    out = ax.to(tl.float32) * x + ad.to(tl.float32) * d
    xc = cs.to(tl.float32) * x + cd.to(tl.float32) * d
    if RING:
        h0p = st_ptr + _ring(ir, 1) * slot_stride + off
        h1p = st_ptr + _ring(ir, 2) * slot_stride + off
        h2p = st_ptr + _ring(ir, 3) * slot_stride + off
        h0 = tl.load(h0p, mask=_used(mask, ah0, ch0), other=0.0).to(tl.float32)
        h1 = tl.load(h1p, mask=_used(mask, ah1, ch1), other=0.0).to(tl.float32)
        h2 = tl.load(h2p, mask=_used(mask, ah2, ch2), other=0.0).to(tl.float32)
        out += ah0.to(tl.float32) * h0 + ah1.to(tl.float32) * h1 + ah2.to(tl.float32) * h2
        xc += ch0.to(tl.float32) * h0 + ch1.to(tl.float32) * h1 + ch2.to(tl.float32) * h2
    if SAMPLER == 1:
        pp = st_ptr + 3 * slot_stride + off
        p = tl.load(pp, mask=_used(mask, ap, cp), other=0.0).to(tl.float32)
        out += ap.to(tl.float32) * p
        xc += cp.to(tl.float32) * p
    if TWO and (STAGE == 1):
        p = tl.load(st_ptr + off, mask=mask, other=0.0).to(tl.float32)
        out += ap.to(tl.float32) * p
    if NOISE:
        if SEEDED:
            s_i = ((stream.to(tl.int64) + ir) & 0xFFFFFFFF).to(tl.uint32)
            vals = quad_normals(q, item, k0, k1, s_i, sample_offset, BLOCK, RN)
            zv = vals.to(prev_ptr.dtype.element_ty).to(tl.float32)
        else:
            zv = tl.load(z_ptr + off, mask=mask, other=0.0).to(tl.float32)
        out += az.to(tl.float32) * zv
    ty = prev_ptr.dtype.element_ty
    tl.store(prev_ptr + off, out.to(ty), mask=mask)
    if X0:
        tl.store(x0_ptr + off, d.to(ty), mask=mask)
    # after the reads: slot i mod 3 held h2 until now
    if SAMPLER == 4:
        dv = hx.to(tl.float32) * x + hd.to(tl.float32) * d
        tl.store(st_ptr + _ring(ir, 0) * slot_stride + off, dv.to(ty), mask=mask)
    elif RING:
        tl.store(st_ptr + _ring(ir, 0) * slot_stride + off, d.to(ty), mask=mask)
    if SAMPLER == 1:
        tl.store(st_ptr + 3 * slot_stride + off, xc.to(ty), mask=mask)
    if TWO and (STAGE == 0):
        tl.store(st_ptr + off, x.to(ty), mask=mask)


@torch.library.triton_op("genfast::multistep_step_triton", mutates_args={"state"})
def _multistep_step(sample: torch.Tensor, model_output: torch.Tensor,
                    uncond: torch.Tensor | None, guidance: torch.Tensor | None,
                    noise: torch.Tensor | None, state: torch.Tensor, plan: torch.Tensor,
                    stage_plan: torch.Tensor, index: torch.Tensor | None, step: int, sampler: int,
                    stage: int, prediction: int, flags: int, params: list[float], seed: int,
                    stream: int, sample_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = sample.contiguous()
    mo = model_output.contiguous()
    n = x.shape[0]
    numel = x.numel() // n if n else 0
    prev = torch.empty_like(x)
    x0 = torch.empty_like(x) if flags & _rs.WANT_X0 else x.new_empty((0,))
    if x.numel() == 0:
        return prev, x0
    cfg = bool(flags & (_rs.CFG_BATCHED | _rs.CFG_SEPARATE))
    if flags & _rs.CFG_BATCHED:
        u, c = mo[:n], mo[n:]
    elif flags & _rs.CFG_SEPARATE:
        u, c = uncond.contiguous(), mo
    else:
        u, c = mo, mo
    gt = bool(flags & _rs.GUIDANCE_TENSOR)
    g = guidance.contiguous() if gt else x
    given = bool(flags & _rs.NOISE_GIVEN)
    seeded = bool(flags & _rs.NOISE_SEEDED)
    zt = noise.contiguous() if given else x
    k0, k1, stream32, offset32 = launch_words(seed, stream, sample_offset)
    qpi = (numel + 3) // 4
    block = _launch_block(qpi, BLOCK_GPU)
    idx = index if index is not None else x
    torch.library.wrap_triton(_multistep_kernel)[(triton.cdiv(qpi, block), n)](
        x, c, u, zt, prev, x0, state, g, plan, stage_plan, idx, step, plan.shape[0], numel, qpi,
        n * numel, params[0], k0, k1, stream32, offset32, SAMPLER=sampler, STAGE=stage,
        PRED=prediction, TWO=sampler in _TWO_STAGE, RING=sampler in _RING,
        HAS_IDX=index is not None, CFG=cfg, GT=gt,
        NOISE=(given or seeded) and sampler == 0, SEEDED=seeded, X0=bool(flags & _rs.WANT_X0),
        BLOCK=block, RN=RN_PRODUCTS, enable_fp_fusion=False)
    return prev, x0


register_inplace("multistep_step_triton")
