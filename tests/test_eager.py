"""genfast._C, the eager entry points (csrc/bindings/eager.cpp): the step
ops' fast paths call them instead of the boxed torch.ops path. They must be
the same op: same results, same errors, and tensor subclasses / torch
function modes must still see the registered op (the fast path steps aside)."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

import genfast
from genfast._extension import CPU_LIB
from genfast.ops import steps as S

pytestmark = pytest.mark.skipif(not CPU_LIB.loaded, reason="C++ extension not built")

SCHED = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
             beta_end=0.012)


def _plan(sampler="ddim", n=10):
    return genfast.schedules.from_config(SCHED).plan(n, sampler=sampler)


def test_module_is_loaded_and_used():
    assert CPU_LIB.eager is not None, "genfast._C has no module init: rebuild"
    assert S._CPP_CALL is CPU_LIB.eager.steps_step
    assert hasattr(CPU_LIB.eager, "multistep_step")
    assert genfast.info()["eager_entry_points"] is True
    # genfast.sample binds its loop's step in C++ (MultistepLoop / StepsLoop)
    import importlib
    assert importlib.import_module("genfast.sample")._LOOPS is CPU_LIB.eager


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("sampler,seed", [("ddim", None), ("euler_ancestral", 7), ("ddpm", 3)])
def test_entry_point_equals_op(sampler, seed, dtype):
    plan = _plan(sampler)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g).to(dtype)
    m = torch.randn(2, 3, 5, 7, generator=g).to(dtype)
    params = [0.0, 0.0, 1.0 if sampler == "euler_ancestral" else 0.0, 1.0, 0.995, 1.0, 0.0, 0.0,
              float("inf"), 1.0, 10.0]
    sampler_code = S._ref.SAMPLERS[sampler]
    flags = S._ref.WANT_X0 | (S._ref.NOISE_SEEDED if seed is not None else 0)
    args = (x, m, None, None, None, plan.table, None, 4, sampler_code, 0, 0, flags, params,
            seed or 0, 0, 0)
    a = CPU_LIB.eager.steps_step(*args)
    b = torch.ops.genfast.steps_step.default(*args)
    for u, v in zip(a, b):
        assert u.dtype == dtype and torch.equal(u, v)
    # and the public wrapper, which takes the fast path here, gives the same
    out = genfast.steps.step(plan, 4, m, x, seed=seed)
    assert torch.equal(out.prev_sample, b[0]) and torch.equal(out.pred_original_sample, b[1])


def test_entry_point_errors_are_the_ops():
    plan = _plan()
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="model_output has shape"):
        genfast.steps.step(plan, 0, torch.randn(1, 2, 8), x)
    with pytest.raises(ValueError, match="past the plan"):
        genfast.steps.step(plan, 10, x, x)


class _Tagged(torch.Tensor):
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        cls.seen.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


def test_subclass_sees_the_op():
    plan = _plan()
    x = torch.randn(1, 4, 8)
    _Tagged.seen.clear()
    out = genfast.steps.step(plan, 2, x.as_subclass(_Tagged), x.as_subclass(_Tagged))
    assert any("steps_step" in s for s in _Tagged.seen)
    assert torch.equal(out.prev_sample.as_subclass(torch.Tensor),
                       genfast.steps.step(plan, 2, x, x).prev_sample)


def test_torch_function_mode_sees_the_op():
    seen = []

    class Mode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    plan = _plan()
    x = torch.randn(1, 4, 8)
    with Mode():
        genfast.steps.step(plan, 2, x, x)
    assert any("steps_step" in s for s in seen)


@pytest.mark.parametrize("sampler", ["dpmpp", "unipc", "heun"])
def test_multistep_entry_point_equals_op(sampler):
    """The multistep fast path (genfast._C.multistep_step) against the
    registered op on copies of the same state: same outputs, same history."""
    from genfast.ops import multistep as M
    assert M._CPP_CALL is CPU_LIB.eager.multistep_step
    plan = _plan(sampler, 6)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 7, generator=g)
    s1, s2 = genfast.steps.new_state(plan, x), genfast.steps.new_state(plan, x)
    for i in range(plan.num_steps):
        for k in range(plan.stages(i)):
            m = torch.randn(2, 3, 5, 7, generator=g)
            a = genfast.steps.step(plan, i, m, x, state=s1, stage=k)  # the fast path
            with Mode():  # a torch function mode sends it down the OpOverload path
                b = genfast.steps.step(plan, i, m, x, state=s2, stage=k)
            assert torch.equal(a.prev_sample, b.prev_sample)
            assert torch.equal(s1.buffer, s2.buffer)
            x = a.prev_sample


class Mode(TorchFunctionMode):
    seen: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_torch_function_mode_sees_the_multistep_op():
    plan = _plan("dpmpp", 4)
    x = torch.randn(1, 4, 8)
    state = genfast.steps.new_state(plan, x)
    Mode.seen.clear()
    with Mode():
        genfast.steps.step(plan, 0, x, x, state=state)
    assert any("multistep_step" in s for s in Mode.seen)


@pytest.mark.parametrize("shape", [(1, 4, 64, 64), (3, 5, 7), (0, 4, 8, 8), (16, 4, 128, 128)])
def test_new_state_is_zero_on_reused_memory(shape):
    # small CPU buffers are zeroed by zero_serial (one memset), large ones by
    # torch.zeros; either way every byte is zero, also in memory the
    # allocator hands back dirty
    from genfast.ops import multistep as M
    plan = genfast.schedules.from_config(SCHED).plan(10, sampler="dpmpp", solver_order=3)
    x = torch.randn(shape)
    for _ in range(3):
        junk = torch.full((M._ref.SLOTS[0],) + shape, float("nan"))
        del junk
        state = genfast.steps.new_state(plan, x)
        assert state.buffer.shape == (M._ref.SLOTS[0],) + shape
        assert state.buffer.dtype == x.dtype and state.buffer.is_contiguous()
        assert torch.equal(state.buffer, torch.zeros_like(state.buffer))


def test_zero_serial_refuses_non_contiguous():
    t = torch.ones(4, 6)[:, ::2]
    with pytest.raises(RuntimeError, match="contiguous CPU tensor"):
        CPU_LIB.eager.zero_serial(t)
