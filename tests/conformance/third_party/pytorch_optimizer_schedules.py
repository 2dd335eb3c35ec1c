"""pytorch-optimizer's warmup schedules held to the ``warmup_decay`` family of the spec.

pytorch-optimizer (kozistr/pytorch_optimizer on PyPI, not written here) ships two warmup +
decay schedules. Each is registered through an adapter that takes ``WarmupDecayLR``'s arguments
and calls the library with the equivalent ones. Where the library has no equivalent, the adapter
raises one ``ValueError`` naming every such argument, so those items fail with that message; it
never substitutes something close. Every disagreement with the pages, and why, is in
``pytorch_optimizer.txt`` beside this module (an expectations file):

* ``pytorch_optimizer.get_wsd_schedule``: warmup-stable-decay, a ``LambdaLR`` of one multiplier
  for every group: a linear warmup from 0, a stable phase, then a ``"cosine"`` cooldown
  (``num_cycles`` waves) to ``min_lr_ratio`` times each group's lr, or a ``"linear"`` /
  ``"1-sqrt"`` one that ends at 0 whatever ``min_lr_ratio`` (which it jumps to afterwards), so
  those two only match a floor of 0. A ``"constant"`` decay is its stable phase followed by an
  empty cooldown: the lr drops to ``min_lr_ratio`` at ``total_steps``, or, without one, stays;
* ``pytorch_optimizer.linear_warmup``: ``LinearScheduler`` / ``CosineScheduler`` (absolute
  ``init_lr``, ``max_lr``, ``min_lr``; one lr for every param group; no stable phase; past
  ``t_max`` the formula goes on, where ``WarmupDecayLR`` holds ``min_lr``). Their ``step()`` sets
  the lr of the step about to run, so the adapter takes the first step at construction: in
  torch's loop (``optimizer.step(); scheduler.step()``) the lr is then the schedule's value at
  every step.

``start_from`` and ``last_epoch`` are not taken (a ``TypeError``): no page's family block passes
them. Run it with ``--conformance-impl=conformance.third_party.pytorch_optimizer_schedules``
(this repository's runs load it through ``conformance_impl`` in ``pyproject.toml``); without
pytorch-optimizer installed, the run goes on and its report says the plugin was not tested.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from torchkit.conformance.registry import PluginUnavailable, Registry

CONFORMANCE_EXPECTATIONS = Path(__file__).with_name("pytorch_optimizer.txt")


def _refuse(library: str, problems: list[str]) -> None:
    """One ``ValueError`` naming every argument ``library`` has no equivalent for."""
    if problems:
        raise ValueError(f"{library} cannot express {'; '.join(problems)}")


def _floor_ratio(
    optimizer: torch.optim.Optimizer,
    min_lr: float | Sequence[float],
    min_lr_ratio: float | Sequence[float] | None,
) -> float | None:
    """``WarmupDecayLR``'s floor as one fraction of every group's lr, or None if none fits all."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    given = min_lr if min_lr_ratio is None else min_lr_ratio
    values = list(given) if isinstance(given, (list, tuple)) else [given] * len(lrs)
    if min_lr_ratio is None:  # absolute floors
        values = [floor / lr if lr else 0.0 for floor, lr in zip(values, lrs, strict=True)]
    same = all(math.isclose(value, values[0], rel_tol=1e-12) for value in values)
    return float(values[0]) if same else None


def _extra_options(**options: object) -> list[str]:
    """The decay options given (not None): every decay they belong to is refused."""
    return [f"{name}={value!r}" for name, value in options.items() if value is not None]


def wsd_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int | None,
    *,
    stable_steps: int = 0,
    warmup: str = "linear",
    decay: str = "cosine",
    warmup_start_factor: float | None = None,
    min_lr: float | Sequence[float] = 0.0,
    min_lr_ratio: float | Sequence[float] | None = None,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
    num_cycles: float | None = None,
    timescale: int | None = None,
) -> Any:
    """``WarmupDecayLR``'s arguments mapped onto ``get_wsd_schedule``.

    ``stable_steps`` is its ``num_stable_steps``; the floor (``min_lr`` or ``min_lr_ratio``) is
    its ``min_lr_ratio`` when one fraction fits every group. ``power`` only shapes the
    ``"polynomial"`` decay, which is refused, and is otherwise unused, as by ``WarmupDecayLR``.
    """
    from pytorch_optimizer import get_wsd_schedule

    problems = _extra_options(gamma=gamma, step_size=step_size, timescale=timescale)
    start = 1 / (warmup_steps + 1) if warmup_start_factor is None else warmup_start_factor
    if warmup_steps and (warmup != "linear" or start != 0.0):
        problems.append(
            f"warmup={warmup!r} from warmup_start_factor={start:.6g} (it warms up linearly from 0)"
        )
    if decay not in ("cosine", "linear", "1-sqrt", "constant"):
        problems.append(f"decay={decay!r} (its cooldowns: cosine, linear, 1-sqrt, 1-square)")
    if num_cycles is not None and decay != "cosine":
        problems.append(f"num_cycles={num_cycles!r} with decay={decay!r}")
    if total_steps is None:  # endless: the floor is never reached, the lr stays at 1.0 x lr
        ratio: float | None = 1.0
        if decay != "constant":
            problems.append(f"total_steps=None with decay={decay!r} (an endless decay)")
    else:
        ratio = _floor_ratio(optimizer, min_lr, min_lr_ratio)
        if ratio is None:
            problems.append(
                f"min_lr={min_lr!r}, min_lr_ratio={min_lr_ratio!r} (its floor is one fraction "
                "of every group's lr; these groups need different ones)"
            )
        elif decay in ("linear", "1-sqrt") and ratio != 0.0:
            problems.append(
                f"decay={decay!r} to a floor of {ratio:.6g} times the lr (its {decay} cooldown "
                "ends at 0, then jumps to min_lr_ratio)"
            )
    _refuse("get_wsd_schedule", problems)

    if decay == "constant":  # the stable phase, then an empty cooldown: the floor from T on
        stable = 0 if total_steps is None else total_steps - warmup_steps
        return get_wsd_schedule(optimizer, warmup_steps, stable, 0, min_lr_ratio=ratio)
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup_steps,
        num_stable_steps=stable_steps,
        num_decay_steps=total_steps - warmup_steps - stable_steps,
        min_lr_ratio=ratio,
        num_cycles=0.5 if num_cycles is None else num_cycles,
        cooldown_type=decay,
    )


def linear_warmup_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int | None,
    *,
    stable_steps: int = 0,
    warmup: str = "linear",
    decay: str = "cosine",
    warmup_start_factor: float | None = None,
    min_lr: float | Sequence[float] = 0.0,
    min_lr_ratio: float | Sequence[float] | None = None,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
    num_cycles: float | None = None,
    timescale: int | None = None,
) -> Any:
    """``WarmupDecayLR``'s arguments mapped onto ``CosineScheduler`` / ``LinearScheduler``.

    ``max_lr`` is the groups' one lr, ``init_lr`` that times the start factor and ``min_lr``
    the floor. ``power`` is unused, as by ``WarmupDecayLR`` for these decays.
    """
    from pytorch_optimizer import CosineScheduler, LinearScheduler

    schedules = {"cosine": CosineScheduler, "linear": LinearScheduler}
    problems = _extra_options(gamma=gamma, step_size=step_size, timescale=timescale)
    if warmup != "linear":
        problems.append(f"warmup={warmup!r} (its warmup is linear)")
    if stable_steps:
        problems.append(f"stable_steps={stable_steps!r} (no stable phase)")
    if decay not in schedules:
        problems.append(f"decay={decay!r} (its decays: cosine, linear)")
    if num_cycles not in (None, 0.5):
        problems.append(f"num_cycles={num_cycles!r} (its cosine is half a wave)")
    if total_steps is None:
        problems.append("total_steps=None (it needs t_max)")
    lrs = sorted({group["lr"] for group in optimizer.param_groups})
    if len(lrs) > 1:
        problems.append(f"param groups with lrs {lrs} (it sets one lr for every group)")
    ratio = _floor_ratio(optimizer, min_lr, min_lr_ratio)
    if ratio is None:
        problems.append(f"min_lr={min_lr!r} (one floor for every group)")
    _refuse("pytorch-optimizer's LinearScheduler/CosineScheduler", problems)

    start = 1 / (warmup_steps + 1) if warmup_start_factor is None else warmup_start_factor
    peak = lrs[0]
    scheduler = schedules[decay](
        optimizer,
        t_max=total_steps,
        max_lr=peak,
        min_lr=peak * ratio,
        init_lr=peak * start if warmup_steps else peak,
        warmup_steps=warmup_steps,
    )
    scheduler.step()  # their step() sets the lr of the step about to run: see the module doc
    return scheduler


def register_conformance(registry: Registry) -> None:
    """Register both adapters in ``warmup_decay``, or say why pytorch-optimizer cannot be tested."""
    if importlib.util.find_spec("pytorch_optimizer") is None:
        raise PluginUnavailable(
            "pytorch-optimizer is not installed (pip install 'pytorch-optimizer>=3.6,<5', "
            "or the 'test' extra)"
        )
    registry.register("warmup_decay", "pytorch_optimizer.get_wsd_schedule", wsd_schedule)
    registry.register("warmup_decay", "pytorch_optimizer.linear_warmup", linear_warmup_schedule)
