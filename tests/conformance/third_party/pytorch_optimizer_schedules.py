"""pytorch-optimizer's warmup schedules held to the ``warmup_decay`` family of the spec.

pytorch-optimizer (kozistr/pytorch_optimizer on PyPI, not written here) ships two warmup +
decay schedules. Each is registered through an adapter that takes ``WarmupDecayLR``'s arguments
and calls the library with the equivalent ones; an argument the library has no equivalent for
raises a ``ValueError`` naming it, so those items fail with that message. Every disagreement with
the pages, and why, is in ``pytorch_optimizer.txt`` beside this module (an expectations file):

* ``pytorch_optimizer.get_wsd_schedule``: warmup-stable-decay with no stable phase, a
  ``LambdaLR``: linear warmup from 0, then a ``"cosine"`` (or ``"linear"``) cooldown to
  ``min_lr_ratio`` times each group's lr;
* ``pytorch_optimizer.linear_warmup``: ``LinearScheduler`` / ``CosineScheduler`` (absolute
  ``init_lr``, ``max_lr``, ``min_lr``; one lr for every param group). Their ``step()`` sets the lr
  of the step about to run, so the adapter takes the first step at construction: in torch's loop
  (``optimizer.step(); scheduler.step()``) the lr is then the schedule's value at every step.

Run it with ``--conformance-impl=conformance.third_party.pytorch_optimizer_schedules`` (this
repository's runs load it through ``conformance_impl`` in ``pyproject.toml``); without
pytorch-optimizer installed, the run goes on and its report says the plugin was not tested.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from torchkit.conformance.registry import PluginUnavailable, Registry

CONFORMANCE_EXPECTATIONS = Path(__file__).with_name("pytorch_optimizer.txt")


def _only_linear_warmup(warmup: str) -> None:
    if warmup != "linear":
        raise ValueError(f"pytorch-optimizer has no {warmup!r} warmup (warmup={warmup!r})")


def _no_extra_decay_arguments(power: float, gamma: float | None, step_size: int | None) -> None:
    extra = {"power": power != 1.0, "gamma": gamma is not None, "step_size": step_size is not None}
    if named := [name for name, given in extra.items() if given]:
        raise ValueError(f"pytorch-optimizer's schedules take no {', '.join(named)}")


def wsd_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    *,
    warmup: str = "linear",
    decay: str = "cosine",
    warmup_start_factor: float | None = None,
    min_lr: float = 0.0,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
) -> Any:
    """``WarmupDecayLR``'s arguments mapped onto ``get_wsd_schedule`` (no stable phase).

    ``min_lr`` becomes ``min_lr_ratio = min_lr / lr`` of the first param group.
    """
    from pytorch_optimizer import get_wsd_schedule

    _only_linear_warmup(warmup)
    _no_extra_decay_arguments(power, gamma, step_size)
    start = 1 / (warmup_steps + 1) if warmup_start_factor is None else warmup_start_factor
    if warmup_steps and start != 0.0:
        raise ValueError(
            f"get_wsd_schedule warms up from 0, not from warmup_start_factor={start:.6g}"
        )
    if decay not in ("cosine", "linear") or (decay == "linear" and min_lr != 0.0):
        raise ValueError(f"get_wsd_schedule has no decay={decay!r} with min_lr={min_lr!r}")
    lrs = {group["lr"] for group in optimizer.param_groups}
    if min_lr != 0.0 and len(lrs) > 1:
        raise ValueError(
            f"get_wsd_schedule's min_lr_ratio is relative to each group's lr: no one ratio gives "
            f"min_lr={min_lr!r} to groups with lrs {sorted(lrs)}"
        )
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup_steps,
        num_stable_steps=0,
        num_decay_steps=total_steps - warmup_steps,
        min_lr_ratio=min_lr / optimizer.param_groups[0]["lr"],
        cooldown_type=decay,
    )


def linear_warmup_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    *,
    warmup: str = "linear",
    decay: str = "cosine",
    warmup_start_factor: float | None = None,
    min_lr: float = 0.0,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
) -> Any:
    """``WarmupDecayLR``'s arguments mapped onto ``CosineScheduler`` / ``LinearScheduler``.

    ``max_lr`` is the first param group's lr and ``init_lr`` that times the start factor.
    """
    from pytorch_optimizer import CosineScheduler, LinearScheduler

    _only_linear_warmup(warmup)
    _no_extra_decay_arguments(power, gamma, step_size)
    schedules = {"cosine": CosineScheduler, "linear": LinearScheduler}
    if decay not in schedules:
        raise ValueError(f"pytorch-optimizer's linear_warmup module has no decay={decay!r}")
    lrs = {group["lr"] for group in optimizer.param_groups}
    if len(lrs) > 1:
        raise ValueError(
            f"pytorch-optimizer's {decay} schedule sets one lr for groups with lrs {sorted(lrs)}"
        )
    start = 1 / (warmup_steps + 1) if warmup_start_factor is None else warmup_start_factor
    peak = lrs.pop()
    scheduler = schedules[decay](
        optimizer,
        t_max=total_steps,
        max_lr=peak,
        min_lr=min_lr,
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
