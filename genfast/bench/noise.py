"""Noise suite: ``genfast.randn`` against ``torch.randn`` (shape (n,), in the
suite's dtype: float32 unless ``dtype=`` says float16 or bfloat16).

Modes: "alloc" (each call returns a fresh tensor; on the CPU, allocations above
the mmap threshold pay page faults every call) and "out=" (each call writes an
existing buffer, so only the generator is measured).

Providers: "genfast" (the default backend, whatever resolves on the device),
"torch.randn", "genfast[reference]" (backend="reference", the pure-PyTorch
spec; slow, so quick runs time it only up to 1M elements and a few times) and,
in full runs, "torch.compile(reference)" (the reference compiled by inductor at
a fixed shape; compile time is excluded).

Bytes moved: numel * element size (randn reads nothing and writes its output once); the
floor of "alloc" is set by ``x.clone()``, that of "out=" by ``y.copy_(x)``.

Mode "overhead" (256 elements, out=): what the Python wrapper costs a sampler
step. Providers "genfast" (``genfast.randn(..., out=buf)``), "raw op" (the
registered op the wrapper resolves to, called directly) and "torch.randn";
the report gives genfast minus raw op in microseconds.
"""

from __future__ import annotations

import torch

import genfast
from ..reference import noise as _ref
from .runner import Case, Provider

SEED = 0x5EED
QUICK_SIZES = (1 << 20, 16 << 20)
FULL_SIZES = (1 << 16, 1 << 20, 16 << 20, 64 << 20)
MODES = ("alloc", "out=")
REFERENCE_QUICK_MAX = 1 << 20  # quick runs skip the reference above this
REFERENCE_QUICK_REPS = 5
OVERHEAD_NUMEL = 256
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _genfast(n, device, mode, dtype, backend=None):
    def make():
        if mode == "alloc":
            return lambda: genfast.randn(n, seed=SEED, device=device, dtype=dtype, backend=backend)
        buf = torch.empty(n, dtype=dtype, device=device)
        return lambda: genfast.randn(n, seed=SEED, out=buf, backend=backend)
    return make


def _torch(n, device, mode, dtype):
    def make():
        if mode == "alloc":
            return lambda: torch.randn(n, device=device, dtype=dtype)
        buf = torch.empty(n, dtype=dtype, device=device)
        return lambda: torch.randn(n, out=buf)
    return make


def _compiled_reference(n, device, mode, dtype):
    def make():
        import torch._inductor.config as inductor_config

        if mode == "alloc":
            def f():
                return _ref.randn((n,), SEED, device=device, dtype=dtype)
            args = ()
        else:
            def f(out):
                return out.copy_(_ref.randn((n,), SEED, device=device, dtype=dtype))
            args = (torch.empty(n, dtype=dtype, device=device),)
        compiled = torch.compile(f, dynamic=False, fullgraph=True)
        # With inductor's default realize_opcount_threshold, lowering the
        # unrealized Philox DAG takes time exponential in its depth (over 10
        # minutes at torch 2.13, for any n); realizing intermediates earlier
        # makes it compile in seconds. The first call compiles, untimed.
        with inductor_config.patch(realize_opcount_threshold=4):
            compiled(*args)
        return lambda: compiled(*args)
    return make


def _raw_op(n, device, dtype):
    """The op genfast.randn resolves to on ``device``, called with no wrapper."""
    def make():
        from .. import backend as _backend
        which = _backend.resolve(None, device)
        if which == "triton":
            from ..triton import noise as _triton_noise  # noqa: F401  (registers the op)
        op = {"cpu": "noise_normal", "cuda": "noise_normal", "triton": "noise_normal_triton",
              "reference": "noise_normal_reference"}[which]
        raw = getattr(torch.ops.genfast, op).default
        buf = torch.empty(n, dtype=dtype, device=device)
        return lambda: raw(buf, SEED, 0, 0)
    return make


def overhead_case(device: torch.device, dtype: torch.dtype = torch.float32) -> Case:
    n = OVERHEAD_NUMEL
    return Case("noise", "randn", n, "overhead",
                [Provider("genfast", _genfast(n, device, "out=", dtype)),
                 Provider("raw op", _raw_op(n, device, dtype)),
                 Provider("torch.randn", _torch(n, device, "out=", dtype))],
                overhead_of="raw op")


def cases(device: torch.device, full: bool = False, sizes=None,
          dtype: torch.dtype = torch.float32) -> list[Case]:
    """The noise cases for ``device``: QUICK_SIZES or FULL_SIZES unless ``sizes``,
    drawing ``dtype`` (float32, float16 or bfloat16)."""
    device = torch.device(device)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(map(str, DTYPES))}, got {dtype}")
    sizes = tuple(sizes) if sizes else (FULL_SIZES if full else QUICK_SIZES)
    item = torch.empty((), dtype=dtype).element_size()
    out = [overhead_case(device, dtype)]
    for n in sizes:
        for mode in MODES:
            providers = [Provider("genfast", _genfast(n, device, mode, dtype)),
                         Provider("torch.randn", _torch(n, device, mode, dtype))]
            if full or n <= REFERENCE_QUICK_MAX:
                providers.append(Provider("genfast[reference]",
                                          _genfast(n, device, mode, dtype, backend="reference"),
                                          max_reps=None if full else REFERENCE_QUICK_REPS))
            if full:
                providers.append(Provider("torch.compile(reference)",
                                          _compiled_reference(n, device, mode, dtype)))
            out.append(Case("noise", "randn", n, mode, providers, bytes_moved=n * item,
                            floor_copy="clone" if mode == "alloc" else "copy_"))
    return out
