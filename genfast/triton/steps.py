"""The reverse steps in Triton: one elementwise kernel per step that reads the
step's plan row by index (a Python int, or a 0-d tensor read in the kernel:
no host sync), computes the step's coefficients (csrc/include/genfast/steps.h
step_coefs, ported below as a jit function) and applies the affine map of
steps.h with CFG, clip / threshold and in-kernel noise (the genfast stream,
stream + index, as genfast.randn).

The per-item passes run inside the same op before the kernel, as device
tensor ops (no sync): guidance_rescale's stds and the thresholding quantile
(a per-item sort of |x0|, computed by a first launch of the kernel in
"abs x0" mode). Compute in float32; float16 / bfloat16 in and out.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..reference import steps as _ref
from .._plan import PLAN_COLUMNS
from .noise import RN_PRODUCTS, _block as _launch_block, launch_words, quad_normals

_PLAN_COLS = tl.constexpr(len(PLAN_COLUMNS))  # the plan table's row stride

BLOCK_GPU = 256  # quads per program
ALPHA_FLOOR = _ref.ALPHA_FLOOR


@triton.jit
def _vp(a, s, PRED: tl.constexpr):
    """(px, pm, ex, em): x0 = px x + pm m, eps = ex x + em m (steps.h vp_prediction)."""
    if PRED == 0:
        a_s = tl.maximum(a, 2.44140625e-4)
        return 1.0 / a_s, -s / a_s, a * 0.0, a * 0.0 + 1.0
    elif PRED == 1:
        return a, -s, s, a
    else:
        return a * 0.0, a * 0.0 + 1.0, 1.0 / s, -a / s


@triton.jit
def _coefs(plan_ptr, i, rows, eta, churn, tmin, tmax, snoise, tscale, SAMPLER: tl.constexpr,
           PRED: tl.constexpr, VAR: tl.constexpr, USE_CLIPPED: tl.constexpr,
           STOCH: tl.constexpr):
    """steps.h step_coefs, float64: (px, pm, pz, ax, am, a0, az, dx, d0, lv_a, lv_b, learned);
    NaN coefficients for an index past the plan."""
    ok = (i >= 0) & (i < rows)
    row = plan_ptr + _PLAN_COLS * tl.where(ok, i, 0)
    t = tl.load(row + 0)
    sig = tl.load(row + 1)
    sig_n = tl.load(row + 2)
    a = tl.load(row + 3)
    s = tl.load(row + 4)
    an = tl.load(row + 5)
    sn = tl.load(row + 6)
    last = tl.load(row + 12) != 0.0
    z = t * 0.0
    px, pm, pz, ax, am, a0, az, dx, d0, lv_a, lv_b = z, z, z, z, z, z, z, z, z + 1.0, z, z
    learned = z
    if SAMPLER == 1:  # DDIM
        px, pm, ex, em = _vp(a, s, PRED)
        var = (sn * sn) / (s * s) * (1.0 - (a * a) / (an * an))
        std = eta * tl.sqrt(tl.maximum(var, 0.0))
        dr = tl.sqrt(tl.maximum(sn * sn - std * std, 0.0))
        if USE_CLIPPED:
            ax = dr / s
            a0 = an - dr * a / s
        else:
            ax = dr * ex
            am = dr * em
            a0 = an
        az = tl.where(eta > 0.0, std, 0.0)
    elif SAMPLER == 0:  # DDPM
        px, pm, ex, em = _vp(a, s, PRED)
        beta = 1.0 - (a * a) / (an * an)
        a0 = an * beta / (s * s)
        ax = (a / an) * (sn * sn) / (s * s)
        var = tl.maximum((sn * sn) / (s * s) * beta, 1e-20)
        std = tl.sqrt(var)
        if VAR == 2:
            std = tl.sqrt(beta)
        if VAR == 1:
            std = tl.exp(0.5 * tl.log(var))
        if VAR == 3:
            lo = tl.log(var)
            hi = tl.log(beta)
            learned = tl.where(t > 0.0, 1.0, 0.0)
            lv_a = 0.25 * (hi - lo)
            lv_b = 0.5 * lo + 0.25 * (hi - lo)
        az = tl.where(t > 0.0, std, 0.0)
    elif SAMPLER == 2:  # Euler with churn
        g = tl.where((tmin <= sig) & (sig <= tmax),
                     tl.minimum(churn / rows.to(tl.float64), 1.4142135623730951 - 1.0), 0.0)
        sh = sig * (g + 1.0)
        c = tl.where(g > 0.0, snoise * tl.sqrt(sh * sh - sig * sig), 0.0)
        if PRED == 0:
            px = z + 1.0
            pm = -sh
            pz = c
        elif PRED == 1:
            q = 1.0 / (sig * sig + 1.0)
            px = q
            pm = -sig * tl.sqrt(q)
            pz = c * q
        else:
            pm = z + 1.0
        r = sig_n / sh
        ax = r
        az = c * r
        a0 = 1.0 - r
    elif SAMPLER == 3:  # Euler ancestral
        up = tl.sqrt(tl.maximum(sig_n * sig_n * (sig * sig - sig_n * sig_n) / (sig * sig), 0.0))
        up = tl.minimum(sig_n, eta * up)
        down = tl.sqrt(tl.maximum(sig_n * sig_n - up * up, 0.0))
        if PRED == 0:
            px = z + 1.0
            pm = -sig
        elif PRED == 1:
            q = 1.0 / (sig * sig + 1.0)
            px = q
            pm = -sig * tl.sqrt(q)
        else:
            pm = z + 1.0
        r = down / sig
        ax = r
        a0 = 1.0 - r
        az = up
    elif SAMPLER == 4:  # LCM
        px, pm, ex, em = _vp(a, s, PRED)
        st = t * tscale
        skip = 0.25 / (st * st + 0.25)
        out = st / tl.sqrt(st * st + 0.25)
        dx = skip
        d0 = out
        scale = tl.where(last, 1.0, an)
        ax = scale * skip
        a0 = scale * out
        az = tl.where(last, 0.0, sn)
    else:  # FlowMatch Euler
        px = z + 1.0
        pm = -sig
        if STOCH:
            a0 = 1.0 - sig_n
            az = sig_n
        else:
            ax = z + 1.0
            am = sig_n - sig
    bad = tl.where(ok, 1.0, float("nan"))
    return (px * bad, pm * bad, pz * bad, ax * bad, am * bad, a0 * bad, az * bad, dx * bad,
            d0 * bad, lv_a * bad, lv_b * bad, learned)


@triton.jit(do_not_specialize=["step", "rows", "k0", "k1", "stream", "sample_offset"])
def _step_kernel(x_ptr, c_ptr, u_ptr, v_ptr, z_ptr, prev_ptr, out2_ptr, absx0_ptr, g_ptr, r_ptr,
                 lim_ptr, inv_ptr, plan_ptr, idx_ptr, step, rows, numel, m_stride, qpi, eta,
                 churn, tmin, tmax, snoise, tscale, k0, k1, stream, sample_offset,
                 SAMPLER: tl.constexpr, PRED: tl.constexpr, VAR: tl.constexpr,
                 USE_CLIPPED: tl.constexpr, STOCH: tl.constexpr, HAS_IDX: tl.constexpr,
                 CFG: tl.constexpr, NOISE: tl.constexpr, SEEDED: tl.constexpr,
                 X0: tl.constexpr, ABS_X0: tl.constexpr, BLOCK: tl.constexpr,
                 RN: tl.constexpr):
    item = tl.program_id(1).to(tl.int64)
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    if HAS_IDX:
        i = tl.load(idx_ptr).to(tl.int64)
    else:
        i = step.to(tl.int64)
    px, pm, pz, ax, am, a0, az, dx, d0, lv_a, lv_b, learned = _coefs(
        plan_ptr, i, rows, eta, churn, tmin, tmax, snoise, tscale, SAMPLER, PRED, VAR,
        USE_CLIPPED, STOCH)
    elem = (4 * q)[:, None] + tl.arange(0, 4).to(tl.int64)[None, :]
    mask = (q < qpi)[:, None] & (elem < numel)
    off = item * numel + elem
    moff = item * m_stride + elem
    x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(c_ptr + moff, mask=mask, other=0.0).to(tl.float32)
    r = tl.load(r_ptr + item)
    if CFG:
        u = tl.load(u_ptr + moff, mask=mask, other=0.0).to(tl.float32)
        m = r * (u + tl.load(g_ptr + item) * (c - u))
    else:
        m = r * c
    zv = x * 0.0
    if NOISE:
        if SEEDED:
            s_i = ((stream.to(tl.int64) + i) & 0xFFFFFFFF).to(tl.uint32)
            vals = quad_normals(q, item, k0, k1, s_i, sample_offset, BLOCK, RN)
            zv = vals.to(prev_ptr.dtype.element_ty).to(tl.float32)  # genfast.randn(dtype=...)
        else:
            zv = tl.load(z_ptr + off, mask=mask, other=0.0).to(tl.float32)
    x0 = px.to(tl.float32) * x + pm.to(tl.float32) * m + pz.to(tl.float32) * zv
    if ABS_X0:
        tl.store(absx0_ptr + off, tl.abs(x0), mask=mask)
    else:
        lim = tl.load(lim_ptr + item)
        x0c = tl.minimum(tl.maximum(x0, -lim), lim) * tl.load(inv_ptr + item)
        zs = az.to(tl.float32) * zv
        if VAR == 3:
            v = tl.load(v_ptr + moff, mask=mask, other=0.0).to(tl.float32)
            zl = tl.exp(lv_a.to(tl.float32) * v + lv_b.to(tl.float32)) * zv
            zs = tl.where(learned != 0.0, zl, zs)
        prev = ax.to(tl.float32) * x + am.to(tl.float32) * m + a0.to(tl.float32) * x0c + zs
        tl.store(prev_ptr + off, prev.to(prev_ptr.dtype.element_ty), mask=mask)
        if X0:
            o2 = dx.to(tl.float32) * x + d0.to(tl.float32) * x0c
            tl.store(out2_ptr + off, o2.to(out2_ptr.dtype.element_ty), mask=mask)


@torch.library.triton_op("genfast::steps_step_triton", mutates_args=())
def _steps_step(sample: torch.Tensor, model_output: torch.Tensor, uncond: torch.Tensor | None,
                guidance: torch.Tensor | None, noise: torch.Tensor | None, plan: torch.Tensor,
                index: torch.Tensor | None, step: int, sampler: int, prediction: int,
                variance: int, flags: int, params: list[float], seed: int, stream: int,
                sample_offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = sample.contiguous()
    mo = model_output.contiguous()
    n = x.shape[0]
    numel = x.numel() // n if n else 0
    learned = sampler == 0 and variance == 3
    m_stride = 2 * numel if learned else numel
    prev = torch.empty_like(x)
    out2 = torch.empty_like(x) if flags & _ref.WANT_X0 else x.new_empty((0,))
    if x.numel() == 0:
        return prev, out2
    cfg = bool(flags & (_ref.CFG_BATCHED | _ref.CFG_SEPARATE))
    if flags & _ref.CFG_BATCHED:
        u, c = mo[:n], mo[n:]
    elif flags & _ref.CFG_SEPARATE:
        u, c = uncond.contiguous(), mo
    else:
        u, c = mo, mo
    v = c.reshape(n, -1)[:, numel:] if learned else c
    dev = x.device
    if flags & _ref.GUIDANCE_TENSOR:
        g = guidance.to(torch.float32).contiguous()
    else:
        g = torch.full((n,), params[_ref.P_GUIDANCE], dtype=torch.float32, device=dev)
    r = torch.ones((n,), dtype=torch.float32, device=dev)
    lim = torch.full((n,), math.inf, dtype=torch.float32, device=dev)
    inv = torch.ones((n,), dtype=torch.float32, device=dev)
    if cfg and flags & _ref.RESCALE:  # per-item unbiased stds (Lin et al. 2024), no sync
        cf = c.reshape(n, -1)[:, :numel].float()
        mf = u.reshape(n, -1)[:, :numel].float()
        mf = mf + g[:, None] * (cf - mf)
        sc, sm = cf.std(dim=1), mf.std(dim=1)
        phi = params[_ref.P_RESCALE]
        r = torch.where(sm > 0, phi * sc / sm + (1 - phi), torch.ones_like(sm))
    if flags & _ref.CLIP and not flags & _ref.THRESHOLD:
        lim.fill_(params[_ref.P_CLIP])
    seeded = bool(flags & _ref.NOISE_SEEDED)
    zt = noise.contiguous() if flags & _ref.NOISE_GIVEN else x
    # int32 bit patterns (noise.launch_words): one kernel variant for any seed
    # and stream; (stream + i) mod 2**32 is the same from the signed pattern.
    k0, k1, stream, sample_offset = launch_words(seed, stream, sample_offset)
    qpi = (numel + 3) // 4
    block = _launch_block(qpi, BLOCK_GPU)
    idx = index if index is not None else x  # placeholder pointer when HAS_IDX is off

    def launch(absx0, abs_mode):
        torch.library.wrap_triton(_step_kernel)[(triton.cdiv(qpi, block), n)](
            x, c, u, v, zt, prev, out2, absx0, g, r, lim, inv, plan, idx, step, plan.shape[0],
            numel, m_stride, qpi, params[_ref.P_ETA], params[_ref.P_CHURN], params[_ref.P_TMIN],
            params[_ref.P_TMAX], params[_ref.P_SNOISE], params[_ref.P_TSCALE], k0, k1, stream,
            sample_offset, SAMPLER=sampler, PRED=prediction, VAR=variance,
            USE_CLIPPED=bool(flags & _ref.USE_CLIPPED), STOCH=bool(flags & _ref.STOCHASTIC),
            HAS_IDX=index is not None, CFG=cfg,
            NOISE=bool(flags & (_ref.NOISE_GIVEN | _ref.NOISE_SEEDED)), SEEDED=seeded,
            X0=bool(flags & _ref.WANT_X0), ABS_X0=abs_mode, BLOCK=block, RN=RN_PRODUCTS,
            enable_fp_fusion=False)

    if flags & _ref.THRESHOLD:  # per-item quantile of |x0| (diffusers' definition)
        a = torch.empty((n, numel), dtype=torch.float32, device=dev)
        launch(a, True)
        srt = a.sort(dim=1).values
        pos = params[_ref.P_RATIO] * (numel - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, numel - 1)
        q = srt[:, lo] + (srt[:, hi] - srt[:, lo]) * (pos - lo)
        s = q.clamp(1.0, params[_ref.P_SAMPLE_MAX])
        lim, inv = s, 1.0 / s
    launch(x, False)
    return prev, out2
