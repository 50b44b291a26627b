"""Normalizing-flow kernels in Triton: the rational-quadratic spline (Durkan et
al. 2019, "Neural Spline Flows") and the affine / additive coupling (Dinh et
al. 2017; Kingma & Dhariwal 2018), forward, inverse and fused backward.

The math is that of csrc/include/genfast/spline.h and coupling.h (see there
and shared/reference/flows.md); Triton cannot include the C++ header, so it is
restated here line for line. One program handles BLOCK spline elements, each
lane streaming over its K bins: pass 1 the logits' maxima, pass 2 the softmax
sums, pass 3 the cumulative knots while keeping the bin the input falls in
(the last knot passed), so nothing per bin is held in registers and any K
works. The backward repeats the passes and scatters into the K parameters.

Registered ops (triton_op, autograd from genfast/ops/flows.py):
  genfast::rq_spline_triton, rq_spline_backward_triton,
  genfast::affine_coupling_triton, affine_coupling_backward_triton
with the schemas of their C++ counterparts.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..backend import triton_interpret
from ..ops import flows as _ops
from ..reference.flows import compute_dtype, tail_logit


# --------------------------------------------------------------------------- scalar math

@triton.jit
def _softplus(x):
    ax = tl.abs(x)
    e = tl.exp(-ax)
    u = 1.0 + e
    um1 = u - 1.0
    # ln(1 + e) keeping e's low bits (see flows_math.h)
    lp = tl.where(um1 == 0.0, e, tl.log(u) * (e / tl.where(um1 == 0.0, 1.0, um1)))
    return tl.maximum(x, 0.0) + lp


@triton.jit
def _sigmoid(x):
    e = tl.exp(-tl.abs(x))
    inv = 1.0 / (1.0 + e)
    return tl.where(x >= 0, inv, e * inv)


@triton.jit
def _deriv_logit(ud_ptr, rows, j, K, ND, tail_u, mask, TAILS: tl.constexpr):
    """Logit of knot derivative j (0..K); with linear tails j = 0 and K are
    the constant padding."""
    if TAILS:
        inner = (j > 0) & (j < K)
        u = tl.load(ud_ptr + rows * ND + (j - 1), mask=mask & inner, other=0.0)
        return tl.where(inner, u.to(tail_u.dtype), tail_u)
    else:
        u = tl.load(ud_ptr + rows * ND + j, mask=mask, other=0.0)
        return u.to(tail_u.dtype)


@triton.jit
def _bin_of(uw_ptr, uh_ptr, ud_ptr, rows, v, mask, K, ND, left, right, bottom, top,
            min_w, min_h, min_d, coef_w, coef_h, tail_u, INVERSE: tl.constexpr,
            TAILS: tl.constexpr):
    """Softmax maxima and sums of both logit rows, then the bin v falls in
    (knots on the v side) with its quantities (xk, w, yk, h, dk, dk1)."""
    mw = tl.full(v.shape, -float("inf"), v.dtype)
    mh = tl.full(v.shape, -float("inf"), v.dtype)
    for k in range(K):
        mw = tl.maximum(mw, tl.load(uw_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype))
        mh = tl.maximum(mh, tl.load(uh_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype))
    sw = tl.zeros(v.shape, v.dtype)
    sh = tl.zeros(v.shape, v.dtype)
    for k in range(K):
        sw += tl.exp(tl.load(uw_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mw)
        sh += tl.exp(tl.load(uh_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mh)
    aw = tl.zeros(v.shape, v.dtype)
    ah = tl.zeros(v.shape, v.dtype)
    cw_lo = tl.zeros(v.shape, v.dtype) + left
    ch_lo = tl.zeros(v.shape, v.dtype) + bottom
    xk = cw_lo
    yk = ch_lo
    w = tl.zeros(v.shape, v.dtype) + 1.0
    h = tl.zeros(v.shape, v.dtype) + 1.0
    dk = tl.zeros(v.shape, v.dtype) + 1.0
    dk1 = tl.zeros(v.shape, v.dtype) + 1.0
    b = tl.zeros(v.shape, tl.int32)
    for k in range(K):
        pw = tl.exp(tl.load(uw_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mw) / sw
        ph = tl.exp(tl.load(uh_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mh) / sh
        aw += min_w + coef_w * pw
        ah += min_h + coef_h * ph
        cw_hi = tl.where(k == K - 1, right, (right - left) * aw + left)
        ch_hi = tl.where(k == K - 1, top, (top - bottom) * ah + bottom)
        u0 = _deriv_logit(ud_ptr, rows, k, K, ND, tail_u, mask, TAILS)
        u1 = _deriv_logit(ud_ptr, rows, k + 1, K, ND, tail_u, mask, TAILS)
        if INVERSE:
            take = (k == 0) | (v >= ch_lo)
        else:
            take = (k == 0) | (v >= cw_lo)
        xk = tl.where(take, cw_lo, xk)
        w = tl.where(take, cw_hi - cw_lo, w)
        yk = tl.where(take, ch_lo, yk)
        h = tl.where(take, ch_hi - ch_lo, h)
        dk = tl.where(take, min_d + _softplus(u0), dk)
        dk1 = tl.where(take, min_d + _softplus(u1), dk1)
        b = tl.where(take, k, b)
        cw_lo = cw_hi
        ch_lo = ch_hi
    return b, xk, w, yk, h, dk, dk1, mw, mh, sw, sh


@triton.jit
def _rq_lad(theta, xk, w, yk, h, dk, dk1):
    s = h / w
    t = theta * (1.0 - theta)
    den = s + (dk + dk1 - 2.0 * s) * t
    m = dk1 * theta * theta + 2.0 * s * t + dk * (1.0 - theta) * (1.0 - theta)
    q = s / den
    return tl.log(q * q * m)


@triton.jit
def _rq_inverse_theta(y, xk, w, yk, h, dk, dk1):
    s = h / w
    d = tl.minimum(tl.maximum(y - yk, 0.0), h)
    g = dk + dk1 - 2.0 * s
    qa = d * g + h * (s - dk)
    qb = h * dk - d * g
    qc = -s * d
    sq = tl.sqrt(tl.maximum(qb * qb - 4.0 * qa * qc, 0.0))
    den_pos = -qb - sq
    den_neg = 2.0 * qa
    theta_pos = 2.0 * qc / tl.where(den_pos < 0, den_pos, -1.0)
    theta_neg = (sq - qb) / tl.where(den_neg > 0, den_neg, 1.0)
    theta = tl.where(qb >= 0, tl.where(den_pos < 0, theta_pos, 0.0), theta_neg)
    return tl.minimum(tl.maximum(theta, 0.0), 1.0)


@triton.jit
def _rq_apply(v, xk, w, yk, h, dk, dk1, lo, hi, INVERSE: tl.constexpr, TAILS: tl.constexpr):
    """(output, lad, x) of one direction; x is the point in x-space."""
    below = v < lo
    above = v > hi
    inside = (~below) & (~above)
    if INVERSE:
        theta = _rq_inverse_theta(v, xk, w, yk, h, dk, dk1)
        x_in = xk + theta * w
        lad_in = -_rq_lad(theta, xk, w, yk, h, dk, dk1)
        if TAILS:
            out_o = v
            lad_o = tl.zeros(v.shape, v.dtype)
        else:
            out_o = tl.where(below, xk + (v - yk) / dk, (xk + w) + (v - (yk + h)) / dk1)
            lad_o = -tl.log(tl.where(below, dk, dk1))
        out = tl.where(inside, x_in, out_o)
        return out, tl.where(inside, lad_in, lad_o), out
    else:
        theta = tl.minimum(tl.maximum((v - xk) / w, 0.0), 1.0)
        s = h / w
        t = theta * (1.0 - theta)
        den = s + (dk + dk1 - 2.0 * s) * t
        y_in = yk + h * (s * theta * theta + dk * t) / den
        lad_in = _rq_lad(theta, xk, w, yk, h, dk, dk1)
        if TAILS:
            out_o = v
            lad_o = tl.zeros(v.shape, v.dtype)
        else:
            out_o = tl.where(below, yk + dk * (v - xk), (yk + h) + dk1 * (v - (xk + w)))
            lad_o = tl.log(tl.where(below, dk, dk1))
        return tl.where(inside, y_in, out_o), tl.where(inside, lad_in, lad_o), v


@triton.jit
def _rq_fwd_kernel(x_ptr, uw_ptr, uh_ptr, ud_ptr, out_ptr, lad_ptr, n, K, ND,
                   left, right, bottom, top, min_w, min_h, min_d, coef_w, coef_h, tail_u,
                   INVERSE: tl.constexpr, TAILS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = rows < n
    tu = tl.full([BLOCK], tail_u, out_ptr.dtype.element_ty)
    v = tl.load(x_ptr + rows, mask=mask, other=0.0).to(tu.dtype)
    b, xk, w, yk, h, dk, dk1, _, _, _, _ = _bin_of(
        uw_ptr, uh_ptr, ud_ptr, rows, v, mask, K, ND, left, right, bottom, top, min_w, min_h,
        min_d, coef_w, coef_h, tu, INVERSE, TAILS)
    if INVERSE:
        lo = bottom
        hi = top
    else:
        lo = left
        hi = right
    out, lad, _ = _rq_apply(v, xk, w, yk, h, dk, dk1, lo, hi, INVERSE, TAILS)
    tl.store(out_ptr + rows, out, mask=mask)
    tl.store(lad_ptr + rows, lad, mask=mask)


@triton.jit
def _rq_bwd_kernel(go_ptr, gl_ptr, x_ptr, uw_ptr, uh_ptr, ud_ptr, gx_ptr, guw_ptr, guh_ptr,
                   gud_ptr, n, K, ND, left, right, bottom, top, min_w, min_h, min_d, coef_w,
                   coef_h, tail_u, INVERSE: tl.constexpr, TAILS: tl.constexpr,
                   BLOCK: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = rows < n
    tu = tl.full([BLOCK], tail_u, gx_ptr.dtype.element_ty)
    v = tl.load(x_ptr + rows, mask=mask, other=0.0).to(tu.dtype)
    g_out = tl.load(go_ptr + rows, mask=mask, other=0.0).to(tu.dtype)
    g_lad = tl.load(gl_ptr + rows, mask=mask, other=0.0).to(tu.dtype)
    b, xk, w, yk, h, dk, dk1, mw, mh, sw, sh = _bin_of(
        uw_ptr, uh_ptr, ud_ptr, rows, v, mask, K, ND, left, right, bottom, top, min_w, min_h,
        min_d, coef_w, coef_h, tu, INVERSE, TAILS)
    if INVERSE:
        lo = bottom
        hi = top
    else:
        lo = left
        hi = right
    _, _, x = _rq_apply(v, xk, w, yk, h, dk, dk1, lo, hi, INVERSE, TAILS)
    region_out = (v < lo) | (v > hi)
    below = v < lo
    # partials of the forward map at x (spline.h: rq_partials)
    theta = tl.minimum(tl.maximum((x - xk) / w, 0.0), 1.0)
    inv_w = 1.0 / w
    s = h * inv_w
    t = theta * (1.0 - theta)
    g = dk + dk1 - 2.0 * s
    den = s + g * t
    inv_den = 1.0 / den
    nn = s * theta * theta + dk * t
    r = nn * inv_den
    omt = 1.0 - theta
    m = dk1 * theta * theta + 2.0 * s * t + dk * omt * omt
    inv_m = 1.0 / m
    den_th = g * (1.0 - 2.0 * theta)
    den_s = 1.0 - 2.0 * t
    n_th = 2.0 * s * theta + dk * (1.0 - 2.0 * theta)
    m_th = 2.0 * dk1 * theta + 2.0 * s * (1.0 - 2.0 * theta) - 2.0 * dk * omt
    y_s = h * (theta * theta - r * den_s) * inv_den
    y_dk = h * (t - r * t) * inv_den
    y_dk1 = -h * r * t * inv_den
    l_th = m_th * inv_m - 2.0 * den_th * inv_den
    l_s = 2.0 / s + 2.0 * t * inv_m - 2.0 * den_s * inv_den
    l_dk = omt * omt * inv_m - 2.0 * t * inv_den
    l_dk1 = theta * theta * inv_m - 2.0 * t * inv_den
    q = s * inv_den
    fx = q * q * m
    lx = l_th * inv_w
    f_xk = -fx
    f_w = -theta * fx - y_s * s * inv_w
    f_yk = tl.zeros(v.shape, v.dtype) + 1.0
    f_h = r + y_s * inv_w
    f_dk = y_dk
    f_dk1 = y_dk1
    l_xk = -lx
    l_w = -theta * lx - l_s * s * inv_w
    l_h = l_s * inv_w
    slope = tl.where(below, dk, dk1)
    if TAILS:  # identity outside: no parameter gradient
        idf = 0.0
        fx_out = slope * 0.0 + 1.0
    else:
        idf = 1.0
        fx_out = slope
    fx = tl.where(region_out, fx_out, fx)
    lx = tl.where(region_out, 0.0, lx)
    f_xk = tl.where(region_out, -slope * idf, f_xk)
    f_w = tl.where(region_out, tl.where(below, 0.0, -slope * idf), f_w)
    f_yk = tl.where(region_out, idf, f_yk)
    f_h = tl.where(region_out, tl.where(below, 0.0, idf), f_h)
    f_dk = tl.where(region_out, tl.where(below, (x - xk) * idf, 0.0), f_dk)
    f_dk1 = tl.where(region_out, tl.where(below, 0.0, (x - (xk + w)) * idf), f_dk1)
    l_xk = tl.where(region_out, 0.0, l_xk)
    l_w = tl.where(region_out, 0.0, l_w)
    l_h = tl.where(region_out, 0.0, l_h)
    l_dk = tl.where(region_out, tl.where(below, idf / dk, 0.0), l_dk)
    l_dk1 = tl.where(region_out, tl.where(below, 0.0, idf / dk1), l_dk1)
    # rq_backward
    a = (g_out - g_lad * lx) / fx
    if INVERSE:
        cy = -a
        cl = -g_lad
        g_in = a
    else:
        cy = g_out
        cl = g_lad
        g_in = g_out * fx + g_lad * lx
    g_xk = cy * f_xk + cl * l_xk
    g_w = cy * f_w + cl * l_w
    g_yk = cy * f_yk
    g_h = cy * f_h + cl * l_h
    g_dk = cy * f_dk + cl * l_dk
    g_dk1 = cy * f_dk1 + cl * l_dk1
    tl.store(gx_ptr + rows, g_in, mask=mask)
    gcw0 = g_xk - g_w
    gcw1 = g_w
    gch0 = g_yk - g_h
    gch1 = g_h
    scale_w = (right - left) * coef_w
    scale_h = (top - bottom) * coef_h
    # softmax backward: g_u = p (g_s - sum_j p_j g_s_j), g_s_j = scale * G_j
    dot_w = tl.zeros(v.shape, v.dtype)
    dot_h = tl.zeros(v.shape, v.dtype)
    for k in range(K):
        pw = tl.exp(tl.load(uw_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mw) / sw
        ph = tl.exp(tl.load(uh_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mh) / sh
        nxt = (k <= b) & (b + 1 < K)
        gsw = scale_w * (tl.where(k < b, gcw0, 0.0) + tl.where(nxt, gcw1, 0.0))
        gsh = scale_h * (tl.where(k < b, gch0, 0.0) + tl.where(nxt, gch1, 0.0))
        dot_w += pw * gsw
        dot_h += ph * gsh
    for k in range(K):
        pw = tl.exp(tl.load(uw_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mw) / sw
        ph = tl.exp(tl.load(uh_ptr + rows * K + k, mask=mask, other=0.0).to(v.dtype) - mh) / sh
        nxt = (k <= b) & (b + 1 < K)
        gsw = scale_w * (tl.where(k < b, gcw0, 0.0) + tl.where(nxt, gcw1, 0.0))
        gsh = scale_h * (tl.where(k < b, gch0, 0.0) + tl.where(nxt, gch1, 0.0))
        tl.store(guw_ptr + rows * K + k, pw * (gsw - dot_w), mask=mask)
        tl.store(guh_ptr + rows * K + k, ph * (gsh - dot_h), mask=mask)
    if TAILS:
        off = 1
    else:
        off = 0
    for j in range(ND):
        kk = j + off
        u = tl.load(ud_ptr + rows * ND + j, mask=mask, other=0.0).to(v.dtype)
        gd = tl.where(kk == b, g_dk, 0.0) + tl.where(kk == b + 1, g_dk1, 0.0)
        tl.store(gud_ptr + rows * ND + j, _sigmoid(u) * gd, mask=mask)


def _block(n: int, gpu_block: int) -> int:
    # the interpreter runs one program at a time: fewer, larger programs
    if triton_interpret():
        return max(16, min(1024, triton.next_power_of_2(max(n, 1))))
    return gpu_block


def _rq_scalars(k, left, right, bottom, top, mw, mh, md):
    return (float(left), float(right), float(bottom), float(top), float(mw), float(mh), float(md),
            1.0 - mw * k, 1.0 - mh * k)


@torch.library.triton_op("genfast::rq_spline_triton", mutates_args=())
def _rq_spline_op(inputs: torch.Tensor, unnormalized_widths: torch.Tensor,
                  unnormalized_heights: torch.Tensor, unnormalized_derivatives: torch.Tensor,
                  inverse: bool, linear_tails: bool, left: float, right: float, bottom: float,
                  top: float, min_bin_width: float, min_bin_height: float,
                  min_derivative: float) -> tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(inputs.dtype)
    x = inputs.contiguous()
    uw, uh, ud = (t.contiguous() for t in (unnormalized_widths, unnormalized_heights,
                                            unnormalized_derivatives))
    out = torch.empty(x.shape, dtype=ct, device=x.device)
    lad = torch.empty(x.shape, dtype=ct, device=x.device)
    n, k, nd = x.numel(), uw.shape[-1], ud.shape[-1]
    if n:
        block = _block(n, 128)
        torch.library.wrap_triton(_rq_fwd_kernel)[(triton.cdiv(n, block),)](
            x, uw, uh, ud, out, lad, n, k, nd,
            *_rq_scalars(k, left, right, bottom, top, min_bin_width, min_bin_height,
                         min_derivative),
            tail_logit(min_derivative) if linear_tails else 0.0,
            INVERSE=inverse, TAILS=linear_tails, BLOCK=block)
    return out.to(inputs.dtype), lad.to(inputs.dtype)


@torch.library.triton_op("genfast::rq_spline_backward_triton", mutates_args=())
def _rq_spline_backward_op(grad_outputs: torch.Tensor, grad_logabsdet: torch.Tensor,
                           inputs: torch.Tensor, unnormalized_widths: torch.Tensor,
                           unnormalized_heights: torch.Tensor,
                           unnormalized_derivatives: torch.Tensor, inverse: bool,
                           linear_tails: bool, left: float, right: float, bottom: float,
                           top: float, min_bin_width: float, min_bin_height: float,
                           min_derivative: float
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    ct = compute_dtype(inputs.dtype)
    x = inputs.contiguous()
    uw, uh, ud, go, gl = (t.contiguous() for t in (
        unnormalized_widths, unnormalized_heights, unnormalized_derivatives, grad_outputs,
        grad_logabsdet))
    gx = torch.empty(x.shape, dtype=ct, device=x.device)
    gw = torch.empty(uw.shape, dtype=ct, device=x.device)
    gh = torch.empty(uh.shape, dtype=ct, device=x.device)
    gd = torch.empty(ud.shape, dtype=ct, device=x.device)
    n, k, nd = x.numel(), uw.shape[-1], ud.shape[-1]
    if n:
        block = _block(n, 128)
        torch.library.wrap_triton(_rq_bwd_kernel)[(triton.cdiv(n, block),)](
            go, gl, x, uw, uh, ud, gx, gw, gh, gd, n, k, nd,
            *_rq_scalars(k, left, right, bottom, top, min_bin_width, min_bin_height,
                         min_derivative),
            tail_logit(min_derivative) if linear_tails else 0.0,
            INVERSE=inverse, TAILS=linear_tails, BLOCK=block)
    t = inputs.dtype
    return gx.to(t), gw.to(t), gh.to(t), gd.to(t)


# --------------------------------------------------------------------------- coupling

@triton.jit
def _affine_scale(u, clamp, ACT: tl.constexpr):
    """(scale, log scale, d log scale / du) of coupling.h's activation ACT."""
    if ACT == 0:
        return u * 0.0 + 1.0, u * 0.0, u * 0.0
    elif ACT == 1:
        sg = _sigmoid(u + 2.0)
        sc = sg + 1e-3
        return sc, tl.log(sc), sg * (1.0 - sg) / sc
    elif ACT == 6:
        sg = _sigmoid(u + 2.0)
        return sg, -_softplus(-(u + 2.0)), 1.0 - sg
    else:
        if ACT == 2:
            s = u
            ds = u * 0.0 + 1.0
        elif ACT == 3:
            # atan(u) = 2 atan(u / (1 + sqrt(1 + u^2))), the argument in [-1, 1];
            # Triton has no atan, so use the odd series via libdevice-free identity
            a = u / (1.0 + tl.sqrt(1.0 + u * u))
            a = a / (1.0 + tl.sqrt(1.0 + a * a))  # now |a| <= tan(pi/8)
            z = a * a
            p = 8.05374449538e-2 * z - 1.38776856032e-1
            p = p * z + 1.99777106478e-1
            p = p * z - 3.33329491539e-1
            at = 4.0 * (a + a * z * p)
            s = clamp * 0.636 * at
            ds = clamp * 0.636 / (1.0 + u * u)
        elif ACT == 4:
            e = tl.exp(-2.0 * tl.abs(u))
            th = (1.0 - e) / (1.0 + e)
            th = tl.where(u < 0, -th, th)
            s = clamp * th
            ds = clamp * (1.0 - th * th)
        else:
            sg = _sigmoid(u)
            s = clamp * 2.0 * (sg - 0.5)
            ds = clamp * 2.0 * sg * (1.0 - sg)
        return tl.exp(s), s, ds


@triton.jit
def _affine_fwd_kernel(x_ptr, t_ptr, u_ptr, out_ptr, part_ptr, row_len, chunks, clamp,
                       ACT: tl.constexpr, INVERSE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    j = c * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = j < row_len
    e = row * row_len + j
    ct = part_ptr.dtype.element_ty
    x = tl.load(x_ptr + e, mask=mask, other=0.0).to(ct)
    t = tl.load(t_ptr + e, mask=mask, other=0.0).to(ct)
    u = tl.load(u_ptr + e, mask=mask, other=0.0).to(ct)
    sc, ls, _ = _affine_scale(u, clamp, ACT)
    if INVERSE:
        inv = tl.exp(-ls)
        if ACT == 6:
            y = x * inv - t
        else:
            y = (x - t) * inv
        ls = -ls
    else:
        if ACT == 6:
            y = (x + t) * sc
        else:
            y = x * sc + t
    tl.store(out_ptr + e, y, mask=mask)
    tl.store(part_ptr + row * chunks + c, tl.sum(tl.where(mask, ls, 0.0), axis=0))


@triton.jit
def _affine_bwd_kernel(go_ptr, gl_ptr, x_ptr, t_ptr, u_ptr, gx_ptr, gt_ptr, gu_ptr, row_len,
                       clamp, ACT: tl.constexpr, INVERSE: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = j < row_len
    e = row * row_len + j
    ct = gx_ptr.dtype.element_ty
    x = tl.load(x_ptr + e, mask=mask, other=0.0).to(ct)
    t = tl.load(t_ptr + e, mask=mask, other=0.0).to(ct)
    u = tl.load(u_ptr + e, mask=mask, other=0.0).to(ct)
    go = tl.load(go_ptr + e, mask=mask, other=0.0).to(ct)
    gl = tl.load(gl_ptr + row).to(ct)
    sc, ls, dl = _affine_scale(u, clamp, ACT)
    if INVERSE:
        inv = tl.exp(-ls)
        if ACT == 6:
            pre = x * inv
            gt = -go
        else:
            pre = (x - t) * inv
            gt = -go * inv
        gx = go * inv
        gu = (-go * pre - gl) * dl
    else:
        if ACT == 6:
            pre = x + t
            gt = go * sc
        else:
            pre = x
            gt = go
        gx = go * sc
        gu = (go * pre * sc + gl) * dl
    tl.store(gx_ptr + e, gx, mask=mask)
    tl.store(gt_ptr + e, gt, mask=mask)
    tl.store(gu_ptr + e, gu, mask=mask)


def _affine_layout(x):
    rows = x.shape[0]
    row_len = x.numel() // rows if rows else 0
    block = _block(row_len, 1024)
    return rows, row_len, block, max(1, triton.cdiv(row_len, block))


@torch.library.triton_op("genfast::affine_coupling_triton", mutates_args=())
def _affine_op(inputs: torch.Tensor, shift: torch.Tensor, unconstrained_scale: torch.Tensor,
               activation: int, clamp: float, inverse: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    ct = compute_dtype(inputs.dtype)
    x, t, u = (v.contiguous() for v in (inputs, shift, unconstrained_scale))
    rows, row_len, block, chunks = _affine_layout(x)
    out = torch.empty(x.shape, dtype=ct, device=x.device)
    part = torch.zeros((rows, chunks), dtype=ct, device=x.device)
    if rows and row_len:
        torch.library.wrap_triton(_affine_fwd_kernel)[(rows, chunks)](
            x, t, u, out, part, row_len, chunks, float(clamp), ACT=activation, INVERSE=inverse,
            BLOCK=block)
    return out.to(inputs.dtype), part.sum(1).to(inputs.dtype)


@torch.library.triton_op("genfast::affine_coupling_backward_triton", mutates_args=())
def _affine_backward_op(grad_outputs: torch.Tensor, grad_logabsdet: torch.Tensor,
                        inputs: torch.Tensor, shift: torch.Tensor,
                        unconstrained_scale: torch.Tensor, activation: int, clamp: float,
                        inverse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ct = compute_dtype(inputs.dtype)
    x, t, u, go, gl = (v.contiguous() for v in (inputs, shift, unconstrained_scale,
                                                 grad_outputs, grad_logabsdet))
    rows, row_len, block, chunks = _affine_layout(x)
    gx, gt, gu = (torch.empty(x.shape, dtype=ct, device=x.device) for _ in range(3))
    if rows and row_len:
        torch.library.wrap_triton(_affine_bwd_kernel)[(rows, chunks)](
            go, gl, x, t, u, gx, gt, gu, row_len, float(clamp), ACT=activation, INVERSE=inverse,
            BLOCK=block)
    d = inputs.dtype
    return gx.to(d), gt.to(d), gu.to(d)


_ops.register("genfast::", "_triton")


def rq_spline(inputs, uw, uh, ud, *args):
    """genfast::rq_spline_triton (arguments as genfast::rq_spline)."""
    return torch.ops.genfast.rq_spline_triton(inputs, uw, uh, ud, *args)


def affine_coupling(inputs, shift, u, activation: int, clamp: float, inverse: bool):
    """genfast::affine_coupling_triton (arguments as genfast::affine_coupling)."""
    return torch.ops.genfast.affine_coupling_triton(inputs, shift, u, activation, clamp, inverse)


del math
