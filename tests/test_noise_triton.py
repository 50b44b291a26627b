"""The Triton noise kernels (genfast/triton/noise.py) against the reference.

Without a GPU the kernels run on Triton's CPU interpreter (TRITON_INTERPRET=1,
set below before triton is imported): slow, so every shape here is small.
The interpreter cannot trace a triton_op's fake kernel, so opcheck and
torch.compile run only where CUDA is available (shared/reference/practice.md).
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must happen before triton (or genfast.triton) is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip("triton")

import genfast  # noqa: E402
from genfast import backend as gf_backend  # noqa: E402
from genfast.reference import noise as ref_noise  # noqa: E402

_ok, _why = gf_backend.availability()["triton"]
if not _ok:
    pytest.skip(f"triton backend unavailable: {_why}", allow_module_level=True)

from genfast.triton import noise as tri_noise  # noqa: E402  (registers the ops)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="opcheck / torch.compile of triton ops cannot run under the CPU interpreter")

SEEDS = [0, 1, 2**32 + 5, 2**64 - 1]
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 3), (0, 4), (4, 0), (1, 3, 5), (4, 1)]
# One ulp at 1.0 of the output dtype, relative; atol covers values near 0 and
# the float32 difference that can move a value across a rounding boundary.
# (The interpreter converts float32 -> bfloat16 by truncation, not
# round-to-nearest, so bf16 results may sit one ulp below torch's cast.)
LOW_TOL = {
    torch.float16: dict(rtol=torch.finfo(torch.float16).eps, atol=1e-5),
    torch.bfloat16: dict(rtol=torch.finfo(torch.bfloat16).eps, atol=1e-5),
}


def _u32(x: int) -> int:
    """uint32 bit pattern as the int32 value a counter tensor holds."""
    return x - 2**32 if x >= 2**31 else x


def _tri(shape, **kw):
    return genfast.randn(shape, backend="triton", device=DEVICE, **kw)


def _ref(shape, **kw):
    return genfast.randn(shape, backend="reference", device=DEVICE, **kw)


# --------------------------------------------------------------------------- Philox

KAT = [  # Random123 known answers: counter, key (k0, k1), output words
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    seed = key[0] | (key[1] << 32)
    ctr = torch.tensor([[_u32(c) for c in counter]], dtype=torch.int32, device=DEVICE)
    words = genfast.philox(ctr, seed, backend="triton")
    assert words.dtype == torch.int32 and words.shape == (1, 4)
    got = tuple(w & 0xFFFFFFFF for w in words[0].tolist())
    assert got == expected, " ".join(f"{w:08x}" for w in got)


@pytest.mark.parametrize("seed", SEEDS + [0x80000000_00000001])
def test_philox_matches_reference(seed):
    g = torch.Generator().manual_seed(seed & 0xFFFF)
    ctr = torch.randint(-2**31, 2**31, (2, 3, 4), dtype=torch.int32, generator=g)
    got = genfast.philox(ctr.to(DEVICE), seed, backend="triton").cpu()
    torch.testing.assert_close(got, ref_noise.philox(ctr, seed), rtol=0, atol=0)


def test_philox_noncontiguous_and_empty_counter():
    g = torch.Generator().manual_seed(3)
    big = torch.randint(-2**31, 2**31, (4, 5, 8), dtype=torch.int32, generator=g)
    ctr = big[:, :, ::2]  # (4, 5, 4), strided last dim
    assert not ctr.is_contiguous()
    got = genfast.philox(ctr.to(DEVICE), 99, backend="triton").cpu()
    torch.testing.assert_close(got, ref_noise.philox(ctr, 99), rtol=0, atol=0)
    empty = torch.empty(0, 4, dtype=torch.int32, device=DEVICE)
    assert genfast.philox(empty, 5, backend="triton").shape == (0, 4)


# --------------------------------------------------------------------------- normals

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_randn_matches_reference(shape, seed):
    got = _tri(shape, seed=seed)
    assert got.shape == shape and got.dtype == torch.float32
    torch.testing.assert_close(got, _ref(shape, seed=seed), rtol=0, atol=1e-5)


@pytest.mark.parametrize("stream,sample_offset", [(1, 0), (0, 1), (7, 123), (2**32 - 1, 2**32 - 3),
                                                   (2**31, 2**31)])
def test_randn_stream_and_sample_offset(stream, sample_offset):
    kw = dict(seed=2**32 + 5, stream=stream, sample_offset=sample_offset)
    torch.testing.assert_close(_tri((3, 5), **kw), _ref((3, 5), **kw), rtol=0, atol=1e-5)
    # A different stream is different noise.
    other = _tri((3, 5), seed=2**32 + 5, stream=stream ^ 1, sample_offset=sample_offset)
    assert not torch.equal(other, _tri((3, 5), **kw))


def test_randn_several_programs():
    # More quads than one interpreter program (4096) or GPU program (256) covers.
    shape = (5, 4001)
    kw = dict(seed=12345, stream=2, sample_offset=9)
    torch.testing.assert_close(_tri(shape, **kw), _ref(shape, **kw), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 3)], ids=str)
def test_randn_low_precision(shape, dtype):
    got = _tri(shape, seed=2**64 - 1, stream=4, sample_offset=2, dtype=dtype)
    assert got.dtype == dtype
    want = _ref(shape, seed=2**64 - 1, stream=4, sample_offset=2).to(dtype)
    torch.testing.assert_close(got, want, **LOW_TOL[dtype])


def test_batch_split():
    kw = dict(seed=2**32 + 5, stream=3)
    whole = _tri((8, 3, 5), sample_offset=0, **kw)
    parts = torch.cat([_tri((1, 3, 5), sample_offset=b, **kw) for b in range(8)])
    torch.testing.assert_close(whole, parts, rtol=0, atol=0)
    # A split that does not start at 0, as on another rank.
    torch.testing.assert_close(whole[5:], _tri((3, 3, 5), sample_offset=5, **kw), rtol=0, atol=0)


def test_deterministic():
    a = _tri((2, 3, 3), seed=1, stream=1, sample_offset=1)
    b = _tri((2, 3, 3), seed=1, stream=1, sample_offset=1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_noncontiguous_out(dtype):
    buf = torch.full((5, 3), float("nan"), dtype=dtype, device=DEVICE)
    out = buf.t()  # (3, 5), transposed
    assert not out.is_contiguous()
    res = genfast.randn((3, 5), seed=7, stream=1, sample_offset=4, out=out, backend="triton")
    assert res is out
    want = _ref((3, 5), seed=7, stream=1, sample_offset=4).to(dtype)
    tol = dict(rtol=0, atol=1e-5) if dtype == torch.float32 else LOW_TOL[dtype]
    torch.testing.assert_close(out, want, **tol)  # logical (row-major) element order


def test_noncontiguous_out_3d_and_offset_view():
    out = torch.empty(3, 4, 2, device=DEVICE).permute(2, 0, 1)  # (2, 3, 4), batch dim strided
    genfast.randn((2, 3, 4), seed=11, out=out, backend="triton")
    torch.testing.assert_close(out, _ref((2, 3, 4), seed=11), rtol=0, atol=1e-5)
    # A contiguous view with a storage offset: writes go to the view only.
    big = torch.zeros(4, 3, 5, device=DEVICE)
    genfast.randn((2, 3, 5), seed=11, out=big[1:3], backend="triton")
    torch.testing.assert_close(big[1:3], _ref((2, 3, 5), seed=11), rtol=0, atol=1e-5)
    assert not big[0].any() and not big[3].any()


def test_out_0d_and_empty():
    out = torch.empty((), device=DEVICE)
    genfast.randn((), seed=3, out=out, backend="triton")
    torch.testing.assert_close(out, _ref((), seed=3), rtol=0, atol=1e-5)
    assert genfast.randn((0, 4), seed=3, backend="triton", device=DEVICE).shape == (0, 4)


def test_ops_registered_and_seed_bits():
    assert hasattr(torch.ops.genfast, "noise_normal_triton")
    assert hasattr(torch.ops.genfast, "noise_philox_triton")
    out = torch.empty(2, 3, device=DEVICE)
    # The op takes the seed as the int64 with the uint64's bits.
    torch.ops.genfast.noise_normal_triton(out, -1, 5, 1)
    torch.testing.assert_close(out, _ref((2, 3), seed=2**64 - 1, stream=5, sample_offset=1),
                               rtol=0, atol=1e-5)
    direct = torch.empty(2, 3, device=DEVICE)
    tri_noise.noise_normal(direct, 2**64 - 1, 5, 1)
    torch.testing.assert_close(direct, out, rtol=0, atol=0)


@pytest.mark.parametrize("seed,stream,offset", [(0, 0, 0), (2**64 - 1, 2**32 - 1, 2**32 - 1),
                                                 (2**31, 2**31, 2**31 - 1), (2**63, 1, 2**31)])
def test_launch_words_are_always_int32(seed, stream, offset):
    """Triton types an int argument by its value (int32 below 2**31, int64
    above): the four per-call words must always land in int32 so that seeds
    and streams never compile another kernel variant."""
    words = tri_noise.launch_words(seed, stream, offset)
    assert all(-(2**31) <= w < 2**31 for w in words), words
    k0, k1 = ref_noise.key_words(seed)
    assert [w & 0xFFFFFFFF for w in words] == [k0, k1, stream, offset]


# --------------------------------------------------------------------------- GPU only

@requires_cuda
def test_opcheck_cuda():
    out = torch.empty(3, 5, device="cuda")
    torch.library.opcheck(torch.ops.genfast.noise_normal_triton.default, (out, 7, 1, 2))
    ctr = torch.randint(-2**31, 2**31, (6, 4), dtype=torch.int32, device="cuda")
    torch.library.opcheck(torch.ops.genfast.noise_philox_triton.default, (ctr, -5))


@requires_cuda
@pytest.mark.slow
def test_compile_cuda():
    def step(x, seed, stream):
        noise = torch.empty_like(x)
        torch.ops.genfast.noise_normal_triton(noise, seed, stream, 0)
        return x + 0.5 * noise

    x = torch.randn(4, 3, 5, device="cuda")
    compiled = torch.compile(step, fullgraph=True)
    for stream in (0, 1, 2**31 + 3):
        torch.testing.assert_close(compiled(x, 9, stream), step(x, 9, stream), rtol=0, atol=0)

    def words(ctr):
        return torch.ops.genfast.noise_philox_triton(ctr, 42) ^ 1

    ctr = torch.randint(-2**31, 2**31, (6, 4), dtype=torch.int32, device="cuda")
    torch.testing.assert_close(torch.compile(words, fullgraph=True)(ctr), words(ctr),
                               rtol=0, atol=0)


@requires_cuda
def test_one_kernel_variant_for_any_seed_and_stream():
    out = torch.empty(2, 64, device="cuda")
    for seed, stream in [(1, 0), (2**40 + 3, 2**31 + 7), (2**64 - 1, 2**32 - 1), (5, 16)]:
        tri_noise.noise_normal(out, seed, stream, 2**31 + 1)
    torch.cuda.synchronize()
    caches = getattr(tri_noise._noise_normal_kernel, "device_caches", None)
    if caches is None:
        pytest.skip("this triton keeps no per-device kernel cache to inspect")
    kernels = caches[torch.cuda.current_device()][0]
    assert len(kernels) == 1, list(kernels)


@requires_cuda
def test_compiled_equals_eager_bit_for_bit():
    """Inductor drops user Triton kernels' enable_fp_fusion=False: the kernel
    itself must keep products and sums separately rounded."""
    def draw(buf, stream):
        torch.ops.genfast.noise_normal_triton(buf, 77, stream, 0)
        return buf + 0

    buf = torch.empty(8, 4099, device="cuda")
    compiled = torch.compile(draw, fullgraph=True)
    for stream in (0, 3):
        eager = draw(torch.empty_like(buf), stream)
        assert torch.equal(compiled(buf, stream), eager)
        if gf_backend.availability()["cpu"][0]:
            cpu = genfast.randn((8, 4099), seed=77, stream=stream, backend="cpu")
            assert torch.equal(eager.cpu(), cpu)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_runs_on_the_output_device(backend):
    if not gf_backend.availability()[backend][0]:
        pytest.skip(f"{backend} backend unavailable")
    with torch.cuda.device(0):
        out = torch.empty(3, 100, device="cuda:1")
        genfast.randn(out.shape, seed=5, stream=2, out=out, backend=backend)
        torch.cuda.synchronize(1)
    want = genfast.randn((3, 100), seed=5, stream=2, backend="reference")
    torch.testing.assert_close(out.cpu(), want, rtol=0, atol=1e-5)
