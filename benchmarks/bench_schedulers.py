"""Cost of ``scheduler.step()``: torchkit's schedulers against their stock-torch equivalents.

Pairs (the same schedules as the tables of ``docs/schedulers.md``; where torch has no class for a
schedule, its stock form is the ``LambdaLR`` that transformers builds, or torch's nearest class):

* ``WarmupDecayLR`` (linear warmup, cosine)  vs ``SequentialLR(LinearLR, CosineAnnealingLR)``
* ``WarmupDecayLR`` (warmup-stable-decay)    vs ``LambdaLR`` with transformers' WSD lambda
* ``WarmupDecayLR`` (endless inverse sqrt)   vs ``LambdaLR`` with transformers' lambda
* ``CosineRestartsLR`` (``cycle_mul=2``)     vs ``CosineAnnealingWarmRestarts(T_mult=2)``
* ``NoamLR``                                 vs ``LambdaLR`` with the Annotated Transformer's rate
* ``OneCycleLR``                             vs ``torch.optim.lr_scheduler.OneCycleLR``
* warmup then ``ReduceLROnPlateau``, stepped one after the other: ``WarmupDecayLR`` and
  torchkit's plateau vs torch's ``LinearLR`` and plateau (torch cannot chain the two); and the
  same torchkit pair in one ``ChainedScheduler.step(metric)``, which adds the cost of the
  object that passes the metric and saves the pair as one
* ``GreedyLR`` (transformers' greedy schedule) vs torch's ``ReduceLROnPlateau``, the nearest
  metric-driven stock class (torch has no schedule that also raises the lr)

each with 1 and 16 param groups, timed early (from step 0, through the warmup) and late (from
step 1,000,000 of a 2,000,000-step schedule) to show that a step costs the same wherever it
is. The two schedulers of a pair step in alternating blocks and the median per-step CPU time
(``time.thread_time``) of each is reported, with the ratio ``torchkit / stock`` (below 1:
torchkit is faster).

Run ``python benchmarks/bench_schedulers.py [--quick]``; :func:`run` returns the rows for a
runner that collects every benchmark.
"""

from __future__ import annotations

import argparse
import functools
import gc
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch.optim import lr_scheduler as stock

from torchkit.optim.lr_scheduler import (
    ChainedScheduler,
    CosineRestartsLR,
    GreedyLR,
    NoamLR,
    OneCycleLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
)

TOTAL = 2_000_000
WARMUP = 1_000
STABLE = 1_500_000
LATE = 1_000_000
D_MODEL = 512
METRIC = 1.0  # a loss that never improves: the plateau cuts until min_lr, then holds

Builder = Callable[[torch.optim.Optimizer], stock.LRScheduler]


def _noam_rate(step: int) -> float:
    step = max(step, 1)
    return D_MODEL**-0.5 * min(step**-0.5, step * WARMUP**-1.5)


def _wsd_rate(step: int) -> float:
    """transformers' get_wsd_schedule lambda: linear warmup, stable, 1-sqrt decay to 0.1."""
    if step < WARMUP:
        return step / WARMUP * 0.9 + 0.1
    if step < WARMUP + STABLE:
        return 1.0
    if step < TOTAL:
        return (1.0 - math.sqrt((step - WARMUP - STABLE) / (TOTAL - WARMUP - STABLE))) * 0.9 + 0.1
    return 0.1


def _inverse_sqrt_rate(step: int) -> float:
    """transformers' get_inverse_sqrt_schedule lambda, timescale = warmup."""
    if step < WARMUP:
        return step / WARMUP
    return 1.0 / math.sqrt(step / WARMUP)


def _sequential_warmup_cosine(optimizer: torch.optim.Optimizer) -> stock.LRScheduler:
    warmup = stock.LinearLR(optimizer, start_factor=1 / (WARMUP + 1), total_iters=WARMUP)
    cosine = stock.CosineAnnealingLR(optimizer, T_max=TOTAL - WARMUP, eta_min=1e-5)
    return stock.SequentialLR(optimizer, [warmup, cosine], milestones=[WARMUP])


class _TwoSteps:
    """A warmup and a plateau, stepped one after the other by hand."""

    def __init__(self, warmup: stock.LRScheduler, plateau: stock.ReduceLROnPlateau) -> None:
        self._schedulers = [warmup, plateau]

    def step(self, metric: float) -> None:
        self._schedulers[0].step()
        self._schedulers[1].step(metric)


def _stock_warmup_then_plateau(optimizer: torch.optim.Optimizer) -> _TwoSteps:
    warmup = stock.LinearLR(optimizer, start_factor=1 / (WARMUP + 1), total_iters=WARMUP)
    return _TwoSteps(warmup, stock.ReduceLROnPlateau(optimizer, min_lr=1e-5))


def _torchkit_pair(optimizer: torch.optim.Optimizer) -> list[stock.LRScheduler]:
    warmup = WarmupDecayLR(optimizer, WARMUP, None, decay="constant")
    return [warmup, ReduceLROnPlateau(optimizer, min_lr=1e-5)]


PAIRS: dict[str, tuple[Builder, Builder]] = {
    "warmup+cosine vs SequentialLR(LinearLR, CosineAnnealingLR)": (
        lambda opt: WarmupDecayLR(opt, WARMUP, TOTAL, min_lr=1e-5),
        _sequential_warmup_cosine,
    ),
    "warmup-stable-decay vs LambdaLR(wsd)": (
        lambda opt: WarmupDecayLR(
            opt,
            WARMUP,
            TOTAL,
            stable_steps=STABLE,
            decay="1-sqrt",
            warmup_start_factor=0.1,
            min_lr_ratio=0.1,
        ),
        lambda opt: stock.LambdaLR(opt, _wsd_rate),
    ),
    "inverse sqrt (endless) vs LambdaLR(inverse_sqrt)": (
        lambda opt: WarmupDecayLR(opt, WARMUP, None, decay="inverse_sqrt", warmup_start_factor=0.0),
        lambda opt: stock.LambdaLR(opt, _inverse_sqrt_rate),
    ),
    "CosineRestartsLR vs CosineAnnealingWarmRestarts (cycle_mul=2)": (
        lambda opt: CosineRestartsLR(opt, WARMUP, cycle_mul=2, min_lr=1e-5),
        lambda opt: stock.CosineAnnealingWarmRestarts(opt, T_0=WARMUP, T_mult=2, eta_min=1e-5),
    ),
    "NoamLR vs LambdaLR(noam)": (
        lambda opt: NoamLR(opt, d_model=D_MODEL, warmup_steps=WARMUP),
        lambda opt: stock.LambdaLR(opt, _noam_rate),
    ),
    "OneCycleLR vs torch OneCycleLR": (
        lambda opt: OneCycleLR(opt, max_lr=0.1, total_steps=TOTAL),
        lambda opt: stock.OneCycleLR(opt, max_lr=0.1, total_steps=TOTAL),
    ),
    "warmup then plateau, two step calls: torchkit's vs torch's": (
        lambda opt: _TwoSteps(*_torchkit_pair(opt)),  # type: ignore[arg-type]
        _stock_warmup_then_plateau,  # type: ignore[dict-item]
    ),
    "warmup then plateau: torchkit's ChainedScheduler.step(metric) vs torch's two calls": (
        lambda opt: ChainedScheduler(_torchkit_pair(opt)),
        _stock_warmup_then_plateau,  # type: ignore[dict-item]
    ),
    # torch has no greedy schedule: its nearest metric-driven class is the plateau.
    "GreedyLR vs torch ReduceLROnPlateau": (
        lambda opt: GreedyLR(opt, min_lr=1e-5),  # type: ignore[arg-type, return-value]
        lambda opt: stock.ReduceLROnPlateau(opt, min_lr=1e-5),  # type: ignore[arg-type]
    ),
}


def _optimizer(groups: int) -> torch.optim.Optimizer:
    params = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    return optimizer


def _fast_forward(scheduler: stock.LRScheduler, step: int) -> None:
    """Put a scheduler at ``step`` without taking the steps (timing only, not for training).

    Every scheduler here computes its next lr from ``last_epoch`` (and, for the recursive
    ones, the current lr), so moving ``last_epoch`` is enough; ``SequentialLR`` also moves
    the child that is active at ``step``, a chain every member. torch's warm restarts keep
    their position in the cycle apart: it is moved to where ``step`` falls.
    """
    scheduler.last_epoch = step
    if isinstance(scheduler, stock.SequentialLR):
        scheduler._schedulers[-1].last_epoch = step - WARMUP
    elif isinstance(scheduler, stock.CosineAnnealingWarmRestarts):
        scheduler.T_i, scheduler.T_cur = scheduler.T_0, step
        while scheduler.T_cur >= scheduler.T_i:
            scheduler.T_cur -= scheduler.T_i
            scheduler.T_i *= scheduler.T_mult
    elif hasattr(scheduler, "_schedulers"):
        for member in scheduler._schedulers:
            _fast_forward(member, step)


def _started(builder: Builder, groups: int, start: int) -> Callable[[], None]:
    """The ``step`` of a scheduler built on a fresh optimizer, one step taken, moved to
    ``start`` (with the metric bound for the pairs whose step takes one)."""
    optimizer = _optimizer(groups)
    scheduler = builder(optimizer)
    optimizer.step()  # torch warns when a scheduler steps before its optimizer ever did
    takes_metric = isinstance(
        scheduler, (ChainedScheduler, _TwoSteps, GreedyLR, stock.ReduceLROnPlateau)
    )
    step = functools.partial(scheduler.step, METRIC) if takes_metric else scheduler.step
    step()
    if start:
        _fast_forward(scheduler, start)
    return step


def _block_seconds(step: Callable[[], None], steps: int) -> float:
    """CPU seconds of this thread per ``step()``: time spent descheduled on a busy machine
    does not count, and nothing here waits on anything but the CPU."""
    begin = time.thread_time()
    for _ in range(steps):
        step()
    return (time.thread_time() - begin) / steps


def run(quick: bool = False) -> list[dict[str, object]]:
    """Time every pair with 1 and 16 param groups, early and late in the schedule.

    The two schedulers of a pair step in alternating blocks (so a change in machine load
    hits both), and each reports the median over its blocks of the time per ``step()``.

    Args:
        quick: Fewer and shorter blocks (a smoke run, noisier).

    Returns:
        One row per case: ``{"benchmark", "case", "torchkit_s", "stock_s", "ratio"}``, the
        times being median seconds per ``step()`` and ``ratio = torchkit_s / stock_s``.
    """
    blocks, block_steps = (30, 100) if quick else (150, 200)
    rows: list[dict[str, object]] = []
    for name, (torchkit_builder, stock_builder) in PAIRS.items():
        for groups in (1, 16):
            for where, start in (("early", 0), ("late", LATE)):
                torchkit_step = _started(torchkit_builder, groups, start)
                stock_step = _started(stock_builder, groups, start)
                gc.collect()
                torchkit_times, stock_times = [], []
                for _ in range(blocks):
                    torchkit_times.append(_block_seconds(torchkit_step, block_steps))
                    stock_times.append(_block_seconds(stock_step, block_steps))
                torchkit_s = statistics.median(torchkit_times)
                stock_s = statistics.median(stock_times)
                rows.append(
                    {
                        "benchmark": "lr_scheduler.step",
                        "case": f"{name}, {groups} group{'s' if groups > 1 else ''}, "
                        f"{where} (from step {start:,})",
                        "torchkit_s": torchkit_s,
                        "stock_s": stock_s,
                        "ratio": torchkit_s / stock_s,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter blocks")
    args = parser.parse_args()
    rows = run(quick=args.quick)
    width = max(len(str(row["case"])) for row in rows)
    print(f"{'case':<{width}}  torchkit us/step  stock us/step  ratio")
    for row in rows:
        print(
            f"{row['case']:<{width}}  {row['torchkit_s'] * 1e6:16.2f}  "
            f"{row['stock_s'] * 1e6:13.2f}  {row['ratio']:5.2f}"
        )
    print(f"torch {torch.__version__}; ratio = torchkit / stock, medians of interleaved blocks")


if __name__ == "__main__":
    main()
