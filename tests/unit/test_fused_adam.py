"""FusedAdam / FusedAdamW against torch.optim.Adam / AdamW.

Every trajectory test trains the same small model twice, once with torch's optimizer (the
reference, its default single-tensor path on CPU) and once with torchkit's, on two param
groups with different hyperparameters, and compares parameters and optimizer state. Each runs
on the stock path (``force_backend("torch")``: torch's fused CPU kernel) and on the Triton
kernel under the interpreter, where a launch counter proves the kernel ran. Tensors stay
small: the interpreter runs every program instance through numpy.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from typing import Any

import _helpers
import numpy as np
import pytest
import torch
from _helpers import BACKENDS, assert_tensors_close
from torch import nn
from torch.optim.adam import adam as torch_adam

import torchkit
from torchkit.backend import Backend, interpreter_enabled
from torchkit.optim import AdamLaunch, FusedAdam, FusedAdamW, fused_adam, fused_adam_from
from torchkit.optim import adam as adam_module

KERNEL = "_adam_kernel"


running_on = functools.partial(_helpers.running_on, kernel=KERNEL)


def make_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A 2-layer MLP (4 tensors, 6*10 + 10 + 10*3 + 3 elements)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)).to(dtype)


def two_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Weights and biases as two groups that differ in every hyperparameter."""
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [
        {"params": weights},
        {"params": biases, "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.05},
    ]


def batches(steps: int, seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 6, generator=gen) for _ in range(steps)]


def train(model: nn.Module, opt: torch.optim.Optimizer, xs: list[torch.Tensor]) -> None:
    """``opt.step()`` once per batch on the loss ``mean(model(x)**2) + 0.1 * sum(model(x))``."""
    for x in xs:
        opt.zero_grad()
        y = model(x.to(next(model.parameters()).dtype))
        (y.pow(2).mean() + 0.1 * y.sum()).backward()
        opt.step()


def assert_same_training(
    model: nn.Module, opt: torch.optim.Optimizer, ref_model: nn.Module, ref: torch.optim.Optimizer
) -> None:
    """Parameters and every state tensor agree (fp32 defaults of assert_close)."""
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert_tensors_close(p, q, name=name)
    state, ref_state = opt.state_dict()["state"], ref.state_dict()["state"]
    assert state.keys() == ref_state.keys()
    for i in ref_state:
        assert state[i].keys() == ref_state[i].keys()
        for key, expected in ref_state[i].items():
            assert_tensors_close(state[i][key], expected, name=f"state[{i}][{key!r}]")


# (torchkit class, torch class, constructor kwargs); ids read as the options.
OPTION_CASES = [
    pytest.param(FusedAdam, torch.optim.Adam, {}, id="adam-defaults"),
    pytest.param(FusedAdam, torch.optim.Adam, {"amsgrad": True}, id="adam-amsgrad"),
    pytest.param(FusedAdam, torch.optim.Adam, {"maximize": True}, id="adam-maximize"),
    pytest.param(FusedAdam, torch.optim.Adam, {"weight_decay": 0.1}, id="adam-weight_decay"),
    pytest.param(
        FusedAdam,
        torch.optim.Adam,
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        id="adam-decoupled_weight_decay",
    ),
    pytest.param(
        FusedAdam,
        torch.optim.Adam,
        {"amsgrad": True, "maximize": True, "weight_decay": 0.1},
        id="adam-amsgrad-maximize-weight_decay",
    ),
    pytest.param(FusedAdam, torch.optim.Adam, {"lr": torch.tensor(0.01)}, id="adam-tensor_lr"),
    # beta1 < 0.5 takes the other branch of torch's lerp formula.
    pytest.param(FusedAdam, torch.optim.Adam, {"betas": (0.3, 0.6)}, id="adam-small_betas"),
    pytest.param(FusedAdamW, torch.optim.AdamW, {}, id="adamw-defaults"),
    pytest.param(
        FusedAdamW,
        torch.optim.AdamW,
        {"amsgrad": True, "maximize": True, "weight_decay": 0.2},
        id="adamw-amsgrad-maximize",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cls", "torch_cls", "kwargs"), OPTION_CASES)
def test_matches_torch_for_20_steps(
    backend: Backend,
    cls: type[FusedAdam],
    torch_cls: type[torch.optim.Adam],
    kwargs: dict[str, Any],
    kernel_launches: list[str],
) -> None:
    model, ref_model = make_model(), make_model()
    opt = cls(two_groups(model), **kwargs)
    ref = torch_cls(two_groups(ref_model), **kwargs)
    xs = batches(20)
    train(ref_model, ref, xs)
    with running_on(backend, kernel_launches):
        train(model, opt, xs)
    assert_same_training(model, opt, ref_model, ref)
    assert opt.last_backend is backend


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["plain", "amsgrad"])
def test_low_precision_against_fp32_reference(
    backend: Backend, dtype: torch.dtype, amsgrad: bool, kernel_launches: list[str]
) -> None:
    """Each step from the same (rounded) low-precision state: one fp32 Adam step on upcast
    copies, rounded once, must match the fused step within the dtype's tolerances."""
    model = make_model(dtype)
    opt = FusedAdamW(two_groups(model), lr=1e-2, amsgrad=amsgrad)
    ref_model = make_model(torch.float32)
    ref = torch.optim.AdamW(two_groups(ref_model), lr=1e-2, amsgrad=amsgrad)
    for x in batches(4):
        opt.zero_grad()
        model(x.to(dtype)).pow(2).mean().backward()
        with torch.no_grad():
            for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
                q.copy_(p)
                q.grad = p.grad.float()
        if opt.state:  # load_state_dict casts the low-precision state to the fp32 params
            ref.load_state_dict(copy.deepcopy(opt.state_dict()))  # steps would be shared
        ref.step()
        with running_on(backend, kernel_launches):
            opt.step()
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
            assert p.dtype == dtype
            assert_tensors_close(p, q.to(dtype), name=name)
            for key, expected in ref.state[q].items():
                assert opt.state[p][key].dtype == (torch.float32 if key == "step" else dtype)
                assert_tensors_close(opt.state[p][key], expected.to(dtype), name=f"{name} {key}")


@pytest.mark.interpreter
def test_one_launch_per_step_for_all_groups(kernel_launches: list[str]) -> None:
    model, ref_model = make_model(), make_model()
    groups = two_groups(model)
    groups.append({"params": [], "lr": 0.5})  # an empty group changes nothing
    opt = FusedAdam(groups, lr=1e-2)
    ref = torch.optim.Adam(two_groups(ref_model), lr=1e-2)
    xs = batches(3)
    train(ref_model, ref, xs)
    with running_on(Backend.TRITON_INTERPRETER, kernel_launches):
        for x in xs:
            before = kernel_launches.count(KERNEL)
            train(model, opt, [x])
            assert kernel_launches.count(KERNEL) - before == 1
    assert opt.last_launches == [
        AdamLaunch(torch.device("cpu"), torch.float32, Backend.TRITON_INTERPRETER, 1)
    ]
    assert_same_training(model, opt, ref_model, ref)


@pytest.mark.interpreter
def test_one_launch_per_dtype_and_per_option_combination(kernel_launches: list[str]) -> None:
    half = nn.Parameter(torch.randn(5, dtype=torch.float16))
    full = nn.Parameter(torch.randn(7))
    ams = nn.Parameter(torch.randn(3))
    opt = FusedAdam([{"params": [half, full]}, {"params": [ams], "amsgrad": True}])
    for p in (half, full, ams):
        p.grad = torch.ones_like(p)
    with running_on(Backend.TRITON_INTERPRETER, kernel_launches):
        opt.step()
    assert kernel_launches.count(KERNEL) == 3
    assert sorted((str(a.dtype), a.launches) for a in opt.last_launches) == [
        ("torch.float16", 1),
        ("torch.float32", 1),
        ("torch.float32", 1),
    ]


def test_state_dict_has_torchs_structure() -> None:
    """The groups and state of torch's ``Adam(fused=True)``: the state_dict says ``fused=True``
    (FusedAdam ran a fused Adam), so torch resumes it fused."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(two_groups(model), amsgrad=True)
    ref = torch.optim.Adam(two_groups(ref_model), amsgrad=True, fused=True)
    xs = batches(1)
    with torchkit.force_backend("torch"):
        train(model, opt, xs)
    train(ref_model, ref, xs)
    sd, ref_sd = opt.state_dict(), ref.state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"]
    for i, state in ref_sd["state"].items():
        assert sd["state"][i].keys() == state.keys()
        for key, value in state.items():
            got = sd["state"][i][key]
            assert (got.dtype, got.device, got.shape) == (value.dtype, value.device, value.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_state_dict_round_trip_continues_training(
    backend: Backend, direction: str, kernel_launches: list[str]
) -> None:
    """Train 6 steps with one optimizer, move its state_dict to the other kind, train 6 more:
    the result matches training 12 steps with the first one."""
    kwargs = {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.01}
    first, second = (
        (torch.optim.Adam, FusedAdam)
        if direction == "torch_to_fused"
        else (FusedAdam, torch.optim.Adam)
    )
    xs = batches(12)
    ref_model = make_model()
    ref = first(two_groups(ref_model), **kwargs)
    model = make_model()
    opt = first(two_groups(model), **kwargs)
    with running_on(backend, kernel_launches):
        train(ref_model, ref, xs)
        train(model, opt, xs[:6])
        moved = second(two_groups(model), **kwargs)
        moved.load_state_dict(opt.state_dict())
        train(model, moved, xs[6:])
    assert_same_training(model, moved, ref_model, ref)
    # And back again: torch's own group keys, with fused=True wherever FusedAdam ran last (a
    # torch Adam loading it resumes with its fused kernel).
    expected = [{**group, "fused": True} for group in ref.state_dict()["param_groups"]]
    assert moved.state_dict()["param_groups"] == expected


def test_loads_a_fused_torch_checkpoint() -> None:
    """torch's fused=True keeps step on the param device with fused=True in the groups; the
    groups keep torch's choice for the way back and FusedAdam still runs its own path."""
    model, ref_model = make_model(), make_model()
    ref = torch.optim.Adam(two_groups(ref_model), fused=True)
    xs = batches(4)
    train(ref_model, ref, xs[:2])
    model.load_state_dict(ref_model.state_dict())
    opt = FusedAdam(two_groups(model))
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # both keep training: no sharing
    with torchkit.force_backend("torch"):
        train(model, opt, xs[2:])
    train(ref_model, ref, xs[2:])
    assert_same_training(model, opt, ref_model, ref)
    assert all(g["fused"] is True for g in opt.state_dict()["param_groups"])


@pytest.mark.parametrize(
    ("torch_cls", "expected"),
    [(torch.optim.Adam, FusedAdam), (torch.optim.AdamW, FusedAdamW)],
    ids=["adam", "adamw"],
)
def test_fused_adam_from_continues_a_live_optimizer(
    torch_cls: type[torch.optim.Adam], expected: type[FusedAdam]
) -> None:
    model, ref_model = make_model(), make_model()
    adam = torch_cls(two_groups(model), lr=1e-2, amsgrad=True)
    ref = torch_cls(two_groups(ref_model), lr=1e-2, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.StepLR(adam, step_size=2)
    ref_scheduler = torch.optim.lr_scheduler.StepLR(ref, step_size=2)
    xs = batches(8)
    for x in xs:
        train(ref_model, ref, [x])
        ref_scheduler.step()
    for x in xs[:4]:
        train(model, adam, [x])
        scheduler.step()
    fused = fused_adam_from(adam)
    assert type(fused) is expected
    fused_scheduler = torch.optim.lr_scheduler.StepLR(fused, step_size=2)
    fused_scheduler.load_state_dict(scheduler.state_dict())
    with torchkit.force_backend("torch"):
        for x in xs[4:]:
            train(model, fused, [x])
            fused_scheduler.step()
    assert_same_training(model, fused, ref_model, ref)


def test_fused_adam_from_rejects_other_optimizers() -> None:
    sgd = torch.optim.SGD(make_model().parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"torch\.optim\.Adam or AdamW, got SGD"):
        fused_adam_from(sgd)
    differentiable = torch.optim.Adam(make_model().parameters(), differentiable=True)
    with pytest.raises(ValueError, match=r"differentiable=True \(param group 0 of the Adam\)"):
        fused_adam_from(differentiable)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_unscales_and_skips_inf_steps(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """With GradScaler: finite steps match torch's Adam on unscaled gradients; a step with an
    inf gradient changes no parameter, no state and no step count."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(two_groups(model), lr=1e-2)
    ref = torch.optim.Adam(two_groups(ref_model), lr=1e-2)
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    xs = batches(5)
    with running_on(backend, kernel_launches):
        for i, x in enumerate(xs):
            for m, o, s in ((model, opt, scaler), (ref_model, ref, ref_scaler)):
                o.zero_grad()
                s.scale(m(x).pow(2).mean()).backward()
                if i == 2:
                    m[0].weight.grad[0, 0] = math.inf
                before = [{k: v.clone() for k, v in st.items()} for st in o.state.values()]
                params_before = [p.detach().clone() for p in m.parameters()]
                s.step(o)
                s.update()
                if i == 2:  # skipped: everything as before
                    for p, q in zip(m.parameters(), params_before, strict=True):
                        assert torch.equal(p, q)
                    for st, old in zip(o.state.values(), before, strict=True):
                        for key, value in old.items():
                            assert torch.equal(st[key], value), key
            if i != 2:  # like torch's fused Adam, the gradients are left unscaled
                for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
                    assert_tensors_close(p.grad, q.grad, name="unscaled grad")
    assert scaler.get_scale() == ref_scaler.get_scale() == 512.0
    assert_same_training(model, opt, ref_model, ref)
    assert all(s["step"].item() == 4 for s in opt.state.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_scheduler_drives_lr(backend: Backend, kernel_launches: list[str]) -> None:
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(two_groups(model), lr=5e-2)
    ref = torch.optim.Adam(two_groups(ref_model), lr=5e-2)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.3) for o in (opt, ref)]
    xs = batches(10)
    with running_on(backend, kernel_launches):
        for x in xs:
            train(model, opt, [x])
            train(ref_model, ref, [x])
            for s in schedulers:
                s.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref.param_groups]
    assert_same_training(model, opt, ref_model, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_complex_parameters_match_torch(backend: Backend, kernel_launches: list[str]) -> None:
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(12, dtype=torch.complex64, generator=gen)
    grads = [torch.randn(12, dtype=torch.complex64, generator=gen) for _ in range(5)]
    p, q = nn.Parameter(init.clone()), nn.Parameter(init.clone())
    opt = FusedAdam([p], lr=1e-2, amsgrad=True, weight_decay=0.1)
    ref = torch.optim.Adam([q], lr=1e-2, amsgrad=True, weight_decay=0.1)
    with running_on(backend, kernel_launches):
        for g in grads:
            p.grad, q.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
    assert_tensors_close(torch.view_as_real(p), torch.view_as_real(q))
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert_tensors_close(
            torch.view_as_real(opt.state[p][key]), torch.view_as_real(ref.state[q][key])
        )


# (parameter, gradient) in different layouts; ids name the pair.
LAYOUT_MISMATCHES = [
    pytest.param(
        lambda: torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        lambda: torch.randn(2, 3, 4, 5),
        id="channels_last-param-contiguous-grad",
    ),
    pytest.param(
        lambda: torch.randn(3, 4),
        lambda: torch.randn(4).expand(3, 4),
        id="contiguous-param-expanded-grad",
    ),
    pytest.param(
        lambda: torch.randn(5, 4).t(),
        lambda: torch.randn(4, 5),
        id="transposed-param-contiguous-grad",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("make_param", "make_grad"), LAYOUT_MISMATCHES)
def test_gradient_with_other_strides_than_its_param(
    make_param: Any, make_grad: Any, backend: Backend, kernel_launches: list[str]
) -> None:
    """Both backends walk memory in the parameter's layout: a gradient in another one is
    copied into it (each step), and with a grad scale the unscaled copy is written back."""
    torch.manual_seed(0)
    init = make_param()
    p, q = nn.Parameter(init.clone()), nn.Parameter(init.clone())
    assert p.stride() == init.stride()
    opt, ref = FusedAdam([p], lr=1e-2), torch.optim.Adam([q], lr=1e-2)
    with running_on(backend, kernel_launches):
        for scale in (1.0, 8.0):
            grad = make_grad()
            assert grad.stride() != p.stride()
            p.grad, q.grad = grad * scale if scale != 1.0 else grad, grad.clone()
            opt.grad_scale = None if scale == 1.0 else torch.tensor(scale)
            opt.step()
            ref.step()
            assert_tensors_close(p.grad, q.grad, name="unscaled grad")
    assert_tensors_close(p, q)
    for key in ("exp_avg", "exp_avg_sq"):
        assert_tensors_close(opt.state[p][key], ref.state[q][key], name=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_converted_to_channels_last_mid_training(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """``model.to(memory_format=torch.channels_last)`` between steps leaves the moments in the
    old layout: the step re-lays them out into the parameters' and continues like torch."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 3)
    ref_model = copy.deepcopy(model)
    opt = FusedAdam(model.parameters(), lr=1e-2, amsgrad=True)
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2, amsgrad=True)
    x = torch.randn(2, 3, 6, 6)
    with running_on(backend, kernel_launches):
        for i in range(3):
            if i == 1:
                model.to(memory_format=torch.channels_last)
                ref_model.to(memory_format=torch.channels_last)
            for m, o in ((model, opt), (ref_model, ref)):
                o.zero_grad()
                m(x).pow(2).mean().backward()
                o.step()
    assert model.weight.is_contiguous(memory_format=torch.channels_last)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert opt.state[model.weight][key].stride() == model.weight.stride(), key
    assert_same_training(model, opt, ref_model, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_dense_parameter_raises_and_changes_nothing(backend: Backend) -> None:
    """No copy can share a strided view's layout: both backends refuse it before any write."""
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    p = nn.Parameter(torch.ones(4, 8)[:, ::2])
    p.grad = torch.ones(4, 4)
    opt = FusedAdam([p])
    with (
        torchkit.force_backend(backend),
        pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] is not dense"),
    ):
        opt.step()
    assert len(opt.state) == 0
    assert_tensors_close(p, torch.ones(4, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_is_torchs_functional_fused_adam(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """``fused_adam`` takes torch's functional arguments (one value per hyperparameter, a
    tensor lr read on the device) and steps as ``torch.optim.adam.adam(fused=True)``; several
    dtypes are one launch each."""
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(4, generator=gen), torch.randn(6, generator=gen).double()]
    grads = [torch.randn_like(p) for p in init]

    def tensors() -> list[list[torch.Tensor]]:
        moments = [[torch.zeros_like(p) for p in init] for _ in range(2)]
        return [[p.clone() for p in init], *moments, [], [torch.tensor(0.0) for _ in init]]

    ours, theirs = tensors(), tensors()
    kwargs = {"beta1": 0.9, "beta2": 0.99, "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False,
              "maximize": False, "decoupled_weight_decay": False}  # fmt: skip
    with running_on(backend, kernel_launches):
        launches = fused_adam(ours[0], grads, *ours[1:], lr=torch.tensor(0.1), **kwargs)
    torch_adam(theirs[0], [g.clone() for g in grads], *theirs[1:], lr=0.1, fused=True, **kwargs)
    for p, q in zip(ours[0], theirs[0], strict=True):
        assert_tensors_close(p, q)
    assert [s.item() for s in ours[4]] == [1.0, 1.0]
    assert [(a.dtype, a.backend, a.launches) for a in launches] == [
        (torch.float32, backend, 1),
        (torch.float64, backend, 1),
    ]


@pytest.mark.distributed
@pytest.mark.parametrize("backend", BACKENDS)
def test_dtensor_params_update_their_local_shards(
    backend: Backend, kernel_launches: list[str], tmp_path: Any
) -> None:
    """FSDP2 parameters are DTensors: the update runs on the local shards (a 1-rank mesh)."""
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        init = torch.randn(8, 3)
        p = nn.Parameter(distribute_tensor(init.clone(), mesh, [Shard(0)]))
        q = nn.Parameter(init.clone())
        opt = FusedAdam([p], lr=1e-2, weight_decay=0.1)
        ref = torch.optim.Adam([q], lr=1e-2, weight_decay=0.1)
        with running_on(backend, kernel_launches):
            for i in range(3):
                g = torch.full((8, 3), float(i + 1)) * torch.linspace(-1, 1, 3)
                p.grad = distribute_tensor(g, mesh, [Shard(0)])
                q.grad = g.clone()
                opt.step()
                ref.step()
        assert isinstance(p, DTensor)
        assert isinstance(opt.state[p]["exp_avg"], DTensor)
        assert_tensors_close(p.to_local(), q.detach())
        assert_tensors_close(opt.state[p]["exp_avg_sq"].to_local(), ref.state[q]["exp_avg_sq"])
    finally:
        dist.destroy_process_group()


def test_backend_for_and_last_backend() -> None:
    model = make_model()
    opt = FusedAdam(model.parameters())
    assert opt.last_backend is None
    with torchkit.force_backend("torch"):
        assert FusedAdam.backend_for("cpu") is Backend.TORCH
        assert FusedAdamW.backend_for(torch.device("cpu")) is Backend.TORCH
        train(model, opt, batches(1))
    assert opt.last_backend is Backend.TORCH
    assert opt.last_launches == [AdamLaunch(torch.device("cpu"), torch.float32, Backend.TORCH, 1)]


INVALID_ARGUMENTS = [
    pytest.param({"lr": -1e-3}, ValueError, "lr must be >= 0, got -0.001", id="lr"),
    pytest.param({"lr": torch.tensor([0.1, 0.2])}, ValueError, "lr as a Tensor", id="lr-tensor"),
    pytest.param({"lr": "0.1"}, TypeError, "lr must be a float", id="lr-type"),
    # torch accepts an infinite lr and turns the parameters into NaN at the first step.
    pytest.param({"lr": math.inf}, ValueError, "lr must be finite, got inf", id="lr-inf"),
    pytest.param({"eps": math.inf}, ValueError, "eps must be finite, got inf", id="eps-inf"),
    pytest.param(
        {"betas": (1.0, 0.999)}, ValueError, r"betas\[0\] must be in \[0, 1\)", id="beta1"
    ),
    pytest.param({"betas": (0.9, -0.1)}, ValueError, r"betas\[1\] must be in \[0, 1\)", id="beta2"),
    pytest.param({"betas": (0.9,)}, ValueError, "betas must be a pair", id="betas-length"),
    pytest.param({"eps": -1.0}, ValueError, "eps must be >= 0, got -1.0", id="eps"),
    pytest.param({"weight_decay": -0.1}, ValueError, "weight_decay must be >= 0", id="wd"),
    pytest.param(
        {"differentiable": True},
        ValueError,
        "differentiable=True is not supported",
        id="differentiable",
    ),
    pytest.param({"foreach": True}, ValueError, "foreach=True", id="foreach"),
    pytest.param({"fused": False}, ValueError, "fused=False", id="fused-false"),
]


@pytest.mark.parametrize(("kwargs", "error", "match"), INVALID_ARGUMENTS)
@pytest.mark.parametrize("cls", [FusedAdam, FusedAdamW])
def test_invalid_arguments_raise(
    cls: type[FusedAdam], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cls(make_model().parameters(), **kwargs)


@pytest.mark.parametrize(
    "lr",
    [
        pytest.param(np.float32(1e-2), id="numpy-float32"),
        pytest.param(np.float64(1e-2), id="numpy-float64"),
        pytest.param(1, id="int"),
    ],
)
def test_real_number_lr_is_accepted_like_torch(lr: Any) -> None:
    p, q = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt, ref = FusedAdam([p], lr=lr), torch.optim.Adam([q], lr=lr)
    p.grad, q.grad = torch.full((3,), 0.5), torch.full((3,), 0.5)
    with torchkit.force_backend("torch"):
        opt.step()
    ref.step()
    assert_tensors_close(p, q)


def test_accepted_implementation_options_are_torchs_defaults_in_the_groups() -> None:
    opt = FusedAdam(make_model().parameters(), foreach=False, fused=True)
    ref = torch.optim.Adam(make_model().parameters())
    assert opt.param_groups[0].keys() == ref.param_groups[0].keys()
    assert (opt.defaults["foreach"], opt.defaults["fused"]) == (None, None)


def test_invalid_param_group_raises_and_is_not_added() -> None:
    """Checked before torch's add_param_group fills in the defaults: neither the optimizer
    nor the caller's dict changes."""
    model = make_model()
    opt = FusedAdam([model[0].weight])
    group = {"params": [model[0].bias], "lr": -1.0}
    with pytest.raises(ValueError, match=r"lr \(param group 1\) must be >= 0"):
        opt.add_param_group(group)
    assert len(opt.param_groups) == 1
    assert group == {"params": [model[0].bias], "lr": -1.0}
    with pytest.raises(ValueError, match=r"differentiable=True \(param group 1\)"):
        opt.add_param_group({"params": [model[0].bias], "differentiable": True})
    opt.add_param_group({"params": [model[0].bias], "lr": 0.5})
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 0.5]


def test_loaded_differentiable_group_raises_at_step() -> None:
    model = make_model()
    opt = FusedAdam(model.parameters())
    sd = torch.optim.Adam(model.parameters(), differentiable=True).state_dict()
    opt.load_state_dict(sd)
    with pytest.raises(ValueError, match=r"differentiable=True \(param group 0\)"):
        train(model, opt, batches(1))
    assert len(opt.state) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_gradients_raise(backend: Backend) -> None:
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    opt = FusedAdam(emb.parameters())
    with torchkit.force_backend(backend), pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()
    assert len(opt.state) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_matches_torch(backend: Backend, kernel_launches: list[str]) -> None:
    """float64 parameters: torch's fused kernel on the stock path, the kernel's float64
    variant (float64 arithmetic, as torch's opmath) on the Triton path."""
    model, ref_model = make_model(torch.float64), make_model(torch.float64)
    opt = FusedAdamW(two_groups(model), lr=1e-2, amsgrad=True)
    ref = torch.optim.AdamW(two_groups(ref_model), lr=1e-2, amsgrad=True)
    xs = batches(5)
    train(ref_model, ref, xs)
    with running_on(backend, kernel_launches):
        train(model, opt, xs)
    assert_same_training(model, opt, ref_model, ref)
    assert opt.last_launches[0].dtype == torch.float64


# --- a step or load that raises changes nothing ----------------------------------------------


def _snapshot(opt: FusedAdam) -> tuple[dict[str, Any], list[torch.Tensor]]:
    params = [p.detach().clone() for g in opt.param_groups for p in g["params"]]
    return copy.deepcopy(opt.state_dict()), params


def assert_unchanged(opt: FusedAdam, before: tuple[dict[str, Any], list[torch.Tensor]]) -> None:
    """Parameters, param groups and every state tensor exactly as in ``before``."""
    state_dict, params = before
    now = opt.state_dict()
    assert now["param_groups"] == state_dict["param_groups"]
    assert now["state"].keys() == state_dict["state"].keys()
    for i, state in state_dict["state"].items():
        assert now["state"][i].keys() == state.keys()
        for key, value in state.items():
            torch.testing.assert_close(now["state"][i][key], value, rtol=0.0, atol=0.0)
    for p, q in zip([p for g in opt.param_groups for p in g["params"]], params, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=0.0, atol=0.0)


@pytest.mark.parametrize("steps_before", [0, 2], ids=["fresh", "after-2-steps"])
def test_step_on_a_backend_that_cannot_run_changes_nothing(steps_before: int) -> None:
    """A forced backend that cannot run raises before any state is created or counted; the
    next step is the one an untouched torch.optim.Adam takes."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(two_groups(model), lr=1e-2)
    ref = torch.optim.Adam(two_groups(ref_model), lr=1e-2)
    xs = batches(steps_before + 1)
    with torchkit.force_backend("torch"):
        train(model, opt, xs[:steps_before])
    train(ref_model, ref, xs[:steps_before])
    before = _snapshot(opt)
    with (
        torchkit.force_backend("triton"),
        pytest.raises(RuntimeError, match="compiled Triton kernels need CUDA"),
    ):
        train(model, opt, xs[steps_before:])
    assert_unchanged(opt, before)
    assert len(opt.state) == len(ref.state)  # no state created for the failed first step
    with torchkit.force_backend("torch"):
        opt.step()  # the gradients of the failed step are still there
    train(ref_model, ref, xs[steps_before:])
    assert_same_training(model, opt, ref_model, ref)


def test_step_checks_every_option_combination_before_updating_any() -> None:
    """Groups with different amsgrad run as separate buckets; a parameter that is not dense
    in the second one must stop the step before the first one is updated or any state is
    created. The message names the parameter by its place in its group."""
    good = nn.Parameter(torch.ones(3))
    idle = nn.Parameter(torch.ones(4))
    bad = nn.Parameter(torch.ones(2, 6)[:, ::2])
    opt = FusedAdam([{"params": [good]}, {"params": [idle, bad], "amsgrad": True}])
    good.grad, bad.grad = torch.ones(3), torch.ones(2, 3)
    before = _snapshot(opt)
    with (
        torchkit.force_backend("torch"),
        pytest.raises(ValueError, match=r"param_groups\[1\]\['params'\]\[1\] is not dense"),
    ):
        opt.step()
    assert_unchanged(opt, before)
    assert len(opt.state) == 0


@pytest.mark.parametrize(
    ("group", "key", "value", "match"),
    [
        pytest.param(0, "lr", -1.0, r"lr \(param group 0\) must be >= 0, got -1.0", id="lr"),
        pytest.param(
            1,
            "betas",
            (0.9, 1.0),
            r"betas\[1\] \(param group 1\) must be in \[0, 1\), got 1.0",
            id="beta2",
        ),
        pytest.param(1, "eps", -1e-8, r"eps \(param group 1\) must be >= 0", id="eps"),
    ],
)
def test_step_rejects_a_hyperparameter_changed_out_of_range(
    group: int, key: str, value: Any, match: str
) -> None:
    """A group changed after construction (a scheduler's bug, say) is checked at every step;
    the step that finds it changes nothing."""
    model = make_model()
    opt = FusedAdam(two_groups(model), lr=1e-2)
    xs = batches(2)
    with torchkit.force_backend("torch"):
        train(model, opt, xs[:1])
    opt.param_groups[group][key] = value
    before = _snapshot(opt)
    with torchkit.force_backend("torch"), pytest.raises(ValueError, match=match):
        train(model, opt, xs[1:])
    assert_unchanged(opt, before)


def test_torch_backend_calls_torchs_functional_once_per_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On the stock path each param group is one call of torch's public functional Adam with
    ``fused=True`` and the group's hyperparameters (grad_scale and found_inf passed through)."""
    calls: list[tuple[int, float, float, bool]] = []
    original = adam_module.torch_adam

    def counting(params: list[torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        calls.append((len(params), kwargs["lr"], kwargs["weight_decay"], kwargs["fused"]))
        return original(params, *args, **kwargs)

    monkeypatch.setattr(adam_module, "torch_adam", counting)

    def three_groups(model: nn.Module) -> list[dict[str, Any]]:
        first, second = model[0], model[2]
        return [
            {"params": [first.weight]},
            {"params": [first.bias, second.bias], "lr": 3e-3, "weight_decay": 0.05},
            {"params": [second.weight]},
        ]

    model, ref_model = make_model(), make_model()
    opt = FusedAdam(three_groups(model), lr=1e-2)
    ref = torch.optim.Adam(three_groups(ref_model), lr=1e-2)
    xs = batches(2)
    with torchkit.force_backend("torch"):
        train(model, opt, xs)
    train(ref_model, ref, xs)
    step = [(1, 1e-2, 0.0, True), (2, 3e-3, 0.05, True), (1, 1e-2, 0.0, True)]
    assert calls == step * 2
    assert opt.last_launches == [AdamLaunch(torch.device("cpu"), torch.float32, Backend.TORCH, 3)]
    assert_same_training(model, opt, ref_model, ref)


@pytest.mark.interpreter
def test_functional_checks_every_bucket_before_updating_any() -> None:
    """Two devices, one of which the forced backend cannot run on: nothing is updated."""
    if not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    tensors = {
        "params": [torch.ones(3), torch.ones(3, device="meta")],
        "grads": [torch.ones(3), torch.ones(3, device="meta")],
        "exp_avgs": [torch.zeros(3), torch.zeros(3, device="meta")],
        "exp_avg_sqs": [torch.zeros(3), torch.zeros(3, device="meta")],
        "max_exp_avg_sqs": [],
        "state_steps": [torch.tensor(0.0), torch.tensor(0.0, device="meta")],
    }
    with (
        torchkit.force_backend("triton-interpreter"),
        pytest.raises(RuntimeError, match="interpreter runs on CPU tensors, got device meta"),
    ):
        fused_adam(**tensors, lr=0.1, **FUNCTIONAL_OPTIONS)
    assert_tensors_close(tensors["params"][0], torch.ones(3))
    assert tensors["state_steps"][0].item() == 0.0


FUNCTIONAL_OPTIONS = {
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "decoupled_weight_decay": False,
}

# (what is wrong, the functional's tensor lists for one (2, 3) param, error regex); torch's own
# CPU kernel accepts the first two and reads past or across the gradient.
MISFIT_TENSORS = {
    "grad-fewer-elements": (
        {"grads": [torch.ones(4)]},
        r"grads\[0\] must have the shape, dtype and device of params\[0\] \(\(2, 3\), "
        r"torch.float32, cpu\), got \(4,\), torch.float32, cpu",
    ),
    "exp_avg-transposed": ({"exp_avgs": [torch.zeros(3, 2)]}, r"exp_avgs\[0\] .* got \(3, 2\)"),
    "exp_avg_sq-float16": (
        {"exp_avg_sqs": [torch.zeros(2, 3, dtype=torch.float16)]},
        r"exp_avg_sqs\[0\] .* got \(2, 3\), torch.float16",
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("overrides", "match"), MISFIT_TENSORS.values(), ids=MISFIT_TENSORS.keys())
def test_functional_rejects_tensors_that_do_not_fit_their_param(
    overrides: dict[str, list[torch.Tensor]], match: str, backend: Backend
) -> None:
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    tensors = {
        "params": [torch.ones(2, 3)],
        "grads": [torch.ones(2, 3)],
        "exp_avgs": [torch.zeros(2, 3)],
        "exp_avg_sqs": [torch.zeros(2, 3)],
        "max_exp_avg_sqs": [],
        "state_steps": [torch.tensor(0.0)],
        **overrides,
    }
    with torchkit.force_backend(backend), pytest.raises(ValueError, match=match):
        fused_adam(**tensors, lr=0.1, **FUNCTIONAL_OPTIONS)
    assert_tensors_close(tensors["params"][0], torch.ones(2, 3))
    assert tensors["state_steps"][0].item() == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_refuses_a_moment_in_another_layout(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """A moment is updated in place, so it must share its parameter's layout: every backend
    refuses a transposed one before the step counter moves (torch's own CPU kernel would
    walk it as if it were contiguous)."""
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    p, step = torch.ones(4, 4), torch.tensor(0.0)
    exp_avg = torch.arange(16.0).reshape(4, 4).t().contiguous().t()
    lists = ([p], [torch.ones(4, 4)], [exp_avg], [torch.zeros(4, 4)], [], [step])
    with (
        torchkit.force_backend(backend),
        pytest.raises(ValueError, match=r"exp_avgs\[0\] must have the strides of params\[0\]"),
    ):
        fused_adam(*lists, lr=0.1, **FUNCTIONAL_OPTIONS)
    assert (step.item(), kernel_launches.count(KERNEL)) == (0.0, 0)
    assert_tensors_close(p, torch.ones(4, 4))
    assert_tensors_close(exp_avg, torch.arange(16.0).reshape(4, 4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_copies_a_gradient_in_another_layout(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """Same result as torch's single-tensor Adam with a transposed gradient (torch's fused CPU
    kernel alone would read it as if contiguous)."""
    gen = torch.Generator().manual_seed(0)
    p, grad = torch.randn(4, 4, generator=gen), torch.randn(4, 4, generator=gen).t()
    q = nn.Parameter(p.clone())
    step = torch.tensor(0.0)
    with running_on(backend, kernel_launches):
        fused_adam([p], [grad], [torch.zeros(4, 4)], [torch.zeros(4, 4)], [], [step], lr=0.1,
                   **FUNCTIONAL_OPTIONS)  # fmt: skip
    ref = torch.optim.Adam([q], lr=0.1, foreach=False)
    q.grad = grad.contiguous()
    ref.step()
    assert_tensors_close(p, q)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_functional_refuses_maxima_for_some_params_only(amsgrad: bool) -> None:
    """``max_exp_avg_sqs`` is empty or one per parameter, with or without AMSGrad (torch's fused
    Adam raises a RuntimeError for other lengths); nothing is written."""
    p, step = torch.ones(3), torch.tensor(0.0)
    lists = ([p, p.clone()], [torch.ones(3)] * 2, [torch.zeros(3) for _ in "ab"],
             [torch.zeros(3) for _ in "ab"], [torch.zeros(3)], [step, step.clone()])  # fmt: skip
    match = "amsgrad=True needs 2 max_exp_avg_sqs" if amsgrad else "max_exp_avg_sqs has 1 entries"
    options = {**FUNCTIONAL_OPTIONS, "amsgrad": amsgrad}
    with torchkit.force_backend("torch"), pytest.raises(ValueError, match=match):
        fused_adam(*lists, lr=0.1, **options)
    assert step.item() == 0.0
    assert_tensors_close(p, torch.ones(3))


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [
        pytest.param(
            "grad_scale", torch.ones(2), "grad_scale must be a one-element", id="grad_scale"
        ),
        pytest.param(
            "found_inf", torch.zeros(2), "found_inf must be a one-element", id="found_inf"
        ),
    ],
)
def test_functional_checks_the_amp_tensors(name: str, value: torch.Tensor, match: str) -> None:
    p, step = torch.ones(3), torch.tensor(0.0)
    lists = ([p], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [], [step])
    with torchkit.force_backend("torch"), pytest.raises(ValueError, match=match):
        fused_adam(*lists, lr=0.1, **FUNCTIONAL_OPTIONS, **{name: value})
    assert step.item() == 0.0
    assert_tensors_close(p, torch.ones(3))


# (saved shape of one state tensor of parameter 1, whose shape is (2, 3)); every one used to
# fail half-way (broadcast RuntimeError), with a bare zip() error, or load and fail at step().
MISFIT_STATE = {
    "transposed": ("exp_avg", (3, 2)),
    "flattened": ("exp_avg_sq", (6,)),
    "same-strides-fewer-rows": ("max_exp_avg_sq", (1, 3)),
}


@pytest.mark.parametrize(("key", "shape"), MISFIT_STATE.values(), ids=MISFIT_STATE.keys())
def test_load_state_dict_rejects_state_of_other_shapes_and_loads_nothing(
    key: str, shape: tuple[int, ...]
) -> None:
    def trained() -> FusedAdam:
        torch.manual_seed(0)
        params = [nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(2, 3))]
        opt = FusedAdam(params, amsgrad=True)
        for p in params:
            p.grad = torch.ones_like(p)
        with torchkit.force_backend("torch"):
            opt.step()
        return opt

    opt = trained()
    before = _snapshot(opt)
    saved = trained().state_dict()
    saved["state"][1][key] = torch.zeros(shape)
    message = (
        rf"state of parameter 1 \(param group 0\): '{key}' has shape {re.escape(str(shape))}, "
        r"the parameter \(2, 3\)"
    )
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(saved)
    assert_unchanged(opt, before)


def test_load_state_dict_rejects_a_step_of_several_elements() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = FusedAdam([p])
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0] = {
        "step": torch.ones(3),
        "exp_avg": torch.zeros(3),
        "exp_avg_sq": torch.zeros(3),
    }
    with pytest.raises(ValueError, match=r"parameter 0 .* 'step' must have one element"):
        opt.load_state_dict(saved)
    assert len(opt.state) == 0


def test_load_state_dict_rejects_moments_of_another_dtype() -> None:
    """torch's load_state_dict casts the moments of a floating-point parameter to its dtype,
    but only moves those of a complex one: FusedAdam refuses what does not fit and loads
    nothing (its step trusts the state it holds)."""
    p = nn.Parameter(torch.ones(3, dtype=torch.complex64))
    opt = FusedAdam([p])
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0] = {
        "step": torch.tensor(1.0),
        "exp_avg": torch.zeros(3, dtype=torch.complex128),
        "exp_avg_sq": torch.zeros(3, dtype=torch.complex64),
    }
    message = (
        r"parameter 0 \(param group 0\): 'exp_avg' is torch\.complex128 on cpu, the parameter "
        r"torch\.complex64 on cpu"
    )
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(saved)
    assert len(opt.state) == 0


def test_loaded_step_counters_become_float32_on_the_cpu() -> None:
    """Counters saved as float64 (torch's Adam under a float64 default dtype) load as the
    float32 CPU counters FusedAdam creates, and training continues as torch's does."""
    model, ref_model = make_model(), make_model()
    ref = torch.optim.Adam(two_groups(ref_model), lr=1e-2)
    xs = batches(3)
    train(ref_model, ref, xs[:1])
    saved = copy.deepcopy(ref.state_dict())
    for entries in saved["state"].values():
        entries["step"] = entries["step"].to(torch.float64)
    model.load_state_dict(ref_model.state_dict())
    opt = FusedAdam(two_groups(model), lr=1e-2)
    opt.load_state_dict(saved)
    steps = [entries["step"] for entries in opt.state.values()]
    assert [(s.device.type, s.dtype, s.item()) for s in steps] == [("cpu", torch.float32, 1.0)] * 4
    with torchkit.force_backend("torch"):
        train(model, opt, xs[1:])
    train(ref_model, ref, xs[1:])
    assert_same_training(model, opt, ref_model, ref)


@pytest.mark.interpreter
def test_state_saved_in_another_layout_is_loaded_in_the_params(kernel_launches: list[str]) -> None:
    """A checkpoint saved before the model went channels_last still resumes on the kernel."""
    init = torch.randn(2, 3, 4, 5)
    grads = [torch.randn(2, 3, 4, 5) for _ in range(3)]
    q = nn.Parameter(init.clone())
    ref = torch.optim.Adam([q])
    q.grad = grads[0].clone()
    ref.step()
    p = nn.Parameter(q.detach().contiguous(memory_format=torch.channels_last))
    opt = FusedAdam([p])
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    assert opt.state[p]["exp_avg"].stride() == p.stride()
    with running_on(Backend.TRITON_INTERPRETER, kernel_launches):
        for g in grads[1:]:
            p.grad, q.grad = g.contiguous(memory_format=torch.channels_last), g.clone()
            opt.step()
            ref.step()
    assert_tensors_close(p, q)
    assert_tensors_close(opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_with_explicit_unscale_for_clipping(
    backend: Backend, kernel_launches: list[str]
) -> None:
    """``scaler.unscale_(opt)`` before clipping: the scaler then hands over no grad_scale and
    the step must not unscale a second time."""
    model, ref_model = make_model(), make_model()
    opt = FusedAdam(two_groups(model), lr=1e-2)
    ref = torch.optim.Adam(two_groups(ref_model), lr=1e-2)
    scalers = [torch.amp.GradScaler("cpu", init_scale=256.0) for _ in range(2)]
    with running_on(backend, kernel_launches):
        for x in batches(3):
            for m, o, s in ((model, opt, scalers[0]), (ref_model, ref, scalers[1])):
                o.zero_grad()
                s.scale(m(x).pow(2).mean()).backward()
                s.unscale_(o)
                nn.utils.clip_grad_norm_(m.parameters(), max_norm=0.1)
                s.step(o)
                s.update()
    assert_same_training(model, opt, ref_model, ref)
