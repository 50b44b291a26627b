"""`genfast.info()` / `genfast info`: what is built, what is usable, and why not."""

from __future__ import annotations

import importlib.metadata
import platform

import torch

from . import backend as _backend
from ._extension import CPU_LIB, CUDA_LIB
from ._version import __version__


def _triton_version() -> str | None:
    try:
        return importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu() -> dict:
    d = {"machine": platform.machine(), "threads": torch.get_num_threads(),
         "isa": None, "best_isa": None, "isas": []}
    if CPU_LIB.loaded:
        d["isa"] = torch.ops.genfast._cpu_isa("")
        d["best_isa"] = torch.ops.genfast._cpu_isa("?best")
        d["isas"] = torch.ops.genfast._cpu_isa("?supported").split(",")
    return d


def info() -> dict:
    """Versions, backends (usable or why not), the CPU's SIMD level and threads."""
    cuda_ok = torch.cuda.is_available()
    return {
        "genfast": __version__,
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": {"torch_cuda": torch.version.cuda, "available": cuda_ok,
                 "device": torch.cuda.get_device_name() if cuda_ok else None},
        "backends": {name: {"available": ok, "reason": why}
                     for name, (ok, why) in _backend.availability().items()},
        "default_backend": _backend.get_backend(),
        "extension": {lib.name: {"loaded": lib.loaded, "path": lib.path, "reason": lib.reason,
                                 "build": lib.build} for lib in (CPU_LIB, CUDA_LIB)},
        # genfast._C's typed entry points (csrc/bindings/eager.cpp) for the eager fast paths
        "eager_entry_points": CPU_LIB.eager is not None,
        "cpu": _cpu(),
    }


def format_info(d: dict) -> str:
    lines = [f"genfast {d['genfast']}",
             f"  torch   {d['torch']}  (CUDA {d['cuda']['torch_cuda'] or 'none'}, "
             f"GPU: {d['cuda']['device'] or 'none'})",
             f"  triton  {d['triton'] or 'not installed'}",
             f"  cpu     {d['cpu']['machine']}, {d['cpu']['threads']} threads, SIMD "
             f"{d['cpu']['isa'] or 'n/a (extension not loaded)'}"
             + (f" (best {d['cpu']['best_isa']}; usable {', '.join(d['cpu']['isas'])})"
                if d['cpu']['isa'] else ""),
             "  backends (default: %s)" % d["default_backend"]]
    for name, b in d["backends"].items():
        lines.append(f"    {name:<10} {'yes' if b['available'] else 'no':<4} {b['reason']}")
    lines.append("  libraries")
    for name, e in d["extension"].items():
        built = e["build"].get("torch_version")
        state = "loaded" if e["loaded"] else f"not loaded: {e['reason']}"
        extra = f" (built against torch {built}, {e['build'].get('build_type')})" if built else ""
        lines.append(f"    {name:<10} {state}{extra}")
    if d["extension"]["_C"]["loaded"]:
        lines.append("    eager      " + ("genfast._C entry points (step calls skip torch.ops "
                                         "boxing)" if d.get("eager_entry_points")
                                         else "no genfast._C module: step calls use torch.ops"))
    return "\n".join(lines)
