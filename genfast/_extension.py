"""Loading the compiled libraries (genfast/_C*.so, genfast/_C_cuda*.so).

A library is loaded only when the torch it was built against is the torch that
is running: a C++ extension built for another torch can fail with undefined
symbols or, worse, load and corrupt memory. Anything short of a clean load
leaves genfast on the reference backend with ONE warning that names both
versions and says how to rebuild.
"""

from __future__ import annotations

import glob
import importlib
import json
import os
import warnings
from dataclasses import dataclass, field

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
REBUILD_HINT = "rebuild with: pip install --no-build-isolation -e ."


class GenfastFallbackWarning(UserWarning):
    """genfast runs on its pure-PyTorch reference because a library did not load."""


class GenfastConfigWarning(UserWarning):
    """An environment setting of genfast's was not understood or cannot be met;
    the message says what is used instead."""


@dataclass
class Library:
    name: str
    loaded: bool = False
    path: str | None = None
    reason: str = ""
    build: dict = field(default_factory=dict)
    # genfast._C as a Python module (csrc/bindings/eager.cpp): typed entry
    # points that the eager fast paths call instead of the boxed torch.ops
    # path. None where the library did not load or has no module init.
    eager: object = None


def check_build_info(build: dict, running: str) -> str | None:
    """Why a library built as ``build`` must not be loaded under torch ``running``."""
    built = build.get("torch_version")
    if built is None:
        return "its build record names no torch version"
    if built != running:
        return f"it was built against torch {built} but torch {running} is running"
    return None


def _find(name: str) -> str | None:
    hits = sorted(glob.glob(os.path.join(_HERE, f"{name}.*so"))) + sorted(
        glob.glob(os.path.join(_HERE, f"{name}.*pyd")))
    return hits[0] if hits else None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A boolean environment switch: 1/true/yes/on or 0/false/no/off (any
    case; unset or empty is off). Anything else warns once and counts as off."""
    value = os.environ.get(name, "")
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() not in _FALSE:
        warnings.warn(f"genfast: ignoring {name}={value!r}: use 1/0 or true/false",
                      GenfastConfigWarning, stacklevel=3)
    return False


def _load(name: str, disabled: bool) -> Library:
    lib = Library(name)
    if disabled:
        lib.reason = "disabled by GENFAST_DISABLE_EXTENSION"
        return lib
    lib.path = _find(name)
    if lib.path is None:
        lib.reason = f"not built (no genfast/{name}*.so)"
        return lib
    info_path = os.path.join(_HERE, f"{name}.json")
    try:
        with open(info_path) as f:
            lib.build = json.load(f)
    except (OSError, ValueError) as e:
        lib.reason = f"no readable build record {os.path.basename(info_path)} ({e})"
        return lib
    why = check_build_info(lib.build, torch.__version__)
    if why is not None:
        lib.reason = why
        return lib
    try:
        torch.ops.load_library(lib.path)
    except Exception as e:  # an OSError from dlopen, or a registration error
        lib.reason = (f"failed to load {os.path.basename(lib.path)} (built against torch "
                      f"{lib.build.get('torch_version')}, running torch {torch.__version__}): {e}")
        return lib
    lib.loaded = True
    if name == "_C":
        try:  # the same file, already loaded: import only runs its module init
            lib.eager = importlib.import_module("genfast._C")
        except ImportError:
            lib.eager = None  # an older build: the fast paths use torch.ops
    return lib


def _load_all() -> tuple[Library, Library]:
    disabled = env_flag("GENFAST_DISABLE_EXTENSION")
    cpu = _load("_C", disabled)
    if cpu.loaded:
        cuda = _load("_C_cuda", disabled)
        if not cuda.loaded and cuda.reason.startswith("not built"):
            why = ("torch has no CUDA" if torch.version.cuda is None
                   else "nvcc was not found or GENFAST_CUDA=0 at build time")
            cuda.reason = f"not built ({why})"
        _check_isa_setting()
    elif disabled:
        cuda = Library("_C_cuda", reason="disabled by GENFAST_DISABLE_EXTENSION")
        warnings.warn(
            "genfast: C++ extension disabled on purpose (GENFAST_DISABLE_EXTENSION="
            f"{os.environ['GENFAST_DISABLE_EXTENSION']}); every op runs on the pure-PyTorch "
            "reference backend (correct but slow)", GenfastFallbackWarning, stacklevel=3)
    else:
        cuda = Library("_C_cuda", reason="the CPU library _C did not load")
        warnings.warn(
            f"genfast: C++ extension not loaded: {cpu.reason}. Falling back to the pure-PyTorch "
            f"reference backend (correct but slow); {REBUILD_HINT}",
            GenfastFallbackWarning, stacklevel=3)
    if cpu.loaded and cuda.path is not None and not cuda.loaded:
        warnings.warn(f"genfast: CUDA library not loaded: {cuda.reason}; {REBUILD_HINT}",
                      GenfastFallbackWarning, stacklevel=3)
    return cpu, cuda


def _check_isa_setting() -> None:
    """GENFAST_CPU_ISA pins the CPU kernels' SIMD level (csrc/cpu/isa.cpp reads
    it). A value it cannot honour is ignored there; say so, once."""
    value = os.environ.get("GENFAST_CPU_ISA", "").strip()
    if not value:
        return
    active = torch.ops.genfast._cpu_isa("")
    if value == active:
        return
    usable = torch.ops.genfast._cpu_isa("?supported").split(",")
    why = ("is not supported by this CPU or build" if value in ("baseline", "avx2", "avx512")
           else "is not a level (baseline, avx2, avx512)")
    warnings.warn(f"genfast: GENFAST_CPU_ISA={value!r} {why}; using {active} "
                  f"(usable here: {', '.join(usable)})", GenfastConfigWarning, stacklevel=4)


CPU_LIB, CUDA_LIB = _load_all()
