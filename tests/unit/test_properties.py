"""Property-based tests (hypothesis): convolution output sizes and LR schedule invariants.

* Convolution: for random channels, groups, kernel, stride, padding (ints, pairs, ``"same"``,
  ``"valid"``), dilation, padding mode and input size, ``nn.Conv2d``, ``FusedConv2dReLU`` and
  ``conv2d_relu`` (stock path) fail together or produce the shape of the output-size formula
  ``floor((H + 2p - d(k - 1) - 1) / s) + 1``, with equal values.
* Schedules: every lr lies between the schedule's floor and its peak, each phase is monotone
  (OneCycleLR's momentum mirrors its lr), stepping gives the closed form (``step(epoch)``), and
  chained with ``ExponentialLR`` the lr is the product of both schedules.

Examples are few and ``deadline=None``: the runs stay short and stable on a busy 2-core box.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim import lr_scheduler as torch_sched

import torchkit
from torchkit.nn import FusedConv2dReLU
from torchkit.nn.functional import conv2d_relu
from torchkit.optim.lr_scheduler import NoamLR, OneCycleLR, WarmupDecayLR

# ------------------------------------------------------------------ convolution


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """nn.Conv2d's documented output size for one spatial dimension."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


pairs = st.integers(1, 3).map(lambda v: (v, v)) | st.tuples(st.integers(1, 3), st.integers(1, 3))


@st.composite
def conv_configs(draw: st.DrawFn) -> dict[str, Any]:
    groups = draw(st.sampled_from([1, 2, 3]))
    stride = draw(pairs)
    paddings = st.integers(0, 3) | st.tuples(st.integers(0, 3), st.integers(0, 3))
    paddings |= st.just("valid")
    if stride == (1, 1):
        paddings |= st.just("same")
    return {
        "in_channels": groups * draw(st.integers(1, 2)),
        "out_channels": groups * draw(st.integers(1, 2)),
        "kernel_size": draw(st.integers(1, 4) | st.tuples(st.integers(1, 4), st.integers(1, 4))),
        "stride": stride,
        "padding": draw(paddings),
        "dilation": draw(pairs),
        "groups": groups,
        "bias": draw(st.booleans()),
        "padding_mode": draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
    }


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else value


def expected_shape(config: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    kernel, stride, dilation = (_pair(config[k]) for k in ("kernel_size", "stride", "dilation"))
    padding = config["padding"]
    sizes = []
    for i, size in enumerate(shape[-2:]):
        if padding == "same":
            sizes.append(size)
            continue
        pad = 0 if padding == "valid" else _pair(padding)[i]
        sizes.append(output_size(size, kernel[i], stride[i], pad, dilation[i]))
    return (*shape[:-3], config["out_channels"], *sizes)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@settings(max_examples=150, deadline=None)
@given(
    config=conv_configs(),
    batch=st.sampled_from([None, 1, 2]),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
)
def test_conv_output_size_formula(
    config: dict[str, Any], batch: int | None, height: int, width: int
) -> None:
    """Where nn.Conv2d works, all three give the formula's shape and the same values; where
    it raises (input smaller than the dilated kernel, or than a reflect/circular padding),
    the fused layer raises too."""
    torch.manual_seed(0)
    conv = nn.Conv2d(**config)
    fused = FusedConv2dReLU(**config)
    fused.load_state_dict(conv.state_dict())
    shape = (config["in_channels"], height, width)
    x = torch.randn(shape if batch is None else (batch, *shape))
    expected = expected_shape(config, x.shape)
    try:
        reference = F.relu(conv(x))
    except RuntimeError:
        reference = None
    event("nn.Conv2d raised" if reference is None else "nn.Conv2d computed")
    with torchkit.force_backend("torch"):
        if reference is None:
            with pytest.raises((RuntimeError, ValueError)):
                fused(x)
            if config["padding_mode"] == "zeros":  # then only a too-small input is an error
                assert min(expected[-2:]) < 1
        else:
            assert tuple(reference.shape) == expected
            out = fused(x)
            assert out.shape == reference.shape
            torch.testing.assert_close(out, reference, rtol=0.0, atol=0.0)  # same F.conv2d
            if config["padding_mode"] == "zeros":
                args = {k: config[k] for k in ("stride", "padding", "dilation", "groups")}
                functional = conv2d_relu(x, conv.weight, conv.bias, **args)
                torch.testing.assert_close(functional, reference, rtol=0.0, atol=0.0)


# -------------------------------------------------------------------- schedules

SLACK = 1e-12  # room for a few roundings of float64 products and sums


def _sgd(lrs: list[float]) -> torch.optim.SGD:
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def _run(scheduler: Any, steps: int) -> tuple[list[list[float]], list[list[float]]]:
    """Per param group, the lrs and momenta at steps 0..steps-1."""
    opt = scheduler.optimizer
    lrs: list[list[float]] = [[] for _ in opt.param_groups]
    moms: list[list[float]] = [[] for _ in opt.param_groups]
    for step in range(steps):
        if step:
            opt.step()
            scheduler.step()
        for g, group in enumerate(opt.param_groups):
            lrs[g].append(group["lr"])
            moms[g].append(group["momentum"])
    return lrs, moms


def _slack(values: list[float]) -> float:
    """Rounding room: SLACK relative to the largest value (an anneal's rounding error scales
    with its endpoints, not with the small values near its end)."""
    return SLACK * max((abs(v) for v in values), default=0.0)


def _non_decreasing(values: list[float]) -> bool:
    tol = _slack(values)
    return all(b >= a - tol for a, b in itertools.pairwise(values))


def _non_increasing(values: list[float]) -> bool:
    tol = _slack(values)
    return all(b <= a + tol for a, b in itertools.pairwise(values))


base_lrs = st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=3)


@settings(max_examples=50, deadline=None)
@given(
    bases=base_lrs,
    floor_fractions=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    warmup=st.sampled_from(["linear", "exponential", "constant"]),
    decay=st.sampled_from(["cosine", "linear", "polynomial", "inverse_sqrt", "constant"]),
    warmup_steps=st.integers(0, 12),
    span=st.integers(1, 25),
)
def test_warmup_decay_stays_in_each_groups_range_and_is_monotone(
    bases: list[float],
    floor_fractions: list[float],
    warmup: str,
    decay: str,
    warmup_steps: int,
    span: int,
) -> None:
    """Per param group (own base lr and min_lr): warmup rises to the base, decay falls to
    min_lr, and the lr never leaves [min(min_lr, warmup start), base]."""
    floors = [b * f for b, f in zip(bases, floor_fractions, strict=False)]
    total = warmup_steps + span
    scheduler = WarmupDecayLR(
        _sgd(bases), warmup_steps, total, warmup=warmup, decay=decay, min_lr=floors
    )
    start = scheduler.warmup_start_factor
    lrs, _ = _run(scheduler, total + 3)
    for base, floor, series in zip(bases, floors, lrs, strict=True):
        low, tol = min(floor, base * start), base * SLACK
        assert all(low - tol <= lr <= base + tol for lr in series)
        assert _non_decreasing(series[:warmup_steps])
        assert _non_increasing(series[warmup_steps:])
        # The decay starts at the base lr (up to the rounding of floor + (base - floor) * 1).
        assert math.isclose(series[warmup_steps], base, rel_tol=SLACK)
        assert series[total:] == [floor] * 3  # and ends at min_lr


@settings(max_examples=50, deadline=None)
@given(
    max_lrs=base_lrs,
    total=st.integers(10, 60),
    pct_start=st.floats(0.1, 0.45),
    three_phase=st.booleans(),
    anneal=st.sampled_from(["cos", "linear"]),
    div_factor=st.floats(2.0, 50.0),
    final_div_factor=st.floats(2.0, 1e4),
)
def test_one_cycle_phases_are_monotone_and_momentum_mirrors_the_lr(
    max_lrs: list[float],
    total: int,
    pct_start: float,
    three_phase: bool,
    anneal: str,
    div_factor: float,
    final_div_factor: float,
) -> None:
    scheduler = OneCycleLR(
        _sgd([0.1] * len(max_lrs)),
        max_lr=max_lrs,
        total_steps=total,
        pct_start=pct_start,
        three_phase=three_phase,
        anneal_strategy=anneal,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    lrs, moms = _run(scheduler, total)
    # torch's phases end at fractional steps: the lr rises up to step pct_start * total - 1,
    # then falls (two phases); or falls back to the initial lr by 2 * pct_start * total - 2
    # and on to the minimum (three phases). Within each phase both curves are monotone.
    ends = [pct_start * total - 1]
    if three_phase:
        ends.append(2 * pct_start * total - 2)
    cuts = [0, *(math.floor(end) + 1 for end in ends), total]
    phases = [slice(a, b) for a, b in itertools.pairwise(cuts)]
    for max_lr, series, momentum in zip(max_lrs, lrs, moms, strict=True):
        low = max_lr / div_factor / final_div_factor
        tol = max_lr * SLACK
        assert all(low - tol <= lr <= max_lr + tol for lr in series)
        assert all(0.85 - SLACK <= m <= 0.95 + SLACK for m in momentum)
        assert _non_decreasing(series[phases[0]])
        assert _non_increasing(momentum[phases[0]])
        for phase in phases[1:]:
            assert _non_increasing(series[phase])
            assert _non_decreasing(momentum[phase])


@settings(max_examples=40, deadline=None)
@given(
    bases=base_lrs,
    d_model=st.integers(1, 1024),
    warmup_steps=st.integers(1, 30),
    factor=st.floats(0.1, 10.0),
)
def test_noam_rises_to_its_peak_at_warmup_steps_then_falls(
    bases: list[float], d_model: int, warmup_steps: int, factor: float
) -> None:
    scheduler = NoamLR(_sgd(bases), d_model=d_model, warmup_steps=warmup_steps, factor=factor)
    lrs, _ = _run(scheduler, 2 * warmup_steps + 5)
    for base, series in zip(bases, lrs, strict=True):
        peak = base * factor * (d_model * warmup_steps) ** -0.5
        assert all(0.0 < lr <= peak * (1 + SLACK) for lr in series)
        assert math.isclose(series[warmup_steps], peak, rel_tol=SLACK)
        assert _non_decreasing(series[: warmup_steps + 1])
        assert _non_increasing(series[warmup_steps:])


def _warmup_decay(opt: torch.optim.Optimizer, data: st.DataObject) -> WarmupDecayLR:
    warmup_steps = data.draw(st.integers(0, 10), label="warmup_steps")
    decay = data.draw(
        st.sampled_from(["cosine", "linear", "polynomial", "exponential", "step", "inverse_sqrt"]),
        label="decay",
    )
    extra: dict[str, Any] = {"exponential": {"gamma": 0.9}, "step": {"gamma": 0.5, "step_size": 3}}
    return WarmupDecayLR(
        opt,
        warmup_steps,
        warmup_steps + data.draw(st.integers(1, 20), label="span"),
        warmup=data.draw(st.sampled_from(["linear", "exponential", "constant"]), label="warmup"),
        decay=decay,
        warmup_start_factor=data.draw(st.floats(0.05, 1.0), label="warmup_start_factor"),
        min_lr=[lr * 0.01 for lr in (g["lr"] for g in opt.param_groups)],
        **extra.get(decay, {}),
    )


def _one_cycle(opt: torch.optim.Optimizer, data: st.DataObject) -> OneCycleLR:
    return OneCycleLR(
        opt,
        max_lr=data.draw(st.floats(0.01, 1.0), label="max_lr"),
        total_steps=40,
        pct_start=data.draw(st.floats(0.1, 0.45), label="pct_start"),
        three_phase=data.draw(st.booleans(), label="three_phase"),
        anneal_strategy=data.draw(st.sampled_from(["cos", "linear"]), label="anneal"),
    )


def _noam(opt: torch.optim.Optimizer, data: st.DataObject) -> NoamLR:
    return NoamLR(
        opt,
        d_model=data.draw(st.integers(1, 512), label="d_model"),
        warmup_steps=data.draw(st.integers(1, 20), label="warmup_steps"),
    )


FACTORIES = {"WarmupDecayLR": _warmup_decay, "OneCycleLR": _one_cycle, "NoamLR": _noam}


@pytest.mark.filterwarnings("ignore:The epoch parameter in `scheduler.step\\(\\)`:UserWarning")
@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=25, deadline=None)
@given(data=st.data(), bases=base_lrs)
def test_stepping_gives_the_closed_form(name: str, data: st.DataObject, bases: list[float]) -> None:
    """After ``t`` steps the lrs (and momenta) are those ``step(t)`` jumps to directly."""
    scheduler = FACTORIES[name](_sgd(bases), data)
    twin = _rebuild_on(scheduler, _sgd(bases))
    twin.optimizer.step()  # step(t) jumps; torch warns if the optimizer never stepped
    lrs, moms = _run(scheduler, 40)
    for t in data.draw(st.lists(st.integers(0, 39), min_size=1, max_size=8), label="steps"):
        twin.step(t)
        assert [g["lr"] for g in twin.optimizer.param_groups] == [s[t] for s in lrs]
        assert [g["momentum"] for g in twin.optimizer.param_groups] == [m[t] for m in moms]


def _rebuild_on(scheduler: Any, opt: torch.optim.Optimizer) -> Any:
    """A fresh scheduler of the same class and arguments as ``scheduler`` on ``opt``."""
    if isinstance(scheduler, WarmupDecayLR):
        return WarmupDecayLR(
            opt,
            scheduler.warmup_steps,
            scheduler.total_steps,
            warmup=scheduler.warmup,
            decay=scheduler.decay,
            warmup_start_factor=scheduler.warmup_start_factor,
            min_lr=scheduler.min_lrs,
            power=scheduler.power,
            gamma=scheduler.gamma,
            step_size=scheduler.step_size,
        )
    if isinstance(scheduler, OneCycleLR):
        return OneCycleLR(
            opt,
            max_lr=scheduler.max_lrs,
            total_steps=scheduler.total_steps,
            pct_start=scheduler.pct_start,
            three_phase=scheduler.three_phase,
            anneal_strategy=scheduler.anneal_strategy,
        )
    return NoamLR(opt, d_model=scheduler.d_model, warmup_steps=scheduler.warmup_steps)


@pytest.mark.parametrize("name", list(FACTORIES))
@settings(max_examples=25, deadline=None)
@given(data=st.data(), bases=base_lrs, gamma=st.floats(0.8, 1.0))
def test_chained_with_exponential_is_the_product(
    name: str, data: st.DataObject, bases: list[float], gamma: float
) -> None:
    """ChainedScheduler([torchkit's, ExponentialLR(gamma)]): lr(t) = schedule(t) * gamma**t."""
    alone = FACTORIES[name](_sgd(bases), data)
    expected, _ = _run(alone, 40)
    opt = _sgd(bases)
    chained = torch_sched.ChainedScheduler(
        [_rebuild_on(alone, opt), torch_sched.ExponentialLR(opt, gamma=gamma)]
    )
    lrs: list[list[float]] = [[] for _ in bases]
    for t in range(40):
        if t:
            opt.step()
            chained.step()
        for g, group in enumerate(opt.param_groups):
            lrs[g].append(group["lr"])
    # The drawn schedules never reach lr 0, where chaining cannot measure the other factor.
    assert all(v > 0.0 for series in expected for v in series)
    for series, plain in zip(lrs, expected, strict=True):
        for t, (lr, value) in enumerate(zip(series, plain, strict=True)):
            assert math.isclose(lr, value * gamma**t, rel_tol=1e-12, abs_tol=0.0), t
