"""References for the scheduler tests: transformers' and timm's LR schedules, written out.

Each ``hf_*`` function is the multiplier that the matching ``transformers.optimization``
``get_*_schedule`` function hands to ``LambdaLR`` (``lr = base_lr * multiplier(step)``), with
the same operations in the same order, so that a float-for-float reproduction is checkable
to 1e-12 without transformers installed. :func:`timm_cosine_lrs` is
``timm.scheduler.CosineLRScheduler``'s lr at ``t`` (its ``_get_lr``, no noise), and
:func:`exact_cycle` the cycle that timm's floored logarithm means to find, in exact rational
arithmetic. :func:`hf_greedy_lrs` is ``transformers.optimization.GreedyLR`` stepped through a
metric sequence, from its definition. Nothing here calls torchkit. The helpers at the end run a
scheduler and compare lrs for the test modules.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import torch


def hf_warmup(t: int, warmup: int) -> float:
    """The linear warmup every transformers schedule shares: ``t / max(1, warmup)``."""
    return float(t) / float(max(1, warmup))


def hf_constant(t: int) -> float:
    """``get_constant_schedule``."""
    return 1.0


def hf_constant_with_warmup(t: int, warmup: int) -> float:
    """``get_constant_schedule_with_warmup``."""
    if t < warmup:
        return float(t) / float(max(1.0, warmup))
    return 1.0


def hf_linear(t: int, warmup: int, total: int) -> float:
    """``get_linear_schedule_with_warmup``."""
    if t < warmup:
        return hf_warmup(t, warmup)
    return max(0.0, float(total - t) / float(max(1, total - warmup)))


def hf_cosine(t: int, warmup: int, total: int, num_cycles: float = 0.5) -> float:
    """``get_cosine_schedule_with_warmup``: the cosine goes on past ``total``."""
    if t < warmup:
        return hf_warmup(t, warmup)
    progress = float(t - warmup) / float(max(1, total - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))


def hf_cosine_with_hard_restarts(t: int, warmup: int, total: int, num_cycles: float = 1) -> float:
    """``get_cosine_with_hard_restarts_schedule_with_warmup``: 0 from ``total`` on."""
    if t < warmup:
        return hf_warmup(t, warmup)
    progress = float(t - warmup) / float(max(1, total - warmup))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def hf_polynomial(
    t: int, warmup: int, total: int, lr_init: float, lr_end: float = 1e-7, power: float = 1.0
) -> float:
    """``get_polynomial_decay_schedule_with_warmup`` (``lr_init``: the optimizer's default lr)."""
    if t < warmup:
        return hf_warmup(t, warmup)
    if t > total:
        return lr_end / lr_init
    pct_remaining = 1 - (t - warmup) / (total - warmup)
    return ((lr_init - lr_end) * pct_remaining**power + lr_end) / lr_init


def hf_inverse_sqrt(t: int, warmup: int, timescale: int | None = None) -> float:
    """``get_inverse_sqrt_schedule``."""
    if timescale is None:
        timescale = warmup or 10_000
    if t < warmup:
        return hf_warmup(t, warmup)
    return 1.0 / math.sqrt((t + timescale - warmup) / timescale)


def hf_cosine_with_min_lr(
    t: int, warmup: int, total: int, num_cycles: float = 0.5, min_lr_rate: float = 0.0
) -> float:
    """``get_cosine_with_min_lr_schedule_with_warmup`` (``min_lr_rate``; ``min_lr`` is
    ``min_lr_rate`` times the optimizer's default lr)."""
    if t < warmup:
        return hf_warmup(t, warmup)
    progress = float(t - warmup) / float(max(1, total - warmup))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0, factor * (1 - min_lr_rate) + min_lr_rate)


def hf_cosine_warmup_with_min_lr(
    t: int,
    warmup: int,
    total: int,
    num_cycles: float = 0.5,
    min_lr_rate: float = 0.0,
    warmup_lr_rate: float | None = None,
) -> float:
    """``get_cosine_with_min_lr_schedule_with_warmup_lr_rate`` (``cosine_warmup_with_min_lr``)."""
    step, warmup_f, total_f = float(t), float(warmup), float(total)
    if step < warmup_f:
        if warmup_lr_rate is None:
            return (step + 1.0) / max(1.0, warmup_f)
        return warmup_lr_rate + (1.0 - warmup_lr_rate) * step / max(1, warmup_f - 1)
    progress = (step - warmup_f + 1.0) / max(1.0, total_f - warmup_f)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0, factor * (1 - min_lr_rate) + min_lr_rate)


def hf_wsd(
    t: int,
    warmup: int,
    stable: int,
    decay: int,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
) -> float:
    """``get_wsd_schedule`` (``stable``: ``num_stable_steps``, or ``total - warmup - decay``)."""
    if t < warmup:
        progress = float(t) / float(max(1, warmup))
        shape = {
            "linear": lambda p: p,
            "cosine": lambda p: 0.5 * (1.0 - math.cos(math.pi * p)),
            "1-sqrt": lambda p: 1.0 - math.sqrt(1.0 - p),
        }[warmup_type]
        return max(0.0, shape(progress) * (1.0 - min_lr_ratio) + min_lr_ratio)
    if t < warmup + stable:
        return 1.0
    if t < warmup + stable + decay:
        progress = float(t - warmup - stable) / float(max(1, decay))
        shape = {
            "linear": lambda p: 1.0 - p,
            "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * p)),
            "1-sqrt": lambda p: 1.0 - math.sqrt(p),
        }[decay_type]
        return max(0.0, shape(progress) * (1.0 - min_lr_ratio) + min_lr_ratio)
    return min_lr_ratio


def timm_cosine_lrs(
    t: int,
    base_lrs: list[float],
    t_initial: float,
    lr_min: float = 0.0,
    cycle_mul: float = 1.0,
    cycle_decay: float = 1.0,
    cycle_limit: int = 1,
    warmup_t: int = 0,
    warmup_lr_init: float = 0.0,
    warmup_prefix: bool = False,
    k_decay: float = 1.0,
    exact_cycles: bool = False,
) -> list[float]:
    """``timm.scheduler.CosineLRScheduler(...)._get_lr(t)``: the lr of every group at ``t``
    (an epoch with ``t_in_epochs=True``, an update count otherwise). ``exact_cycles``: with
    the cycle index of :func:`exact_cycle` instead of timm's floored logarithm (the rest is
    timm's arithmetic)."""
    if t < warmup_t:
        increments = [(base - warmup_lr_init) / warmup_t for base in base_lrs]
        return [warmup_lr_init + t * inc for inc in increments]
    if warmup_prefix:
        t = t - warmup_t
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / t_initial * (1 - cycle_mul), cycle_mul))
        if exact_cycles:
            i = exact_cycle(t, t_initial, cycle_mul)
        t_i = cycle_mul**i * t_initial
        t_curr = t - (1 - cycle_mul**i) / (1 - cycle_mul) * t_initial
    else:
        i = t // t_initial
        t_i = t_initial
        t_curr = t - (t_initial * i)
    if i >= cycle_limit:
        return [lr_min for _ in base_lrs]
    peaks = [base * cycle_decay**i for base in base_lrs]
    return [
        lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t_curr**k_decay / t_i**k_decay))
        for peak in peaks
    ]


def exact_cycle(t: float, t_initial: float, cycle_mul: float) -> int:
    """The cycle holding step ``t`` when cycle ``i`` lasts ``t_initial * cycle_mul**i``: the
    last ``i`` whose start ``t_initial * (cycle_mul**i - 1) / (cycle_mul - 1)`` is at or before
    ``t``, in exact arithmetic on the floats given (``cycle_mul > 1``)."""
    t, length, mul = Fraction(t), Fraction(t_initial), Fraction(cycle_mul)
    i, start = 0, Fraction(0)
    while start + length * mul**i <= t:
        start += length * mul**i
        i += 1
    return i


# ------------------------------------------------------------------------- helpers


BASES = [0.1, 0.03]


def make_sgd(bases=BASES):
    """An SGD with momentum and one param group per base lr (two by default)."""
    groups = [{"params": [torch.nn.Parameter(torch.ones(2))], "lr": lr} for lr in bases]
    return torch.optim.SGD(groups, lr=bases[0], momentum=0.9)


def lrs_of(optimizer, scheduler, steps: int) -> list[list[float]]:
    """The lr of every group at steps 0..steps-1 of a training loop (optimizer, then scheduler)."""
    lrs = []
    for t in range(steps):
        if t:
            optimizer.step()
            scheduler.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


def assert_lrs(actual, expected, what: str = "lr", rtol: float = 1e-12) -> None:
    """``actual == expected`` up to float64 rounding of the same formula in another order
    (relative ``rtol``, no absolute slack: a 0 must be a 0)."""
    torch.testing.assert_close(
        torch.tensor(actual, dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
        rtol=rtol,
        atol=0.0,
        msg=lambda m: f"{what}: {m}",
    )


def step_with_metrics(optimizer, schedulers, metrics) -> list[list[float]]:
    """Every group's lr at step 0 and after each metric: ``schedulers`` is one scheduler
    stepped with the metric (a chain) or a ``(schedule, metric-driven)`` pair stepped in turn."""
    lrs = [[group["lr"] for group in optimizer.param_groups]]
    for metric in metrics:
        optimizer.step()
        if isinstance(schedulers, tuple):
            schedulers[0].step()
            schedulers[1].step(metric)
        else:
            schedulers.step(metric)
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


def hyperparameters(optimizer) -> list[dict]:
    """Every param group's entries but its params (what a scheduler reads and writes)."""
    return [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def hf_greedy_lrs(
    base_lrs: list[float],
    metrics: list[float],
    mode: str = "min",
    factor: float = 0.95,
    patience: int = 10,
    threshold: float = 1e-6,
    threshold_mode: str = "abs",
    cooldown: int = 0,
    warmup: int = 0,
    min_lr: float | list[float] = 1e-3,
    max_lr: float | list[float] = 1.0,
    eps: float = 1e-8,
    smooth: bool = False,
    window_size: int = 50,
    reset_start: int = 500,
) -> tuple[list[list[float]], Counter]:
    """transformers' ``GreedyLR`` alone, stepped with ``metrics``: the lrs of every group at
    steps 0..len(metrics), and how often each event (``"up"``, ``"down"``, ``"reset"``,
    ``"floor"`` for a decrease that left every group at ``min_lr``) happened."""
    groups = len(base_lrs)
    lows = list(min_lr) if isinstance(min_lr, list) else [min_lr] * groups
    highs = list(max_lr) if isinstance(max_lr, list) else [max_lr] * groups
    lrs = list(base_lrs)
    worst = math.inf if mode == "min" else -math.inf
    best, bad, good, cooling, warming, resets_left = worst, 0, 0, 0, 0, reset_start
    window: list[float] = []
    window_total = 0.0
    events: Counter = Counter()
    history = [list(lrs)]
    for metric in metrics:
        value = float(metric)
        if smooth:
            window.append(value)
            window_total += value
            if len(window) > window_size:
                window_total -= window[0]
                del window[0]
            value = window_total / len(window)
        if cooling > 0:
            cooling, bad, good = cooling - 1, 0, 0
        elif warming > 0:
            warming, bad, good = warming - 1, 0, 0
        else:
            if threshold_mode == "rel":
                scale = 1.0 - threshold if mode == "min" else 1.0 + threshold
                better = value < best * scale if mode == "min" else value > best * scale
            else:
                better = value < best - threshold if mode == "min" else value > best + threshold
            if better:
                best, bad, good = value, 0, good + 1
            else:
                bad, good = bad + 1, 0
            if good > patience:
                for g in range(groups):
                    raised = min(lrs[g] / factor, highs[g])
                    if raised - lrs[g] > eps:
                        lrs[g] = raised
                events["up"] += 1
                resets_left, warming, good = reset_start, warmup, 0
            elif bad > patience:
                for g in range(groups):
                    lowered = max(lrs[g] * factor, lows[g])
                    if lrs[g] - lowered > eps:
                        lrs[g] = lowered
                events["down"] += 1
                if all(lrs[g] <= lows[g] for g in range(groups)):
                    events["floor"] += 1
                    resets_left -= 1
                    if resets_left <= 0:  # back to the start, counters and window forgotten
                        events["reset"] += 1
                        lrs = list(base_lrs)
                        best, good, warming, resets_left = worst, 0, 0, reset_start
                        window, window_total = [], 0.0
                cooling, bad = cooldown, 0
        history.append(list(lrs))
    return history, events
