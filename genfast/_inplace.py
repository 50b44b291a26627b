"""Autograd for Python-defined genfast ops that write into an argument.

The C++ ops get this from `def_inplace` in csrc/bindings/ops.cpp; ops made
with torch.library.custom_op / triton_op (the reference and Triton backends)
get it from `register_inplace` here, so every backend behaves the same:

* Autograd: torch.library's own kernel runs the op under no_grad and records
  nothing, so a written tensor that requires grad would silently get a wrong
  history. Ours refuses any tensor argument that requires grad while grad
  mode is on, as torch.randn(out=...) does, and otherwise runs the op below
  autograd.
* ADInplaceOrView: ours refuses to write an inference tensor outside
  inference mode (torch.library's writes it), runs the op, then bumps the
  version counter of every written tensor.
"""

from __future__ import annotations

import torch

_LIB = torch.library.Library("genfast", "IMPL")  # kept alive for the process


def register_inplace(name: str) -> None:
    """Give op ``genfast::<name>`` (already defined, with a ``Tensor(a!)``
    argument) the in-place autograd semantics described above."""
    op = getattr(torch.ops.genfast, name).default
    params = op._schema.arguments
    written = {a.name for a in params if a.alias_info is not None and a.alias_info.is_write}
    if not written:
        raise ValueError(f"genfast::{name} writes into no argument")

    def autograd_kernel(keyset, *args, **kwargs):
        if torch.is_grad_enabled():
            for param, value in zip(params, args):
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    what = "writes into it and " if param.name in written else ""
                    raise RuntimeError(
                        f"genfast::{name}: argument '{param.name}' requires grad, but this op "
                        f"{what}does not support autograd; pass a tensor that does not require "
                        f"grad (e.g. .detach()) or call it under torch.no_grad()")
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args, **kwargs)

    def inplace_or_view_kernel(keyset, *args, **kwargs):
        targets = [(p.name, v) for p, v in zip(params, args)
                   if p.name in written and isinstance(v, torch.Tensor)]
        if not torch.is_inference_mode_enabled():
            for pname, t in targets:
                if t.is_inference():
                    raise RuntimeError(
                        f"genfast::{name}: argument '{pname}' is an inference tensor and "
                        f"cannot be written outside torch.inference_mode() (clone it first)")
        with torch._C._AutoDispatchBelowADInplaceOrView():
            result = op.redispatch(keyset & torch._C._after_ADInplaceOrView_keyset, *args, **kwargs)
        for _, t in targets:
            torch.autograd.graph.increment_version(t)
        return result

    _LIB.impl(name, autograd_kernel, "Autograd", with_keyset=True)
    _LIB.impl(name, inplace_or_view_kernel, "ADInplaceOrView", with_keyset=True)
