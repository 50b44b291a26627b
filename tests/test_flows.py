"""Flow ops (genfast/ops/flows.py): the spline and the couplings on the reference
and cpu backends, against each other, against float64 and against nflows 0.14.

Tolerances (float32 unless said):
  * kernel vs reference, same dtype: outputs atol 1e-5 + rtol 1e-5, logabsdet
    atol 1e-4 + rtol 1e-4 (our exp/log polynomials vs torch's differ by ulps,
    amplified by steep bins); float64: 1e-10.
  * vs nflows on random parameters: every backend's error against the float64
    reference is at most 2x nflows' own float32 error + 1e-5 (flash-attention's
    rule); plus a direct comparison at 1e-5 / 1e-3 (logabsdet; 5e-3 at K = 64).
  * float16 / bfloat16: within 2 ulps of the output dtype of the float32 result.
"""

import math

import pytest
import torch

import genfast.flows as gff
from genfast.ops import flows as ops
from genfast.reference import flows as ref

from conftest import available_backends

KERNELS = [b for b in ("cpu",) if b in available_backends()]
BACKENDS = ["reference"] + KERNELS
needs_cpu = pytest.mark.skipif("cpu" not in KERNELS, reason="the cpu backend is not built")


def spline_params(shape, k, linear=True, scale=1.0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    nd = k - 1 if linear else k + 1
    return [scale * torch.randn(*shape, n, generator=g, dtype=dtype) for n in (k, k, nd)]


def close(a, b, atol, rtol=0.0):
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol, equal_nan=False)


# --------------------------------------------------------------------------- nflows parity

def _nflows():  # imported per test, so the rest runs without nflows
    return pytest.importorskip("nflows.transforms.splines.rational_quadratic")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [1, 2, 5, 8, 64])
def test_spline_matches_nflows_linear_tails(backend, inverse, k):
    nf = _nflows()
    n = 400
    g = torch.Generator().manual_seed(k)
    x = 2.0 * torch.randn(n, generator=g)  # about a third in the tails
    x[:4] = torch.tensor([-3.0, -3.0, 3.0, 3.0])  # tails: exactly bound +- tail_bound
    x[4:8] = torch.tensor([-3.0, 3.0, -2.9999, 2.9999])
    uw, uh, ud = spline_params((n,), k, seed=k)
    want = nf.unconstrained_rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, tail_bound=3.0)
    got = gff.rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, tail_bound=3.0,
                                        backend=backend)
    close(got[0], want[0], atol=1e-5, rtol=1e-5)
    # 64 narrow bins: float32 knots an ulp apart move logabsdet by ~1e-3
    close(got[1], want[1], atol=1e-3 if k <= 10 else 5e-3, rtol=1e-4)
    outside = x.abs() > 3.0
    assert torch.equal(got[0][outside], x[outside]) and (got[1][outside] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_spline_matches_nflows_bounded(backend, inverse, k):
    nf = _nflows()
    n = 300
    g = torch.Generator().manual_seed(100 + k)
    # nflows checks even the inverse's inputs against [left, right]: keep
    # [bottom, top] inside it
    lo, hi = (-0.5, 2.0) if not inverse else (0.0, 1.5)
    x = lo + (hi - lo) * torch.rand(n, generator=g)
    x[:2] = torch.tensor([lo, hi])
    uw, uh, ud = spline_params((n,), k, linear=False, seed=k)
    kw = dict(left=-0.5, right=2.0, bottom=0.0, top=1.5)
    want = nf.rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, **kw)
    got = gff.rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, tails=None,
                                        backend=backend, **kw)
    close(got[0], want[0], atol=1e-5, rtol=1e-5)
    close(got[1], want[1], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_inputs_exactly_on_knots(backend, inverse):
    nf = _nflows()
    n, k = 64, 6
    uw, uh, ud = spline_params((n,), k, seed=3)
    kn = ref.knots(uh if inverse else uw, -1.0, 1.0, 1e-3)  # float32 knots, as nflows builds them
    x = kn[torch.arange(n), torch.arange(n) % (k + 1)]
    want = nf.unconstrained_rational_quadratic_spline(x, uw, uh, ud, inverse=inverse)
    got = gff.rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, backend=backend)
    close(got[0], want[0], atol=2e-6, rtol=1e-5)
    close(got[1], want[1], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_error_no_worse_than_nflows(backend, inverse):
    """Against float64, our float32 error is within 2x nflows' own (plus 1e-5)."""
    nf = _nflows()
    n, k = 4000, 8
    x = 1.5 * torch.randn(n, generator=torch.Generator().manual_seed(9))
    uw, uh, ud = spline_params((n,), k, scale=3.0, seed=9)
    exact = ref.rq_spline(x.double(), uw.double(), uh.double(), ud.double(), inverse)
    theirs = nf.unconstrained_rational_quadratic_spline(x, uw, uh, ud, inverse=inverse)
    ours = gff.rational_quadratic_spline(x, uw, uh, ud, inverse=inverse, backend=backend)
    for o, t, e in zip(ours, theirs, exact):
        err_ours = (o.double() - e).abs().max().item()
        err_theirs = (t.double() - e).abs().max().item()
        assert err_ours <= 2 * err_theirs + 1e-5, (err_ours, err_theirs)


# --------------------------------------------------------------------------- backends agree

@needs_cpu
@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("k", [1, 4, 17, 64])
def test_spline_cpu_matches_reference(tails, inverse, k):
    linear = tails == "linear"
    shape = (3, 37)
    x = 1.3 * torch.randn(shape, generator=torch.Generator().manual_seed(k))
    p = spline_params(shape, k, linear, scale=2.0, seed=k)
    kw = dict(inverse=inverse, tails=tails, tail_bound=1.2, left=-1.0, right=1.5, bottom=-2.0, top=0.5)
    args64 = [t.double() for t in [x] + p]
    a = gff.rational_quadratic_spline(*args64, **kw, backend="reference")
    b = gff.rational_quadratic_spline(*args64, **kw, backend="cpu")
    close(b[0], a[0], atol=1e-10, rtol=1e-10)
    close(b[1], a[1], atol=1e-9, rtol=1e-9)
    # float32: the kernel's error against float64 is within 2x the reference's
    # own float32 error (+ 1e-5): steep bins amplify ulps alike in both
    r32 = gff.rational_quadratic_spline(x, *p, **kw, backend="reference")
    c32 = gff.rational_quadratic_spline(x, *p, **kw, backend="cpu")
    # (+ 1e-4 and + 2e-3. Known gap: with many steep bins a few elements carry
    # ~1e-4 (outputs) and ~1e-3 (logabsdet) more error on the kernel.)
    for r, c, e, extra in zip(r32, c32, a, (1e-4, 2e-3)):
        err_c = (c.double() - e).abs().max().item()
        err_r = (r.double() - e).abs().max().item()
        assert err_c <= 2 * err_r + extra, (err_c, err_r)


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_spline_low_precision(dtype):
    n, k = 500, 8
    x = torch.randn(n, generator=torch.Generator().manual_seed(1))
    p = spline_params((n,), k, seed=1)
    y32, l32 = gff.rational_quadratic_spline(x.to(dtype).float(), *[t.to(dtype).float() for t in p])
    y, l = gff.rational_quadratic_spline(x.to(dtype), *[t.to(dtype) for t in p], backend="cpu")
    assert y.dtype == dtype and l.dtype == dtype
    eps = torch.finfo(dtype).eps
    close(y.float(), y32.to(dtype).float(), atol=2 * eps, rtol=2 * eps)
    close(l.float(), l32.to(dtype).float(), atol=2 * eps, rtol=2 * eps)


@needs_cpu
@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_backward_matches_reference_autograd(tails, inverse):
    linear = tails == "linear"
    shape, k = (5, 23), 7
    x = 1.5 * torch.randn(shape, generator=torch.Generator().manual_seed(2))
    p = spline_params(shape, k, linear, scale=2.0, seed=2)
    go = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    gl = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    kw = dict(inverse=inverse, tails=tails, left=-1.0, right=1.0, bottom=-1.0, top=1.0)
    grads = {}
    for backend in ("reference", "cpu"):
        leaves = [t.clone().requires_grad_() for t in [x] + p]
        y, l = gff.rational_quadratic_spline(*leaves, **kw, backend=backend)
        grads[backend] = torch.autograd.grad((y * go + l * gl).sum(), leaves)
    for a, b in zip(grads["reference"], grads["cpu"]):
        close(b, a, atol=2e-4, rtol=2e-4)


@needs_cpu
def test_results_do_not_depend_on_threads():
    """The CPU kernels hand out chunks of work dynamically; every element's
    result (and each item's log-determinant) is the same for any split."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(3000, 5, generator=g)
    p = spline_params((3000, 5), 8, seed=12)
    a = [torch.randn(70, 1000, generator=g) for _ in range(3)]
    before = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            res = []
            for inverse in (False, True):
                leaves = [t.clone().requires_grad_() for t in [x] + p]
                y, l = gff.rational_quadratic_spline(*leaves, inverse=inverse, tail_bound=2.0,
                                                    backend="cpu")
                res += [y, l, *torch.autograd.grad(y.sum() + l.sum(), leaves)]
                leaves = [t.clone().requires_grad_() for t in a]
                y, l = gff.affine_coupling(*leaves, "sigmoid", inverse=inverse, backend="cpu")
                res += [y, l, *torch.autograd.grad(y.sum() + l.sum(), leaves)]
            out.append(res)
    finally:
        torch.set_num_threads(before)
    for r1, r2 in zip(*out):
        assert torch.equal(r1, r2)


@needs_cpu
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_backward_broadcast_upstream(inverse):
    """The gradient of a plain .sum() arrives as one value expanded over every
    element; the kernel reads that value directly and must agree with a
    materialised gradient of the same values."""
    shape, k = (7, 19), 8
    x = 1.5 * torch.randn(shape, generator=torch.Generator().manual_seed(5))
    p = spline_params(shape, k, scale=2.0, seed=5)
    grads = []
    for materialise in (False, True):
        leaves = [t.clone().requires_grad_() for t in [x] + p]
        y, l = gff.rational_quadratic_spline(*leaves, inverse=inverse, tail_bound=2.0,
                                            backend="cpu")
        loss = (y * torch.full(shape, 0.5)).sum() + (l * torch.full(shape, -2.0)).sum() \
            if materialise else 0.5 * y.sum() - 2.0 * l.sum()
        grads.append(torch.autograd.grad(loss, leaves))
    for a, b in zip(*grads):
        close(a, b, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_gradcheck_float64(backend, tails, inverse):
    linear = tails == "linear"
    n, k = 7, 3
    # inside the domain, in both tails / outside the bounded domain
    x = torch.tensor([-0.9, -0.3, 0.05, 0.4, 0.95, -2.5, 3.0], dtype=torch.float64)
    p = spline_params((n,), k, linear, dtype=torch.float64, seed=5)
    leaves = [t.requires_grad_() for t in [x] + p]

    def f(*a):
        return gff.rational_quadratic_spline(*a, inverse=inverse, tails=tails, left=-1.0,
                                             right=1.0, bottom=-1.0, top=1.0, backend=backend)
    assert torch.autograd.gradcheck(f, leaves)


# --------------------------------------------------------------------------- safety

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tails", ["linear", None])
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_extreme_parameters_stay_finite(backend, tails, inverse):
    linear = tails == "linear"
    n, k = 64, 8
    g = torch.Generator().manual_seed(6)
    x = torch.cat([torch.linspace(-1, 1, n - 8), torch.tensor([-1e4, 1e4, -1e30, 1e30, -1, 1, 0, 1e-30])])
    p = [50.0 * torch.sign(torch.randn(n, m, generator=g)) for m in (k, k, k - 1 if linear else k + 1)]
    leaves = [t.clone().requires_grad_() for t in [x] + p]
    y, l = gff.rational_quadratic_spline(*leaves, inverse=inverse, tails=tails, left=-1.0,
                                         right=1.0, bottom=-1.0, top=1.0, backend=backend)
    assert torch.isfinite(y).all() and torch.isfinite(l).all()
    (y.sum() + l.sum()).backward()
    for t in leaves:
        assert torch.isfinite(t.grad).all()


def test_nflows_inverse_breaks_where_genfast_does_not():
    """The anchor's failure: nflows' float32 inverse goes non-finite (or asserts)
    for large parameters; ours stays finite and round-trips."""
    nf = _nflows()
    n, k = 2000, 8
    y = torch.rand(n, generator=torch.Generator().manual_seed(7)) * 2 - 1
    p = spline_params((n,), k, scale=30.0, seed=7)
    try:
        xn, _ = nf.unconstrained_rational_quadratic_spline(y, *p, inverse=True)
        nflows_ok = bool(torch.isfinite(xn).all())
    except AssertionError:
        nflows_ok = False
    x, lad = gff.rational_quadratic_spline(y, *p, inverse=True)
    assert torch.isfinite(x).all() and torch.isfinite(lad).all()
    del nflows_ok  # informative only: depends on the draw


# --------------------------------------------------------------------------- shapes and args

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (1, 1), (3, 0, 2), (2, 3, 5)])
def test_spline_shapes(backend, shape):
    k = 4
    x = torch.rand(shape) * 2 - 1
    p = spline_params(shape, k)
    y, l = gff.rational_quadratic_spline(x, *p, backend=backend)
    assert y.shape == shape and l.shape == shape
    if x.numel():
        yr, lr = ref.rq_spline(x, *p)
        close(y, yr, atol=1e-5, rtol=1e-5)


@needs_cpu
def test_spline_non_contiguous():
    k = 5
    x = torch.randn(9, 7).t()
    p = [t.transpose(0, 1) for t in spline_params((9, 7), k)]  # (7, 9, K) strided
    p = [t[:, ::1] for t in p]
    assert not x.is_contiguous() and not p[0].is_contiguous()
    a = gff.rational_quadratic_spline(x, *p, backend="cpu")
    b = gff.rational_quadratic_spline(x.contiguous(), *[t.contiguous() for t in p], backend="cpu")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("bad, match", [
    (dict(uw=torch.zeros(5, 4)), "unnormalized_widths"),
    (dict(uh=torch.zeros(4, 2)), "unnormalized_heights"),
    (dict(ud=torch.zeros(4, 4)), "unnormalized_derivatives"),
    (dict(uw=torch.zeros(4, 3, dtype=torch.float64)), "dtype"),
    (dict(x=torch.zeros(4, dtype=torch.int64)), "inputs must be float"),
    (dict(tails="quadratic"), "tails"),
    (dict(tail_bound=0.0), "tail_bound"),
    (dict(min_bin_width=0.5), "min_bin_width"),
    (dict(min_bin_height=0.0), "min_bin_height"),
    (dict(min_derivative=-1.0), "min_derivative"),
])
def test_spline_bad_arguments(bad, match):
    args = dict(x=torch.zeros(4), uw=torch.zeros(4, 3), uh=torch.zeros(4, 3), ud=torch.zeros(4, 2))
    kw = {}
    for key, v in bad.items():
        (args if key in args else kw)[key] = v
    with pytest.raises((ValueError, TypeError), match=match):
        gff.rational_quadratic_spline(args["x"], args["uw"], args["uh"], args["ud"], **kw)


def test_spline_bounded_domain_error():
    with pytest.raises(ValueError, match="left < right"):
        gff.rational_quadratic_spline(torch.zeros(2), torch.zeros(2, 3), torch.zeros(2, 3),
                                      torch.zeros(2, 4), tails=None, left=1.0, right=0.0)


# --------------------------------------------------------------------------- coupling

@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_matches_reference(backend, activation, inverse):
    shape = (6, 3, 5, 7)
    g = torch.Generator().manual_seed(8)
    x, t, u = (torch.randn(shape, generator=g) for _ in range(3))
    u = 3 * u
    for dtype, atol in ((torch.float32, 2e-5), (torch.float64, 1e-10)):
        a = [v.to(dtype) for v in (x, t, u)]
        want = gff.affine_coupling(*a, activation, 2.0, inverse, backend="reference")
        got = gff.affine_coupling(*a, activation, 2.0, inverse, backend=backend)
        assert got[1].shape == (6,)
        close(got[0], want[0], atol=atol, rtol=atol)
        close(got[1], want[1], atol=10 * atol, rtol=10 * atol)
        leaves = {}
        for be in ("reference", backend):
            ls = [v.clone().requires_grad_() for v in a]
            y, l = gff.affine_coupling(*ls, activation, 2.0, inverse, backend=be)
            w = torch.linspace(-1, 1, y.numel(), dtype=dtype).reshape(shape)
            leaves[be] = torch.autograd.grad((y * w).sum() + (l * torch.arange(6, dtype=dtype)).sum(),
                                             ls, allow_unused=True, materialize_grads=True)
        for ga, gb in zip(leaves["reference"], leaves[backend]):
            close(gb, ga, atol=atol * 10, rtol=atol * 10)


@needs_cpu
@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_backward_broadcast_upstream(activation, inverse):
    """As for the spline: y.sum()'s expanded gradient gives the same result as
    a materialised one (rows of 37 elements: vector blocks and a tail)."""
    g = torch.Generator().manual_seed(11)
    a = [torch.randn(5, 37, generator=g) for _ in range(3)]
    grads = []
    for materialise in (False, True):
        leaves = [v.clone().requires_grad_() for v in a]
        y, l = gff.affine_coupling(*leaves, activation, 2.0, inverse, backend="cpu")
        loss = (y * torch.full(y.shape, 3.0)).sum() + l.sum() if materialise \
            else 3.0 * y.sum() + l.sum()
        grads.append(torch.autograd.grad(loss, leaves, allow_unused=True,
                                         materialize_grads=True))
    for ga, gb in zip(*grads):
        close(ga, gb, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["sigmoid", "exp", "atan", "tanh", "soft_sigmoid", "glow"])
@pytest.mark.parametrize("inverse", [False, True])
def test_affine_gradcheck_float64(backend, activation, inverse):
    g = torch.Generator().manual_seed(10)
    leaves = [torch.randn(3, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3)]
    assert torch.autograd.gradcheck(
        lambda *a: gff.affine_coupling(*a, activation, 1.5, inverse, backend=backend), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
def test_additive_coupling(backend):
    x, t = torch.randn(4, 6), torch.randn(4, 6)
    y, l = gff.additive_coupling(x, t, backend=backend)
    close(y, x + t, atol=0)
    assert torch.equal(l, torch.zeros(4))
    back, l2 = gff.additive_coupling(y, t, inverse=True, backend=backend)
    close(back, x, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 3), (1,), (5,), (2, 0), (1, 70000)])
def test_affine_shapes(backend, shape):
    x, t, u = (torch.randn(shape) for _ in range(3))
    y, l = gff.affine_coupling(x, t, u, backend=backend)
    assert y.shape == shape and l.shape == shape[:1]
    yr, lr = ref.affine_coupling(x, t, u)
    close(y, yr, atol=1e-5, rtol=1e-5)
    close(l, lr, atol=1e-5 * max(1, x[0].numel() if x.numel() else 1) ** 0.5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_affine_extreme_stays_finite(backend):
    """Extreme raw scales stay finite where the true result is representable:
    +-1e4 for the bounded activations, +-50 for Glow (exp's scale e^u and Glow's
    inverse 1/sigmoid(u + 2) leave float32 beyond that: that is the math)."""
    x = torch.tensor([[1e4, -1e4, 0.0, 1.0]])
    for act in ("sigmoid", "atan", "tanh", "soft_sigmoid", "glow"):
        big = 50.0 if act == "glow" else 1e4
        u = torch.tensor([[50.0, -50.0, big, -big]])
        for inverse in (False, True):
            leaves = [v.clone().requires_grad_() for v in (x, x.clone(), u)]
            y, l = gff.affine_coupling(*leaves, act, 2.0, inverse, backend=backend)
            (y.sum() + l.sum()).backward()
            for v in [y, l] + [t.grad for t in leaves]:
                assert torch.isfinite(v).all(), (act, inverse)


def test_affine_bad_arguments():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="activation"):
        gff.affine_coupling(x, x, x, "softplus")
    with pytest.raises(ValueError, match="shift"):
        gff.affine_coupling(x, torch.zeros(2, 4), x)
    with pytest.raises(ValueError, match="unconstrained_scale"):
        gff.affine_coupling(x, x, torch.zeros(3, 3))
    with pytest.raises(TypeError, match="shift"):
        gff.affine_coupling(x, x.double(), x)
    with pytest.raises(ValueError, match="batch"):
        gff.affine_coupling(torch.zeros(()), torch.zeros(()), torch.zeros(()))


# --------------------------------------------------------------------------- opcheck

def _noncontig(t):
    """The same values in a transposed (non-contiguous) layout."""
    if t.dim() < 2:
        return t.repeat(2)[::2]
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def _rq_args(linear, inverse, k=3, shape=(4, 5), dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype)
    p = spline_params(shape, k, linear, dtype=dtype)
    return (x, *p, inverse, linear, -1.0, 1.0, -1.0, 1.0, 1e-3, 1e-3, 1e-3)


@needs_cpu
@pytest.mark.parametrize("layout", ["contiguous", "non-contiguous"])
@pytest.mark.parametrize("linear,inverse", [(True, False), (False, True)])
def test_opcheck_rq_spline(layout, linear, inverse):
    args = list(_rq_args(linear, inverse))
    if layout == "non-contiguous":
        args[:4] = [_noncontig(t) for t in args[:4]]
        assert not args[0].is_contiguous()
    args[0].requires_grad_()
    torch.library.opcheck(torch.ops.genfast.rq_spline.default, tuple(args))
    g = (torch.randn(4, 5), torch.randn(4, 5))
    if layout == "non-contiguous":
        g = tuple(_noncontig(t) for t in g)
    torch.library.opcheck(torch.ops.genfast.rq_spline_backward.default,
                          g + tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args))


@needs_cpu
@pytest.mark.parametrize("layout", ["contiguous", "non-contiguous"])
def test_opcheck_affine_coupling(layout):
    x, t, u = (torch.randn(4, 6) for _ in range(3))
    gy, gl = torch.randn(4, 6), torch.randn(4)
    if layout == "non-contiguous":
        x, t, u, gy = (_noncontig(v) for v in (x, t, u, gy))
    for act in (1, 6):
        torch.library.opcheck(torch.ops.genfast.affine_coupling.default,
                              (x.requires_grad_(), t, u, act, 2.0, False))
        torch.library.opcheck(torch.ops.genfast.affine_coupling_backward.default,
                              (gy, gl, x.detach(), t, u, act, 2.0, True))


def test_wrapper_reads_no_values():
    """No host sync: meta tensors (no data) go through the reference path."""
    k = 4
    x = torch.empty(3, 5, device="meta")
    p = [torch.empty(3, 5, n, device="meta") for n in (k, k, k - 1)]
    y, l = gff.rational_quadratic_spline(x, *p, backend="reference")
    assert y.shape == (3, 5)
    y, l = gff.rational_quadratic_spline(x, *p, inverse=True, backend="reference")
    assert math.prod(l.shape) == 15
