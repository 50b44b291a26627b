"""Flow layers (genfast/flows/), the nflows drop-ins (genfast.nflows), property
tests of the ops (hypothesis) and torch.compile of a small flow.

Tolerances: drop-ins vs nflows 1e-5 (outputs) / 1e-4 (logabsdet, summed over
features); round trips in float32 1e-4 inside the bound, float64 1e-9;
logabsdet vs log|det J| from autograd 1e-4 (float32) / 1e-8 (float64).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import genfast.flows as gff

torch.manual_seed(0)


def _jacobian_logdet(f, x):
    """log|det J| of f at every item of x (B, D), from autograd."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0][0], xi)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


# --------------------------------------------------------------------------- properties

@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 12), n=st.integers(1, 6), seed=st.integers(0, 2**16),
       scale=st.floats(0.1, 4.0), bounded=st.booleans(), dtype=st.sampled_from(["f32", "f64"]))
def test_spline_round_trip(k, n, seed, scale, bounded, dtype):
    dt = torch.float32 if dtype == "f32" else torch.float64
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, generator=g, dtype=dt) * 2 - 1) * 0.999
    p = [scale * torch.randn(n, m, generator=g, dtype=dt) for m in (k, k, k + 1 if bounded else k - 1)]
    kw = dict(tails=None if bounded else "linear", left=-1.0, right=1.0, bottom=-1.0, top=1.0)
    y, lad = gff.rational_quadratic_spline(x, *p, **kw)
    back, lad_inv = gff.rational_quadratic_spline(y, *p, inverse=True, **kw)
    # y carries float rounding; the inverse multiplies it by dx/dy = exp(-lad),
    # so where the spline is nearly flat no float32 inverse can do better
    tol = 1e-4 if dt == torch.float32 else 1e-9
    eps = torch.finfo(dt).eps
    allowed = tol + 4 * eps * torch.exp(-lad.double()).to(dt)
    assert ((back - x).abs() <= allowed).all(), (back - x, allowed)
    ok = lad > -5  # logabsdet of steep inverses is as ill-conditioned
    torch.testing.assert_close(lad_inv[ok], -lad[ok], atol=20 * tol, rtol=20 * tol)


@settings(max_examples=15, deadline=None)
@given(k=st.integers(1, 8), seed=st.integers(0, 2**16), inverse=st.booleans())
def test_spline_lad_is_log_jacobian(k, seed, inverse):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, generator=g, dtype=torch.float64) * 1.5
    p = [torch.randn(5, m, generator=g, dtype=torch.float64) for m in (k, k, k - 1)]
    x.requires_grad_()
    y, lad = gff.rational_quadratic_spline(x, *p, inverse=inverse)
    (dy,) = torch.autograd.grad(y.sum(), x)  # elementwise map: the Jacobian is diagonal
    torch.testing.assert_close(lad.detach(), torch.log(dy.abs()), atol=1e-8, rtol=1e-8)


# --------------------------------------------------------------------------- modules

def _layers(dim):
    mask = torch.arange(dim) % 2
    return [
        gff.AffineCoupling(mask, gff.simple_net(16)),
        gff.AffineCoupling(1 - mask, gff.simple_net(16), activation="atan"),
        gff.AdditiveCoupling(mask, gff.simple_net(16)),
        gff.RQSplineCoupling(1 - mask, gff.simple_net(16), num_bins=5, tails="linear",
                             tail_bound=3.0),
        gff.ActNorm(dim),
        gff.InvertibleConv1x1(dim, seed=1),
    ]


def _randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flow_round_trip_and_logdet(dtype):
    dim = 4
    flow = gff.Sequential(*_layers(dim)).to(dtype)
    x = torch.randn(6, dim, dtype=dtype)
    flow(x)  # ActNorm's data-dependent init
    _randomise(flow)
    y, lad = flow(x)
    back, lad_inv = flow.inverse(y)
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(back, x, atol=tol, rtol=tol)
    torch.testing.assert_close(lad_inv, -lad, atol=tol * 10, rtol=tol * 10)
    if dtype == torch.float64:
        torch.testing.assert_close(lad, _jacobian_logdet(flow, x), atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("layer", ["affine", "spline", "additive"])
def test_image_couplings(layer):
    c, h, w = 2, 4, 6

    def conv_net(i, o):
        net = torch.nn.Conv2d(i, o, 3, padding=1)
        net.hidden_channels = 8
        return net

    mk = {"affine": lambda **kw: gff.AffineCoupling(activation="glow", **kw),
          "spline": lambda **kw: gff.RQSplineCoupling(num_bins=4, tails="linear", **kw),
          "additive": lambda **kw: gff.AdditiveCoupling(**kw)}[layer]
    for kw in (dict(mask=[1, 0]), dict(mask=None, checkerboard=True, image_shape=(c, h, w))):
        mod = mk(transform_net_create_fn=conv_net, **kw)
        x = torch.randn(3, c, h, w)
        y, lad = mod(x)
        assert y.shape == x.shape and lad.shape == (3,)
        back, lad_inv = mod.inverse(y)
        torch.testing.assert_close(back, x, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lad_inv, -lad, atol=1e-4, rtol=1e-4)
        if kw.get("checkerboard"):  # conditioning positions pass through unchanged
            board = gff.checkerboard_mask(h, w).bool()
            assert torch.equal(y[:, :, board], x[:, :, board])


def test_actnorm_initialises_from_data():
    norm = gff.ActNorm(3)
    x = 5 + 2 * torch.randn(256, 3, 4, 4)
    y, lad = norm(x)
    assert abs(y.mean().item()) < 1e-4 and abs(y.std().item() - 1) < 1e-2
    torch.testing.assert_close(lad, torch.full((256,), 16 * norm.log_scale.sum().item()))


def test_invertible_conv_logdet():
    conv = gff.InvertibleConv1x1(3, seed=0).double()
    _randomise(conv)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    _, lad = conv(x)
    want = 25 * torch.linalg.slogdet(conv.weight())[1]
    torch.testing.assert_close(lad, want.expand(2))
    back, _ = conv.inverse(conv(x)[0])
    torch.testing.assert_close(back, x)


def test_module_bad_inputs():
    mod = gff.AffineCoupling([1, 0, 1], gff.simple_net(4))
    with pytest.raises(ValueError, match="shape"):
        mod(torch.randn(2, 4))
    with pytest.raises(ValueError, match="mask"):
        gff.AffineCoupling([1, 1], gff.simple_net(4))
    with pytest.raises(ValueError, match="activation"):
        gff.AffineCoupling([1, 0], gff.simple_net(4), activation="relu")


# --------------------------------------------------------------------------- nflows drop-ins

def _pair(cls_name, **kw):
    nflows = pytest.importorskip("nflows")  # noqa: F841
    import genfast.nflows as gnf
    from nflows.nn import nets
    from nflows.transforms import coupling

    def make(i, o):
        return nets.ResidualNet(i, o, hidden_features=16, num_blocks=1)
    mask = torch.tensor([1, 0, 1, 0, 1])
    torch.manual_seed(1)
    theirs = getattr(coupling, cls_name)(mask, make, **kw)
    ours = getattr(gnf, cls_name)(mask, make, **kw)
    ours.load_state_dict(theirs.state_dict())
    _randomise(theirs)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


@pytest.mark.parametrize("cls_name,kw", [
    ("PiecewiseRationalQuadraticCouplingTransform", dict(num_bins=6, tails="linear", tail_bound=2.0)),
    ("PiecewiseRationalQuadraticCouplingTransform", dict(num_bins=4)),
    ("AffineCouplingTransform", {}),
    ("AdditiveCouplingTransform", {}),
])
def test_nflows_drop_in_matches(cls_name, kw):
    theirs, ours = _pair(cls_name, **kw)
    x = torch.randn(32, 5) if kw.get("tails") else torch.rand(32, 5)
    for direction in ("forward", "inverse"):
        a = getattr(theirs, direction)(x)
        b = getattr(ours, direction)(x)
        torch.testing.assert_close(b[0], a[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b[1], a[1], atol=1e-4, rtol=1e-4)
    # gradients flow to the network through the fused backward
    ours(x)[1].sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ours.parameters())


def test_nflows_functional_drop_ins():
    pytest.importorskip("nflows")
    import genfast.nflows as gnf
    from nflows.transforms.splines import rational_quadratic as nf
    x = torch.randn(50)
    p = [torch.randn(50, m) for m in (5, 5, 4)]
    for inverse in (False, True):
        a = nf.unconstrained_rational_quadratic_spline(x, *p, inverse=inverse)
        b = gnf.unconstrained_rational_quadratic_spline(x, *p, inverse=inverse)
        torch.testing.assert_close(b[0], a[0], atol=1e-5, rtol=1e-5)
    xb = torch.rand(50)
    pb = p[:2] + [torch.randn(50, 6)]
    a = nf.rational_quadratic_spline(xb, *pb)
    b = gnf.rational_quadratic_spline(xb, *pb)
    torch.testing.assert_close(b[1], a[1], atol=1e-4, rtol=1e-4)


# --------------------------------------------------------------------------- torch.compile

def test_compile_small_flow_fullgraph():
    """A flow of every layer compiles with fullgraph=True (no graph breaks, no
    host syncs) and matches eager; backward runs through the fused ops.
    backend="aot_eager": dynamo's full-graph capture, the fake kernels and the
    autograd registrations are what is tested; inductor's code generation
    would add minutes on this 2-core machine and nothing about genfast."""
    torch._dynamo.reset()
    dim = 4
    flow = gff.Sequential(*_layers(dim))
    x = torch.randn(8, dim)
    flow(x)  # ActNorm init happens eagerly, before compiling
    compiled = torch.compile(flow, fullgraph=True, backend="aot_eager")
    y, lad = compiled(x)
    y_e, lad_e = flow(x)
    torch.testing.assert_close(y, y_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lad, lad_e, atol=1e-5, rtol=1e-5)
    (y.sum() + lad.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in flow.parameters() if p.grad is not None)
