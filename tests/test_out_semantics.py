"""Ops that write into an argument (``Tensor(a!)``: out= and in-place ops).

Every such op, whatever its backend, must behave towards autograd as ATen's
own in-place ops do (csrc/bindings/ops.cpp `def_inplace` for the C++ ops;
torch.library does it for custom_op / triton_op):

* the written tensor's version counter moves, so a tensor saved for backward
  and refilled since makes backward() raise instead of returning a wrong
  gradient;
* a written tensor that requires grad is refused while grad mode is on (as
  torch.randn(out=...) refuses it), and accepted under torch.no_grad();
* an inference tensor is not written outside inference mode.

The test enumerates every registered genfast op with a mutable argument, so
a new one cannot skip the pattern: it must add a sample call to SAMPLES.
"""

import pytest
import torch

import genfast  # noqa: F401  (loads the ops)
from conftest import available_backends

_MS_PLAN = genfast.schedules.from_config({}).plan(4, sampler="dpmpp")
_MS_X, _MS_MO = torch.randn(1, 8), torch.randn(1, 8)


def _multistep(op):
    # dpmpp keeps 3 history slots: out viewed as the (3, 1, 8) state of a (1, 8) sample
    return lambda out: op(_MS_X, _MS_MO, None, None, None, out.view(3, 1, 8), _MS_PLAN.table,
                          _MS_PLAN.stage_table, None, 0, 0, 0, 0, 1024, [0.0, 0.0], 0, 0, 0)


# op name -> a call writing into `out` (a float32 tensor of shape (3, 8))
SAMPLES = {
    "genfast::multistep_step": _multistep(lambda *a: torch.ops.genfast.multistep_step(*a)),
    "genfast::multistep_step_triton":
        _multistep(lambda *a: torch.ops.genfast.multistep_step_triton(*a)),
    "genfast::noise_normal": lambda out: torch.ops.genfast.noise_normal(out, 1, 2, 3),
    "genfast::noise_normal_reference":
        lambda out: torch.ops.genfast.noise_normal_reference(out, 1, 2, 3),
    "genfast::noise_normal_triton":
        lambda out: torch.ops.genfast.noise_normal_triton(out, 1, 2, 3),
}
# ops whose kernels need a backend that may be missing here
NEEDS = {"genfast::noise_normal": "cpu", "genfast::noise_normal_triton": "triton",
         "genfast::multistep_step": "cpu", "genfast::multistep_step_triton": "triton"}


def _load_python_ops():
    # The Triton ops register when genfast.triton.* is imported.
    if "triton" in available_backends():
        import genfast.triton.multistep  # noqa: F401
        import genfast.triton.noise  # noqa: F401


def mutating_ops() -> list[str]:
    _load_python_ops()
    names = []
    for name in torch._C._dispatch_get_all_op_names():
        if not name.startswith("genfast::"):
            continue
        packet = getattr(torch.ops.genfast, name.split("::")[1].split(".")[0])
        for overload in packet.overloads():
            schema = getattr(packet, overload)._schema
            if any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments):
                names.append(name.split(".")[0])
                break
    return sorted(set(names))


OPS = mutating_ops()


def test_every_mutating_op_has_a_sample():
    assert OPS, "no genfast op with a mutable argument found"
    missing = [op for op in OPS if op not in SAMPLES]
    assert not missing, f"add a sample call to SAMPLES for {missing}"


def _run(op):
    need = NEEDS.get(op)
    if need is not None and need not in available_backends():
        pytest.skip(f"{op} needs the {need} backend")
    return SAMPLES[op]


@pytest.mark.parametrize("op", OPS)
def test_write_bumps_the_version(op):
    call = _run(op)
    out = torch.empty(3, 8)
    before = out._version
    call(out)
    assert out._version > before


@pytest.mark.parametrize("op", OPS)
def test_refilling_a_saved_tensor_is_caught_by_backward(op):
    call = _run(op)
    w = torch.ones(3, 8, requires_grad=True)
    buf = torch.empty(3, 8)
    call(buf)
    loss = (w * buf).sum()  # saves buf for backward
    call(buf)  # refill it: the saved values are gone
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("op", OPS)
def test_out_requiring_grad_is_refused(op):
    call = _run(op)
    leaf = torch.zeros(3, 8, requires_grad=True)
    with pytest.raises(RuntimeError, match="grad"):
        call(leaf)
    assert (leaf == 0).all(), "refused, but written anyway"
    inner = torch.zeros(3, 8, requires_grad=True) * 1  # inside a graph
    with pytest.raises(RuntimeError, match="grad"):
        call(inner)
    with torch.no_grad():  # nothing is recorded: allowed, as for torch.randn(out=)
        call(leaf)
    assert not (leaf == 0).all()


@pytest.mark.parametrize("op", OPS)
def test_inference_tensor_outside_inference_mode_is_refused(op):
    call = _run(op)
    with torch.inference_mode():
        frozen = torch.zeros(3, 8)
        call(torch.zeros(3, 8))  # inside inference mode anything goes
    with pytest.raises(RuntimeError, match="[Ii]nference"):
        call(frozen)
    assert (frozen == 0).all()


def test_wrapper_refuses_out_requiring_grad_on_every_backend():
    out = torch.zeros(2, 4, requires_grad=True)
    for backend in available_backends():
        if backend == "cuda":
            continue
        with pytest.raises(RuntimeError, match="out.*grad|grad.*out"):
            genfast.randn((2, 4), seed=0, out=out, backend=backend)
        assert (out == 0).all(), backend
