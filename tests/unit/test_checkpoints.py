"""Checkpoint compatibility: torch Adam <-> FusedAdam, every torchkit scheduler, and bad loads.

The resume tests send every checkpoint through ``torch.save`` to a file and back with
``torch.load(weights_only=True)``, as a training script resumes. The reference is always the
same training run without the interruption; the same operations on the same values in the same
process give the same floats, so resumed runs are compared exactly unless the optimizer class
changes on the way (then fp32 defaults: torch's single-tensor Adam and the fused kernels round
differently).

* ``test_optimizer_round_trip_*`` extends ``test_fused_adam.py``'s in-memory round trip to
  files, AdamW, torch's foreach/fused checkpoints and a scheduler riding along;
* ``test_scheduler_resume_gives_*`` covers every scheduler configuration with FusedAdam, resumed
  mid-warmup and mid-decay; ``test_scheduler_resume_with_the_optimizer_loaded_first`` the other
  common load order, against torch's OneCycleLR;
* ``test_*_mismatch_*`` / ``test_*_other_shapes_*`` load a state_dict that does not fit and
  check the error, and that the object is unchanged and keeps working.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import BACKENDS, assert_tensors_close
from torch import nn
from torch.optim import lr_scheduler as torch_sched

import torchkit
from torchkit.backend import Backend, interpreter_enabled
from torchkit.optim import FusedAdam, FusedAdamW
from torchkit.optim.lr_scheduler import NoamLR, OneCycleLR, WarmupDecayLR

# ----------------------------------------------------------------------------- helpers


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2))


def two_groups(model: nn.Module) -> list[dict[str, Any]]:
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": weights}, {"params": biases, "lr": 3e-3, "weight_decay": 0.0}]


def batch(step: int) -> torch.Tensor:
    return torch.randn(6, 5, generator=torch.Generator().manual_seed(step))


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch_sched.LRScheduler | None,
    steps: range,
) -> list[list[float]]:
    """One step per batch index in ``steps``; returns the lrs every step used."""
    lrs = []
    for step in steps:
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.zero_grad()
        y = model(batch(step))
        (y.pow(2).mean() + 0.1 * y.sum()).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return lrs


def save_and_load(tmp_path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``torch.save`` to a file, ``torch.load(weights_only=True)`` back."""
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)
    return torch.load(path, weights_only=True)


def backend_context(backend: Backend) -> Any:
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    return torchkit.force_backend(backend)


# ------------------------------------------------------ torch Adam <-> FusedAdam, via files


def _adam(**kwargs: Any) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda groups: torch.optim.Adam(groups, **kwargs)


def _cls(cls: type, **kwargs: Any) -> Callable[[Any], torch.optim.Optimizer]:
    return lambda groups: cls(groups, **kwargs)


OPTIONS = {"lr": 1e-2, "weight_decay": 0.01, "amsgrad": True}

# (saving optimizer, loading optimizer): every direction between torch's classes (and its
# foreach / fused implementations) and torchkit's.
ROUND_TRIPS = {
    "Adam->FusedAdam": (_adam(**OPTIONS), _cls(FusedAdam, **OPTIONS)),
    "FusedAdam->Adam": (_cls(FusedAdam, **OPTIONS), _adam(**OPTIONS)),
    "AdamW->FusedAdamW": (
        _cls(torch.optim.AdamW, **OPTIONS),
        _cls(FusedAdamW, **OPTIONS),
    ),
    "FusedAdamW->AdamW": (
        _cls(FusedAdamW, **OPTIONS),
        _cls(torch.optim.AdamW, **OPTIONS),
    ),
    "Adam(foreach)->FusedAdam": (_adam(foreach=True, **OPTIONS), _cls(FusedAdam, **OPTIONS)),
    "Adam(fused)->FusedAdam": (_adam(fused=True, **OPTIONS), _cls(FusedAdam, **OPTIONS)),
    "FusedAdam->Adam(fused)": (_cls(FusedAdam, **OPTIONS), _adam(fused=True, **OPTIONS)),
    "Adam(maximize)->FusedAdam": (
        _adam(maximize=True, lr=1e-2, weight_decay=0.05),
        _cls(FusedAdam, maximize=True, lr=1e-2, weight_decay=0.05),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("save", "load"), ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_optimizer_round_trip_through_a_file_continues_training(
    save: Callable[[Any], torch.optim.Optimizer],
    load: Callable[[Any], torch.optim.Optimizer],
    backend: Backend,
    tmp_path: Path,
) -> None:
    """Train 4 steps, checkpoint model + optimizer + StepLR, resume in the other class for 4
    more: parameters, optimizer state and lrs equal those of 8 uninterrupted steps."""
    with backend_context(backend):
        ref_model = make_model()
        ref = save(two_groups(ref_model))
        ref_lrs = train(ref_model, ref, torch_sched.StepLR(ref, 3, gamma=0.5), range(8))

        model = make_model()
        first = save(two_groups(model))
        scheduler = torch_sched.StepLR(first, 3, gamma=0.5)
        train(model, first, scheduler, range(4))
        loaded = save_and_load(
            tmp_path,
            {
                "model": model.state_dict(),
                "optimizer": first.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
        )
        model = make_model(seed=1)  # different values: everything must come from the file
        second = load(two_groups(model))
        scheduler = torch_sched.StepLR(second, 3, gamma=0.5)
        model.load_state_dict(loaded["model"])
        second.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        lrs = train(model, second, scheduler, range(4, 8))

    assert lrs == ref_lrs[4:]
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert_tensors_close(p, q, name=name)  # fp32 defaults: another class, other rounding
    state, ref_state = second.state_dict()["state"], ref.state_dict()["state"]
    assert state.keys() == ref_state.keys()
    for i, expected in ref_state.items():
        assert state[i].keys() == expected.keys()
        for key, value in expected.items():
            assert_tensors_close(state[i][key].to(value.device), value, name=f"state[{i}][{key}]")
    if isinstance(second, FusedAdam):
        assert second.last_backend is backend


# -------------------------------------------------- every torchkit scheduler, resumed

STEPS = 24
# (factory, a step in the warmup, a step in the decay); totals leave room past the decay.
SCHEDULER_CASES: dict[str, tuple[Callable[[torch.optim.Optimizer], Any], int, int]] = {}
for _warmup in ("linear", "exponential", "constant"):
    for _decay, _extra in (
        ("cosine", {}),
        ("linear", {}),
        ("polynomial", {"power": 2.0}),
        ("exponential", {"gamma": 0.8}),
        ("step", {"gamma": 0.5, "step_size": 4}),
        ("inverse_sqrt", {}),
        ("constant", {}),
    ):
        SCHEDULER_CASES[f"WarmupDecayLR-{_warmup}-{_decay}"] = (
            lambda opt, w=_warmup, d=_decay, e=_extra: WarmupDecayLR(
                opt, 6, 20, warmup=w, decay=d, min_lr=[1e-4, 0.0], **e
            ),
            3,
            12,
        )
SCHEDULER_CASES["OneCycleLR-cos"] = (
    lambda opt: OneCycleLR(opt, max_lr=[0.05, 0.01], total_steps=STEPS, pct_start=0.25),
    3,
    12,
)
SCHEDULER_CASES["OneCycleLR-linear-three-phase"] = (
    lambda opt: OneCycleLR(
        opt, max_lr=0.05, total_steps=STEPS, anneal_strategy="linear", three_phase=True
    ),
    3,
    18,
)
SCHEDULER_CASES["NoamLR"] = (lambda opt: NoamLR(opt, d_model=16, warmup_steps=6), 3, 12)
SCHEDULER_CASES["Chained-WarmupDecayLR-ExponentialLR"] = (
    lambda opt: torch_sched.ChainedScheduler(
        [WarmupDecayLR(opt, 6, 20), torch_sched.ExponentialLR(opt, gamma=0.97)]
    ),
    3,
    12,
)


def _fused(model: nn.Module) -> FusedAdam:
    return FusedAdam(two_groups(model), lr=1e-2, weight_decay=0.01)


def _uninterrupted_and_stopped(factory, stop: int):
    """Train one model for the whole run and a twin for ``stop`` steps, with FusedAdam and the
    scheduler ``factory`` builds: (reference model, its lrs, twin, twin's optimizer, scheduler)."""
    ref_model = make_model()
    ref_opt = _fused(ref_model)
    ref_lrs = train(ref_model, ref_opt, factory(ref_opt), range(STEPS - 1))
    model = make_model()
    opt = _fused(model)
    scheduler = factory(opt)
    train(model, opt, scheduler, range(stop))
    return ref_model, ref_lrs, model, opt, scheduler


@pytest.mark.parametrize("phase", ["mid-warmup", "mid-decay"])
@pytest.mark.parametrize("case", list(SCHEDULER_CASES))
def test_scheduler_resume_gives_the_uninterrupted_run(
    case: str, phase: str, tmp_path: Path
) -> None:
    """Stop in the warmup or in the decay, save everything, resume into fresh objects: the lrs
    and the parameters are exactly those of the uninterrupted run (same ops, same values)."""
    factory, in_warmup, in_decay = SCHEDULER_CASES[case]
    stop = in_warmup if phase == "mid-warmup" else in_decay
    with torchkit.force_backend("torch"):
        ref_model, ref_lrs, model, opt, scheduler = _uninterrupted_and_stopped(factory, stop)
        loaded = save_and_load(
            tmp_path,
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": scheduler.state_dict(),
            },
        )
        # Build everything, then load everything (torch's documented order).
        model = make_model(seed=1)
        opt = _fused(model)
        scheduler = factory(opt)
        model.load_state_dict(loaded["model"])
        opt.load_state_dict(loaded["optimizer"])
        scheduler.load_state_dict(loaded["scheduler"])
        lrs = train(model, opt, scheduler, range(stop, STEPS - 1))

    assert lrs == ref_lrs[stop:]
    if phase == "mid-warmup":  # the resumed part covers warmup, decay and the final lr
        assert len(set(map(tuple, lrs))) >= 3
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0.0, atol=0.0, msg=lambda m, n=name: f"{n}: {m}")


ONE_CYCLE_ARGS = {"max_lr": [0.05, 0.01], "total_steps": STEPS, "pct_start": 0.25}
LOAD_ORDER_CASES = {
    # torch's own OneCycleLR is the reference: it resumes in this order.
    "torch-OneCycleLR": lambda opt: torch_sched.OneCycleLR(opt, **ONE_CYCLE_ARGS),
    "OneCycleLR": lambda opt: OneCycleLR(opt, **ONE_CYCLE_ARGS),
    "WarmupDecayLR": lambda opt: WarmupDecayLR(opt, 6, 20, min_lr=[1e-4, 0.0]),
    "NoamLR": lambda opt: NoamLR(opt, d_model=16, warmup_steps=6),
}


@pytest.mark.parametrize("case", list(LOAD_ORDER_CASES))
def test_scheduler_resume_with_the_optimizer_loaded_first(case: str) -> None:
    """The other common order: load the optimizer, then build the scheduler on it and load
    the scheduler. Building writes the lr of step 0 into the param groups, so with torch's
    OneCycleLR the first resumed step runs at that lr and every later step is right again.
    torchkit's schedulers must recover at least as well: from the second step on, the lrs
    of the uninterrupted run, not those lrs scaled by lr(0) / lr(stop - 1) (the step-0 lr
    taken for another scheduler's factor and chained into every later lr)."""
    factory = LOAD_ORDER_CASES[case]
    stop = 12
    with torchkit.force_backend("torch"):
        _, ref_lrs, model, opt, scheduler = _uninterrupted_and_stopped(factory, stop)
        saved_opt, saved_scheduler = opt.state_dict(), scheduler.state_dict()

        opt = _fused(model)
        opt.load_state_dict(saved_opt)
        scheduler = factory(opt)
        scheduler.load_state_dict(saved_scheduler)
        lrs = train(model, opt, scheduler, range(stop, STEPS - 1))
    assert lrs[1:] == ref_lrs[stop + 1 :]


# ------------------------------------------------------------ loads that do not fit


def _sgd(groups: int) -> torch.optim.SGD:
    params = [{"params": [nn.Parameter(torch.ones(3))], "lr": 0.1 / (g + 1)} for g in range(groups)]
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


SCHEDULER_FACTORIES: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "WarmupDecayLR": lambda opt: WarmupDecayLR(opt, 4, 12, min_lr=1e-3),
    "OneCycleLR": lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=20),
    "NoamLR": lambda opt: NoamLR(opt, d_model=16, warmup_steps=4),
}


def _stepped(name: str, groups: int, steps: int) -> Any:
    opt = _sgd(groups)
    scheduler = SCHEDULER_FACTORIES[name](opt)
    for _ in range(steps):
        opt.step()
        scheduler.step()
    return scheduler


def _assert_unchanged_and_working(scheduler: Any, name: str, groups: int, steps: int) -> None:
    """``scheduler`` equals an untouched twin (same state_dict, lrs, momenta) for 5 more steps."""
    twin = _stepped(name, groups, steps)
    assert scheduler.state_dict() == twin.state_dict()
    for _ in range(5):
        for s in (scheduler, twin):
            s.optimizer.step()
            s.step()
        assert scheduler.get_last_lr() == twin.get_last_lr()
        assert [g["lr"] for g in scheduler.optimizer.param_groups] == [
            g["lr"] for g in twin.optimizer.param_groups
        ]
        assert [g["momentum"] for g in scheduler.optimizer.param_groups] == [
            g["momentum"] for g in twin.optimizer.param_groups
        ]


CLASS_PAIRS = [
    pytest.param(target, source, id=f"{source}-into-{target}")
    for target in SCHEDULER_FACTORIES
    for source in SCHEDULER_FACTORIES
    if source != target
]


@pytest.mark.parametrize(("target", "source"), CLASS_PAIRS)
def test_scheduler_class_mismatch_is_an_error_and_loads_nothing(target: str, source: str) -> None:
    """Another scheduler class's state_dict must be refused with a message naming the
    mismatch (class or keys), before anything is written into the scheduler."""
    scheduler = _stepped(target, groups=2, steps=3)
    foreign = _stepped(source, groups=2, steps=5).state_dict()
    with pytest.raises((ValueError, TypeError), match=rf"{source}|{target}|key"):
        scheduler.load_state_dict(copy.deepcopy(foreign))
    _assert_unchanged_and_working(scheduler, target, groups=2, steps=3)


@pytest.mark.parametrize(("saved", "target"), [(2, 1), (1, 2)], ids=["2-into-1", "1-into-2"])
@pytest.mark.parametrize("name", list(SCHEDULER_FACTORIES))
def test_scheduler_param_group_mismatch_is_an_error_and_loads_nothing(
    name: str, saved: int, target: int
) -> None:
    scheduler = _stepped(name, groups=target, steps=3)
    other = _stepped(name, groups=saved, steps=5).state_dict()
    with pytest.raises(ValueError, match=r"param(eter)? groups?"):
        scheduler.load_state_dict(copy.deepcopy(other))
    _assert_unchanged_and_working(scheduler, name, groups=target, steps=3)


Shape = int | tuple[int, ...]


def _trained_adam(cls: type, groups: list[list[Shape]], steps: int = 2) -> torch.optim.Adam:
    """``cls`` over parameters of the given shapes, one param group per inner list."""
    torch.manual_seed(0)
    param_groups = [
        {"params": [nn.Parameter(torch.randn(shape)) for shape in shapes], "lr": 1e-2 * (g + 1)}
        for g, shapes in enumerate(groups)
    ]
    opt = cls(param_groups)
    for _ in range(steps):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p)
        opt.step()
    return opt


OPTIMIZER_MISMATCHES = {
    "2-groups-into-1": ([[3, 2]], [[3], [2]], "different number of parameter groups"),
    "1-group-into-2": ([[3], [2]], [[3, 2]], "different number of parameter groups"),
    "group-sizes": ([[3], [2, 2]], [[3, 2], [2]], "doesn't match the size of optimizer's group"),
}


@pytest.mark.parametrize("source", [torch.optim.Adam, FusedAdam], ids=["from-Adam", "from-Fused"])
@pytest.mark.parametrize(
    ("target_groups", "saved_groups", "message"),
    OPTIMIZER_MISMATCHES.values(),
    ids=OPTIMIZER_MISMATCHES.keys(),
)
def test_fused_adam_param_group_mismatch_is_an_error_and_loads_nothing(
    target_groups: list[list[Shape]], saved_groups: list[list[Shape]], message: str, source: type
) -> None:
    opt = _trained_adam(FusedAdam, target_groups)
    twin = _trained_adam(FusedAdam, target_groups)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(_trained_adam(source, saved_groups, steps=3).state_dict())
    _assert_optimizer_unchanged_and_working(opt, twin, before)


def _assert_optimizer_unchanged_and_working(
    opt: torch.optim.Adam, twin: torch.optim.Adam, before: dict[str, Any]
) -> None:
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, state in before["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(after["state"][i][key], value, rtol=0.0, atol=0.0)
    with torchkit.force_backend("torch"):
        for o in (opt, twin):
            for group in o.param_groups:
                for p in group["params"]:
                    p.grad = torch.full_like(p, 0.5)
            o.step()
    for group, twin_group in zip(opt.param_groups, twin.param_groups, strict=True):
        for p, q in zip(group["params"], twin_group["params"], strict=True):
            torch.testing.assert_close(p, q, rtol=0.0, atol=0.0)


def test_fused_adam_state_of_other_shapes_is_an_error_and_loads_nothing() -> None:
    """A checkpoint whose moments have another shape than their parameter (a model changed
    between save and load): FusedAdam.load_state_dict re-lays out moments whose strides differ
    from the parameter's, so it touches them; it must refuse them with a ValueError naming the
    shapes before anything is replaced, not fail half-way through."""
    opt = _trained_adam(FusedAdam, [[(3, 2)]])
    twin = _trained_adam(FusedAdam, [[(3, 2)]])
    before = copy.deepcopy(opt.state_dict())
    saved = _trained_adam(torch.optim.Adam, [[(2, 3)]]).state_dict()
    with pytest.raises(ValueError, match=r"shape"):
        opt.load_state_dict(saved)
    _assert_optimizer_unchanged_and_working(opt, twin, before)
