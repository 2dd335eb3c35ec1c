"""LR schedulers that chain, resume exactly and expose their closed form.

Every scheduler here subclasses :class:`torch.optim.lr_scheduler.LRScheduler`, so it plugs
into ``ChainedScheduler``, ``SequentialLR`` and any training loop written for torch's own:

* :class:`WarmupDecayLR` - a warmup (linear, exponential, constant) followed by a decay
  (cosine, linear, polynomial, exponential, step, inverse square root, constant) to an
  absolute ``min_lr``: what ``SequentialLR(LinearLR, CosineAnnealingLR)`` approximates, in
  one object whose ``state_dict`` resumes exactly;
* :class:`OneCycleLR` - torch's 1cycle policy with the same constructor and the same floats,
  but chainable;
* :class:`NoamLR` - the inverse-square-root schedule of "Attention Is All You Need";
* :func:`preview` and :func:`plot_schedule` - the lrs (and momenta) a scheduler will
  produce, without touching its optimizer.

Chaining. A scheduler here writes ``c_g * v_g(t)`` into param group ``g``, where ``v_g(t)``
is its own schedule (the closed form) and ``c_g`` is the *chain factor*: what other
schedulers (or the user) did to the lr. Whenever a step finds the group's lr different from
what this scheduler wrote at the previous step, it re-measures ``c_g = lr / v_g(t - 1)``. Used
alone, ``c_g`` stays exactly 1 and the lr is exactly the closed form; stepped together with
multiplicative schedulers (``ExponentialLR``, ``StepLR``, ``LinearLR``, ... through
``ChainedScheduler`` or consecutive ``step()`` calls) the lr is the product of all the
schedules. Where ``v_g(t - 1) == 0`` (a warmup from 0, a decay to ``min_lr=0``) the lr holds
no information about the other schedulers, so ``c_g`` keeps its last measured value: a factor
that another scheduler applied to that zero lr is lost (put torchkit's scheduler before the
others in the step order and nothing is lost). ``step(epoch)`` sets the closed form and
resets ``c_g`` to 1.

Resuming. ``state_dict()`` is plain data that ``torch.load(weights_only=True)`` reads, and
names the scheduler's class. ``load_state_dict()`` refuses, before writing anything, a state
of another class or of another number of param groups; it also restores the lr (and
OneCycleLR's momentum) of the interrupted step into the param groups that still hold what
the scheduler wrote, so that loading the optimizer *before* building the scheduler resumes
exactly too (see :meth:`WarmupDecayLR.load_state_dict` for where that stops).

Example:
    >>> import torch
    >>> from torchkit.optim.lr_scheduler import WarmupDecayLR
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> sched = WarmupDecayLR(opt, warmup_steps=2, total_steps=6)
    >>> [round(lr, 4) for lr in preview(sched, 7)["lr"][0]]
    [0.0333, 0.0667, 0.1, 0.0854, 0.05, 0.0146, 0.0]
"""

from __future__ import annotations

import copy
import math
import numbers
import operator
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from torchkit.optim import _schedules

__all__ = ["NoamLR", "OneCycleLR", "WarmupDecayLR", "plot_schedule", "preview"]


# ------------------------------------------------------------------------ validation


def _check_optimizer(optimizer: object) -> Optimizer:
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    return optimizer


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_float(name: str, value: object) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _per_group(name: str, value: object, optimizer: Optimizer) -> list[float]:
    """One float per param group from a scalar or a list/tuple with one value per group."""
    groups = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(
                f"{name} has {len(value)} values but the optimizer has {groups} param groups"
            )
        return [_as_float(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return [_as_float(name, value)] * groups


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")
    return value


def _check_per_group_entry(state: Mapping[str, Any], key: str, groups: int) -> None:
    """``state[key]`` must be a list with one entry per param group."""
    value = state[key]
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"state_dict[{key!r}] must be a list with one entry per param group, "
            f"got {type(value).__name__}"
        )
    if len(value) != groups:
        raise ValueError(
            f"the state_dict was saved with {len(value)} param groups ({key!r} has "
            f"{len(value)} entries) but the optimizer has {groups} param groups"
        )


def _warn_get_lr_outside_step() -> None:
    warnings.warn(
        "To get the last learning rate computed by the scheduler, use `get_last_lr()`.",
        UserWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------- chaining

_GROUP_LR = operator.itemgetter("lr")

# The state_dict entry naming the class that saved it (a plain string, so that
# ``torch.load(weights_only=True)`` reads it). It is never an attribute.
_CLASS_KEY = "_scheduler_class"
# Attributes that torch's LRScheduler puts in ``__dict__`` in some releases only (``verbose``
# in older ones, the flags of its step context managers once they have run): a state_dict
# may have them or not.
_OPTIONAL_STATE_KEYS = frozenset({"verbose", "_is_initial", "_get_lr_called_within_step"})


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` into ``group[key]``, in place when it holds a tensor (as torch does)."""
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


class _ChainableLR(LRScheduler):
    """The chaining rule shared by torchkit's schedulers (see the module docstring).

    Subclasses set their attributes and call ``self._init_chain(n_groups)``, then call
    ``super().__init__`` last, and implement :meth:`_schedule` (the closed form, a pure
    function of the step bound to per-group constants). They list their per-group state
    entries in ``_per_group_state`` so that :meth:`load_state_dict` checks their lengths.
    """

    _chain_factors: list[float]
    _unchained: bool  # all chain factors are exactly 1
    # State entries holding one value per param group.
    _per_group_state: tuple[str, ...] = ("base_lrs", "_last_lr", "_chain_factors")

    def _schedule(self, step: int) -> list[float]:
        """This scheduler's own lr for every param group at ``step`` (no chaining)."""
        raise NotImplementedError

    def _chain_start(self, index: int, lr: float) -> float:
        """The chain factor at construction, given the group's lr at that moment.

        The default reads the lr relative to the group's base lr (``initial_lr``): a
        scheduler built earlier that scaled the lr at construction keeps its factor.
        """
        base = float(self.base_lrs[index])
        return lr / base if base != 0.0 else 1.0

    def get_lr(self) -> list[float]:
        """The next lr of every param group: the chain factor times the closed form.

        Returns:
            One float per param group (``step()`` writes it into ``group["lr"]``).
        """
        if not self._get_lr_called_within_step:
            _warn_get_lr_outside_step()
        step = self.last_epoch
        return self._chained(step, self._schedule(step))

    def _chained(self, step: int, values: list[float]) -> list[float]:
        """``values`` (the schedule at ``step``) times the chain factors, updated first."""
        if self._is_initial:
            self._start_chain(step)
        else:
            # Did another scheduler, or the user, change an lr since this one wrote it?
            groups = self.optimizer.param_groups
            last = self._last_lr
            if len(groups) == 1:  # the common case, without building a list
                changed = groups[0]["lr"] != last[0]
            else:
                changed = list(map(_GROUP_LR, groups)) != last
            if changed:
                self._remeasure_chain(step)
        if self._unchained:  # every factor is exactly 1: the closed form, float for float
            return values
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        return [factor * value for factor, value in zip(self._chain_factors, values)]  # noqa: B905

    def _init_chain(self, groups: int) -> None:
        """Chain factors of 1 (call in ``__init__``, before ``super().__init__``)."""
        self._chain_factors = [1.0] * groups
        self._unchained = True

    def _factors_changed(self) -> None:
        self._unchained = self._chain_factors.count(1.0) == len(self._chain_factors)

    def _start_chain(self, step: int) -> None:
        """Chain factors for the step taken by the constructor.

        A fresh start (step 0) asks :meth:`_chain_start`; the legacy resume through
        ``last_epoch=k`` finds the lrs of step ``k`` in the groups and divides by ``v(k)``.
        """
        previous = self._schedule(step - 1) if step > 0 else None
        for i, group in enumerate(self.optimizer.param_groups):
            lr = float(group["lr"])
            if previous is None:
                self._chain_factors[i] = self._chain_start(i, lr)
            elif previous[i] != 0.0:
                self._chain_factors[i] = lr / float(previous[i])
        self._factors_changed()

    def _remeasure_chain(self, step: int) -> None:
        """``c = lr / v(step - 1)`` for every group whose lr is not what was written last."""
        previous = self._schedule(step - 1)
        groups = self.optimizer.param_groups
        for i, (group, written) in enumerate(zip(groups, self._last_lr, strict=True)):
            lr = group["lr"]
            if lr != written and previous[i] != 0.0:  # at v = 0 the old factor is kept
                self._chain_factors[i] = float(lr) / float(previous[i])
        self._factors_changed()

    def _get_closed_form_lr(self) -> list[float]:
        """The lr of every param group at ``last_epoch`` from the closed form alone.

        Used by ``step(epoch)``; it resets the chain factors to 1.
        """
        self._init_chain(len(self.optimizer.param_groups))
        return self._schedule(self.last_epoch)

    # ------------------------------------------------------------------ state_dict

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: a copy of its attributes (as torch's) and its class name.

        Returns:
            Plain data that ``torch.load(weights_only=True)`` reads: every attribute but the
            optimizer, deep-copied (stepping on does not change a state_dict already taken),
            plus ``"_scheduler_class"``, the qualified class name that
            :meth:`load_state_dict` checks.

        Example:
            >>> import torch
            >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
            >>> NoamLR(opt, d_model=16, warmup_steps=4).state_dict()["_scheduler_class"]
            'torchkit.optim.lr_scheduler.NoamLR'
        """
        state = copy.deepcopy(super().state_dict())
        state[_CLASS_KEY] = _class_name(type(self))
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, after checking that it fits this scheduler.

        The state must come from the same class (its ``"_scheduler_class"``) and from an
        optimizer with as many param groups as this one's, and hold the same entries;
        otherwise a ``ValueError`` (a ``TypeError`` for a non-mapping) is raised before
        anything is written, so the scheduler and its optimizer are left as they were. A
        state_dict without ``"_scheduler_class"`` (saved by torchkit before it recorded the
        class) is accepted when its entries are exactly this class's.

        Loading also restores the lr of the interrupted step into every param group that
        still holds the lr this scheduler wrote last, that is, whose lr nobody has set
        since: when the optimizer's state was loaded *before* this scheduler was built, its
        constructor overwrote the loaded lr with the lr of step 0, and the restored lr lets
        the run continue as if uninterrupted (without it, the next step would take the lr
        of step 0 for another scheduler's chain factor and scale every later lr by it). A
        group whose lr was set since by someone else is left alone: by an optimizer state
        loaded after this scheduler was built (torch's documented order, exact in every
        case), by another scheduler, or by the user. So "load the optimizer, then build and
        load the scheduler" is exact for a torchkit scheduler used alone or last in a
        ``ChainedScheduler``. With schedulers that change the lr after this one (in a
        ``ChainedScheduler`` or in step order), only this scheduler's part of the
        interrupted step's lr is restored and their factor for that step is lost for the
        rest of the run; inside ``SequentialLR``, whose constructor resets the lrs, nothing
        is restored. There, build everything first, then load.

        Args:
            state_dict: A state returned by :meth:`state_dict` (it is not modified).

        Example:
            >>> import torch
            >>> params = [torch.zeros(1, requires_grad=True)]
            >>> opt = torch.optim.SGD(params, lr=0.1)
            >>> sched = WarmupDecayLR(opt, warmup_steps=2, total_steps=6)
            >>> for _ in range(3):
            ...     opt.step()
            ...     sched.step()
            >>> checkpoint = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            >>> opt = torch.optim.SGD(params, lr=0.1)
            >>> opt.load_state_dict(checkpoint["optimizer"])
            >>> sched = WarmupDecayLR(opt, warmup_steps=2, total_steps=6)  # writes step 0's lr
            >>> sched.load_state_dict(checkpoint["scheduler"])  # restores step 3's
            >>> sched.last_epoch, opt.param_groups[0]["lr"] == sched.get_last_lr()[0]
            (3, True)
            >>> round(opt.param_groups[0]["lr"], 4)
            0.0854
            >>> noam = NoamLR(opt, d_model=16, warmup_steps=4)
            >>> noam.load_state_dict(checkpoint["scheduler"])  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: cannot load a state_dict saved by '...WarmupDecayLR' into '...NoamLR': ...
        """
        state = self._checked_state(state_dict)
        keep = self._groups_holding_last_lr()
        self.__dict__.update(state)
        self._factors_changed()
        for group, lr, restore in zip(self.optimizer.param_groups, self._last_lr, keep):  # noqa: B905
            if restore:
                _set_group_value(group, "lr", lr)

    def _groups_holding_last_lr(self) -> list[bool]:
        """For every param group: does it still hold the lr this scheduler wrote last?"""
        last = self._last_lr
        return [
            i < len(last) and bool(group["lr"] == last[i])
            for i, group in enumerate(self.optimizer.param_groups)
        ]

    def _checked_state(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        """A deep copy of ``state_dict`` without the class name, once it is known to fit."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = _class_name(type(self))
        saved = state_dict.get(_CLASS_KEY, mine)
        if saved != mine:
            raise ValueError(
                f"cannot load a state_dict saved by {saved!r} into {mine!r}: the scheduler "
                "classes differ"
            )
        state = {k: v for k, v in state_dict.items() if k != _CLASS_KEY}

        expected = set(super().state_dict())
        missing = sorted(expected - _OPTIONAL_STATE_KEYS - state.keys())
        unexpected = sorted(state.keys() - expected - _OPTIONAL_STATE_KEYS)
        if missing or unexpected:
            origin = (
                "is it the state of another scheduler class?"
                if _CLASS_KEY not in state_dict
                else "was it saved by another version of torchkit?"
            )
            raise ValueError(
                f"the state_dict does not fit {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected} ({origin})"
            )

        groups = len(self.optimizer.param_groups)
        for key in self._per_group_state:
            _check_per_group_entry(state, key, groups)
        self._check_loaded_state(state)
        return copy.deepcopy(state)

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        """Subclass hook: more checks on a state whose class, keys and lengths fit."""


# -------------------------------------------------------------------- WarmupDecayLR


class WarmupDecayLR(_ChainableLR):
    """A warmup to each group's base lr, then a decay to ``min_lr`` at ``total_steps``.

    With ``t`` the step (``last_epoch``), ``W = warmup_steps``, ``T = total_steps`` and
    ``p = (t - W) / (T - W)``, the lr of a group with base lr ``b`` is

    * ``t < W``: ``b * w(t)``, the warmup going from ``warmup_start_factor * b`` at step 0
      towards ``b``: ``"linear"`` ``sf + (1 - sf) * t / W``, ``"exponential"``
      ``sf ** (1 - t / W)``, ``"constant"`` ``sf``;
    * ``W <= t < T``: ``min_lr + (b - min_lr) * s(p)``, where ``s`` goes from 1 to 0:
      ``"cosine"`` ``(1 + cos(pi p)) / 2``, ``"linear"`` ``1 - p``, ``"polynomial"``
      ``(1 - p) ** power``, ``"constant"`` 1; ``"exponential"`` (``gamma ** (t - W)``),
      ``"step"`` (``gamma ** ((t - W) // step_size)``) and ``"inverse_sqrt"``
      (``sqrt(tau / (tau + t - W))``, ``tau = max(W, 1)``) are rescaled affinely,
      ``(r - r(T)) / (1 - r(T))``, so that they too end exactly at ``min_lr``;
    * ``t >= T``: ``min_lr``.

    With ``warmup_start_factor=0.0`` and ``min_lr=0.0``, ``decay="cosine"`` and
    ``decay="linear"`` give transformers' ``get_cosine_schedule_with_warmup`` and
    ``get_linear_schedule_with_warmup`` up to ``total_steps``; ``decay="polynomial"`` with
    ``min_lr=lr_end`` gives ``get_polynomial_decay_schedule_with_warmup``.

    The default ``warmup_start_factor`` is ``1 / (warmup_steps + 1)``: the linear warmup
    is then the line through 0 one step *before* step 0, ``b * (t + 1) / (W + 1)``, so the
    first optimizer step already trains (transformers' warmup spends it at lr 0) and the
    lr is never 0 during warmup, where chaining could not measure other schedulers.

    Args:
        optimizer: Wrapped optimizer; each group's base lr is its ``initial_lr``
            (its ``lr`` when the scheduler is created with ``last_epoch=-1``).
        warmup_steps: Steps of warmup ``W >= 0``; 0 starts the decay at once.
        total_steps: Step ``T > W`` at which the lr reaches ``min_lr`` and stays.
        warmup: ``"linear"`` (default), ``"exponential"`` or ``"constant"``.
        decay: ``"cosine"`` (default), ``"linear"``, ``"polynomial"``, ``"exponential"``,
            ``"step"``, ``"inverse_sqrt"`` or ``"constant"``.
        warmup_start_factor: The warmup's first lr as a fraction of the base lr, in
            ``[0, 1]`` (``(0, 1]`` for ``"exponential"``). Default: ``1 / (W + 1)``.
        min_lr: Absolute final lr (like torch's ``eta_min``), one value or one per param
            group, each in ``[0, base lr]``. Default: 0.0.
        power: Exponent of ``"polynomial"`` decay, ``> 0``. Default: 1.0.
        gamma: Decay rate in ``(0, 1)`` per step (``"exponential"``) or per ``step_size``
            steps (``"step"``); required by those two decays, rejected by the others.
        step_size: Steps per stair of ``"step"`` decay, ``>= 1``; required by it only.
        last_epoch: The index of the last step, as in torch. Default: -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
        >>> sched = WarmupDecayLR(opt, warmup_steps=100, total_steps=1000, min_lr=1e-5)
        >>> sched.get_last_lr()  # step 0: 1e-3 / 101
        [9.900990099009901e-06]

        The lr at milestone steps of each decay is tabulated, and executed as a test, in
        ``docs/schedulers.md``.
    """

    _per_group_state = (*_ChainableLR._per_group_state, "min_lrs")

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        total_steps: int,
        *,
        warmup: str = "linear",
        decay: str = "cosine",
        warmup_start_factor: float | None = None,
        min_lr: float | Sequence[float] = 0.0,
        power: float = 1.0,
        gamma: float | None = None,
        step_size: int | None = None,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.total_steps = _check_int("total_steps", total_steps, 1)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(
                f"total_steps must be greater than warmup_steps, got total_steps={total_steps!r}"
                f" and warmup_steps={warmup_steps!r}"
            )
        self.warmup = _choice("warmup", warmup, _schedules.WARMUPS)
        self.decay = _choice("decay", decay, _schedules.DECAYS)

        if warmup_start_factor is None:
            start_factor = 1.0 / (self.warmup_steps + 1)
        else:
            start_factor = _as_float("warmup_start_factor", warmup_start_factor)
            if not 0.0 <= start_factor <= 1.0:
                raise ValueError(f"warmup_start_factor must be in [0, 1], got {start_factor!r}")
            if self.warmup == "exponential" and start_factor == 0.0:
                raise ValueError(
                    "warmup_start_factor must be > 0 for warmup='exponential' (a geometric "
                    f"ramp cannot start at 0), got {warmup_start_factor!r}"
                )
        self.warmup_start_factor = start_factor

        self.power = _as_float("power", power)
        if self.power <= 0.0:
            raise ValueError(f"power must be > 0, got {power!r}")
        if decay in ("exponential", "step"):
            if gamma is None:
                raise ValueError(f"decay={decay!r} needs gamma (a rate in (0, 1)), got None")
            self.gamma: float | None = _as_float("gamma", gamma)
            if not 0.0 < self.gamma < 1.0:
                raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
        elif gamma is not None:
            raise ValueError(
                f"gamma is only used by decay='exponential' or 'step', got gamma={gamma!r} "
                f"with decay={decay!r}"
            )
        else:
            self.gamma = None
        if decay == "step":
            if step_size is None:
                raise ValueError("decay='step' needs step_size (steps per stair), got None")
            self.step_size: int | None = _check_int("step_size", step_size, 1)
        elif step_size is not None:
            raise ValueError(
                f"step_size is only used by decay='step', got step_size={step_size!r} "
                f"with decay={decay!r}"
            )
        else:
            self.step_size = None

        self.min_lrs = _per_group("min_lr", min_lr, optimizer)
        for i, (group, floor) in enumerate(zip(optimizer.param_groups, self.min_lrs, strict=True)):
            name = f"min_lr[{i}]" if isinstance(min_lr, (list, tuple)) else "min_lr"
            if floor < 0.0:
                raise ValueError(f"{name} must be >= 0, got {floor!r}")
            base = group.get("initial_lr", group["lr"])  # what LRScheduler takes as base lr
            if floor > float(base):
                raise ValueError(
                    f"{name}={floor!r} is greater than the base lr {float(base)!r} of param "
                    f"group {i}; the decay would raise the lr"
                )
        self._timescale = max(self.warmup_steps, 1)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._init_chain(len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def _schedule(self, step: int) -> list[float]:
        if step < self.warmup_steps:
            w = _schedules.warmup_factor(
                self.warmup, step, self.warmup_steps, self.warmup_start_factor
            )
            return [base * w for base in self.base_lrs]
        if step >= self.total_steps:
            return list(self.min_lrs)
        s = _schedules.decay_fraction(
            self.decay,
            step - self.warmup_steps,
            self.total_steps - self.warmup_steps,
            self.power,
            self.gamma,
            self.step_size,
            self._timescale,
        )
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        return [floor + (base - floor) * s for base, floor in zip(self.base_lrs, self.min_lrs)]  # noqa: B905


# ----------------------------------------------------------------------- OneCycleLR

_ANNEALS: dict[str, Callable[[float, float, float], float]] = {
    "cos": _schedules.anneal_cos,
    "linear": _schedules.anneal_linear,
}


class OneCycleLR(_ChainableLR):
    """torch's 1cycle policy, with the same constructor and floats, that can be chained.

    Alone, it sets the same lrs and momenta as :class:`torch.optim.lr_scheduler.OneCycleLR`
    at every step, bit for bit (both compute the same expressions); it raises the same
    errors, including ``ValueError`` when stepped past ``total_steps``. Unlike torch's, it
    follows the chaining rule of this module, so ``ChainedScheduler([OneCycleLR(...),
    ExponentialLR(opt, 0.98)])`` gives ``onecycle(t) * 0.98 ** t``. Momentum (or Adam's
    ``beta1``) is set absolutely, as torch does, and is not chained.

    Differences from torch's, all where torch has no answer: a phase of zero length (for
    example ``pct_start * total_steps == 1``) is taken as finished where torch divides by
    zero; ``div_factor`` and ``final_div_factor`` must be > 0; the per-group bounds
    (``max_lrs``, ``initial_lrs``, ``min_lrs`` and the momenta) live on the scheduler and in
    its ``state_dict``, so only ``initial_lr`` (as the base class requires) is written into
    the param groups. At construction the lr is set from ``max_lr`` (the optimizer's own lr
    is ignored, as in torch), so the chain factor starts at 1.

    Args:
        optimizer: Wrapped optimizer.
        max_lr: Peak lr, one value or one per param group.
        total_steps: Steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
        epochs: Epochs to train for (with ``steps_per_epoch``).
        steps_per_epoch: Steps per epoch (with ``epochs``).
        pct_start: Fraction of the cycle spent increasing the lr, a float in [0, 1].
            Default: 0.3.
        anneal_strategy: ``"cos"`` (default) or ``"linear"``.
        cycle_momentum: Cycle momentum (SGD) or ``beta1`` (Adam-like) inversely to the lr
            between ``base_momentum`` and ``max_momentum``. Default: True.
        base_momentum: Momentum at the lr peak, one value or one per group. Default: 0.85.
        max_momentum: Momentum at the start and end, one value or one per group.
            Default: 0.95.
        div_factor: ``initial_lr = max_lr / div_factor``. Default: 25.0.
        final_div_factor: ``min_lr = initial_lr / final_div_factor``. Default: 1e4.
        three_phase: Go back down to ``initial_lr`` symmetrically, then to ``min_lr`` in a
            third phase (the paper's schedule) instead of fastai's two phases.
            Default: False.
        last_epoch: The index of the last step, as in torch. Default: -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
        >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=10)
        >>> [round(lr, 3) for lr in preview(sched, 10)["lr"][0]]
        [0.04, 0.52, 1.0, 0.95, 0.812, 0.611, 0.389, 0.188, 0.05, 0.0]
    """

    _per_group_state = (
        *_ChainableLR._per_group_state,
        "max_lrs",
        "initial_lrs",
        "min_lrs",
        "_lr_points",
    )

    def __init__(
        self,
        optimizer: Optimizer,
        max_lr: float | Sequence[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | Sequence[float] = 0.85,
        max_momentum: float | Sequence[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = _check_int("total_steps", total_steps, 1)
        elif epochs is not None and steps_per_epoch is not None:
            epochs = _check_int("epochs", epochs, 1)
            steps_per_epoch = _check_int("steps_per_epoch", steps_per_epoch, 1)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(
                "give total_steps, or both epochs and steps_per_epoch; got "
                f"total_steps={total_steps!r}, epochs={epochs!r}, "
                f"steps_per_epoch={steps_per_epoch!r}"
            )
        # torch insists on a float here (pct_start=1 is an error there too).
        if not isinstance(pct_start, float) or not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"pct_start must be a float in [0, 1], got {pct_start!r}")
        self.anneal_strategy = _choice(
            "anneal_strategy", anneal_strategy, _schedules.ONE_CYCLE_ANNEALS
        )
        self.div_factor = _as_float("div_factor", div_factor)
        self.final_div_factor = _as_float("final_div_factor", final_div_factor)
        for name, value in (
            ("div_factor", self.div_factor),
            ("final_div_factor", self.final_div_factor),
        ):
            if value <= 0.0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.pct_start = pct_start
        self.three_phase = bool(three_phase)
        self._phase_ends = _schedules.one_cycle_phase_ends(
            self.total_steps, pct_start, self.three_phase
        )

        self.max_lrs = _per_group("max_lr", max_lr, optimizer)
        self.initial_lrs = [peak / self.div_factor for peak in self.max_lrs]
        self.min_lrs = [start / self.final_div_factor for start in self.initial_lrs]
        if self.three_phase:
            self._lr_points = [
                [a, b, a, c]
                for a, b, c in zip(self.initial_lrs, self.max_lrs, self.min_lrs, strict=True)
            ]
        else:
            self._lr_points = [
                [a, b, c]
                for a, b, c in zip(self.initial_lrs, self.max_lrs, self.min_lrs, strict=True)
            ]

        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        self.max_momentums: list[float] = []
        self.base_momentums: list[float] = []
        self._momentum_points: list[list[float]] = []
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and not self.use_beta1:
                raise ValueError(
                    "cycle_momentum=True needs an optimizer with 'momentum' or 'betas' in its "
                    f"defaults; {type(optimizer).__name__} has neither (pass "
                    "cycle_momentum=False)"
                )
            self.max_momentums = _per_group("max_momentum", max_momentum, optimizer)
            self.base_momentums = _per_group("base_momentum", base_momentum, optimizer)
            for high, low in zip(self.max_momentums, self.base_momentums, strict=True):
                points = [high, low, high, high] if self.three_phase else [high, low, high]
                self._momentum_points.append(points)
        last_epoch = _check_int("last_epoch", last_epoch, -1)

        # Everything is checked: only now touch the optimizer (torch writes initial_lr before
        # it checks the momenta, so a failed construction leaves it changed).
        if last_epoch == -1:
            for group, start in zip(optimizer.param_groups, self.initial_lrs, strict=True):
                group["initial_lr"] = start
            if self.cycle_momentum:
                for group, points in zip(
                    optimizer.param_groups, self._momentum_points, strict=True
                ):
                    if self.use_beta1:
                        group["betas"] = (points[0], *group["betas"][1:])
                    else:
                        group["momentum"] = points[0]
        self._init_chain(len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def _chain_start(self, index: int, lr: float) -> float:
        return 1.0

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, after checking that it fits this scheduler.

        The checks and the lr restore are those of :meth:`WarmupDecayLR.load_state_dict`;
        a state that cycles momentum (or ``beta1``) must also find it in every param group.
        The momentum of the interrupted step is restored like the lr: into every param group
        that still holds the momentum this scheduler wrote last.

        Args:
            state_dict: A state returned by :meth:`state_dict` (it is not modified).

        Example:
            >>> import torch
            >>> params = [torch.zeros(1, requires_grad=True)]
            >>> opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
            >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=10)
            >>> for _ in range(3):
            ...     opt.step()
            ...     sched.step()
            >>> checkpoint = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            >>> opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
            >>> opt.load_state_dict(checkpoint["optimizer"])
            >>> sched = OneCycleLR(opt, max_lr=1.0, total_steps=10)  # writes step 0's
            >>> sched.load_state_dict(checkpoint["scheduler"])  # restores step 3's
            >>> [round(opt.param_groups[0][key], 4) for key in ("lr", "momentum")]
            [0.9505, 0.855]
        """
        keep = self._groups_holding_last_momentum()
        super().load_state_dict(state_dict)
        if self.cycle_momentum and any(keep):
            phase, pct = _schedules.one_cycle_phase(self.last_epoch, self._phase_ends)
            self._write_momenta(phase, pct, _ANNEALS[self.anneal_strategy], only=keep)

    def _groups_holding_last_momentum(self) -> list[bool]:
        """For every param group: does it still hold the momentum this scheduler wrote last?"""
        groups = self.optimizer.param_groups
        if not self.cycle_momentum or len(self._momentum_points) != len(groups):
            return [False] * len(groups)
        phase, pct = _schedules.one_cycle_phase(self.last_epoch, self._phase_ends)
        anneal = _ANNEALS[self.anneal_strategy]
        return [
            _momentum_of(group) == anneal(m[phase], m[phase + 1], pct)
            for group, m in zip(groups, self._momentum_points, strict=True)
        ]

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        if not state["cycle_momentum"]:
            return
        groups = self.optimizer.param_groups
        for key in ("max_momentums", "base_momentums", "_momentum_points"):
            _check_per_group_entry(state, key, len(groups))
        needed = "betas" if state["use_beta1"] else "momentum"
        for i, group in enumerate(groups):
            if needed not in group:
                raise ValueError(
                    f"the state_dict cycles {needed!r} but param group {i} of "
                    f"{type(self.optimizer).__name__} has no {needed!r}"
                )

    def _schedule(self, step: int) -> list[float]:
        phase, pct = _schedules.one_cycle_phase(step, self._phase_ends)
        anneal = _ANNEALS[self.anneal_strategy]
        return [anneal(p[phase], p[phase + 1], pct) for p in self._lr_points]

    def get_lr(self) -> list[float]:
        """The next lr of every param group; also sets the momenta (as torch's does).

        Returns:
            One float per param group.
        """
        if not self._get_lr_called_within_step:
            _warn_get_lr_outside_step()
        step = self.last_epoch
        if step > self.total_steps:
            raise self._past_the_end(step)
        # One phase lookup serves the lrs and the momenta of every group.
        phase, pct = _schedules.one_cycle_phase(step, self._phase_ends)
        anneal = _ANNEALS[self.anneal_strategy]
        if not self.cycle_momentum:
            return self._chained(
                step, [anneal(p[phase], p[phase + 1], pct) for p in self._lr_points]
            )
        lrs = []
        beta1 = self.use_beta1
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        for group, lr_points, momentum_points in zip(  # noqa: B905
            self.optimizer.param_groups, self._lr_points, self._momentum_points
        ):
            lrs.append(anneal(lr_points[phase], lr_points[phase + 1], pct))
            momentum = anneal(momentum_points[phase], momentum_points[phase + 1], pct)
            if beta1:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum
        return self._chained(step, lrs)

    def _get_closed_form_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise self._past_the_end(step)
        if self.cycle_momentum:
            phase, pct = _schedules.one_cycle_phase(step, self._phase_ends)
            self._write_momenta(phase, pct, _ANNEALS[self.anneal_strategy])
        return super()._get_closed_form_lr()

    def _past_the_end(self, step: int) -> ValueError:
        return ValueError(
            f"Tried to step {step} times. The specified number of total steps is {self.total_steps}"
        )

    def _write_momenta(
        self,
        phase: int,
        pct: float,
        anneal: Callable[[float, float, float], float],
        only: list[bool] | None = None,
    ) -> None:
        """Write the momenta at (``phase``, ``pct``), into the groups flagged in ``only``."""
        groups = self.optimizer.param_groups
        for i, (group, m) in enumerate(zip(groups, self._momentum_points, strict=True)):
            if only is not None and not only[i]:
                continue
            momentum = anneal(m[phase], m[phase + 1], pct)
            if self.use_beta1:
                group["betas"] = (momentum, *group["betas"][1:])
            else:
                group["momentum"] = momentum


# --------------------------------------------------------------------------- NoamLR


class NoamLR(_ChainableLR):
    """The schedule of "Attention Is All You Need": linear warmup, then ``1 / sqrt(step)``.

    ``lr = base_lr * factor * d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5)`` with
    ``s = max(step, 1)``: the Annotated Transformer's ``rate`` used as a ``LambdaLR``
    multiplier, so a base lr of 1.0 gives the paper's numbers (``d_model=512``,
    ``warmup_steps=4000`` peak at step 4000 at about 6.988e-4). It never reaches 0, so it
    chains at every step.

    Args:
        optimizer: Wrapped optimizer; its lr multiplies the rate (use 1.0 for the paper's).
        d_model: Model width, an integer >= 1.
        warmup_steps: Step of the peak, an integer >= 1.
        factor: Overall scale, > 0. Default: 1.0.
        last_epoch: The index of the last step, as in torch. Default: -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = NoamLR(opt, d_model=512, warmup_steps=4)
        >>> [f"{lr:.4g}" for lr in preview(sched, 7)["lr"][0]]  # steps 0 to 6, peak at 4
        ['0.005524', '0.005524', '0.01105', '0.01657', '0.0221', '0.01976', '0.01804']
    """

    def __init__(
        self,
        optimizer: Optimizer,
        d_model: int,
        warmup_steps: int,
        factor: float = 1.0,
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.d_model = _check_int("d_model", d_model, 1)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 1)
        self.factor = _as_float("factor", factor)
        if self.factor <= 0.0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._init_chain(len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def _schedule(self, step: int) -> list[float]:
        rate = _schedules.noam_factor(step, self.d_model, self.warmup_steps, self.factor)
        return [base * rate for base in self.base_lrs]


# ------------------------------------------------------------------ preview / plot


class _PreviewOptimizer(Optimizer):
    """A stand-in with a copy of another optimizer's hyperparameters and no real params.

    Each param group holds one 0-d dummy tensor; ``step()`` does nothing. It is marked as
    already stepped so that torch's "scheduler stepped before optimizer" check stays quiet.
    """

    def __init__(self, source: Optimizer) -> None:
        groups = []
        for group in source.param_groups:
            hyper = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            groups.append({**hyper, "params": [torch.zeros(())]})
        super().__init__(groups, copy.deepcopy(source.defaults))
        self._opt_called = True

    def step(self, closure: Callable[[], float] | None = None) -> None:  # type: ignore[override]
        return None

    # LRScheduler wraps optimizer.step unless it carries this mark; the wrapper only
    # records that step() was called, which _opt_called already says.
    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]


SchedulerOrFactory = LRScheduler | Callable[[Optimizer], LRScheduler]


def _momentum_of(group: dict[str, Any]) -> float | None:
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def preview(
    scheduler_or_factory: SchedulerOrFactory,
    steps: int,
    *,
    optimizer: Optimizer | None = None,
) -> dict[str, list[list[float]]]:
    """The lrs (and momenta) of the next ``steps`` optimizer steps, without side effects.

    A scheduler is deep-copied onto a stand-in optimizer holding a copy of its optimizer's
    param-group hyperparameters, and the copy is stepped: the real optimizer and scheduler
    are not touched, and the model's parameters are not copied. A factory is called with
    such a stand-in built from ``optimizer``, or, when ``optimizer`` is None, from
    ``SGD(lr=1.0, momentum=0.9)`` with one param group (so the lrs are the schedule's
    multipliers). Works for any scheduler whose ``step()`` takes no argument, including
    torch's and ``ChainedScheduler``/``SequentialLR``.

    Args:
        scheduler_or_factory: An ``LRScheduler``, or a callable ``optimizer -> LRScheduler``.
        steps: Number of steps to report, >= 1; the first is the current lr.
        optimizer: Only with a factory: whose param-group hyperparameters to copy.

    Returns:
        ``{"lr": lrs}`` with ``lrs[g][i]`` the lr of param group ``g`` at the ``i``-th step,
        plus ``"momentum"`` (``momentum``, or ``betas[0]``) laid out the same way when every
        param group has one.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        >>> preview(sched, 5)["lr"]
        [[0.1, 0.1, 0.05, 0.05, 0.025]]
        >>> opt.param_groups[0]["lr"], sched.last_epoch
        (0.1, 0)
    """
    steps = _check_int("steps", steps, 1)
    if isinstance(scheduler_or_factory, ReduceLROnPlateau):
        raise ValueError("preview cannot drive ReduceLROnPlateau: its step() needs a metric")
    if isinstance(scheduler_or_factory, LRScheduler):
        if optimizer is not None:
            raise ValueError(
                "optimizer is only used with a factory; a scheduler is previewed on a copy "
                "of its own optimizer's hyperparameters"
            )
        source = scheduler_or_factory.optimizer
        stand_in = _PreviewOptimizer(source)
        scheduler = copy.deepcopy(scheduler_or_factory, memo={id(source): stand_in})
    elif callable(scheduler_or_factory):
        if optimizer is None:
            optimizer = torch.optim.SGD([torch.zeros(())], lr=1.0, momentum=0.9)
        stand_in = _PreviewOptimizer(_check_optimizer(optimizer))
        scheduler = scheduler_or_factory(stand_in)
        if not isinstance(scheduler, LRScheduler) or isinstance(scheduler, ReduceLROnPlateau):
            raise TypeError(
                "the factory must return an LRScheduler whose step() takes no argument, "
                f"got {type(scheduler).__name__}"
            )
    else:
        raise TypeError(
            "scheduler_or_factory must be an LRScheduler or a callable taking an optimizer, "
            f"got {type(scheduler_or_factory).__name__}"
        )

    groups = stand_in.param_groups
    lrs: list[list[float]] = [[] for _ in groups]
    momenta: list[list[float]] = [[] for _ in groups]
    has_momentum = all(_momentum_of(group) is not None for group in groups)
    for i in range(steps):
        if i:
            stand_in.step()
            scheduler.step()
        for g, group in enumerate(groups):
            lrs[g].append(float(group["lr"]))
            if has_momentum:
                momenta[g].append(_momentum_of(group))  # type: ignore[arg-type]
    result = {"lr": lrs}
    if has_momentum:
        result["momentum"] = momenta
    return result


def plot_schedule(
    schedules: SchedulerOrFactory | Mapping[str, SchedulerOrFactory] | Sequence[SchedulerOrFactory],
    steps: int,
    path: str | os.PathLike[str],
    *,
    optimizer: Optimizer | None = None,
    momentum: bool = False,
    log_scale: bool = False,
    title: str | None = None,
) -> Path:
    """Write a PNG plot of the lr (and optionally momentum) of one or more schedules.

    Each schedule is run through :func:`preview`, so nothing is stepped for real. Needs
    matplotlib (``pip install 'torchkit[plot]'``), imported only when this is called; it
    draws on a bare ``matplotlib.figure.Figure``, leaving pyplot's state alone.

    Args:
        schedules: A scheduler or factory, a sequence of them (labelled by class name), or a
            mapping ``label -> scheduler or factory``.
        steps: Number of steps to plot, >= 1.
        path: Where to write the PNG; parent folders must exist.
        optimizer: Passed to :func:`preview` for factories.
        momentum: Add a second panel with the momenta of the schedules that change them
            (a momentum that stays constant is left out of the panel).
        log_scale: Logarithmic lr axis.
        title: Figure title.

    Returns:
        The path written.

    Example:
        >>> import torch
        >>> schedule = lambda opt: WarmupDecayLR(opt, warmup_steps=10, total_steps=100)
        >>> plot_schedule({"warmup + cosine": schedule}, 120, "lr.png")  # doctest: +SKIP
        PosixPath('lr.png')
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("plot_schedule needs matplotlib: pip install 'torchkit[plot]'") from error

    if isinstance(schedules, Mapping):
        items = list(schedules.items())
    elif isinstance(schedules, Sequence) and not isinstance(schedules, (str, bytes)):
        items = [(_label_of(s), s) for s in schedules]
    else:
        items = [(_label_of(schedules), schedules)]
    if not items:
        raise ValueError("schedules is empty: give at least one scheduler or factory")
    steps = _check_int("steps", steps, 1)

    previews = [(label, preview(s, steps, optimizer=optimizer)) for label, s in items]
    show_momentum = momentum and any(
        min(series) != max(series) for _, p in previews for series in p.get("momentum", [])
    )
    figure = Figure(figsize=(8.0, 6.5 if show_momentum else 4.0), layout="constrained")
    axes = figure.subplots(2 if show_momentum else 1, 1, sharex=True, squeeze=False)[:, 0]
    x = list(range(steps))
    for label, values in previews:
        many = len(values["lr"]) > 1
        for g, series in enumerate(values["lr"]):
            name = f"{label} [group {g}]" if many else label
            (line,) = axes[0].plot(x, series, label=name)
            moms = values["momentum"][g] if show_momentum and "momentum" in values else None
            if moms is not None and min(moms) != max(moms):
                axes[1].plot(x, moms, label=name, color=line.get_color())
    axes[0].set_ylabel("lr")
    if log_scale:
        axes[0].set_yscale("log")
    axes[0].legend(fontsize="small")
    if show_momentum:
        axes[1].set_ylabel("momentum / beta1")
        axes[1].legend(fontsize="small")
    axes[-1].set_xlabel("step")
    if title:
        figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, format="png", dpi=110)
    return path


def _label_of(schedule: object) -> str:
    if isinstance(schedule, LRScheduler):
        return type(schedule).__name__
    return getattr(schedule, "__name__", type(schedule).__name__)
