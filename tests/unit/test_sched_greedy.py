"""GreedyLR against transformers' GreedyLR, alone and composed, and its argument checks.

transformers' ``GreedyLR`` is written out in ``_sched_reference.hf_greedy_lrs`` from its
definition (transformers is not a test dependency). Resuming is tested with every other
scheduler in ``test_sched_resume.py``.
"""

from __future__ import annotations

import copy
import enum
import math
import random
from collections import Counter

import pytest
import torch
from _sched_reference import (
    BASES,
    assert_lrs,
    hf_greedy_lrs,
    hyperparameters,
    lrs_of,
    make_sgd,
    step_with_metrics,
)

from torchkit.optim.lr_scheduler import (
    ChainedScheduler,
    GreedyLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
    get_scheduler,
    preview,
)


def loss_walk(seed, length=150):
    """A loss that improves steadily for 15 steps, then stalls, wobbles and climbs."""
    rng = random.Random(seed)
    loss, out = 1.0, []
    for t in range(length):
        loss *= 0.97 if t < 15 else rng.choice([0.9, 0.95, 0.99, 1.0, 1.0, 1.0, 1.01, 1.05])
        out.append(loss)
    return out


def greedy_steps(optimizer, scheduler, metrics, as_tensor=False):
    """Every group's lr at step 0 and after each ``scheduler.step(metric)``."""
    lrs = [[group["lr"] for group in optimizer.param_groups]]
    for metric in metrics:
        optimizer.step()
        scheduler.step(torch.tensor(metric) if as_tensor else metric)
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


# ------------------------------------------------------------ alone: transformers' lrs

GREEDY_CASES = {
    "defaults": {},
    "transformers-test-defaults": {"factor": 0.9, "patience": 3, "min_lr": 1e-6},
    "cooldown-and-warmup": {"factor": 0.8, "patience": 1, "cooldown": 2, "warmup": 3},
    "max-rel": {"mode": "max", "threshold_mode": "rel", "threshold": 0.01, "patience": 2},
    "per-group-bounds": {
        "factor": 0.5,
        "patience": 1,
        "min_lr": [0.02, 0.01],
        "max_lr": [0.2, 0.05],
    },
    "smooth-window-4": {"smooth": True, "window_size": 4, "patience": 2, "factor": 0.7},
    "resets": {"factor": 0.5, "patience": 1, "min_lr": 0.01, "reset_start": 2, "cooldown": 1},
    "resets-smooth": {
        "factor": 0.6,
        "patience": 0,
        "min_lr": 0.02,
        "reset_start": 1,
        "smooth": True,
        "window_size": 3,
    },
    # Changes of 0.1 * 0.01 = 1e-3 move group 0; group 1's 3e-4 are skipped.
    "eps-skips-small-changes": {"factor": 0.99, "patience": 1, "eps": 5e-4},
}
SEEDS = [0, 1, 2]


def metrics_for(case, seed):
    walk = loss_walk(seed)
    return [1.0 / m for m in walk] if GREEDY_CASES[case].get("mode") == "max" else walk


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", list(GREEDY_CASES))
def test_greedy_alone_is_transformers_for_any_metric_sequence(case, seed):
    options = GREEDY_CASES[case]
    metrics = metrics_for(case, seed)
    optimizer = make_sgd()
    lrs = greedy_steps(optimizer, GreedyLR(optimizer, **options), metrics, as_tensor=seed == 1)
    expected, _ = hf_greedy_lrs(BASES, metrics, **options)
    assert_lrs(lrs, expected, case)


def test_the_grid_takes_every_branch():
    """Each case raises and lowers the lr; the grid also floors every group and resets."""
    total = Counter()
    for case in GREEDY_CASES:
        for seed in SEEDS:
            _, events = hf_greedy_lrs(BASES, metrics_for(case, seed), **GREEDY_CASES[case])
            assert events["up"], (case, seed, events)
            assert events["down"], (case, seed, events)
            total += events
    assert total["floor"] > total["reset"] > 3
    lrs, _ = hf_greedy_lrs(
        BASES, metrics_for("eps-skips-small-changes", 0), factor=0.99, patience=1, eps=5e-4
    )
    assert len({row[0] for row in lrs}) > 1
    assert {row[1] for row in lrs} == {0.03}


# ------------------------------------------------- transformers' tests, with numbers


def lrs_for(metrics, lr=0.1, **options):
    optimizer = make_sgd([lr])
    scheduler = GreedyLR(optimizer, **options)
    return [row[0] for row in greedy_steps(optimizer, scheduler, metrics)], scheduler


def test_improvement_raises_the_lr_up_to_max_lr():
    lrs, _ = lrs_for([10.0 * 0.8**k for k in range(1, 9)], factor=0.5, patience=1, max_lr=0.3)
    # Up on every second improvement (patience + 1 in a row), then held at max_lr.
    assert lrs == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3, 0.3]


def test_a_plateau_lowers_the_lr_down_to_min_lr():
    lrs, scheduler = lrs_for([5.0] + [10.0] * 8, factor=0.5, patience=1, min_lr=0.03)
    # The first metric beats the initial best (inf); then two bad steps per decrease.
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.03, 0.03, 0.03, 0.03, 0.03]
    assert (scheduler.best, scheduler.num_bad_epochs) == (5.0, 0)


def test_cooldown_pauses_decreases_and_warmup_pauses_increases():
    down, _ = lrs_for([1.0] * 11, factor=0.5, patience=1, cooldown=2, min_lr=1e-3)
    cuts = [t for t in range(1, 12) if down[t] < down[t - 1]]
    assert cuts == [3, 7, 11]  # patience + 1 bad steps, then 2 uncounted ones
    up, _ = lrs_for([0.9**k for k in range(1, 12)], factor=0.5, patience=1, warmup=2)
    raises = [t for t in range(1, 12) if up[t] > up[t - 1]]
    assert raises == [2, 6, 10]


def test_smoothing_compares_the_mean_of_the_last_window_size_metrics():
    _, scheduler = lrs_for([10.0, 8.0, 6.0, 4.0], smooth=True, window_size=3, patience=10)
    assert scheduler._window == [8.0, 6.0, 4.0]
    assert scheduler.best == 6.0  # (8 + 6 + 4) / 3
    # At step 4 the loss ticks up (0.8 -> 0.85), but the mean of 3 still falls (0.9 -> 0.85).
    metrics = [1.0, 0.9, 0.8, 0.85, 0.6]
    smoothed, _ = lrs_for(metrics, smooth=True, window_size=3, factor=0.9, patience=0)
    raw, _ = lrs_for(metrics, factor=0.9, patience=0)
    assert smoothed[4] > smoothed[3]
    assert raw[4] < raw[3]


def test_reset_after_reset_start_decreases_at_min_lr():
    metrics = [1.0] + [10.0] * 12
    options = {"factor": 0.5, "patience": 1, "min_lr": 0.02, "reset_start": 2}
    lrs, scheduler = lrs_for(metrics, **options)
    # 0.05, 0.025, 0.02 (the first decrease at min_lr), 0.02 (the second: reset to 0.1,
    # best forgotten, so 10.0 improves at step 10), then the plateau again.
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.1, 0.1, 0.1, 0.05, 0.05]
    assert scheduler.best == 10.0
    expected, events = hf_greedy_lrs([0.1], metrics, **options)
    assert [row[0] for row in expected] == lrs
    assert events["reset"] == 1


def test_in_max_mode_a_rising_metric_raises_the_lr():
    up, _ = lrs_for([1.5, 2.25, 3.375], mode="max", patience=2, factor=0.9)
    down, _ = lrs_for([10.0, 1.0, 1.0, 1.0], mode="max", patience=2, factor=0.9)
    assert up[-1] == pytest.approx(0.1 / 0.9, rel=1e-15)
    assert down[-1] == 0.1 * 0.9


# ---------------------------------------------------------------- composed


def warmup_then_greedy(optimizer, chained, **options):
    warmup = WarmupDecayLR(optimizer, 10, None, decay="constant", warmup_start_factor=0.0)
    greedy = GreedyLR(optimizer, **options)
    return ChainedScheduler([warmup, greedy]) if chained else (warmup, greedy)


@pytest.mark.parametrize("chained", [False, True], ids=["two-step-calls", "ChainedScheduler"])
def test_greedy_changes_multiply_a_warmup_from_zero(chained):
    """With bounds that never bind and eps=0, the lr is the warmup times GreedyLR's factors
    alone on an lr of 1; changes land inside the warmup and after it."""
    options = {"factor": 0.8, "patience": 1, "min_lr": 0.0, "max_lr": 100.0, "eps": 0.0}
    metrics = loss_walk(4, 40)
    optimizer, reference = make_sgd(), make_sgd()
    lrs = step_with_metrics(optimizer, warmup_then_greedy(optimizer, chained, **options), metrics)
    warmup = WarmupDecayLR(reference, 10, None, decay="constant", warmup_start_factor=0.0)
    alone = lrs_of(reference, warmup, 41)
    factors = [row[0] for row in hf_greedy_lrs([1.0], metrics, **options)[0]]
    assert len(set(factors[:10])) > 1
    assert len(set(factors[10:])) > 1
    assert_lrs(lrs, [[lr * f for lr in row] for row, f in zip(alone, factors, strict=True)])
    if chained:
        optimizer = make_sgd()
        previewed = preview(warmup_then_greedy(optimizer, True, **options), 41, metrics=metrics)
        assert previewed["lr"] == [list(col) for col in zip(*lrs, strict=True)]


def test_a_reset_in_a_chain_undoes_only_greedys_changes():
    """The reset divides out GreedyLR's own changes: the lr is the warmup's again, not the
    lr found when GreedyLR was built (0, the warmup's start)."""
    optimizer, reference = make_sgd(), make_sgd()
    options = {"factor": 0.5, "patience": 1, "min_lr": 0.004, "reset_start": 1}
    warmup, greedy = warmup_then_greedy(optimizer, False, **options)
    lrs, resets = step_with_metrics(optimizer, (warmup, greedy), []), []
    for t in range(1, 31):
        lrs += step_with_metrics(optimizer, (warmup, greedy), [1.0])[1:]
        if greedy.best == math.inf:  # forgotten: the reset happened at this step
            resets.append(t)
    alone = lrs_of(
        reference, WarmupDecayLR(reference, 10, None, decay="constant", warmup_start_factor=0.0), 31
    )
    assert resets
    first = resets[0]
    assert lrs[first - 1][0] < alone[first - 1][0]  # cut, then undone
    assert_lrs(lrs[first : first + 3], alone[first : first + 3])


# --------------------------------------------------------------- factory and errors


def test_get_scheduler_builds_it_by_transformers_name_and_arguments():
    class SchedulerType(str, enum.Enum):  # transformers' is a str Enum
        GREEDY = "greedy"

    for name in ("greedy", SchedulerType.GREEDY):
        optimizer = make_sgd()
        options = {"patience": 5, "factor": 0.9, "smooth": True}
        scheduler = get_scheduler(name, optimizer, 100, 1000, options)  # counts ignored
        assert isinstance(scheduler, GreedyLR)
        assert (scheduler.patience, scheduler.factor, scheduler.smooth) == (5, 0.9, True)
        assert (scheduler.min_lrs, scheduler.max_lrs, scheduler.window_size) == (
            [1e-3, 1e-3],
            [1.0, 1.0],
            50,
        )
    with pytest.raises(TypeError, match=r"unexpected scheduler_specific_kwargs \['verbose'\]"):
        get_scheduler("greedy", make_sgd(), scheduler_specific_kwargs={"verbose": False})


def test_greedy_rejects_bad_arguments_before_touching_the_optimizer():
    cases = {
        "factor-1": ({"factor": 1.0}, ValueError, r"factor must be in \(0, 1\), got 1.0"),
        "factor-0": ({"factor": 0.0}, ValueError, r"factor must be in \(0, 1\), got 0.0"),
        "mode": ({"mode": "unknown"}, ValueError, "mode must be one of 'min', 'max'"),
        "threshold_mode": (
            {"threshold_mode": "unknown"},
            ValueError,
            "threshold_mode must be one of 'abs', 'rel'",
        ),
        "patience": ({"patience": -1}, ValueError, "patience must be an integer >= 0, got -1"),
        "warmup": ({"warmup": 2.5}, ValueError, "warmup must be an integer >= 0, got 2.5"),
        "window_size": ({"window_size": 0}, ValueError, "window_size must be an integer >= 1"),
        "reset_start": ({"reset_start": 0}, ValueError, "reset_start must be an integer >= 1"),
        "smooth": ({"smooth": 1}, TypeError, "smooth must be a bool, got int"),
        "eps": ({"eps": -1e-8}, ValueError, "eps must be >= 0, got -1e-08"),
        "threshold": ({"threshold": float("nan")}, ValueError, "threshold must be a finite"),
        "min_lr-length": ({"min_lr": [0.0]}, ValueError, "min_lr has 1 values but the optim"),
        "min_lr-above-lr": (
            {"min_lr": 0.05},
            ValueError,
            r"param group 1 needs 0 <= min_lr <= its base lr <= max_lr, got min_lr=0.05, "
            r"base lr 0.03, max_lr=1.0",
        ),
        "max_lr-below-lr": ({"max_lr": [0.05, 1.0]}, ValueError, "param group 0 needs"),
        "negative-min_lr": ({"min_lr": -1.0}, ValueError, "param group 0 needs 0 <= min_lr"),
    }
    for what, (options, error, message) in cases.items():
        optimizer = make_sgd()
        before = copy.deepcopy(hyperparameters(optimizer))
        with pytest.raises(error, match=message):
            GreedyLR(optimizer, **options)
        assert hyperparameters(optimizer) == before, what

    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer, got str"):
        GreedyLR("not an optimizer")


def test_its_state_names_its_class_and_another_is_refused_before_writing():
    optimizer = make_sgd()
    greedy = GreedyLR(optimizer, patience=0, smooth=True, window_size=2)
    greedy_steps(optimizer, greedy, [1.0, 2.0, 3.0])
    state = greedy.state_dict()
    assert state["_scheduler_class"] == "torchkit.optim.lr_scheduler.GreedyLR"
    assert state["_window"] == [2.0, 3.0]
    before = (hyperparameters(optimizer), copy.deepcopy(greedy.state_dict()))
    with pytest.raises(ValueError, match="cannot load a state_dict saved by"):
        greedy.load_state_dict(ReduceLROnPlateau(make_sgd()).state_dict())
    with pytest.raises(ValueError, match=r"saved with 2 param groups .* but the optimizer has 1"):
        GreedyLR(make_sgd([0.1])).load_state_dict(state)
    assert (hyperparameters(optimizer), greedy.state_dict()) == before
