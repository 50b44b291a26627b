"""The noise stream (shared/reference/noise-stream.md) on every backend.

Reference: genfast/reference/noise.py. Kernels: csrc/include/genfast/noise.h,
csrc/cpu/noise.cpp, csrc/cuda/noise.cu, genfast/triton/noise.py (whose own
interpreter tests are in test_noise_triton.py).
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from hypothesis import given, settings, strategies as st

import genfast
from genfast.reference import noise as ref
from conftest import available_backends

KAT = [  # Random123 known answers: counter, key -> words
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
BACKENDS = [b for b in ("reference", "cpu", "cuda", "triton") if b in available_backends()]
FAST = [b for b in BACKENDS if b != "reference"]
needs_cpu = pytest.mark.skipif("cpu" not in BACKENDS, reason="cpu backend not built")


def device_for(backend):
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def as_i32(words):
    return [w - (1 << 32) if w >= (1 << 31) else w for w in words]


# ------------------------------------------------------------------ Philox
@pytest.mark.parametrize("counter,key,expected", KAT)
def test_kat_reference_ints(counter, key, expected):
    assert ref.philox4x32_10_int(counter, key) == expected


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("counter,key,expected", KAT)
def test_kat_backends(backend, counter, key, expected):
    c = torch.tensor([as_i32(counter)], dtype=torch.int32, device=device_for(backend))
    words = genfast.philox(c, key[0] | (key[1] << 32), backend=backend)
    assert words.cpu().tolist() == [as_i32(expected)]


@needs_cpu
@pytest.mark.parametrize("n", [1, 63, 64, 65, 1000])
def test_philox_every_isa_matches_reference(isa_levels, n):
    g = torch.Generator().manual_seed(n)
    c = torch.randint(-(2**31), 2**31, (n, 4), dtype=torch.int32, generator=g)
    seed = 0xFEEDFACE_12345678
    want = ref.philox(c, seed)
    for isa in genfast.info()["cpu"]["isas"]:
        isa_levels(isa)
        torch.testing.assert_close(genfast.philox(c, seed, backend="cpu"), want, rtol=0, atol=0,
                                   msg=lambda m: f"ISA {isa}: {m}")


# ------------------------------------------------------------------ values
SHAPES = [(), (1,), (3,), (7,), (8,), (3, 5), (2, 3, 5), (1, 1, 1), (5, 2), (4, 17), (0,),
          (0, 3), (3, 0), (2, 0, 4)]
SEEDS = [0, 1, 2**32 + 5, 2**64 - 1]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("seed", SEEDS)
def test_same_normals_as_reference(backend, shape, seed):
    kw = dict(seed=seed, stream=3, sample_offset=11)
    got = genfast.randn(shape, backend=backend, device=device_for(backend), **kw)
    want = ref.randn(shape, **kw)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-5)


@needs_cpu
def test_large_tensor_within_spec_bound():
    """Spec: |diff| <= 1e-5 against the reference for every value drawn."""
    got = genfast.randn((4, 300_001), seed=123, stream=9, backend="cpu")
    want = ref.randn((4, 300_001), seed=123, stream=9)
    assert (got - want).abs().max().item() <= 1e-5
    assert torch.isfinite(got).all()


@needs_cpu
def test_isa_levels_bit_identical(isa_levels):
    # Our own polynomials and no FMA contraction: every ISA gives the same bits.
    shape = (3, 4099)
    outs = {}
    for isa in genfast.info()["cpu"]["isas"]:
        isa_levels(isa)
        outs[isa] = genfast.randn(shape, seed=77, stream=1, backend="cpu")
    base = outs["baseline"]
    for isa, out in outs.items():
        assert torch.equal(out, base), isa


@needs_cpu
@pytest.mark.parametrize("shape", [(1 << 20,), (16, 4097), (3, 5)], ids=str)
def test_independent_of_thread_count(restore_threads, shape):
    torch.set_num_threads(1)
    one = genfast.randn(shape, seed=5, backend="cpu")
    torch.set_num_threads(2)
    two = genfast.randn(shape, seed=5, backend="cpu")
    assert torch.equal(one, two)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("item_shape", [(6,), (3, 3), (1,), (13,)], ids=str)
def test_batch_split(backend, item_shape):
    dev = device_for(backend)
    batch = genfast.randn((8, *item_shape), seed=42, stream=2, sample_offset=100, backend=backend,
                          device=dev)
    for b in range(8):
        one = genfast.randn((1, *item_shape), seed=42, stream=2, sample_offset=100 + b,
                            backend=backend, device=dev)
        assert torch.equal(batch[b:b + 1], one), b


@needs_cpu
@settings(max_examples=40, deadline=None)
@given(items=st.integers(1, 9), numel=st.integers(1, 70), split=st.integers(0, 9),
       seed=st.integers(0, 2**64 - 1), stream=st.integers(0, 2**32 - 1),
       offset=st.integers(0, 1000))
def test_batch_split_property(items, numel, split, seed, stream, offset):
    split = min(split, items)
    kw = dict(seed=seed, stream=stream, backend="cpu")
    whole = genfast.randn((items, numel), sample_offset=offset, **kw)
    head = genfast.randn((split, numel), sample_offset=offset, **kw)
    tail = genfast.randn((items - split, numel), sample_offset=offset + split, **kw)
    assert torch.equal(torch.cat([head, tail]), whole)
    # and a 1-d draw is item `offset`
    assert torch.equal(genfast.randn((numel,), sample_offset=offset, **kw), whole[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_element_order_is_logical_not_memory(backend):
    dev = device_for(backend)
    want = genfast.randn((4, 6), seed=9, backend=backend, device=dev)
    buf = torch.empty(6, 4, device=dev).t()  # non-contiguous (4, 6)
    got = genfast.randn((4, 6), seed=9, backend=backend, out=buf)
    assert got is buf
    assert torch.equal(buf, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_rounded_float32(backend, dtype):
    dev = device_for(backend)
    f32 = genfast.randn((5, 333), seed=3, backend=backend, device=dev)
    low = genfast.randn((5, 333), seed=3, dtype=dtype, backend=backend, device=dev)
    assert low.dtype == dtype
    if backend == "triton" and dtype == torch.bfloat16 and not torch.cuda.is_available():
        # the interpreter truncates float32 -> bf16 instead of rounding to nearest
        diff = (low.float() - f32.to(dtype).float()).abs()
        assert (diff <= f32.abs() * 2**-7 + 1e-30).all()
    else:
        assert torch.equal(low, f32.to(dtype))  # both round to nearest even


@needs_cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_rounding_at_scale(dtype):
    # A million values include fp16 subnormals (|n| < 2**-14) and ties.
    f32 = genfast.randn((1 << 20,), seed=11, backend="cpu")
    assert (f32.abs() < 2**-14).any()
    assert torch.equal(genfast.randn((1 << 20,), seed=11, dtype=dtype, backend="cpu"), f32.to(dtype))


@needs_cpu
def test_out_reuses_buffer_without_allocating():
    out = torch.empty(2, 1000)
    ptr = out.data_ptr()
    got = genfast.randn((2, 1000), seed=1, out=out, backend="cpu")
    assert got is out and out.data_ptr() == ptr
    assert torch.equal(out, genfast.randn((2, 1000), seed=1, backend="cpu"))


# ------------------------------------------------------------------ statistics
@needs_cpu
@pytest.mark.parametrize("seed", [0, 12345, 2**63 + 1])
def test_distribution(seed):
    x = genfast.randn((1 << 20,), seed=seed, backend="cpu").double()
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(scipy.stats.skew(x.numpy())) < 0.02
    assert abs(scipy.stats.kurtosis(x.numpy())) < 0.04
    assert scipy.stats.kstest(x.numpy(), "norm").pvalue > 1e-4
    assert x.abs().max().item() < math.sqrt(-2 * math.log(1e-7)) + 1e-4


@needs_cpu
def test_no_correlation_between_neighbours():
    n = 1 << 16
    bound = 5 / math.sqrt(n)
    base = genfast.randn((2, n), seed=7, stream=10, backend="cpu").double()
    other_stream = genfast.randn((2, n), seed=7, stream=11, backend="cpu").double()
    other_seed = genfast.randn((2, n), seed=8, stream=10, backend="cpu").double()

    def corr(a, b):
        return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])

    assert abs(corr(base[0], base[1])) < bound  # neighbouring samples
    assert abs(corr(base[0], other_stream[0])) < bound  # neighbouring streams
    assert abs(corr(base[0], other_seed[0])) < bound  # neighbouring seeds
    for lag in (1, 2, 3, 4):  # neighbouring elements, within and across Philox calls
        assert abs(corr(base[0, :-lag], base[0, lag:])) < bound, lag
    # the two halves of a Box-Muller pair are uncorrelated in square too
    assert abs(corr(base[0, 0::2] ** 2, base[0, 1::2] ** 2)) < bound * 1.5


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "1", None, True, torch.tensor(1)])
def test_bad_seed(seed):
    with pytest.raises((TypeError, ValueError), match="seed"):
        genfast.randn((3,), seed=seed)


@pytest.mark.parametrize("kw,match", [
    (dict(stream=-1), "stream"), (dict(stream=2**32), "stream"), (dict(stream=0.5), "stream"),
    (dict(sample_offset=-3), "sample_offset"), (dict(sample_offset=2**32), "sample_offset"),
    (dict(shape=(2**31, 1), sample_offset=2**31 + 1), "sample_offset"),
    (dict(shape=(-1, 3)), r"shape\[0\]"), (dict(shape=(2, 2.5)), r"shape\[1\]"),
    (dict(shape="abc"), "shape"), (dict(dtype=torch.float64), "dtype"),
    (dict(dtype=torch.int32), "dtype"), (dict(backend="gpu"), "backend"),
])
def test_bad_arguments(kw, match):
    args = dict(shape=(2, 3), seed=0)
    args.update(kw)
    shape = args.pop("shape")
    with pytest.raises((TypeError, ValueError), match=match):
        genfast.randn(shape, **args)


def test_bad_out():
    with pytest.raises(ValueError, match="out has shape"):
        genfast.randn((2, 3), seed=0, out=torch.empty(3, 2))
    with pytest.raises(TypeError, match="out.dtype"):
        genfast.randn((2, 3), seed=0, out=torch.empty(2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        genfast.randn((2, 3), seed=0, dtype=torch.float16, out=torch.empty(2, 3))


def test_bad_counter():
    with pytest.raises(TypeError, match="counter"):
        genfast.philox(torch.zeros(2, 4, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="counter"):
        genfast.philox(torch.zeros(2, 3, dtype=torch.int32), 0)


@needs_cpu
def test_op_checks_arguments_itself():
    """Called directly (bypassing the wrapper), the op still refuses bad input."""
    with pytest.raises(RuntimeError, match="stream"):
        torch.ops.genfast.noise_normal(torch.empty(4), 0, -1, 0)
    with pytest.raises(RuntimeError, match="float32, float16 or bfloat16"):
        torch.ops.genfast.noise_normal(torch.empty(4, dtype=torch.float64), 0, 0, 0)
    with pytest.raises(RuntimeError, match="sample_offset"):
        torch.ops.genfast.noise_normal(torch.empty(4, 2), 0, 0, 2**32 - 2)
    with pytest.raises(RuntimeError, match="int32"):
        torch.ops.genfast.noise_philox(torch.zeros(1, 4, dtype=torch.int64), 0)


# ------------------------------------------------------------------ registration
@needs_cpu
@pytest.mark.parametrize("shape", [(3, 5), (7,), (0, 2)], ids=str)
def test_opcheck_noise_normal(shape):
    torch.library.opcheck(torch.ops.genfast.noise_normal.default,
                          (torch.empty(shape), 2**63 - 7, 4, 9))


@needs_cpu
def test_opcheck_noise_philox():
    c = torch.randint(-(2**31), 2**31, (5, 4), dtype=torch.int32)
    torch.library.opcheck(torch.ops.genfast.noise_philox.default, (c, -5))


@needs_cpu
def test_opcheck_noncontiguous_inputs():
    # Fake kernels must describe what the kernels return: noise_philox hands
    # back a fresh contiguous tensor whatever the counter's layout.
    c = torch.randint(-(2**31), 2**31, (4, 5), dtype=torch.int32).t()  # (5, 4), strided
    assert not c.is_contiguous()
    torch.library.opcheck(torch.ops.genfast.noise_philox.default, (c, 3))
    sliced = torch.randint(-(2**31), 2**31, (6, 8), dtype=torch.int32)[:, ::2]
    torch.library.opcheck(torch.ops.genfast.noise_philox.default, (sliced, 3))
    out = torch.empty(5, 3).t()
    torch.library.opcheck(torch.ops.genfast.noise_normal.default, (out, 1, 2, 3))
    torch.library.opcheck(torch.ops.genfast.noise_normal.default, (torch.empty(4, 6)[:, 1:5], 1, 2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [1, 2, 3])
def test_philox_counter_view_at_any_alignment(backend, offset):
    """A contiguous counter view that starts at an odd word: the CUDA kernel
    must not use 16-byte loads on it (misaligned address)."""
    flat = torch.randint(-(2**31), 2**31, (4 * 9 + offset,), dtype=torch.int32)
    view = flat.to(device_for(backend))[offset:].view(9, 4)
    assert view.is_contiguous() and view.storage_offset() == offset
    got = genfast.philox(view, 0xABCDEF, backend=backend)
    torch.testing.assert_close(got.cpu(), ref.philox(view.cpu(), 0xABCDEF), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1 << 20, 1 << 20), (1 << 40,), (1 << 22, 1 << 22, 1 << 10)])
def test_over_large_shape_is_refused_before_allocating(shape):
    import time

    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"shape"):
        genfast.randn(shape, seed=0)
    assert time.perf_counter() - t0 < 1.0  # refused, not attempted


def test_allocation_failure_names_the_shape(monkeypatch):
    def fail(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")
    monkeypatch.setattr(torch, "empty", fail)
    with pytest.raises(MemoryError, match=r"shape \(3, 4\)"):
        genfast.randn((3, 4), seed=0)


@needs_cpu
def test_torch_compile_fullgraph():
    def step(x, stream: int):
        return x + 0.5 * genfast.randn(x.shape, seed=2024, stream=stream, backend="cpu")

    x = torch.randn(4, 33)
    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x, 3), step(x, 3), rtol=0, atol=0)
    torch.testing.assert_close(compiled(x, 4), step(x, 4), rtol=0, atol=0)


@needs_cpu
def test_torch_compile_out_variant():
    def fill(buf):
        return genfast.randn(buf.shape, seed=1, out=buf, backend="cpu") * 2

    buf = torch.empty(3, 8)
    got = torch.compile(fill, fullgraph=True)(buf)
    torch.testing.assert_close(got, 2 * genfast.randn((3, 8), seed=1, backend="cpu"))


# ------------------------------------------------------------------ GPU only
needs_cuda = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs a GPU and the CUDA build")


@needs_cuda
def test_cuda_bit_identical_to_cpu():
    # Same header math, no FMA contraction on either side: the same bits.
    if "cpu" not in BACKENDS:
        pytest.skip("cpu backend not built")
    for shape in [(3, 4099), (7,), (2, 3, 5)]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            gpu = genfast.randn(shape, seed=99, stream=4, dtype=dtype, backend="cuda", device="cuda")
            cpu = genfast.randn(shape, seed=99, stream=4, dtype=dtype, backend="cpu")
            assert torch.equal(gpu.cpu(), cpu), (shape, dtype)


@needs_cuda
@pytest.mark.parametrize("shape", [(3, 5), (7,), (0, 2)], ids=str)
def test_opcheck_cuda(shape):
    torch.library.opcheck(torch.ops.genfast.noise_normal.default,
                          (torch.empty(shape, device="cuda"), 12345, 4, 9))
    c = torch.randint(-(2**31), 2**31, (5, 4), dtype=torch.int32, device="cuda")
    torch.library.opcheck(torch.ops.genfast.noise_philox.default, (c, -5))


@needs_cuda
def test_cuda_graph_capture_and_replay():
    buf = torch.empty(4, 1000, device="cuda")
    genfast.randn(buf.shape, seed=3, stream=1, out=buf, backend="cuda")  # warm up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        genfast.randn(buf.shape, seed=3, stream=1, out=buf, backend="cuda")
    buf.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(buf, genfast.randn((4, 1000), seed=3, stream=1, backend="cuda", device="cuda"))


@needs_cuda
def test_torch_compile_cuda():
    def step(x, stream: int):
        return x + genfast.randn(x.shape, seed=7, stream=stream, device=x.device, backend="cuda")

    x = torch.randn(8, 77, device="cuda")
    compiled = torch.compile(step, fullgraph=True)
    for s in (0, 1, 2):
        torch.testing.assert_close(compiled(x, s), step(x, s), rtol=0, atol=0)


def test_opcheck_noise_normal_reference():
    torch.library.opcheck(torch.ops.genfast.noise_normal_reference.default,
                          (torch.empty(3, 5), -7, 4, 9))


def test_torch_compile_reference_backend():
    """The reference is an opaque op under compile: it compiles in seconds and
    gives the eager numbers."""
    def step(x, stream: int):
        return x + genfast.randn(x.shape, seed=2**64 - 3, stream=stream, backend="reference")

    x = torch.randn(3, 20)
    compiled = torch.compile(step, fullgraph=True)
    for s in (0, 1):
        torch.testing.assert_close(compiled(x, s), step(x, s), rtol=0, atol=0)
    want = x + ref.randn((3, 20), 2**64 - 3, 1)
    torch.testing.assert_close(step(x, 1), want, rtol=0, atol=0)
