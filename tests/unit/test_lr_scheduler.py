"""torchkit.optim.lr_scheduler: formulas, torch parity, chaining, closed form, resume, errors.

Every expected value comes from a formula written out here or from stock torch run side by
side; nothing is compared against torchkit's own helpers.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from _sched_reference import hf_cosine, hf_linear, hf_polynomial, hyperparameters
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as torch_sched

from torchkit.optim.lr_scheduler import (
    CosineRestartsLR,
    NoamLR,
    OneCycleLR,
    WarmupDecayLR,
    _ChainableLR,
    plot_schedule,
    preview,
)

# ----------------------------------------------------------------------------- helpers


def make_sgd(lrs=(0.1,), momentum=0.9):
    """SGD with one 3-element parameter per group, group ``g`` at lr ``lrs[g]``."""
    groups = [{"params": [torch.nn.Parameter(torch.ones(3))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=momentum)


def make_adam(lrs=(0.1,)):
    groups = [{"params": [torch.nn.Parameter(torch.ones(3))], "lr": lr} for lr in lrs]
    return torch.optim.Adam(groups, lr=lrs[0], betas=(0.9, 0.999))


def momenta_of(opt):
    return [g["betas"][0] if "betas" in g else g["momentum"] for g in opt.param_groups]


def run(opt, scheduler, steps):
    """lrs and momenta at steps 0..steps-1 of a training loop (optimizer.step, then scheduler)."""
    lrs, moms = [], []
    for i in range(steps):
        if i:
            opt.step()
            scheduler.step()
        lrs.append([g["lr"] for g in opt.param_groups])
        moms.append(
            momenta_of(opt) if "momentum" in opt.defaults or "betas" in opt.defaults else []
        )
    return lrs, moms


def assert_rel_close(actual, expected, rtol, atol=0.0, what="lr"):
    a = torch.tensor(actual, dtype=torch.float64)
    e = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ------------------------------------------------- transformers' schedules, written out

# Same formula evaluated in a different order: float64 rounding only.
HF_RTOL, HF_ATOL = 1e-12, 1e-18


@pytest.mark.parametrize("warmup", [0, 1, 7], ids=lambda w: f"warmup={w}")
@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_matches_transformers_cosine_and_linear(decay, warmup):
    total, base = 40, 3e-4
    opt = make_sgd([base])
    sched = WarmupDecayLR(opt, warmup, total, decay=decay, warmup_start_factor=0.0, min_lr=0.0)
    lrs, _ = run(opt, sched, total + 1)
    reference = hf_cosine if decay == "cosine" else hf_linear
    expected = [[base * reference(t, warmup, total)] for t in range(total + 1)]
    assert_rel_close(lrs, expected, HF_RTOL, HF_ATOL)


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0], ids=lambda p: f"power={p}")
@pytest.mark.parametrize("lr_end", [0.0, 1e-7], ids=lambda e: f"lr_end={e}")
def test_matches_transformers_polynomial(power, lr_end):
    warmup, total, base = 5, 30, 1e-3
    opt = make_sgd([base])
    sched = WarmupDecayLR(
        opt,
        warmup,
        total,
        decay="polynomial",
        power=power,
        warmup_start_factor=0.0,
        min_lr=lr_end,
    )
    lrs, _ = run(opt, sched, total + 10)
    expected = [
        [base * hf_polynomial(t, warmup, total, base, lr_end, power)] for t in range(total + 10)
    ]
    assert_rel_close(lrs, expected, HF_RTOL, HF_ATOL)


# ------------------------------------------------------ WarmupDecayLR against formulas


def reference_warmup_decay(t, base, floor, W, T, warmup, sf, decay, options, S=0):
    """The schedule of WarmupDecayLR's docstring, written independently (``T=None``: endless)."""
    if t < W:
        x = t / W
        factor = {
            "linear": sf + (1 - sf) * x,
            "exponential": sf * (1 / sf) ** x,
            "constant": sf,
            "cosine": sf + (1 - sf) * (1 - math.cos(math.pi * x)) / 2,
            "1-sqrt": sf + (1 - sf) * (1 - (1 - x) ** 0.5),
        }
        return base * factor[warmup]
    if t < W + S:
        return base
    if T is not None and t >= T:
        return floor
    gamma, step_size = options.get("gamma"), options.get("step_size")
    tau = options.get("timescale", max(W, 1))
    e = t - W - S
    if T is None:  # endless: the curves as they are
        s = {
            "constant": 1.0,
            "exponential": gamma**e if gamma else None,
            "step": gamma ** (e // step_size) if step_size else None,
            "inverse_sqrt": (tau / (tau + e)) ** 0.5,
        }[decay]
        return floor + (base - floor) * s
    n = T - W - S
    p = e / n
    if decay == "cosine":
        s = (1 + math.cos(2 * math.pi * options.get("num_cycles", 0.5) * p)) / 2
    elif decay == "linear":
        s = 1 - p
    elif decay == "polynomial":
        s = (1 - p) ** options.get("power", 1.0)
    elif decay == "constant":
        s = 1.0
    elif decay == "1-sqrt":
        s = 1 - p**0.5
    else:
        if decay == "exponential":
            r, r_end = gamma**e, gamma**n
        elif decay == "step":
            r, r_end = gamma ** (e // step_size), gamma ** math.ceil(n / step_size)
        else:  # inverse_sqrt
            r, r_end = (tau / (tau + e)) ** 0.5, (tau / (tau + n)) ** 0.5
        s = (r - r_end) / (1 - r_end)
    return floor + (base - floor) * s


DECAY_OPTIONS = {
    "cosine": {},
    "linear": {},
    "polynomial": {"power": 2.0},
    "exponential": {"gamma": 0.9},
    "step": {"gamma": 0.5, "step_size": 7},
    "inverse_sqrt": {},
    "constant": {},
    "1-sqrt": {},
}
ALL_WARMUPS = ["linear", "exponential", "constant", "cosine", "1-sqrt"]


@pytest.mark.parametrize("stable", [0, 4], ids=lambda s: f"stable={s}")
@pytest.mark.parametrize("decay", list(DECAY_OPTIONS))
@pytest.mark.parametrize("warmup", ALL_WARMUPS)
def test_warmup_decay_follows_its_formula_per_group(warmup, decay, stable):
    W, T = 6, 30
    bases, floors, sf = [0.1, 0.02], [1e-3, 0.0], 0.2
    opt = make_sgd(bases)
    options = DECAY_OPTIONS[decay]
    sched = WarmupDecayLR(
        opt,
        W,
        T,
        stable_steps=stable,
        warmup=warmup,
        decay=decay,
        warmup_start_factor=sf,
        min_lr=floors,
        **options,
    )
    lrs, _ = run(opt, sched, T + 5)
    expected = [
        [
            reference_warmup_decay(t, b, f, W, T, warmup, sf, decay, options, stable)
            for b, f in zip(bases, floors, strict=True)
        ]
        for t in range(T + 5)
    ]
    assert_rel_close(lrs, expected, 1e-12, 1e-18)  # same formulas, different order
    # The milestones, exactly: warmup start, peak, end, and holding after the end.
    assert lrs[0] == [b * sf for b in bases]
    assert lrs[W] == lrs[W + stable] == bases
    assert lrs[T] == lrs[T + 4] == floors


ENDLESS = {
    "constant": {},
    "exponential": {"gamma": 0.9},
    "step": {"gamma": 0.5, "step_size": 7},
    "inverse_sqrt": {"timescale": 3},
}


@pytest.mark.parametrize("decay", list(ENDLESS))
def test_an_endless_decay_follows_its_curve_without_rescaling(decay):
    W, S, steps = 5, 2, 80
    bases, floors = [0.1, 0.02], [1e-3, 0.0]
    opt = make_sgd(bases)
    options = ENDLESS[decay]
    sched = WarmupDecayLR(opt, W, None, stable_steps=S, decay=decay, min_lr=floors, **options)
    lrs, _ = run(opt, sched, steps)
    sf = 1 / (W + 1)
    expected = [
        [
            reference_warmup_decay(t, b, f, W, None, "linear", sf, decay, options, S)
            for b, f in zip(bases, floors, strict=True)
        ]
        for t in range(steps)
    ]
    assert_rel_close(lrs, expected, 1e-12, 1e-18)


@pytest.mark.parametrize(
    ("decay", "stock"),
    [
        ("exponential", lambda opt: torch_sched.ExponentialLR(opt, gamma=0.95)),
        ("step", lambda opt: torch_sched.StepLR(opt, step_size=6, gamma=0.5)),
    ],
)
def test_an_endless_decay_without_warmup_or_floor_is_torchs(decay, stock):
    options = {"gamma": 0.95} if decay == "exponential" else {"gamma": 0.5, "step_size": 6}
    opt, ref_opt = make_sgd([0.1, 0.05]), make_sgd([0.1, 0.05])
    lrs, _ = run(opt, WarmupDecayLR(opt, 0, None, decay=decay, **options), 60)
    reference, _ = run(ref_opt, stock(ref_opt), 60)
    assert_rel_close(lrs, reference, 1e-12)


def test_min_lr_ratio_is_a_fraction_of_each_groups_base_lr():
    opt = make_sgd([0.1, 0.02])
    sched = WarmupDecayLR(opt, 2, 10, min_lr_ratio=[0.1, 0.5])
    assert sched.min_lrs == [0.1 * 0.1, 0.02 * 0.5]
    lrs, _ = run(opt, sched, 12)
    assert lrs[10] == lrs[11] == [0.1 * 0.1, 0.02 * 0.5]


def test_default_warmup_start_factor_is_the_line_through_zero_one_step_early():
    W, base = 4, 0.5
    opt = make_sgd([base])
    sched = WarmupDecayLR(opt, W, 20)
    assert sched.warmup_start_factor == 1 / (W + 1)
    lrs, _ = run(opt, sched, W + 1)
    assert_rel_close([lr[0] for lr in lrs], [base * (t + 1) / (W + 1) for t in range(W + 1)], 1e-15)


def test_no_warmup_starts_at_the_base_lr():
    opt = make_sgd([0.3])
    sched = WarmupDecayLR(opt, 0, 10, decay="linear")
    lrs, _ = run(opt, sched, 3)
    assert lrs == [[0.3], [0.3 * 0.9], [0.3 * 0.8]]


@pytest.mark.parametrize(("warmup", "stable"), [(4, 0), (2, 2), (0, 4)])
def test_total_steps_at_the_end_of_the_stable_phase_leaves_no_decay(warmup, stable):
    """T == W + S: the warmup and the stable phase, then min_lr from T on (a warmup over the
    whole run, warmup_ratio=1.0 in transformers' Trainer, is W == T)."""
    opt = make_sgd([0.4])
    sched = WarmupDecayLR(opt, warmup, 4, stable_steps=stable, warmup_start_factor=0.0, min_lr=0.1)
    lrs = [lr[0] for lr in run(opt, sched, 7)[0]]
    assert lrs[:warmup] == [0.4 * (t / warmup) for t in range(warmup)]
    assert lrs[warmup:4] == [0.4] * stable
    assert lrs[4:] == [0.1] * 3


@pytest.mark.parametrize("cycles", [0.5, 1.0, 0.75, 1.5])
def test_end_at_wave_holds_the_last_wave_where_it_is_at_total_steps(cycles):
    warmup, total, base, floor = 2, 10, 0.4, 0.1
    opts = make_sgd([base]), make_sgd([base])
    at_min = WarmupDecayLR(opts[0], warmup, total, num_cycles=cycles, min_lr=floor)
    wave = WarmupDecayLR(opts[1], warmup, total, num_cycles=cycles, min_lr=floor, end_at="wave")
    (at_min_lrs, _), (wave_lrs, _) = run(opts[0], at_min, 14), run(opts[1], wave, 14)
    assert wave_lrs[:total] == at_min_lrs[:total]
    assert at_min_lrs[total:] == [[floor]] * 4
    end = floor + (base - floor) * 0.5 * (1 + math.cos(2 * math.pi * cycles))
    assert_rel_close(wave_lrs[total:], [[end]] * 4, rtol=1e-15)
    if cycles == 0.5:  # cos(pi) is -1 exactly: min_lr, float for float
        assert wave_lrs[total:] == [[floor]] * 4


# ------------------------------------------------------------------------------ Noam


def test_noam_matches_lambda_lr_and_the_paper_peak():
    d_model, warmup = 512, 4000

    def rate(step):  # the Annotated Transformer's rate()
        step = max(step, 1)
        return d_model ** (-0.5) * min(step ** (-0.5), step * warmup ** (-1.5))

    opt, ref_opt = make_adam([1.0, 0.5]), make_adam([1.0, 0.5])
    sched = NoamLR(opt, d_model=d_model, warmup_steps=warmup)
    ref = torch_sched.LambdaLR(ref_opt, rate)
    got, _ = run(opt, sched, 50)
    expected, _ = run(ref_opt, ref, 50)
    assert_rel_close(got, expected, 1e-15)
    with pytest.warns(UserWarning, match="epoch parameter"):
        sched.step(warmup)
    assert opt.param_groups[0]["lr"] == pytest.approx(6.988e-4, rel=1e-4)
    assert opt.param_groups[0]["lr"] == pytest.approx(rate(warmup), rel=1e-15)


def test_noam_factor_scales():
    opt = make_sgd([2.0])
    NoamLR(opt, d_model=64, warmup_steps=10, factor=3.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 3.0 * 64**-0.5 * 10**-1.5, rel=1e-15)


# ------------------------------------------------------------------ OneCycle vs torch

ONE_CYCLE_CASES = {
    "two-phase-cos": {"total_steps": 100},
    "two-phase-linear": {"total_steps": 100, "anneal_strategy": "linear"},
    "three-phase-cos": {"total_steps": 97, "three_phase": True, "pct_start": 0.25},
    "three-phase-linear": {"total_steps": 97, "three_phase": True, "anneal_strategy": "linear"},
    "epochs-x-steps": {"epochs": 3, "steps_per_epoch": 11, "pct_start": 0.4},
    "no-momentum-cycle": {"total_steps": 50, "cycle_momentum": False},
    "per-group-lists": {
        "total_steps": 60,
        "max_lr": [1.0, 0.3],
        "base_momentum": [0.8, 0.85],
        "max_momentum": [0.9, 0.99],
        "div_factor": 10.0,
        "final_div_factor": 100.0,
    },
}


@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adam-betas"])
@pytest.mark.parametrize("case", list(ONE_CYCLE_CASES))
def test_one_cycle_equals_torch_at_every_step(case, optimizer):
    kwargs = {"max_lr": 0.5, **ONE_CYCLE_CASES[case]}
    build = (
        (lambda: make_sgd([0.1, 0.1]))
        if optimizer == "sgd-momentum"
        else (lambda: make_adam([0.1, 0.1]))
    )
    opt, ref_opt = build(), build()
    sched = OneCycleLR(opt, **kwargs)
    ref = torch_sched.OneCycleLR(ref_opt, **kwargs)
    total = sched.total_steps
    # Up to and including step total_steps, the last one torch allows.
    got_lr, got_m = run(opt, sched, total + 1)
    exp_lr, exp_m = run(ref_opt, ref, total + 1)
    # Same expressions in the same order: the floats are identical (the issue asks <= 1e-12).
    assert got_lr == exp_lr
    assert got_m == exp_m
    assert opt.param_groups[0].get("betas", (0, 0.999))[1] == 0.999 or optimizer == "sgd-momentum"


def test_one_cycle_stepping_past_total_raises_like_torch():
    opt, ref_opt = make_sgd(), make_sgd()
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=5)
    ref = torch_sched.OneCycleLR(ref_opt, max_lr=1.0, total_steps=5)
    run(opt, sched, 6)
    run(ref_opt, ref, 6)
    with pytest.raises(ValueError, match="Tried to step 6 times"):
        ref.step()
    with pytest.raises(
        ValueError, match=r"Tried to step 6 times\. The specified number of total steps is 5"
    ):
        sched.step()


def test_one_cycle_zero_length_phase_is_finished_where_torch_divides_by_zero():
    opt = make_sgd()
    # pct_start * total_steps == 1: the warmup phase ends at step 0.
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=0.1)
    assert opt.param_groups[0]["lr"] == 1.0
    with pytest.raises(ZeroDivisionError):
        torch_sched.OneCycleLR(make_sgd(), max_lr=1.0, total_steps=10, pct_start=0.1)
    assert sched.get_last_lr() == [1.0]


ONE_CYCLE_BAD = {
    "total_steps=0": ({"total_steps": 0}, "total_steps"),
    "total_steps=-3": ({"total_steps": -3}, "total_steps"),
    "total_steps=float": ({"total_steps": 10.0}, "total_steps"),
    "no-length": ({}, "total_steps"),
    "epochs=0": ({"epochs": 0, "steps_per_epoch": 3}, "epochs"),
    "steps_per_epoch=-1": ({"epochs": 2, "steps_per_epoch": -1}, "steps_per_epoch"),
    "pct_start=-0.1": ({"total_steps": 10, "pct_start": -0.1}, "pct_start"),
    "pct_start=1.5": ({"total_steps": 10, "pct_start": 1.5}, "pct_start"),
    "pct_start=int": ({"total_steps": 10, "pct_start": 1}, "pct_start"),
    "anneal=cosine": ({"total_steps": 10, "anneal_strategy": "cosine"}, "anneal_strategy"),
    "max_lr-list-length": ({"total_steps": 10, "max_lr": [1.0, 2.0, 3.0]}, "max_lr"),
    "base_momentum-length": ({"total_steps": 10, "base_momentum": [0.8]}, "base_momentum"),
    "max_momentum-length": ({"total_steps": 10, "max_momentum": [0.9] * 3}, "max_momentum"),
}


@pytest.mark.parametrize("case", list(ONE_CYCLE_BAD))
def test_one_cycle_rejects_what_torch_rejects(case):
    kwargs, name = ONE_CYCLE_BAD[case]
    kwargs = {"max_lr": 1.0, **kwargs}
    with pytest.raises(ValueError):  # noqa: PT011 - torch's wording is not ours to check
        torch_sched.OneCycleLR(make_sgd([0.1, 0.1]), **kwargs)
    with pytest.raises(ValueError, match=name):
        OneCycleLR(make_sgd([0.1, 0.1]), **kwargs)


def test_one_cycle_needs_momentum_to_cycle_it():
    opt = torch.optim.Adagrad([torch.nn.Parameter(torch.ones(1))])
    with pytest.raises(ValueError, match="cycle_momentum"):
        OneCycleLR(opt, max_lr=1.0, total_steps=10)
    assert "initial_lr" not in opt.param_groups[0]  # checked before anything is written
    OneCycleLR(opt, max_lr=1.0, total_steps=10, cycle_momentum=False)  # fine without it


@pytest.mark.parametrize("name", ["div_factor", "final_div_factor"])
@pytest.mark.parametrize("value", [0.0, -2.0], ids=lambda v: f"value={v}")
def test_one_cycle_rejects_non_positive_div_factors(name, value):
    with pytest.raises(ValueError, match=f"{name} must be > 0, got {value}"):
        OneCycleLR(make_sgd(), max_lr=1.0, total_steps=10, **{name: value})


# -------------------------------------------------------------------------- chaining

CHAIN_STEPS = 3000  # 0.98 ** 3000 ~ 4e-27: far beyond where drift would show


def one_cycle_reference(steps, total):
    opt = make_sgd()
    ref = torch_sched.OneCycleLR(opt, max_lr=0.4, total_steps=total, three_phase=True)
    return [lr[0] for lr in run(opt, ref, steps)[0]]


@pytest.mark.parametrize("order", ["onecycle-first", "exponential-first"])
@pytest.mark.parametrize("how", ["ChainedScheduler", "consecutive-steps"])
def test_one_cycle_chained_with_exponential_multiplies(how, order):
    opt = make_sgd()
    one_cycle = OneCycleLR(opt, max_lr=0.4, total_steps=CHAIN_STEPS, three_phase=True)
    exponential = torch_sched.ExponentialLR(opt, gamma=0.98)
    members = [one_cycle, exponential] if order == "onecycle-first" else [exponential, one_cycle]
    if how == "ChainedScheduler":
        sched = torch_sched.ChainedScheduler(members)
        lrs, _ = run(opt, sched, CHAIN_STEPS + 1)
    else:
        lrs = []
        for t in range(CHAIN_STEPS + 1):
            if t:
                opt.step()
                for member in members:
                    member.step()
            lrs.append(opt.param_groups[0]["lr"])
        lrs = [[lr] for lr in lrs]
    expected = [
        [oc * 0.98**t] for t, oc in enumerate(one_cycle_reference(CHAIN_STEPS + 1, CHAIN_STEPS))
    ]
    assert_rel_close(lrs, expected, rtol=1e-9)


def test_warmup_decay_chained_with_exponential_multiplies():
    W, T, gamma = 10, 200, 0.99
    opt, ref_opt = make_sgd([0.1, 0.05]), make_sgd([0.1, 0.05])
    sched = torch_sched.ChainedScheduler(
        [WarmupDecayLR(opt, W, T, min_lr=1e-4), torch_sched.ExponentialLR(opt, gamma)]
    )
    alone = WarmupDecayLR(ref_opt, W, T, min_lr=1e-4)
    lrs, _ = run(opt, sched, T + 20)
    reference, _ = run(ref_opt, alone, T + 20)
    expected = [[lr * gamma**t for lr in row] for t, row in enumerate(reference)]
    assert_rel_close(lrs, expected, rtol=1e-9)


def test_chaining_through_a_zero_lr_keeps_the_last_measured_factor():
    """Documented behaviour where the schedule is 0: the factor applied to 0 is lost."""
    W, T, gamma = 5, 40, 0.9

    def build(order):
        opt = make_sgd()
        warm = WarmupDecayLR(opt, W, T, warmup_start_factor=0.0, decay="linear")
        exp = torch_sched.ExponentialLR(opt, gamma)
        return opt, torch_sched.ChainedScheduler([warm, exp] if order == 0 else [exp, warm])

    ref_opt = make_sgd()
    alone = [
        lr[0]
        for lr in run(
            ref_opt, WarmupDecayLR(ref_opt, W, T, warmup_start_factor=0.0, decay="linear"), T + 5
        )[0]
    ]
    # torchkit first: nothing is lost, lr = v(t) * gamma**t.
    opt, sched = build(0)
    lrs = [lr[0] for lr in run(opt, sched, T + 5)[0]]
    assert_rel_close(lrs, [v * gamma**t for t, v in enumerate(alone)], rtol=1e-12)
    # ExponentialLR first: its step-1 factor multiplied the lr 0 of step 0 and is lost.
    opt, sched = build(1)
    lrs = [lr[0] for lr in run(opt, sched, T + 5)[0]]
    expected = [0.0] + [v * gamma ** (t - 1) for t, v in enumerate(alone) if t]
    assert_rel_close(lrs, expected, rtol=1e-12)
    assert lrs[T:] == [0.0] * 5  # decayed to min_lr=0: the product is 0


def test_chaining_keeps_a_factor_set_at_construction_by_an_earlier_scheduler():
    opt, ref_opt = make_sgd(), make_sgd()
    linear = torch_sched.LinearLR(opt, start_factor=0.25, total_iters=8)
    noam = NoamLR(opt, d_model=16, warmup_steps=5)
    sched = torch_sched.ChainedScheduler([linear, noam])
    lrs, _ = run(opt, sched, 30)
    alone, _ = run(ref_opt, NoamLR(ref_opt, d_model=16, warmup_steps=5), 30)
    lin = [0.25 + 0.75 * min(t, 8) / 8 for t in range(30)]
    assert_rel_close(lrs, [[a[0] * f] for a, f in zip(alone, lin, strict=True)], rtol=1e-12)


def test_a_manual_lr_change_is_kept_as_a_factor():
    ref_opt = make_sgd([0.2])
    alone = [lr[0] for lr in run(ref_opt, WarmupDecayLR(ref_opt, 3, 50), 20)[0]]
    opt = make_sgd([0.2])
    sched = WarmupDecayLR(opt, 3, 50)
    for _ in range(10):
        opt.step()
        sched.step()
    opt.param_groups[0]["lr"] *= 0.5
    for t in range(11, 20):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * alone[t], rel=1e-14)


# ------------------------------------------------------------- closed form vs stepping

SCHEDULERS = {
    "warmup-cosine": lambda opt: WarmupDecayLR(opt, 10, 50, min_lr=[1e-3, 2e-3]),
    "warmup-exp-step": lambda opt: WarmupDecayLR(
        opt, 10, 50, warmup="exponential", decay="step", gamma=0.7, step_size=6
    ),
    "onecycle": lambda opt: OneCycleLR(opt, max_lr=[0.5, 0.2], total_steps=55, three_phase=True),
    "noam": lambda opt: NoamLR(opt, d_model=64, warmup_steps=12),
    "wsd-cosine-warmup-1-sqrt-decay": lambda opt: WarmupDecayLR(
        opt, 8, 50, stable_steps=20, warmup="cosine", decay="1-sqrt", min_lr_ratio=0.1
    ),
    "endless-inverse-sqrt": lambda opt: WarmupDecayLR(
        opt, 5, None, decay="inverse_sqrt", timescale=20, min_lr=[1e-3, 0.0]
    ),
    "restarts-timm": lambda opt: CosineRestartsLR(
        opt, 7, cycle_mul=1.5, cycle_decay=0.7, cycle_limit=4, k_decay=1.5, warmup_steps=3
    ),
    "restarts-fitted": lambda opt: CosineRestartsLR(
        opt, total_steps=50, num_cycles=3, warmup_steps=5, warmup_prefix=True, min_lr=1e-4
    ),
}


@pytest.mark.filterwarnings("ignore:The epoch parameter")
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_closed_form_agrees_with_stepping(name):
    opt = make_sgd([0.1, 0.05])
    stepped, moms = run(opt, SCHEDULERS[name](opt), 56)
    opt = make_sgd([0.1, 0.05])
    sched = SCHEDULERS[name](opt)
    opt.step()
    for t in [37, 0, 9, 10, 11, 49, 50, 55, 3]:  # out of order on purpose
        sched.step(t)
        assert [g["lr"] for g in opt.param_groups] == stepped[t], f"step {t}"
        assert momenta_of(opt) == moms[t], f"momentum at step {t}"


@pytest.mark.filterwarnings("ignore:The epoch parameter")
def test_closed_form_step_resets_the_chain_factor():
    ref_opt = make_sgd([0.1])
    alone = [lr[0] for lr in run(ref_opt, WarmupDecayLR(ref_opt, 4, 40), 22)[0]]
    opt = make_sgd([0.1])
    sched = WarmupDecayLR(opt, 4, 40)
    opt.step()
    sched.step()
    opt.param_groups[0]["lr"] *= 3.0  # a factor from elsewhere
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3.0 * alone[2], rel=1e-14)
    sched.step(20)  # the closed form: the schedule alone
    assert opt.param_groups[0]["lr"] == alone[20]
    sched.step()
    assert opt.param_groups[0]["lr"] == alone[21]


def stepped(factory, lr_kind):
    """Everything the constructor and 30 steps leave, the scheduler chained with ExponentialLR:
    the first step comes before any optimizer step (torch's step-order warning), step 12 is
    ``step(7)``, and ``get_lr()`` is called outside a step; ``get_last_lr()`` must hold copies
    of tensor lrs."""
    lrs = [torch.tensor(0.1), torch.tensor(0.05)] if lr_kind == "tensor-lrs" else [0.1, 0.05]
    opt = make_sgd(lrs)
    if lr_kind == "tensor-initial-lrs":  # float lrs, tensor base lrs: tensors are written
        for group in opt.param_groups:
            group["initial_lr"] = torch.tensor(group["lr"])

    def left(sched):
        group_lrs = [group["lr"] for group in opt.param_groups]
        return (
            [float(lr) for lr in group_lrs],
            [(type(lr), float(lr)) for lr in sched.get_last_lr()],
            [lr is held for lr in sched.get_last_lr() for held in group_lrs + sched.base_lrs],
            momenta_of(opt),
            (sched.last_epoch, sched._step_count, sched._get_lr_called_within_step),
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched = factory(opt)
        exponential = torch_sched.ExponentialLR(opt, 0.9)
        seen = [left(sched)]
        for i in range(30):
            if i:
                opt.step()
            sched.step(*([7] if i == 12 else []))
            exponential.step()
            if i == 20:
                sched.get_lr()
            seen.append(left(sched))
    return seen, [(type(w.message), str(w.message)) for w in caught]


@pytest.mark.parametrize("lr_kind", ["float-lrs", "tensor-lrs", "tensor-initial-lrs"])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_step_does_what_torchs_lr_scheduler_step_does(name, lr_kind, monkeypatch):
    # torchkit's step() leaves torch's context managers out: the same lrs, copies, counters
    # and warnings as torch's LRScheduler.step, which drives the reference run.
    ours = stepped(SCHEDULERS[name], lr_kind)
    monkeypatch.setattr(_ChainableLR, "step", torch_sched.LRScheduler.step)
    assert ours == stepped(SCHEDULERS[name], lr_kind)


# -------------------------------------------------------------------------- resume


def chained_one_cycle(opt):
    return torch_sched.ChainedScheduler(
        [OneCycleLR(opt, max_lr=0.3, total_steps=60), torch_sched.ExponentialLR(opt, 0.97)]
    )


RESUME_CASES = {
    "warmup-decay-mid-warmup": (lambda opt: WarmupDecayLR(opt, 20, 60, min_lr=[1e-4, 0.0]), 7),
    "warmup-decay-mid-decay": (
        lambda opt: WarmupDecayLR(opt, 20, 60, decay="polynomial", power=3.0),
        41,
    ),
    "onecycle-mid-cycle": (lambda opt: OneCycleLR(opt, max_lr=0.3, total_steps=60), 25),
    "noam": (lambda opt: NoamLR(opt, d_model=32, warmup_steps=15), 9),
    "wsd-mid-stable": (
        lambda opt: WarmupDecayLR(opt, 10, 50, stable_steps=25, decay="1-sqrt", min_lr_ratio=0.1),
        20,
    ),
    "restarts-mid-second-cycle": (
        lambda opt: CosineRestartsLR(opt, 12, cycle_mul=2.0, cycle_decay=0.5, warmup_steps=4),
        21,
    ),
    "chained-onecycle-exponential": (chained_one_cycle, 33),
}


def train(opt, sched, steps, params):
    lrs = []
    for _ in range(steps):
        loss = sum((p**2).sum() for p in params)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        lrs.append(([g["lr"] for g in opt.param_groups], momenta_of(opt)))
    return lrs


def fresh_optimizer():
    params = [torch.nn.Parameter(torch.linspace(-1, 1, 4)), torch.nn.Parameter(torch.ones(2))]
    opt = torch.optim.SGD(
        [{"params": [params[0]]}, {"params": [params[1]], "lr": 0.05}], lr=0.1, momentum=0.9
    )
    return opt, params


def fresh(factory):
    opt, params = fresh_optimizer()
    return opt, factory(opt), params


def through_a_file(checkpoint):
    """``checkpoint`` after ``torch.save`` and ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # no lambdas, no callables in state


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_from_torch_save_gives_the_uninterrupted_lrs(case):
    factory, stop = RESUME_CASES[case]
    total = 59
    opt, sched, params = fresh(factory)
    uninterrupted = train(opt, sched, total, params)

    opt, sched, params = fresh(factory)
    first = train(opt, sched, stop, params)
    checkpoint = through_a_file(
        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "params": params}
    )
    opt, sched, params = fresh(factory)
    with torch.no_grad():
        for p, saved in zip(params, checkpoint["params"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    second = train(opt, sched, total - stop, params)
    assert first + second == uninterrupted


@pytest.mark.parametrize("start_from", ["lr", "initial_lr"])
def test_legacy_resume_through_last_epoch_continues_the_schedule(start_from):
    """torch's older resume path: load the optimizer, then build with ``last_epoch=k - 1``
    after ``k`` steps (torch 2.x's convention: the constructor lands on step ``k``, and its
    recursive schedulers keep the lr they find there, as ``LambdaLR`` recomputes it)."""
    opt = make_sgd([0.1, 0.05])
    uninterrupted, _ = run(opt, WarmupDecayLR(opt, 5, 30, min_lr=1e-3), 30)
    opt = make_sgd([0.1, 0.05])
    run(opt, WarmupDecayLR(opt, 5, 30, min_lr=1e-3), 12)  # 11 steps taken: at step 11
    resumed = make_sgd([0.1, 0.05])
    resumed.load_state_dict(opt.state_dict())
    sched = WarmupDecayLR(resumed, 5, 30, min_lr=1e-3, start_from=start_from, last_epoch=10)
    assert sched.last_epoch == 11
    lrs, _ = run(resumed, sched, 19)
    assert_rel_close(lrs, uninterrupted[11:], rtol=1e-15)


def test_inside_sequential_lr_it_starts_at_its_own_step_zero():
    opt, ref_opt = make_sgd([0.1]), make_sgd([0.1])
    hold = torch_sched.ConstantLR(opt, factor=0.5, total_iters=3)
    warmup_decay = WarmupDecayLR(opt, 2, 10, decay="linear")
    sched = torch_sched.SequentialLR(opt, [hold, warmup_decay], milestones=[3])
    lrs = [lr[0] for lr in run(opt, sched, 15)[0]]
    alone = [lr[0] for lr in run(ref_opt, WarmupDecayLR(ref_opt, 2, 10, decay="linear"), 12)[0]]
    assert lrs[:3] == [0.05] * 3
    assert_rel_close(lrs[3:], alone, rtol=1e-15)


def state_types(value):
    if isinstance(value, dict):
        return set().union(*(state_types(v) for v in value.values())) | {dict}
    if isinstance(value, (list, tuple)):
        return set().union(*(state_types(v) for v in value), {type(value)})
    return {type(value)}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_state_dict_holds_only_plain_data(name):
    sched = SCHEDULERS[name](make_sgd([0.1, 0.05]))
    assert state_types(sched.state_dict()) <= {dict, list, tuple, str, int, float, bool, type(None)}


# ------------------------------------------------------------ resume: load order

# The schedulers that are alone on their optimizer (a chain is resumed exactly by this order
# only when the torchkit scheduler is the last to change the lr: see the tests below).
ALONE = [case for case in RESUME_CASES if not case.startswith("chained")]


def resume_optimizer_first(factory, stop, total=59):
    """The uninterrupted run, and a run resumed at ``stop`` in the other common order:
    load the optimizer, build the scheduler on it (which writes step 0's lr and momentum),
    load the scheduler."""
    opt, sched, params = fresh(factory)
    uninterrupted = train(opt, sched, total, params)
    opt, sched, params = fresh(factory)
    first = train(opt, sched, stop, params)
    checkpoint = through_a_file(
        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "params": params}
    )
    opt, params = fresh_optimizer()
    with torch.no_grad():
        for p, saved in zip(params, checkpoint["params"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(checkpoint["optimizer"])
    sched = factory(opt)
    sched.load_state_dict(checkpoint["scheduler"])
    return uninterrupted, first + train(opt, sched, total - stop, params)


@pytest.mark.parametrize("case", ALONE)
def test_resume_with_the_optimizer_loaded_first_gives_the_uninterrupted_run(case):
    """Loading restores the interrupted step's lr and momentum, which the constructor had
    overwritten: every lr and momentum, the first resumed step's included, is exact. (torch's
    OneCycleLR runs the first resumed step at step 0's lr and momentum.)"""
    uninterrupted, resumed = resume_optimizer_first(*RESUME_CASES[case])
    assert resumed == uninterrupted


def test_resume_with_the_optimizer_loaded_first_is_exact_with_torchkit_last_in_a_chain():
    def chained(opt):
        return torch_sched.ChainedScheduler(
            [torch_sched.ExponentialLR(opt, 0.97), OneCycleLR(opt, max_lr=0.3, total_steps=60)]
        )

    uninterrupted, resumed = resume_optimizer_first(chained, 33)
    assert resumed == uninterrupted


def test_resume_with_the_optimizer_loaded_first_is_exact_with_torchkit_first_in_a_chain():
    """With ExponentialLR stepping after the torchkit scheduler in torch's ChainedScheduler,
    the lr the torchkit scheduler wrote is not the interrupted step's: loading restores the
    param groups' lrs saved with its state, ExponentialLR's factor of that step included."""
    uninterrupted, resumed = resume_optimizer_first(chained_one_cycle, 33)
    assert resumed == uninterrupted


def sequential(opt):
    return torch_sched.SequentialLR(
        opt,
        [torch_sched.ConstantLR(opt, factor=0.5, total_iters=3), WarmupDecayLR(opt, 2, 40)],
        milestones=[3],
    )


@pytest.mark.parametrize("stop", [2, 20], ids=["in-ConstantLR", "in-WarmupDecayLR"])
def test_inside_sequential_lr_resume_in_torchs_order_is_exact(stop):
    opt, sched, params = fresh(sequential)
    uninterrupted = train(opt, sched, 40, params)
    opt, sched, params = fresh(sequential)
    first = train(opt, sched, stop, params)
    checkpoint = through_a_file(
        {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "params": params}
    )
    opt, sched, params = fresh(sequential)  # build everything, then load
    with torch.no_grad():
        for p, saved in zip(params, checkpoint["params"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    assert first + train(opt, sched, 40 - stop, params) == uninterrupted


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_loading_keeps_an_lr_set_after_the_scheduler_was_built(case):
    """In torch's documented order the optimizer's loaded lr wins: here it is not what the
    scheduler wrote last (the user halved it before saving), and the resumed run continues
    with the user's factor as the uninterrupted run does."""
    factory, stop = RESUME_CASES[case]

    def halve_at_stop(opt, sched, params):
        lrs = train(opt, sched, stop, params)
        for group in opt.param_groups:
            group["lr"] *= 0.5
        return lrs

    opt, sched, params = fresh(factory)
    uninterrupted = halve_at_stop(opt, sched, params) + train(opt, sched, 10, params)

    opt, sched, params = fresh(factory)
    first = halve_at_stop(opt, sched, params)
    saved_lrs = [group["lr"] for group in opt.param_groups]
    checkpoint = through_a_file({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    opt, sched, params2 = fresh(factory)
    with torch.no_grad():
        for p, q in zip(params2, params, strict=True):
            p.copy_(q)
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    assert [group["lr"] for group in opt.param_groups] == saved_lrs
    assert first + train(opt, sched, 10, params2) == uninterrupted


def test_loading_restores_a_tensor_lr_in_place():
    def build():
        param = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([{"params": [param], "lr": torch.tensor(0.1)}], lr=0.1)
        return opt, param

    opt, _ = build()
    sched = WarmupDecayLR(opt, 4, 20)
    for _ in range(6):
        opt.step()
        sched.step()
    checkpoint = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    expected = opt.param_groups[0]["lr"].clone()
    resumed, _ = build()
    resumed.load_state_dict(checkpoint["optimizer"])
    lr_tensor = resumed.param_groups[0]["lr"]
    WarmupDecayLR(resumed, 4, 20).load_state_dict(checkpoint["scheduler"])
    assert resumed.param_groups[0]["lr"] is lr_tensor
    torch.testing.assert_close(lr_tensor, expected, rtol=0.0, atol=0.0)


# ----------------------------------------------------------- resume: what is loaded


def chained_with_exponential(name):
    """A scheduler of SCHEDULERS whose chain factors change at every step."""

    def factory(opt):
        return torch_sched.ChainedScheduler(
            [SCHEDULERS[name](opt), torch_sched.ExponentialLR(opt, 0.9)]
        )

    return factory


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_state_dict_names_the_class_and_is_a_snapshot(name):
    opt = make_sgd([0.1, 0.05])
    sched = chained_with_exponential(name)(opt)
    run(opt, sched, 4)
    state = sched.state_dict()
    member = state["_schedulers"][0]
    assert (
        member["_scheduler_class"]
        == f"torchkit.optim.lr_scheduler.{type(sched._schedulers[0]).__name__}"
    )
    taken = copy.deepcopy(state)
    run(opt, sched, 4)  # the chain factors change at every step
    assert state == taken
    assert sched.state_dict() != taken


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_load_state_dict_neither_changes_nor_keeps_its_argument(name):
    opt = make_sgd([0.1, 0.05])
    sched = chained_with_exponential(name)(opt)
    run(opt, sched, 4)
    state = sched.state_dict()["_schedulers"][0]
    taken = copy.deepcopy(state)
    other_opt = make_sgd([0.1, 0.05])
    other = chained_with_exponential(name)(other_opt)
    other._schedulers[0].load_state_dict(state)
    assert state == taken  # the class name is still there
    run(other_opt, other, 4)
    assert state == taken


def test_a_state_dict_without_the_class_name_still_loads():
    """A state saved before torchkit recorded the class loads when its keys are this
    class's, and resumes exactly."""
    factory, stop = RESUME_CASES["warmup-decay-mid-decay"]
    opt, sched, params = fresh(factory)
    uninterrupted = train(opt, sched, stop + 10, params)
    opt, sched, params = fresh(factory)
    first = train(opt, sched, stop, params)
    old_style = sched.state_dict()
    del old_style["_scheduler_class"]
    checkpoint = through_a_file(
        {"optimizer": opt.state_dict(), "scheduler": old_style, "params": params}
    )
    opt, sched, params = fresh(factory)
    with torch.no_grad():
        for p, saved in zip(params, checkpoint["params"], strict=True):
            p.copy_(saved)
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    assert first + train(opt, sched, 10, params) == uninterrupted


def bad_state(edit):
    """A WarmupDecayLR state_dict (2 param groups, 6 steps) changed by ``edit``."""

    def make():
        opt = make_sgd([0.1, 0.05])
        sched = SCHEDULERS["warmup-cosine"](opt)
        run(opt, sched, 7)
        state = sched.state_dict()
        edit(state)
        return state

    return make


def _noam_state_without_class():
    opt = make_sgd([0.1, 0.05])
    state = NoamLR(opt, d_model=16, warmup_steps=4).state_dict()
    del state["_scheduler_class"]
    return state


BAD_STATES = {
    "not-a-mapping": (
        lambda: [("last_epoch", 3)],
        TypeError,
        "state_dict must be a dict, got list",
    ),
    "another-class": (
        bad_state(lambda s: s.update(_scheduler_class="torchkit.optim.lr_scheduler.NoamLR")),
        ValueError,
        "saved by 'torchkit.optim.lr_scheduler.NoamLR' into "
        "'torchkit.optim.lr_scheduler.WarmupDecayLR': the scheduler classes differ",
    ),
    "another-class-without-its-name": (
        _noam_state_without_class,
        ValueError,
        r"does not fit WarmupDecayLR: missing keys \[.*'decay'.*\], unexpected keys "
        r"\['d_model', 'factor'\] \(is it the state of another scheduler class\?\)",
    ),
    "missing-key": (
        bad_state(lambda s: s.pop("last_epoch")),
        ValueError,
        r"missing keys \['last_epoch'\], unexpected keys \[\]",
    ),
    "unexpected-key": (
        bad_state(lambda s: s.update(momentum=0.9)),
        ValueError,
        r"missing keys \[\], unexpected keys \['momentum'\]",
    ),
    "per-group-entry-not-a-list": (
        bad_state(lambda s: s.update(base_lrs=0.1)),
        ValueError,
        r"state_dict\['base_lrs'\] must be a list with one entry per param group, got float",
    ),
    "per-group-entry-length": (
        bad_state(lambda s: s["min_lrs"].append(0.0)),
        ValueError,
        r"saved with 3 param groups \('min_lrs' has 3 entries\) but the optimizer has 2",
    ),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_load_state_dict_refuses_what_does_not_fit_and_changes_nothing(case):
    make_state, error, message = BAD_STATES[case]
    opt, ref_opt = make_sgd([0.1, 0.05]), make_sgd([0.1, 0.05])
    sched, ref = SCHEDULERS["warmup-cosine"](opt), SCHEDULERS["warmup-cosine"](ref_opt)
    run(opt, sched, 3)
    run(ref_opt, ref, 3)
    with pytest.raises(error, match=message):
        sched.load_state_dict(make_state())
    assert sched.state_dict() == ref.state_dict()
    assert run(opt, sched, 5) == run(ref_opt, ref, 5)


def test_one_cycle_refuses_a_state_that_cycles_a_momentum_the_optimizer_lacks():
    adam = make_adam([0.1])
    adam_state = OneCycleLR(adam, max_lr=0.5, total_steps=20).state_dict()  # cycles beta1
    opt, ref_opt = make_sgd([0.1]), make_sgd([0.1])
    sched = OneCycleLR(opt, max_lr=0.5, total_steps=20)
    ref = OneCycleLR(ref_opt, max_lr=0.5, total_steps=20)
    with pytest.raises(ValueError, match="cycles 'betas' but param group 0 of SGD has no 'betas'"):
        sched.load_state_dict(adam_state)
    assert sched.state_dict() == ref.state_dict()
    assert run(opt, sched, 5) == run(ref_opt, ref, 5)


# ------------------------------------------------------------------- bad arguments

WARMUP_DECAY_BAD = {
    "warmup_steps=-1": ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
    "warmup_steps=2.5": ({"warmup_steps": 2.5}, "warmup_steps must be an integer >= 0, got 2.5"),
    "total_steps=0": (
        {"warmup_steps": 0, "total_steps": 0},
        "total_steps must be an integer >= 1, got 0",
    ),
    "total<warmup": (
        {"warmup_steps": 10, "total_steps": 5},
        "total_steps must be at least warmup_steps \\+ stable_steps, got total_steps=5, "
        "warmup_steps=10 and stable_steps=0",
    ),
    "end_at-not-cosine": (
        {"decay": "linear", "end_at": "wave"},
        "end_at is only used by decay='cosine', got end_at='wave' with decay='linear'",
    ),
    "end_at-unknown": (
        {"end_at": "max_lr"},
        "end_at must be one of 'min_lr', 'wave'; got 'max_lr'",
    ),
    "warmup=cos": (
        {"warmup": "cos"},
        "warmup must be one of 'linear', 'exponential', 'constant', 'cosine', '1-sqrt'; got 'cos'",
    ),
    "decay=cos": (
        {"decay": "cos"},
        "decay must be one of 'cosine', 'linear', 'polynomial', 'exponential', 'step', "
        "'inverse_sqrt', 'constant', '1-sqrt'; got 'cos'",
    ),
    "start_factor=-0.1": (
        {"warmup_start_factor": -0.1},
        r"warmup_start_factor must be in \[0, 1\], got -0.1",
    ),
    "start_factor=1.5": (
        {"warmup_start_factor": 1.5},
        r"warmup_start_factor must be in \[0, 1\], got 1.5",
    ),
    "start_factor=0-exponential": (
        {"warmup": "exponential", "warmup_start_factor": 0.0},
        "warmup_start_factor must be > 0 for warmup='exponential'",
    ),
    "min_lr=-1e-3": ({"min_lr": -1e-3}, "min_lr must be >= 0, got -0.001"),
    "min_lr>base": ({"min_lr": 0.5}, "min_lr=0.5 is greater than the base lr 0.1 of param group 0"),
    "min_lr-list-length": (
        {"min_lr": [0.0, 0.0, 0.0]},
        "min_lr has 3 values but the optimizer has 2 param groups",
    ),
    "min_lr[1]>base": (
        {"min_lr": [0.0, 0.06]},
        r"min_lr\[1\]=0.06 is greater than the base lr 0.05 of param group 1",
    ),
    "min_lr=nan": ({"min_lr": float("nan")}, "min_lr must be a finite real number, got nan"),
    "power=0": ({"decay": "polynomial", "power": 0.0}, "power must be > 0, got 0.0"),
    "exponential-no-gamma": ({"decay": "exponential"}, "decay='exponential' needs gamma"),
    "gamma=1": ({"decay": "exponential", "gamma": 1.0}, r"gamma must be in \(0, 1\), got 1.0"),
    "gamma=0": (
        {"decay": "step", "gamma": 0.0, "step_size": 2},
        r"gamma must be in \(0, 1\), got 0.0",
    ),
    "gamma-with-cosine": (
        {"gamma": 0.5},
        "gamma is only used by decay='exponential' or 'step', got gamma=0.5 with decay='cosine'",
    ),
    "step-no-step_size": ({"decay": "step", "gamma": 0.5}, "decay='step' needs step_size"),
    "step_size=0": (
        {"decay": "step", "gamma": 0.5, "step_size": 0},
        "step_size must be an integer >= 1, got 0",
    ),
    "step_size-with-linear": (
        {"decay": "linear", "step_size": 3},
        "step_size is only used by decay='step', got step_size=3",
    ),
    "stable_steps=-1": ({"stable_steps": -1}, "stable_steps must be an integer >= 0, got -1"),
    "total<warmup+stable": (
        {"stable_steps": 46},
        "total_steps must be at least warmup_steps \\+ stable_steps, got total_steps=50, "
        "warmup_steps=5 and stable_steps=46",
    ),
    "endless-cosine": (
        {"total_steps": None},
        "decay='cosine' needs total_steps .*, got None; only 'constant', 'exponential', 'step', "
        "'inverse_sqrt' run without one",
    ),
    "num_cycles-with-linear": (
        {"decay": "linear", "num_cycles": 1.0},
        "num_cycles is only used by decay='cosine', got num_cycles=1.0 with decay='linear'",
    ),
    "num_cycles=0": ({"num_cycles": 0.0}, "num_cycles must be > 0, got 0.0"),
    "timescale-with-cosine": (
        {"timescale": 10},
        "timescale is only used by decay='inverse_sqrt', got timescale=10",
    ),
    "timescale=0": (
        {"decay": "inverse_sqrt", "timescale": 0},
        "timescale must be an integer >= 1, got 0",
    ),
    "min_lr-and-min_lr_ratio": (
        {"min_lr": 1e-3, "min_lr_ratio": 0.1},
        "give min_lr or min_lr_ratio, not both: got min_lr=0.001 and min_lr_ratio=0.1",
    ),
    "min_lr_ratio=1.5": ({"min_lr_ratio": 1.5}, r"min_lr_ratio must be in \[0, 1\], got 1.5"),
    "min_lr_ratio[1]=-0.1": (
        {"min_lr_ratio": [0.1, -0.1]},
        r"min_lr_ratio\[1\] must be in \[0, 1\], got -0.1",
    ),
    "start_from": (
        {"start_from": "initial"},
        "start_from must be one of 'lr', 'initial_lr'; got 'initial'",
    ),
}


@pytest.mark.parametrize("case", list(WARMUP_DECAY_BAD))
def test_warmup_decay_rejects_bad_arguments(case):
    kwargs, message = WARMUP_DECAY_BAD[case]
    kwargs = {"warmup_steps": 5, "total_steps": 50, **kwargs}
    with pytest.raises(ValueError, match=message):
        WarmupDecayLR(make_sgd([0.1, 0.05]), **kwargs)


NOAM_BAD = {
    "d_model=0": ({"d_model": 0}, "d_model must be an integer >= 1, got 0"),
    "d_model=-512": ({"d_model": -512}, "d_model must be an integer >= 1, got -512"),
    "warmup_steps=0": ({"warmup_steps": 0}, "warmup_steps must be an integer >= 1, got 0"),
    "factor=0": ({"factor": 0.0}, "factor must be > 0, got 0.0"),
    "factor=inf": ({"factor": math.inf}, "factor must be a finite real number, got inf"),
}


@pytest.mark.parametrize("case", list(NOAM_BAD))
def test_noam_rejects_bad_arguments(case):
    kwargs, message = NOAM_BAD[case]
    with pytest.raises(ValueError, match=message):
        NoamLR(make_sgd(), **{"d_model": 512, "warmup_steps": 4000, **kwargs})


@pytest.mark.parametrize("cls", [WarmupDecayLR, OneCycleLR, NoamLR])
def test_schedulers_want_an_optimizer(cls):
    args = {WarmupDecayLR: (1, 10), OneCycleLR: (1.0, 10), NoamLR: (512, 4000)}[cls]
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer, got list"):
        cls([torch.zeros(1)], *args)


# --------------------------------------------------------------- failed construction

FAILING_CONSTRUCTIONS = {
    **{
        f"WarmupDecayLR-{case}": lambda opt, c=case: WarmupDecayLR(
            opt, **{"warmup_steps": 5, "total_steps": 50, **WARMUP_DECAY_BAD[c][0]}
        )
        for case in WARMUP_DECAY_BAD
    },
    **{
        f"OneCycleLR-{case}": lambda opt, c=case: OneCycleLR(
            opt, **{"max_lr": 1.0, **ONE_CYCLE_BAD[c][0]}
        )
        for case in ONE_CYCLE_BAD
    },
    **{
        f"NoamLR-{case}": lambda opt, c=case: NoamLR(
            opt, **{"d_model": 512, "warmup_steps": 4000, **NOAM_BAD[c][0]}
        )
        for case in NOAM_BAD
    },
}


@pytest.mark.parametrize("case", list(FAILING_CONSTRUCTIONS))
def test_a_failed_construction_leaves_the_optimizer_as_it_was(case):
    """Every argument is checked before the optimizer is touched (torch's OneCycleLR writes
    initial_lr before checking the momenta)."""
    opt = make_sgd([0.1, 0.05])
    before = copy.deepcopy(hyperparameters(opt))
    with pytest.raises(ValueError):  # noqa: PT011 - the messages are checked above
        FAILING_CONSTRUCTIONS[case](opt)
    assert hyperparameters(opt) == before


@pytest.mark.parametrize("last_epoch", [-2, 1.5, "0"], ids=lambda v: f"last_epoch={v!r}")
@pytest.mark.parametrize("cls", [WarmupDecayLR, OneCycleLR, NoamLR])
def test_last_epoch_must_be_an_integer_from_minus_one(cls, last_epoch):
    args = {WarmupDecayLR: (1, 10), OneCycleLR: (1.0, 10), NoamLR: (512, 4000)}[cls]
    opt = make_sgd([0.1])
    before = copy.deepcopy(hyperparameters(opt))
    with pytest.raises(
        ValueError, match=f"last_epoch must be an integer >= -1, got {last_epoch!r}"
    ):
        cls(opt, *args, last_epoch=last_epoch)
    assert hyperparameters(opt) == before


# -------------------------------------------------------------- preview / plotting


def test_preview_does_not_touch_the_optimizer_or_scheduler():
    opt = make_sgd([0.1, 0.05])
    sched = OneCycleLR(opt, max_lr=[0.4, 0.2], total_steps=30)
    for _ in range(5):
        opt.step()
        sched.step()
    before_groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    before_state = sched.state_dict()
    before_param = opt.param_groups[0]["params"][0].detach().clone()

    seen = preview(sched, 26)  # steps 5..30

    assert [
        {k: v for k, v in g.items() if k != "params"} for g in opt.param_groups
    ] == before_groups
    assert sched.state_dict() == before_state
    assert torch.equal(opt.param_groups[0]["params"][0], before_param)
    lrs, moms = run(opt, sched, 26)
    assert seen["lr"] == [list(col) for col in zip(*lrs, strict=True)]
    assert seen["momentum"] == [list(col) for col in zip(*moms, strict=True)]


def test_preview_works_with_torch_schedulers_and_chains():
    opt = make_sgd([0.1])
    sched = torch_sched.ChainedScheduler(
        [torch_sched.LinearLR(opt, 0.5, total_iters=4), torch_sched.ExponentialLR(opt, 0.5)]
    )
    expected = [0.1 * (0.5 + 0.5 * min(t, 4) / 4) * 0.5**t for t in range(6)]
    assert_rel_close(preview(sched, 6)["lr"][0], expected, rtol=1e-14)
    assert opt.param_groups[0]["lr"] == 0.05


def test_preview_of_a_factory():
    multipliers = preview(lambda opt: WarmupDecayLR(opt, 2, 4, decay="linear"), 5)
    assert_rel_close(multipliers["lr"], [[1 / 3, 2 / 3, 1.0, 0.5, 0.0]], rtol=1e-15)
    assert multipliers["momentum"] == [[0.9] * 5]
    adam = make_adam([1e-3])
    values = preview(lambda opt: NoamLR(opt, 8, 2), 3, optimizer=adam)
    assert_rel_close(
        values["lr"],
        [[1e-3 * 8**-0.5 * 2**-1.5, 1e-3 * 8**-0.5 * 2**-1.5, 1e-3 * 8**-0.5 * 2**-0.5]],
        rtol=1e-15,
    )
    assert adam.param_groups[0]["lr"] == 1e-3
    assert "initial_lr" not in adam.param_groups[0]


def test_preview_rejects_bad_arguments():
    opt = make_sgd()
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        preview(WarmupDecayLR(opt, 1, 5), 0)
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        preview(torch_sched.ReduceLROnPlateau(opt), 3)
    with pytest.raises(ValueError, match="optimizer is only used with a factory"):
        preview(WarmupDecayLR(opt, 1, 5), 3, optimizer=opt)
    with pytest.raises(TypeError, match="scheduler_or_factory must be an LRScheduler"):
        preview(0.1, 3)
    with pytest.raises(TypeError, match="the factory must return an LRScheduler"):
        preview(lambda opt: None, 3)


def test_plot_schedule_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    opt = make_sgd([0.1, 0.05])
    path = plot_schedule(
        {
            "one cycle": OneCycleLR(opt, max_lr=0.3, total_steps=40),
            "warmup + cosine": lambda o: WarmupDecayLR(o, 5, 40),
        },
        40,
        tmp_path / "lr.png",
        momentum=True,
        title="test",
    )
    assert path == tmp_path / "lr.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


DOCS = Path(__file__).resolve().parents[2] / "docs"


def _gallery_script():
    spec = importlib.util.spec_from_file_location(
        "make_schedule_plot", DOCS / "img" / "make_schedule_plot.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gallery_is_the_scripts_and_small(tmp_path):
    """Every image of docs/schedulers.md's gallery is drawn by docs/img/make_schedule_plot.py
    and stays under 100 KB; one figure is redrawn here to check that the script runs."""
    pytest.importorskip("matplotlib")
    script = _gallery_script()
    shown = set(re.findall(r"\]\(img/(sched_[a-z_]+\.png)\)", (DOCS / "schedulers.md").read_text()))
    assert shown == set(script.GALLERY)
    for name in shown:
        assert (DOCS / "img" / name).stat().st_size < 100_000, name
    (path,) = script.main(tmp_path, names=["sched_plateau.png"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size < 100_000


# --------------------------------------------------------------- property tests

DECAYS = st.sampled_from(list(DECAY_OPTIONS))
WARMUPS = st.sampled_from(ALL_WARMUPS)


@settings(max_examples=60, deadline=None)
@given(
    warmup=WARMUPS,
    decay=DECAYS,
    W=st.integers(0, 20),
    S=st.integers(0, 10),
    span=st.integers(1, 40),
    sf=st.floats(0.01, 1.0),
    floor_fraction=st.floats(0.0, 1.0),
)
def test_warmup_decay_is_bounded_and_monotone_per_phase(
    warmup, decay, W, S, span, sf, floor_fraction
):
    base, T = 0.1, W + S + span
    floor = base * floor_fraction
    opt = make_sgd([base])
    sched = WarmupDecayLR(
        opt,
        W,
        T,
        stable_steps=S,
        warmup=warmup,
        decay=decay,
        warmup_start_factor=sf,
        min_lr=floor,
        **DECAY_OPTIONS[decay],
    )
    lrs = [lr[0] for lr in run(opt, sched, T + 3)[0]]
    slack = 1e-15  # one rounding of a product of two float64 values
    warm, rest = lrs[:W], lrs[W:]
    assert all(base * sf * (1 - slack) <= lr <= base * (1 + slack) for lr in warm)
    assert all(floor * (1 - slack) <= lr <= base * (1 + slack) for lr in rest)
    assert all(a <= b * (1 + slack) for a, b in itertools.pairwise(warm))
    assert all(b <= a * (1 + slack) for a, b in itertools.pairwise(rest))
    assert rest[0] == base
    assert lrs[T:] == [floor] * 3


@settings(max_examples=40, deadline=None)
@given(
    total=st.integers(8, 80),
    pct_start=st.floats(0.15, 0.45),
    three_phase=st.booleans(),
    anneal=st.sampled_from(["cos", "linear"]),
)
def test_one_cycle_stays_between_min_and_max(total, pct_start, three_phase, anneal):
    opt = make_sgd()
    sched = OneCycleLR(
        opt,
        max_lr=1.0,
        total_steps=total,
        pct_start=pct_start,
        three_phase=three_phase,
        anneal_strategy=anneal,
    )
    lrs, moms = run(opt, sched, total)  # steps 0..total-1, where the cycle is defined
    low = 1.0 / 25.0 / 1e4
    assert all(low * (1 - 1e-12) <= lr[0] <= 1.0 + 1e-12 for lr in lrs)
    assert all(0.85 - 1e-12 <= m[0] <= 0.95 + 1e-12 for m in moms)
    peak = max(range(total), key=lambda t: lrs[t][0])
    rising = [lr[0] for lr in lrs[: peak + 1]]
    assert rising == sorted(rising)
