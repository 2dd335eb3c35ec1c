"""CosineRestartsLR against timm's and torch's cycles; ReduceLROnPlateau alone and composed.

timm's ``CosineLRScheduler`` is written out in ``_sched_reference.py`` (timm is not a test
dependency); torch's ``CosineAnnealingWarmRestarts`` and ``ReduceLROnPlateau`` run side by side.
"""

from __future__ import annotations

import copy
import io
import math
import random

import pytest
import torch
from _sched_reference import (
    BASES,
    assert_lrs,
    exact_cycle,
    hyperparameters,
    lrs_of,
    make_sgd,
    step_with_metrics,
    timm_cosine_lrs,
)
from torch.optim import lr_scheduler as torch_sched

from torchkit.optim.lr_scheduler import (
    ChainedScheduler,
    CosineRestartsLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
    plot_schedule,
    preview,
)

# ------------------------------------------------------------------- timm's cycles

# timm's arguments -> the same schedule in CosineRestartsLR's names.
TIMM_CASES = {
    "one-cycle-default": {"t_initial": 30},
    "fixed-cycles": {"t_initial": 10, "cycle_limit": 4, "lr_min": 1e-3},
    "growing-cycles": {"t_initial": 5, "cycle_mul": 2.0, "cycle_limit": 4, "lr_min": 1e-4},
    "fractional-mul-decay": {
        "t_initial": 7,
        "cycle_mul": 1.5,
        "cycle_decay": 0.6,
        "cycle_limit": 5,
    },
    "warmup-overlaid": {"t_initial": 12, "cycle_limit": 3, "warmup_t": 5, "warmup_lr_init": 1e-3},
    "warmup-prefix": {
        "t_initial": 12,
        "cycle_limit": 3,
        "warmup_t": 5,
        "warmup_lr_init": 1e-3,
        "warmup_prefix": True,
        "cycle_decay": 0.5,
    },
    "k-decay": {"t_initial": 15, "cycle_limit": 3, "k_decay": 2.0, "lr_min": 1e-3},
    "k-decay-below-one": {"t_initial": 9, "cycle_mul": 2.0, "cycle_limit": 3, "k_decay": 0.5},
    "tripling-cycles": {"t_initial": 1, "cycle_mul": 3.0, "cycle_limit": 10, "lr_min": 1e-3},
    "tripling-cycles-after-warmup": {
        "t_initial": 1,
        "cycle_mul": 3.0,
        "cycle_limit": 10,
        "warmup_t": 4,
        "warmup_prefix": True,
    },
}
# The steps where timm's floored logarithm finds the cycle before the right one: 121 starts
# cycle 5 of t_initial=1, cycle_mul=3, but log(243, 3) is 4.999999999999999, so timm's lr there
# is cycle 4's minimum. torchkit's is cycle 5's peak, as torch's CosineAnnealingWarmRestarts.
TIMM_LOG_ROUNDS_DOWN = {"tripling-cycles": [121], "tripling-cycles-after-warmup": [125]}
TIMM_STEPS = 130


def from_timm(optimizer, t_initial, lr_min=0.0, cycle_mul=1.0, cycle_decay=1.0, cycle_limit=1,
              warmup_t=0, warmup_lr_init=0.0, warmup_prefix=False, k_decay=1.0):  # fmt: skip
    return CosineRestartsLR(
        optimizer,
        t_initial,
        cycle_mul=cycle_mul,
        cycle_decay=cycle_decay,
        cycle_limit=cycle_limit,
        min_lr=lr_min,
        k_decay=k_decay,
        warmup_steps=warmup_t,
        warmup_start_lr=warmup_lr_init,
        warmup_prefix=warmup_prefix,
    )


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_cosine_restarts_equals_timms_formula_step_for_step(case):
    """timm's t is an epoch (``step(epoch)``) or an update count (``step_update``): either
    way it is the number of times this scheduler was stepped. The floats are timm's, except
    at the steps where timm's logarithm lands in the cycle before (listed)."""
    options = TIMM_CASES[case]
    optimizer = make_sgd()
    lrs = lrs_of(optimizer, from_timm(optimizer, **options), TIMM_STEPS)
    timm = [timm_cosine_lrs(t, BASES, **options) for t in range(TIMM_STEPS)]
    exact = [timm_cosine_lrs(t, BASES, **options, exact_cycles=True) for t in range(TIMM_STEPS)]
    differ = [t for t in range(TIMM_STEPS) if timm[t] != exact[t]]
    assert differ == TIMM_LOG_ROUNDS_DOWN.get(case, [])
    assert lrs == exact  # the same operations in the same order: the same floats


@pytest.mark.parametrize(("t_0", "t_mult"), [(10, 1), (4, 2), (3, 3), (1, 3), (2, 7)])
def test_unlimited_cycles_are_torchs_cosine_annealing_warm_restarts(t_0, t_mult):
    """Past the cycle starts where timm's logarithm rounds down (121 for 1 and 3, 363 for
    3 and 3), torch counts the steps of a cycle in integers."""
    optimizer, twin = make_sgd(), make_sgd()
    scheduler = CosineRestartsLR(optimizer, t_0, cycle_mul=t_mult, min_lr=1e-4)
    reference = torch_sched.CosineAnnealingWarmRestarts(twin, T_0=t_0, T_mult=t_mult, eta_min=1e-4)
    assert_lrs(lrs_of(optimizer, scheduler, 400), lrs_of(twin, reference, 400))


@pytest.mark.parametrize(("t_0", "t_mult"), [(1, 2), (1, 3), (3, 3), (7, 2), (1, 5), (2, 7)])
def test_every_growing_cycle_starts_at_its_peak(t_0, t_mult):
    """Every cycle start up to 10**7 steps, reached through last_epoch (the closed form): the
    lr is the peak there and the end of the previous cycle one step before, as torch's
    integer count has it (timm's logarithm misses 88,572 of 3 and 3, among others)."""
    base = 0.1
    starts = [t_0 * (t_mult**i - 1) // (t_mult - 1) for i in range(1, 40)]
    for start in [s for s in starts if s < 10**7]:
        assert exact_cycle(start, t_0, t_mult) == exact_cycle(start - 1, t_0, t_mult) + 1
        optimizer = make_sgd([base])
        optimizer.param_groups[0]["initial_lr"] = base
        scheduler = CosineRestartsLR(
            optimizer, t_0, cycle_mul=t_mult, start_from="initial_lr", last_epoch=start - 2
        )
        before = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == base, start
        length = t_0 * t_mult ** (exact_cycle(start - 1, t_0, t_mult))
        assert_lrs([before], [0.5 * base * (1 + math.cos(math.pi * (length - 1) / length))])


def test_fitted_cycles_without_prefix_span_the_whole_run():
    """num_cycles equal cycles from step 0 to total_steps; the warmup replaces the first steps."""
    optimizer = make_sgd([1.0])
    scheduler = CosineRestartsLR(
        optimizer, total_steps=12, num_cycles=3, warmup_steps=2, warmup_start_lr=0.5
    )
    lrs = [row[0] for row in lrs_of(optimizer, scheduler, 14)]
    cycle = [1.0, 0.5 * (1 + 2**-0.5), 0.5, 0.5 * (1 - 2**-0.5)]  # cos at 0, 1/4, 1/2, 3/4
    assert_lrs(lrs, [0.5, 0.75, *cycle[2:], *cycle, *cycle, 0.0, 0.0])


# ------------------------------------------------------------ ReduceLROnPlateau alone


def metric_walk(seed, length=60):
    """A loss that improves, stalls and wobbles: every branch of the plateau logic."""
    rng = random.Random(seed)
    loss, out = 1.0, []
    for _ in range(length):
        loss *= rng.choice([0.9, 0.99, 1.0, 1.0, 1.0, 1.02])
        out.append(loss)
    return out


PLATEAU_CASES = {
    "defaults": {},
    "patience-0-cooldown-2": {"patience": 0, "cooldown": 2, "factor": 0.5},
    "max-abs": {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "patience": 2},
    "min-lr-per-group": {"patience": 1, "factor": 0.3, "min_lr": [0.02, 0.01]},
    "eps-skips-small-cuts": {"patience": 1, "factor": 0.9, "eps": 0.003},
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", list(PLATEAU_CASES))
def test_plateau_alone_is_torchs_for_any_metric_sequence(case, seed):
    options = PLATEAU_CASES[case]
    optimizer, twin = make_sgd(), make_sgd()
    scheduler = ReduceLROnPlateau(optimizer, **options)
    reference = torch_sched.ReduceLROnPlateau(twin, **options)
    metrics = metric_walk(seed)
    if options.get("mode") == "max":
        metrics = [-m for m in metrics]
    for metric in metrics:
        scheduler.step(metric)
        reference.step(metric)
        state = (scheduler.best, scheduler.num_bad_epochs, scheduler.cooldown_counter)
        assert state == (reference.best, reference.num_bad_epochs, reference.cooldown_counter)
        assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in twin.param_groups]


# ---------------------------------------------------------- warmup, then plateau


def plateau_factors(metrics, **options):
    """The cumulative cut factor after each step: torch's plateau alone on an lr of 1."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=1.0)
    reference = torch_sched.ReduceLROnPlateau(optimizer, **options)
    factors = [1.0]
    for metric in metrics:
        reference.step(metric)
        factors.append(optimizer.param_groups[0]["lr"])
    return factors


def warmup_then_plateau(optimizer, chained, **options):
    warmup = WarmupDecayLR(optimizer, 10, None, decay="constant")
    plateau = ReduceLROnPlateau(optimizer, factor=0.5, patience=1, **options)
    return ChainedScheduler([warmup, plateau]) if chained else (warmup, plateau)


@pytest.mark.parametrize("chained", [False, True], ids=["two-step-calls", "ChainedScheduler"])
def test_plateau_cuts_multiply_the_warmup(chained):
    metrics = metric_walk(3, 40)
    optimizer, reference = make_sgd(), make_sgd()
    lrs = step_with_metrics(optimizer, warmup_then_plateau(optimizer, chained), metrics)
    alone = lrs_of(reference, WarmupDecayLR(reference, 10, None, decay="constant"), 41)
    factors = plateau_factors(metrics, factor=0.5, patience=1)
    assert factors[9] < 1.0  # cuts land inside the warmup, and after
    expected = [[lr * f for lr in row] for row, f in zip(alone, factors, strict=True)]
    assert_lrs(lrs, expected)


def test_plateau_cuts_never_go_below_min_lr():
    metrics = [1.0] * 30  # no progress at all: a cut every second epoch
    optimizer = make_sgd()
    floors = [0.01, 0.004]
    lrs = step_with_metrics(
        optimizer, warmup_then_plateau(optimizer, False, min_lr=floors), metrics
    )
    assert all(lr >= floor for row in lrs[1:] for lr, floor in zip(row, floors, strict=True))
    assert lrs[-1] == floors


# ------------------------------------------------------------------- resume, as one


def checkpoint_of(optimizer, schedulers):
    states = (
        schedulers.state_dict()
        if isinstance(schedulers, ChainedScheduler)
        else [s.state_dict() for s in schedulers]
    )
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedulers": states}, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def load(schedulers, states, warmup_first):
    if isinstance(schedulers, ChainedScheduler):
        schedulers.load_state_dict(states)
        return
    pairs = list(zip(schedulers, states, strict=True))
    for scheduler, state in pairs if warmup_first else reversed(pairs):
        scheduler.load_state_dict(state)


@pytest.mark.parametrize("order", ["optimizer-after-build", "optimizer-first"])
@pytest.mark.parametrize(
    ("chained", "warmup_first"),
    [(False, True), (False, False), (True, None)],
    ids=["two-step-calls-warmup-loaded-first", "two-step-calls-plateau-loaded-first", "chain"],
)
@pytest.mark.parametrize("stop", [6, 7, 17], ids=lambda s: f"stop={s}")
def test_warmup_then_plateau_resumes_exactly(stop, chained, warmup_first, order):
    """Through torch.save/torch.load(weights_only=True): at step 6 the plateau has just cut
    the lr (inside the warmup), at 7 the warmup has carried the cut on, 17 is after both.
    With the optimizer loaded first, the warmup loaded first restores the lr saved with its
    state: the interrupted step's, after the plateau's cut."""
    metrics = metric_walk(3, 40)
    optimizer = make_sgd()
    uninterrupted = step_with_metrics(optimizer, warmup_then_plateau(optimizer, chained), metrics)

    optimizer = make_sgd()
    schedulers = warmup_then_plateau(optimizer, chained)
    first = step_with_metrics(optimizer, schedulers, metrics[:stop])
    checkpoint = checkpoint_of(optimizer, schedulers)

    optimizer = make_sgd()
    if order == "optimizer-first":  # the constructors then overwrite the loaded lr
        optimizer.load_state_dict(checkpoint["optimizer"])
        schedulers = warmup_then_plateau(optimizer, chained)
    else:  # torch's documented order
        schedulers = warmup_then_plateau(optimizer, chained)
        optimizer.load_state_dict(checkpoint["optimizer"])
    load(schedulers, checkpoint["schedulers"], warmup_first)
    second = step_with_metrics(optimizer, schedulers, metrics[stop:])
    assert second[0] == first[-1]
    assert first + second[1:] == uninterrupted


def test_the_plateaus_state_names_its_class_and_refuses_another_before_writing():
    optimizer = make_sgd()
    plateau = ReduceLROnPlateau(optimizer, patience=0)
    plateau.step(1.0)
    plateau.step(2.0)
    state = plateau.state_dict()
    assert state["_scheduler_class"] == "torchkit.optim.lr_scheduler.ReduceLROnPlateau"
    warmup_state = WarmupDecayLR(make_sgd(), 2, 10).state_dict()
    before = copy.deepcopy(plateau.state_dict())
    with pytest.raises(ValueError, match="cannot load a state_dict saved by"):
        plateau.load_state_dict(warmup_state)
    with pytest.raises(ValueError, match=r"saved with 2 param groups .* but the optimizer has 1"):
        ReduceLROnPlateau(make_sgd([0.1])).load_state_dict(state)
    assert plateau.state_dict() == before
    # A state saved by torch's own class (no class name) loads.
    reference = torch_sched.ReduceLROnPlateau(make_sgd(), patience=0)
    reference.step(1.0)
    plateau.load_state_dict(reference.state_dict())
    assert (plateau.best, plateau.num_bad_epochs) == (1.0, 0)


def test_a_chain_checks_its_members_and_its_state():
    optimizer = make_sgd()
    warmup = WarmupDecayLR(optimizer, 3, None, decay="constant")
    plateau = ReduceLROnPlateau(optimizer)
    with pytest.raises(ValueError, match="needs at least one scheduler"):
        ChainedScheduler([])
    with pytest.raises(ValueError, match=r"schedulers\[1\] \(ReduceLROnPlateau\) wraps another"):
        ChainedScheduler([warmup, ReduceLROnPlateau(make_sgd())])
    with pytest.raises(TypeError, match=r"schedulers\[0\] must be an LRScheduler, got str"):
        ChainedScheduler(["warmup"])
    chain = ChainedScheduler([warmup, plateau])
    with pytest.raises(TypeError, match=r"step\(\) needs metrics: schedulers\[1\]"):
        chain.step()
    with pytest.raises(ValueError, match="no scheduler of this chain takes one"):
        ChainedScheduler([warmup]).step(1.0)
    with pytest.raises(ValueError, match="holds 1 scheduler states but this chain has 2"):
        chain.load_state_dict(ChainedScheduler([warmup]).state_dict())
    assert ChainedScheduler([warmup]).state_dict()["_schedulers"][0]["warmup_steps"] == 3


def test_plateau_rejects_bad_arguments_before_touching_the_optimizer():
    cases = {
        "factor": ({"factor": 1.0}, r"factor must be in \[0, 1\), got 1.0"),
        "patience": ({"patience": -1}, "patience must be an integer >= 0, got -1"),
        "cooldown": ({"cooldown": 1.5}, "cooldown must be an integer >= 0, got 1.5"),
        "mode": ({"mode": "minimum"}, "mode must be one of 'min', 'max'; got 'minimum'"),
        "threshold": ({"threshold": -0.1}, "threshold must be >= 0, got -0.1"),
        "min_lr": ({"min_lr": [0.0]}, "min_lr has 1 values but the optimizer has 2 param groups"),
        "min_lr-negative": ({"min_lr": -1e-3}, "min_lr must be >= 0, got -0.001"),
        "eps": ({"eps": float("nan")}, "eps must be a finite real number, got nan"),
    }
    for what, (options, message) in cases.items():
        optimizer = make_sgd()
        before = copy.deepcopy(hyperparameters(optimizer))
        with pytest.raises(ValueError, match=message):
            ReduceLROnPlateau(optimizer, **options)
        after = hyperparameters(optimizer)
        assert after == before, what


# ------------------------------------------------------------ CosineRestartsLR errors

RESTARTS_BAD = {
    "no-cycles": ({}, "give cycle_steps .*, or total_steps and num_cycles"),
    "both": ({"cycle_steps": 5, "total_steps": 20, "num_cycles": 2}, "give cycle_steps"),
    "half-fitted": ({"total_steps": 20}, "give cycle_steps"),
    "cycle_steps=0": ({"cycle_steps": 0}, "cycle_steps must be > 0, got 0"),
    "cycle_mul<1": ({"cycle_steps": 5, "cycle_mul": 0.5}, "cycle_mul must be >= 1"),
    "cycle_limit=0": ({"cycle_steps": 5, "cycle_limit": 0}, "cycle_limit must be an integer >= 1"),
    "fitted-with-mul": (
        {"total_steps": 20, "num_cycles": 2, "cycle_mul": 2.0},
        "cycle_mul and cycle_limit are only used with cycle_steps",
    ),
    "k_decay": ({"cycle_steps": 5, "k_decay": 0.0}, "k_decay must be > 0, got 0.0"),
    "min_lr-above-base": (
        {"cycle_steps": 5, "min_lr": 0.05},
        "min_lr=0.05 is greater than the base lr 0.03 of param group 1",
    ),
    "warmup-start-without-warmup": (
        {"cycle_steps": 5, "warmup_start_lr": 1e-3},
        "warmup_start_lr is only used with warmup_steps > 0",
    ),
    "prefix-longer-than-run": (
        {"total_steps": 5, "num_cycles": 1, "warmup_steps": 5, "warmup_prefix": True},
        "total_steps must be greater than warmup_steps when the warmup is a prefix",
    ),
    "prefix-not-bool": ({"cycle_steps": 5, "warmup_prefix": 1}, "warmup_prefix must be a bool"),
}


@pytest.mark.parametrize("case", list(RESTARTS_BAD))
def test_cosine_restarts_rejects_bad_arguments_before_touching_the_optimizer(case):
    options, message = RESTARTS_BAD[case]
    optimizer = make_sgd()
    before = copy.deepcopy(hyperparameters(optimizer))
    with pytest.raises(ValueError, match=message):
        CosineRestartsLR(optimizer, **options)
    assert hyperparameters(optimizer) == before


# ------------------------------------------------------------ preview and old states


def test_preview_drives_a_plateau_with_metrics_and_leaves_it_alone():
    optimizer = make_sgd()
    chain = warmup_then_plateau(optimizer, chained=True)
    metrics = metric_walk(3, 20)
    previewed = preview(chain, 21, metrics=metrics)["lr"]
    assert [g["lr"] for g in optimizer.param_groups] == [lr[0] for lr in previewed]
    lrs = step_with_metrics(optimizer, chain, metrics)
    assert previewed == [list(col) for col in zip(*lrs, strict=True)]
    with pytest.raises(ValueError, match="needs a metric"):
        preview(chain, 5)
    with pytest.raises(ValueError, match="metrics has 3 values but 5 steps need 4"):
        preview(chain, 5, metrics=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="takes none"):
        preview(WarmupDecayLR(make_sgd(), 2, 10), 5, metrics=[1.0] * 4)


def test_plot_schedule_draws_a_plateau(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_schedule(
        {"warmup then plateau": lambda opt: warmup_then_plateau(opt, chained=True)},
        21,
        tmp_path / "plateau.png",
        metrics=metric_walk(3, 20),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_state_saved_before_the_new_options_still_loads():
    """torchkit 1's WarmupDecayLR and NoamLR states lack stable_steps, num_cycles, min_lr_ratio
    and start_from: they load, with the values that reproduce torchkit 1's schedule."""
    optimizer, twin = make_sgd(), make_sgd()
    scheduler = WarmupDecayLR(optimizer, 3, 20, min_lr=1e-3)
    lrs_of(optimizer, scheduler, 8)
    old_state = {
        k: v
        for k, v in scheduler.state_dict().items()
        if k not in ("stable_steps", "num_cycles", "min_lr_ratio", "start_from")
    }
    resumed = WarmupDecayLR(twin, 3, 20, min_lr=1e-3)
    resumed.load_state_dict(old_state)
    assert lrs_of(twin, resumed, 15) == lrs_of(optimizer, scheduler, 15)
