"""What ``FusedAdam.step`` promises beyond torch's numbers: no host synchronisation, launch
tables kept between steps and rebuilt exactly when needed, version counters bumped as torch's
in-place ops bump them, ``torch.compile``, CUDA-graph capture after a first step, and torch's
optimizer contract (deepcopy, hooks that put other entries in the state, devices torch
refuses).

Each test runs on the stock path (torch's fused CPU kernel) and, where the Triton kernel is
concerned, under the interpreter; tensors stay small.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import _helpers
import pytest
import torch
from _adam_reference import plans_built
from _helpers import BACKENDS, assert_tensors_close
from torch import nn

import torchkit
from torchkit.backend import Backend, interpreter_enabled
from torchkit.optim import FusedAdam
from torchkit.optim import adam as adam_module

running_on = functools.partial(_helpers.running_on, kernel="_adam_kernel")


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))


def backward(model: nn.Module, seed: int) -> None:
    """Fresh gradients (``zero_grad`` sets them to None: new tensors every step)."""
    model.zero_grad(set_to_none=True)
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(seed))
    model(x).pow(2).mean().backward()


class NoHostRead(torch.Tensor):
    """A tensor whose value must not be read on the host while ``armed``."""

    armed = False
    READS = (
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.__bool__,
        torch.Tensor.__float__,
        torch.Tensor.__int__,
        torch.Tensor.__index__,
    )

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if cls.armed and func in cls.READS:
            raise AssertionError(f"step() read a device value on the host: Tensor.{func.__name__}")
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_never_reads_device_values_on_the_host(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """``found_inf``, ``grad_scale``, a tensor ``lr`` and every state tensor are read by the
    kernel, never with ``.item()``/``.tolist()``/``bool()``/``float()`` (each a device sync on
    a GPU): they are tensors that raise if read while a step runs. An overflow step then
    changes nothing, a finite one unscales and updates."""
    model = make_model()
    opt = FusedAdam(model.parameters(), lr=torch.tensor(1e-2))
    backward(model, 0)
    with running_on(backend, kernel_launches):
        opt.step()
    saved = opt.state_dict()
    for entries in saved["state"].values():
        for key, value in entries.items():
            entries[key] = value.as_subclass(NoHostRead)
    opt.load_state_dict(saved)
    opt.param_groups[0]["lr"] = torch.tensor(1e-2).as_subclass(NoHostRead)
    opt.grad_scale = torch.tensor(4.0).as_subclass(NoHostRead)  # as GradScaler.step sets them
    before = [p.detach().clone() for p in model.parameters()]
    try:
        NoHostRead.armed = True
        with running_on(backend, kernel_launches):
            for overflow in (1.0, 0.0):
                opt.found_inf = torch.tensor(overflow).as_subclass(NoHostRead)
                opt.step()
                if overflow:
                    for p, b in zip(model.parameters(), before, strict=True):
                        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)
    finally:
        NoHostRead.armed = False
    assert all(type(state["step"]) is NoHostRead for state in opt.state.values())
    assert [state["step"].item() for state in opt.state.values()] == [2.0] * 4
    assert not any(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_launch_tables_are_kept_and_rebuilt_exactly_when_needed(
    backend: Backend, kernel_launches: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The buckets (and their launch tables) survive new gradients and a scheduler's lr; they
    are rebuilt when a parameter's storage is replaced, when another set of parameters has
    gradients, and after add_param_group or load_state_dict. Throughout, training matches
    torch's Adam step for step."""
    builds: list[int] = []
    original = adam_module._StepCache.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(adam_module._StepCache, "__init__", counting)
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2)
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    ref_scheduler = torch.optim.lr_scheduler.StepLR(ref, step_size=1, gamma=0.5)

    def both(seed: int, change: Any = None) -> None:
        for m, o, s in ((model, opt, scheduler), (ref_model, ref, ref_scheduler)):
            if change is not None:
                change(m, o)
            backward(m, seed)
            o.step()
            s.step()

    def frozen_bias(m: nn.Module, o: Any) -> None:
        m[2].bias.requires_grad_(False)

    def unfrozen_bias(m: nn.Module, o: Any) -> None:
        m[2].bias.requires_grad_(True)

    def channels_last(m: nn.Module, o: Any) -> None:
        m[0].weight.data = m[0].weight.data.t().contiguous().t()  # new storage, new strides

    def reload(m: nn.Module, o: Any) -> None:
        o.load_state_dict(copy.deepcopy(o.state_dict()))

    with running_on(backend, kernel_launches):
        changes = (None, None, None, channels_last, frozen_bias, unfrozen_bias, reload)
        expected = [1, 1, 1, 2, 3, 4, 5]
        for seed, change in enumerate(changes):
            both(seed, change)
            assert len(builds) == expected[seed], (seed, builds)
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))]})
        ref.add_param_group({"params": [nn.Parameter(torch.ones(2))]})
        both(7)
    assert len(builds) == 6
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert_tensors_close(p, q)


def versions(tensors: Any) -> list[int]:
    return [t._version for t in tensors]


def stepped_params(opt: FusedAdam) -> list[torch.Tensor]:
    """The parameters a step updates: those with gradients."""
    return [p for g in opt.param_groups for p in g["params"] if p.grad is not None]


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_bumps_the_version_of_every_parameter_it_writes_once(
    backend: Backend, amsgrad: bool, kernel_launches: list[str]
) -> None:
    """A step bumps the version counter of every parameter it updates by one, as one in-place
    torch op would; the gradients too when ``grad_scale`` (GradScaler) has them unscaled in
    place. The Triton kernel writes through raw pointers and torch's fused kernel bumps only
    the step counters (torch 2.13): FusedAdam bumps the parameters itself. ``fused_adam``, the
    functional form, does the same."""
    model = make_model()
    model[2].bias.requires_grad_(False)  # no gradient: not written, not bumped
    opt = FusedAdam(model.parameters(), lr=1e-2, amsgrad=amsgrad)
    with running_on(backend, kernel_launches):
        for seed in range(2):  # the first step creates the state, the second reuses the plan
            backward(model, seed)
            params = stepped_params(opt)
            before, frozen = versions(params), model[2].bias._version
            opt.step()
            assert versions(params) == [v + 1 for v in before], seed
            assert model[2].bias._version == frozen
        assert len(params) == 3
        backward(model, 2)
        grads = [p.grad for p in params]
        opt.grad_scale = torch.tensor(2.0)
        before, grads_before = versions(params), versions(grads)
        opt.step()
        assert versions(params) == [v + 1 for v in before]
        assert versions(grads) == [v + 1 for v in grads_before]

        p = torch.ones(3)
        adam_module.fused_adam(
            [p], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.zeros(())],
            lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
            maximize=False, decoupled_weight_decay=False,
        )  # fmt: skip
        assert p._version == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_parameter_stepped_after_it_was_saved_for_backward_fails_backward_as_in_torch(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """A parameter saved for backward and then updated by a step: backward raises torch's
    "modified by an inplace operation" error instead of computing gradients from the new
    values, with FusedAdam as with ``torch.optim.Adam`` (its in-place ops bump the
    parameter's version). torch 2.13's ``Adam(fused=True)`` does not bump it and raises
    nothing, so the reference here is the single-tensor implementation."""

    def error(factory: Any, backend: Backend) -> RuntimeError:
        torch.manual_seed(0)
        weight, x = nn.Parameter(torch.randn(3)), torch.randn(3, requires_grad=True)
        loss = (weight * x).sum()  # saves the weight to compute x's gradient
        weight.grad = torch.ones(3)
        with running_on(backend, kernel_launches):
            factory([weight]).step()
        with pytest.raises(RuntimeError, match="modified by an inplace operation") as raised:
            loss.backward()
        return raised.value

    ours = error(FusedAdam, backend)
    theirs = error(functools.partial(torch.optim.Adam, foreach=False), Backend.TORCH)
    assert type(ours) is type(theirs)


# (backend, compiler, lr): a tensor lr on every backend and compiler, a float one once.
COMPILE_CASES = [
    pytest.param(backend, compiler, "tensor", id=f"{backend.value}-{compiler}-tensor_lr")
    for backend in (Backend.TRITON_INTERPRETER, Backend.TORCH)
    for compiler in ("aot_eager", "inductor")
] + [pytest.param(Backend.TRITON_INTERPRETER, "aot_eager", "float", id="triton-aot_eager-float_lr")]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("backend", "compiler", "lr"), COMPILE_CASES)
def test_compiled_step_gives_the_eager_results(
    backend: Backend,
    compiler: str,
    lr: str,
    kernel_launches: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``torch.compile`` of ``FusedAdam.step``, with a tensor lr: on the Triton path the whole
    step is one graph (``fullgraph=True``), the launch the operator
    ``torchkit::adam_multi_tensor_`` whose tables are built once for all calls; on the stock
    path the step breaks the graph at one place and runs eagerly, as torch's own compiled
    ``Adam(fused=True)`` runs its fused kernel outside the graph. Either way the results are
    the eager step's, bit for bit."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    built = plans_built(monkeypatch)
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(model.parameters(), lr=torch.tensor(1e-2) if lr == "tensor" else 1e-2)
    ref = FusedAdam(ref_model.parameters(), lr=torch.tensor(1e-2) if lr == "tensor" else 1e-2)
    triton = backend is not Backend.TORCH
    compiled = torch.compile(opt.step, backend=compiler, fullgraph=triton)
    with running_on(backend, kernel_launches):
        for seed in range(3):
            for m, step in ((model, compiled), (ref_model, ref.step)):
                backward(m, seed)
                if seed == 1:
                    before = versions(stepped_params(opt))
                step()
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert opt.last_backend is backend
    assert [s["step"].item() for s in opt.state.values()] == [3.0] * 4
    bumped = versions(stepped_params(opt))  # how often is torch's business (functionalization)
    assert all(b > a for a, b in zip(before, bumped, strict=True)), (before, bumped)
    breaks = dict(torch._dynamo.utils.counters["graph_break"])
    if triton:
        assert breaks == {}
    else:  # only at the eager step (once per compiled frame), never inside it
        assert breaks
        assert all("FusedAdam._kept_step" in reason for reason in breaks), breaks
    if compiler == "inductor":  # it runs the op in place; aot_eager on new copies each call
        assert len(built) == (2 if triton else 0)  # the reference's plan, one for the op


def test_the_operator_is_left_out_of_compiled_cuda_graphs() -> None:
    """A launch may build its tables or upload new gradient addresses from host memory, which
    a CUDA graph recorded by ``torch.compile(mode="reduce-overhead")`` from inputs copied into
    its own pool would replay stale: the operator is tagged for inductor to run it outside."""
    op = torch.ops.torchkit.adam_multi_tensor_.default
    assert torch.Tag.cudagraph_unsafe in op.tags


@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "grad_scale"])
def test_the_operator_bumps_what_autograd_may_have_saved(scaled: bool) -> None:
    """``torchkit::adam_multi_tensor_`` (what a compiled step calls) bumps the parameters'
    version counters, and the gradients' when it stores them unscaled, as the eager step does;
    the state, which autograd never saves, keeps its versions."""
    p, g = torch.ones(3), torch.full((3,), 4.0)
    m, v, step = torch.zeros(3), torch.zeros(3), torch.zeros(())
    before = [t._version for t in (p, g, m, v, step)]
    scale = torch.tensor(2.0) if scaled else None
    with torchkit.force_backend("triton-interpreter"):
        torch.ops.torchkit.adam_multi_tensor_(
            [p], [g], [m], [v], [], [step], [0.1, 0.9, 0.999, 1e-8, 0.0], [], [], [0], scale,
            None, False, False, False,
        )  # fmt: skip
    after = [t._version for t in (p, g, m, v, step)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, int(scaled), 0, 0, 0]
    assert step.item() == 1.0
    assert torch.equal(g, torch.full((3,), 2.0 if scaled else 4.0))


def change_step(opt: FusedAdam, p: torch.Tensor) -> None:
    opt.state[p]["step"] = torch.zeros_like(opt.state[p]["step"])


def change_moment(key: str) -> Any:
    def change(opt: FusedAdam, p: torch.Tensor) -> None:
        opt.state[p][key] = torch.zeros_like(opt.state[p][key])

    return change


def offload_round_trip(opt: FusedAdam, p: torch.Tensor) -> None:
    """What moving the state to another device and back leaves: new tensors, same values."""
    state = opt.state[p]
    for key, value in list(state.items()):
        state[key] = value.clone()


def forget(opt: FusedAdam, p: torch.Tensor) -> None:
    opt.state[p] = {}


# How a training loop may replace a parameter's state between two steps; ids name it.
STATE_CHANGES = {
    "step-reset": change_step,
    "exp_avg-reset": change_moment("exp_avg"),
    "exp_avg_sq-reset": change_moment("exp_avg_sq"),
    "max_exp_avg_sq-reset": change_moment("max_exp_avg_sq"),
    "offload-round-trip": offload_round_trip,
    "state-forgotten": forget,
}


@pytest.mark.parametrize("change", STATE_CHANGES.values(), ids=STATE_CHANGES.keys())
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_tensors_replaced_between_steps_are_the_ones_updated(
    backend: Backend, change: Any, kernel_launches: list[str]
) -> None:
    """A state tensor replaced in ``optimizer.state`` between two steps (a momentum or step
    reset, an offload round trip, the whole entry dropped): the next step updates the new
    tensors and trains on as torch's Adam does; the old ones are left alone."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2, amsgrad=True)
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2, amsgrad=True, foreach=False)
    with running_on(backend, kernel_launches):
        for seed in range(4):
            if seed == 2:
                old = [dict(opt.state[p]) for p in model.parameters()]
                saved = [{k: v.clone() for k, v in state.items()} for state in old]
                for m, o in ((model, opt), (ref_model, ref)):
                    for p in m.parameters():
                        change(o, p)
            for m, o in ((model, opt), (ref_model, ref)):
                backward(m, seed)
                o.step()
    for p, state, before in zip(model.parameters(), old, saved, strict=True):
        for key, value in state.items():
            if opt.state[p][key] is not value:  # replaced: the old tensor kept its values
                torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert_tensors_close(p, q)
        assert opt.state[p]["step"].item() == ref.state[q]["step"].item()
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert_tensors_close(opt.state[p][key], ref.state[q][key], name=key)


class Tagged(torch.Tensor):
    """A tensor subclass with storage of its own (what ``Tensor.as_subclass`` makes)."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_data_replaced_under_a_subclass_parameter_is_updated(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """``p.data = ...`` between steps gives a parameter new storage; for tensor-subclass
    parameters too, the next step updates the new storage (and training goes on as torch's)."""
    torch.manual_seed(0)
    init = torch.randn(4, 3)
    p, q = nn.Parameter(init.clone().as_subclass(Tagged)), nn.Parameter(init.clone())
    assert type(p) is Tagged
    opt, ref = FusedAdam([p], lr=1e-2), torch.optim.Adam([q], lr=1e-2, foreach=False)
    with running_on(backend, kernel_launches):
        for seed in range(3):
            if seed == 1:
                p.data, q.data = p.data.clone(), q.data.clone()
            g = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))
            p.grad, q.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
    assert_tensors_close(p.as_subclass(torch.Tensor).detach(), q.detach())


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_that_raises_creates_and_changes_nothing(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """Everything is checked before the first write: a ``grad_scale`` that is not one element
    raises before any state is created, and a float8 parameter (torch's fused kernel refuses
    it) raises before the float32 parameter of another bucket is updated."""
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    model = make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2)
    backward(model, 0)
    opt.grad_scale = torch.ones(2)
    with torchkit.force_backend(backend), pytest.raises(ValueError, match="grad_scale must be"):
        opt.step()
    assert len(opt.state) == 0
    full = nn.Parameter(torch.ones(4))
    low = nn.Parameter(torch.ones(4).to(torch.float8_e4m3fn))
    full.grad, low.grad = torch.ones(4), torch.ones(4).to(torch.float8_e4m3fn)
    opt = FusedAdam([full, low])
    with torchkit.force_backend(backend), pytest.raises(TypeError, match="float8_e4m3fn"):
        opt.step()
    assert len(opt.state) == 0
    torch.testing.assert_close(full.detach(), torch.ones(4), rtol=0, atol=0)


def test_torch_resumes_a_fusedadam_checkpoint_with_its_fused_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FusedAdam's state_dict says ``fused=True`` where torch's fused Adam can run the group,
    so a ``torch.optim.Adam()`` that loads it continues with torch's fused kernel, as
    FusedAdam ran; a complex group keeps ``fused=None`` (torch's fused Adam refuses complex
    parameters), and a group that names torch's foreach implementation keeps it."""
    real = nn.Parameter(torch.randn(3))
    cplx = nn.Parameter(torch.randn(3, dtype=torch.complex64))
    opt = FusedAdam([{"params": [real]}, {"params": [cplx]}], lr=1e-2)
    real.grad, cplx.grad = torch.ones(3), torch.ones(3, dtype=torch.complex64)
    with torchkit.force_backend("torch"):
        opt.step()
    saved = opt.state_dict()
    assert [g["fused"] for g in saved["param_groups"]] == [True, None]
    assert opt.param_groups[0]["fused"] is None  # the optimizer's own groups are unchanged
    calls: list[int] = []
    original = torch._fused_adam_
    monkeypatch.setattr(
        torch, "_fused_adam_", lambda *a, **k: (calls.append(len(a[0])), original(*a, **k))[1]
    )
    back = torch.optim.Adam([{"params": [real]}, {"params": [cplx]}], lr=1e-2)
    back.load_state_dict(saved)
    back.step()
    assert calls == [1]  # the real group, fused; the complex one on torch's default path
    foreach = torch.optim.Adam([real], lr=1e-2, foreach=True)
    fused = FusedAdam([real], lr=1e-2)
    fused.load_state_dict(foreach.state_dict())
    assert fused.state_dict()["param_groups"][0]["fused"] is None


def test_capturable_is_accepted_and_kept_for_the_state_dict() -> None:
    """Every FusedAdam step is capturable, so ``capturable=True`` trains as usual; it is kept
    in the groups, and a torch checkpoint saved with it loads (its device step counters
    included)."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2, capturable=True)
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2, fused=True)
    with torchkit.force_backend("torch"):
        for seed in range(3):
            for m, o in ((model, opt), (ref_model, ref)):
                backward(m, seed)
                o.step()
    assert all(g["capturable"] for g in opt.state_dict()["param_groups"])
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert_tensors_close(p, q)
    twin = FusedAdam(make_model().parameters())
    twin.load_state_dict(torch.optim.Adam(make_model().parameters(), capturable=True).state_dict())
    assert twin.param_groups[0]["capturable"] is True


def test_graph_capture_needs_a_first_step_then_reuses_the_tables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Building the tables copies from the host, which a CUDA graph cannot capture: the first
    step refuses and changes nothing. After an ordinary first step the captured steps reuse
    the tables (no rebuild). Capture is faked: this machine has no GPU."""
    model = make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2)
    capturing = [True]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    backward(model, 0)
    with torchkit.force_backend("torch"):
        with pytest.raises(RuntimeError, match="take a step before capturing a CUDA graph"):
            opt.step()
        assert len(opt.state) == 0
        capturing[0] = False
        opt.step()
        capturing[0] = True
        backward(model, 1)
        opt.step()
    assert [s["step"].item() for s in opt.state.values()] == [2.0] * 4


def test_deepcopy_and_hooks_keep_the_optimizer_working() -> None:
    """torch's own optimizer tests: a load_state_dict hook that stores a non-parameter entry
    in ``optimizer.state``, then ``copy.deepcopy``; the copy reports no step yet and steps."""
    model = make_model()
    opt = FusedAdam(model.parameters(), lr=1e-2)
    backward(model, 0)
    with torchkit.force_backend("torch"):
        opt.step()
    opt.register_load_state_dict_post_hook(lambda o: o.state.__setitem__("ran_hook", True))
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    twin = copy.deepcopy(opt)
    assert twin.last_backend is None
    assert twin.state["ran_hook"] is True
    for o in (opt, twin):
        for group in o.param_groups:
            for p in group["params"]:
                p.grad = torch.full_like(p, 0.5)
        with torchkit.force_backend("torch"):
            o.step()  # the same gradients: both continue the same way
    for group, twin_group in zip(opt.param_groups, twin.param_groups, strict=True):
        for p, q in zip(group["params"], twin_group["params"], strict=True):
            assert_tensors_close(p, q)
    assert opt.last_backend is twin.last_backend is Backend.TORCH


def test_meta_parameters_raise_like_torchs_fused_adam() -> None:
    p = nn.Parameter(torch.ones(3, device="meta"))
    p.grad = torch.ones(3, device="meta")
    with pytest.raises(RuntimeError, match="fused"):
        torch.optim.Adam([p], fused=True).step()
    opt = FusedAdam([p])
    with pytest.raises(RuntimeError, match=r"param_groups\[0\]\['params'\]\[0\] is on meta"):
        opt.step()
    assert len(opt.state) == 0


def test_bench_adam_prints_the_host_cost_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/bench_adam.py``'s host-cost table (the figures of docs/fused_adam.md) from
    a short run of its worker, every eager case (the compiled one is left out for time): one
    row per case with four timings and the cost of each tensor beyond 161. The launch is the
    worker's no-op, so the run times the host work only."""
    if not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    from triton.runtime.interpreter import InterpretedFunction

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_adam

    monkeypatch.setattr(InterpretedFunction, "run", bench_adam._no_launch)
    cases = [case for case in bench_adam.HOST_COST_CASES if case[2] != "compile"]
    rows = bench_adam.host_cost_rows(bench_adam._host_cost_worker(8, cases))
    lines = bench_adam.host_cost_table(rows).splitlines()
    assert [line.split(" | ")[0] for line in lines[2:]] == [
        *(f"| {label}" for label, _, _ in cases),
        "| each tensor beyond 161",
    ]
    for line in lines[2:-1]:
        figures = [float(cell) for cell in line.strip("| ").split(" | ")[1:]]
        assert len(figures) == 4, line
        assert all(f > 0 for f in figures), line
    assert {r["benchmark"] for r in rows} == {"adam host cost (launch stubbed)"}
