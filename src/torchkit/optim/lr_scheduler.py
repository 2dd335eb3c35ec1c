"""LR schedulers that chain, resume exactly and expose their closed form.

Every scheduler here subclasses :class:`torch.optim.lr_scheduler.LRScheduler`, so it plugs
into ``ChainedScheduler``, ``SequentialLR`` and any training loop written for torch's own:

* :class:`WarmupDecayLR` - a warmup (linear, exponential, constant, cosine, 1-sqrt), an
  optional stable phase, then a decay (cosine, linear, polynomial, exponential, step,
  inverse square root, constant, 1-sqrt) to an absolute ``min_lr`` or a ``min_lr_ratio``,
  or an endless decay: warmup-stable-decay (WSD), transformers' warmup schedules and what
  ``SequentialLR(LinearLR, CosineAnnealingLR)`` approximates, each in one object;
* :class:`CosineRestartsLR` - cosine cycles with restarts: timm's ``CosineLRScheduler``
  (``cycle_mul``, ``cycle_decay``, ``cycle_limit``, ``k_decay``, warmup as a prefix or
  not) and transformers' hard restarts, float for float;
* :class:`OneCycleLR` - torch's 1cycle policy with the same constructor and the same floats,
  but chainable;
* :class:`NoamLR` - the inverse-square-root schedule of "Attention Is All You Need";
* :class:`ReduceLROnPlateau` - torch's, checked and resumable, whose cuts multiply what the
  schedulers above set; :class:`GreedyLR` - transformers', which also raises the lr while
  the metric improves, composing the same way; :class:`ChainedScheduler` - torch's, passing
  the metric to them;
* :func:`get_scheduler` - transformers' factory, by name, returning the classes above;
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

Construction. ``start_from`` says how a scheduler reads the lr it finds in the param groups
when it is built (another schedule, or a loaded optimizer, may have changed it). ``"lr"``,
the default, as torch's recursive schedulers (``LinearLR``, ``CosineAnnealingLR``, ...): a
fresh scheduler takes ``c_g = lr / initial_lr``, so a scheduler built earlier keeps its
effect, and one rebuilt with ``last_epoch=k`` keeps the lr it finds as the lr of step
``k + 1``. ``"initial_lr"``, as ``LambdaLR`` and transformers' schedules: the lr found is
ignored and the schedule starts at its closed form. Either way, ``last_epoch=k - 1`` after
``k`` steps resumes exactly, as in torch. :class:`OneCycleLR` always starts from its own
closed form, as torch's does.

Resuming. ``state_dict()`` is plain data that ``torch.load(weights_only=True)`` reads; it
names the scheduler's class and holds the param groups' lrs. ``load_state_dict()`` refuses,
before writing anything, a state of another class or of another number of param groups; it
also restores those lrs (and OneCycleLR's momentum) into the param groups that still hold
what the scheduler wrote, so that loading the optimizer *before* building the schedulers
resumes exactly too, whatever steps after them (see :meth:`WarmupDecayLR.load_state_dict`
for where that stops). Attributes derived from the others are not saved: they are rebuilt.

Private torch API (tested on torch 2.13; there is no public way to do the same):

* ``LRScheduler._is_initial`` (set while the constructor takes its step): tells
  the constructor's step apart, where the chain factors are first measured;
* ``LRScheduler._get_lr_called_within_step``: the flag behind torch's "use get_last_lr()"
  warning, honoured by ``get_lr`` as torch's own schedulers do, and set around it by
  ``step()`` as torch's ``step`` does;
* ``LRScheduler._step_count``: counted by ``step()`` as torch's ``step`` counts it; the first
  step after the constructor's, where torch checks the step order, is torch's own ``step``;
* ``ChainedScheduler._schedulers``: the members, under torch's attribute name, so that code
  written for torch's ``ChainedScheduler`` reads torchkit's;
* ``Optimizer._opt_called`` and ``step._wrapped_by_lr_sched``: set on :func:`preview`'s
  stand-in optimizer, which torch's step-order check reads.

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
import functools
import math
import numbers
import operator
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ChainedScheduler as _TorchChainedScheduler
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau as _TorchReduceLROnPlateau

from torchkit.optim import _schedules

__all__ = [
    "SCHEDULER_NAMES",
    "ChainedScheduler",
    "CosineRestartsLR",
    "GreedyLR",
    "NoamLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "WarmupDecayLR",
    "get_scheduler",
    "plot_schedule",
    "preview",
]


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


def _check_fraction(name: str, value: object) -> float:
    number = _as_float(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _check_rate(name: str, value: object) -> float:
    rate = _as_float(name, value)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return rate


# A count of steps that must be at least 1, as an option check (name, value).
_check_count = functools.partial(_check_int, minimum=1)


def _check_positive(name: str, value: object) -> float:
    number = _as_float(name, value)
    if number <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return number


def _check_nonnegative(name: str, value: object) -> float:
    number = _as_float(name, value)
    if number < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return number


def _option_for(
    name: str,
    value: Any,
    decay: str,
    users: tuple[str, ...],
    check: Callable[[str, Any], Any],
    *,
    needs: str | None = None,
) -> Any:
    """A decay-specific option: checked where ``decay`` is one of its ``users``, an error where
    it is not (an option that would be ignored is a mistake). ``needs`` describes a required
    option; without it, None (the default) is accepted."""
    if decay in users:
        if value is None:
            if needs is None:
                return None
            raise ValueError(f"decay={decay!r} needs {name} ({needs}), got None")
        return check(name, value)
    if value is not None:
        used_by = f"decay={users[0]!r}" + "".join(f" or {user!r}" for user in users[1:])
        raise ValueError(
            f"{name} is only used by {used_by}, got {name}={value!r} with decay={decay!r}"
        )
    return None


def _floors(
    optimizer: Optimizer,
    min_lr: float | Sequence[float],
    min_lr_ratio: float | Sequence[float] | None,
) -> list[float]:
    """Each group's absolute floor, from ``min_lr`` or from ``min_lr_ratio`` of its base lr.

    The base lr is what ``LRScheduler`` will take: ``initial_lr``, else ``lr``.
    """
    groups = optimizer.param_groups
    bases = [float(group.get("initial_lr", group["lr"])) for group in groups]
    per_group = isinstance(min_lr_ratio, (list, tuple)) or isinstance(min_lr, (list, tuple))
    if min_lr_ratio is not None:
        if isinstance(min_lr, (list, tuple)) or min_lr != 0.0:
            raise ValueError(
                f"give min_lr or min_lr_ratio, not both: got min_lr={min_lr!r} and "
                f"min_lr_ratio={min_lr_ratio!r}"
            )
        ratios = _per_group("min_lr_ratio", min_lr_ratio, optimizer)
        for i, ratio in enumerate(ratios):
            _check_fraction(f"min_lr_ratio[{i}]" if per_group else "min_lr_ratio", ratio)
        return [base * ratio for base, ratio in zip(bases, ratios, strict=True)]
    floors = _per_group("min_lr", min_lr, optimizer)
    for i, (base, floor) in enumerate(zip(bases, floors, strict=True)):
        name = f"min_lr[{i}]" if per_group else "min_lr"
        if floor < 0.0:
            raise ValueError(f"{name} must be >= 0, got {floor!r}")
        if floor > base:
            raise ValueError(
                f"{name}={floor!r} is greater than the base lr {base!r} of param group {i}; "
                "the decay would raise the lr"
            )
    return floors


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
# How a scheduler reads the lr it finds in the param groups when it is built.
_START_FROM: tuple[str, ...] = ("lr", "initial_lr")
# What WarmupDecayLR's cosine decay does at its end.
_END_AT: tuple[str, ...] = ("min_lr", "wave")

# The state_dict entry naming the class that saved it (a plain string, so that
# ``torch.load(weights_only=True)`` reads it). It is never an attribute.
_CLASS_KEY = "_scheduler_class"
# The state_dict entry holding every param group's lr when the state was taken (the lr of
# the interrupted step, whoever set it last), which loading puts back where a constructor
# overwrote it. It is never an attribute; a state saved without it restores ``_last_lr``.
_GROUP_LRS_KEY = "_group_lrs"
# Attributes that torch's LRScheduler puts in ``__dict__`` in some releases only (``verbose``
# in older ones, the flags of its step context managers once they have run): a state_dict
# may have them or not.
_OPTIONAL_STATE_KEYS = frozenset({"verbose", "_is_initial", "_get_lr_called_within_step"})


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _group_lrs(optimizer: Optimizer) -> list[Any]:
    """The lr of every param group (a copy of a tensor lr, as torch keeps them)."""
    # type() first: an isinstance check against torch.Tensor costs more than the rest.
    return [
        group["lr"] if type(group["lr"]) is float else _copy_if_tensor(group["lr"])
        for group in optimizer.param_groups
    ]


def _copy_if_tensor(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _groups_holding(
    optimizer: Optimizer, read: Callable[[dict[str, Any]], Any], written: Sequence[Any]
) -> list[bool]:
    """For every param group: does ``read(group)`` still give what a scheduler wrote there?"""
    return [
        i < len(written) and bool(read(group) == written[i])
        for i, group in enumerate(optimizer.param_groups)
    ]


def _set_group_value(group: dict[str, Any], key: str, value: Any) -> None:
    """Write ``value`` into ``group[key]``, in place when it holds a tensor (as torch does,
    a one-element tensor ``value`` included)."""
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value.squeeze() if isinstance(value, torch.Tensor) else value)
    else:
        group[key] = value


class _CheckedState:
    """``state_dict`` and ``load_state_dict`` for torchkit's schedulers, over torch's.

    Mixed in before an ``LRScheduler`` class: the state is torch's (every attribute but the
    optimizer and the derived ones) plus the class name and the param groups' lrs; loading
    checks that the state fits (class, keys, one entry per param group) before anything is
    written, lets torch's ``load_state_dict`` apply it, and restores the interrupted step's
    lr into the groups nobody has changed.
    """

    optimizer: Optimizer
    _last_lr: list[Any]
    # State entries holding one value per param group.
    _per_group_state: tuple[str, ...] = ("_last_lr",)
    # Entries that a state_dict saved by an older torchkit may lack, with the value that
    # reproduces the old behaviour.
    _state_defaults: ClassVar[Mapping[str, Any]] = {}
    # Attributes derived from the others (rebuilt by ``_derive``) and entries that an
    # older torchkit saved but nothing reads any more: left out of ``state_dict``, ignored
    # in a state being loaded.
    _not_saved: ClassVar[frozenset[str]] = frozenset()

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: a copy of its attributes (as torch's) and its class name.

        Returns:
            Plain data that ``torch.load(weights_only=True)`` reads: every attribute but the
            optimizer and those derived from the others, deep-copied (stepping on does not
            change a state_dict already taken), plus ``"_scheduler_class"``, the qualified
            class name that :meth:`load_state_dict` checks, and ``"_group_lrs"``, the lr of
            every param group, which it restores.

        Example:
            >>> import torch
            >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
            >>> NoamLR(opt, d_model=16, warmup_steps=4).state_dict()["_scheduler_class"]
            'torchkit.optim.lr_scheduler.NoamLR'
        """
        own = super().state_dict()  # type: ignore[misc]
        state = copy.deepcopy({k: v for k, v in own.items() if k not in self._not_saved})
        state[_CLASS_KEY] = _class_name(type(self))
        state[_GROUP_LRS_KEY] = _group_lrs(self.optimizer)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state from :meth:`state_dict`, after checking that it fits this scheduler.

        The state must come from the same class (its ``"_scheduler_class"``) and from an
        optimizer with as many param groups as this one's, and hold the same entries;
        otherwise a ``ValueError`` (a ``TypeError`` for a non-mapping) is raised before
        anything is written, so the scheduler and its optimizer are left as they were. A
        state_dict without ``"_scheduler_class"`` (saved by torchkit before it recorded the
        class, or by the torch class this one extends) is accepted when its entries are
        exactly this class's.

        Loading also restores the lr that every param group had when the state was saved
        (the lr of the interrupted step, after every scheduler that stepped) into every group
        that still holds the lr this scheduler wrote last, that is, whose lr nobody has set
        since: when the optimizer's state was loaded *before* this scheduler was built, its
        constructor overwrote the loaded lr with the lr of step 0, and the restored lr lets
        the run continue as if uninterrupted (without it, the next step would take the lr
        of step 0 for another scheduler's chain factor and scale every later lr by it). A
        group whose lr was set since by someone else is left alone: by an optimizer state
        loaded after this scheduler was built (torch's documented order, exact in every
        case), by another scheduler, or by the user. So "load the optimizer, then build and
        load the schedulers" is exact too, whatever schedulers step after this one and in
        whichever order they are loaded, except inside ``SequentialLR``, whose constructor
        resets the lrs: there, build everything first, then load.

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
        state, lrs = self._checked_state(state_dict)
        keep = _groups_holding(self.optimizer, _GROUP_LR, self._last_lr)
        self._apply_state(state)
        for group, lr, restore in zip(self.optimizer.param_groups, lrs, keep, strict=True):
            if restore:
                _set_group_value(group, "lr", lr)

    def _apply_state(self, state: dict[str, Any]) -> None:
        """Load a state checked by :meth:`_checked_state`; no lr is restored."""
        super().load_state_dict(state)  # type: ignore[misc]
        self._derive()

    def _checked_state(self, state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """``(state, lrs)`` once ``state_dict`` is known to fit: a deep copy of the state to
        apply (without the class name, the saved lrs and what is not saved) and the lrs
        to restore."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        mine = _class_name(type(self))
        saved = state_dict.get(_CLASS_KEY, mine)
        if saved != mine:
            raise ValueError(
                f"cannot load a state_dict saved by {saved!r} into {mine!r}: the scheduler "
                "classes differ"
            )
        ignored = {_CLASS_KEY, _GROUP_LRS_KEY, *self._not_saved}
        state = {k: v for k, v in state_dict.items() if k not in ignored}
        for key, value in self._state_defaults.items():
            state.setdefault(key, value)

        expected = self._state_keys()
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
        lrs = state["_last_lr"]
        if _GROUP_LRS_KEY in state_dict:
            _check_per_group_entry(state_dict, _GROUP_LRS_KEY, groups)
            lrs = state_dict[_GROUP_LRS_KEY]
        self._check_loaded_state(state)
        return copy.deepcopy(state), copy.deepcopy(lrs)

    def _state_keys(self) -> set[str]:
        """The entries a state of this scheduler holds (its class name and lrs apart)."""
        return set(super().state_dict()) - self._not_saved  # type: ignore[misc]

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        """Subclass hook: more checks on a state whose class, keys and lengths fit."""

    def _derive(self) -> None:
        """Subclass hook: rebuild the derived attributes from a state just loaded."""


class _ChainableLR(_CheckedState, LRScheduler):
    """The chaining rule shared by torchkit's schedulers (see the module docstring).

    Subclasses set their attributes, then call ``super().__init__(optimizer, last_epoch)``
    last, and implement :meth:`_schedule` (the closed form, a pure function of the step bound
    to per-group constants). They list their per-group state entries in ``_per_group_state``
    so that :meth:`load_state_dict` checks their lengths.
    """

    _chain_factors: list[float]
    _unchained: bool  # all chain factors are exactly 1
    # How the lr found in the param groups at construction is read (see _START_FROM). A
    # class attribute for the schedulers that do not take the argument (OneCycleLR).
    start_from: str = "lr"
    _per_group_state = ("base_lrs", "_last_lr", "_chain_factors")
    _not_saved = frozenset({"_unchained"})

    def __init__(self, optimizer: Optimizer, last_epoch: int) -> None:
        self._reset_chain(len(optimizer.param_groups))
        super().__init__(optimizer, last_epoch)

    def step(self, epoch: int | None = None) -> None:
        """Step the scheduler, as torch's ``LRScheduler.step`` does.

        Args:
            epoch: Deprecated in torch: sets ``last_epoch`` to ``epoch`` and the lr to the
                closed form there (which resets the chain factors to 1). Default: None,
                the next step.
        """
        if epoch is not None or self._step_count == 1:
            # torch's own step where it does more: step(epoch) (its warning, the closed
            # form) and the first step after the constructor's (its step-order warnings).
            super().step(epoch)
            return
        # Any other step is what torch's does, without its two context-manager objects and
        # per-group helper calls, which cost as much as a schedule.
        self._step_count += 1
        self._get_lr_called_within_step = True
        try:
            self.last_epoch += 1
            values = self.get_lr()
        finally:
            self._get_lr_called_within_step = False
        floats = True
        for group, lr in zip(self.optimizer.param_groups, values, strict=True):
            # type() rather than isinstance(): torch.Tensor's isinstance check is slow.
            if type(lr) is float and type(group["lr"]) is float:
                group["lr"] = lr
            else:  # a tensor lr is written in place, and _last_lr holds copies (as torch's)
                _set_group_value(group, "lr", lr)
                floats = False
        # get_lr() returns a new list: with float lrs, the lrs just written.
        self._last_lr = values if floats else _group_lrs(self.optimizer)

    def _schedule(self, step: int) -> list[float]:
        """This scheduler's own lr for every param group at ``step`` (no chaining), in a new
        list."""
        raise NotImplementedError

    def _step_to(self, step: int) -> list[float]:
        """:meth:`_schedule` as ``step()`` takes it (where a subclass sets more, as
        OneCycleLR's momenta)."""
        return self._schedule(step)

    def get_lr(self) -> list[float]:
        """The next lr of every param group: the chain factor times the closed form.

        Returns:
            One float per param group (``step()`` writes it into ``group["lr"]``).
        """
        if not self._get_lr_called_within_step:
            _warn_get_lr_outside_step()
        step = self.last_epoch
        values = self._step_to(step)
        if self._is_initial:
            self._start_chain(step, values)
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
        factors = self._chain_factors
        if len(factors) == 1:  # the common case, without the cost of a comprehension
            return [factors[0] * values[0]]
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        return [factor * value for factor, value in zip(factors, values)]  # noqa: B905

    def _reset_chain(self, groups: int) -> None:
        """Chain factors of 1."""
        self._chain_factors = [1.0] * groups
        self._unchained = True

    def _factors_changed(self) -> None:
        self._unchained = self._chain_factors.count(1.0) == len(self._chain_factors)

    def _start_chain(self, step: int, values: list[float]) -> None:
        """Chain factors for the step taken by the constructor, from the lrs it finds.

        With ``start_from="initial_lr"`` the lrs found are ignored (factors of 1: the closed
        form). With ``start_from="lr"``, as torch's recursive schedulers (``LinearLR``,
        ``CosineAnnealingLR``, ...): a fresh start (step 0) reads each lr relative to its
        base lr, ``c = lr / initial_lr``, so a scheduler built earlier that scaled the lr
        keeps its factor; a rebuild with ``last_epoch=k`` takes the lr found for the lr of
        the step it lands on, ``c = lr / v(k + 1)``, so that ``last_epoch=k - 1`` after ``k``
        steps resumes exactly (torch's convention, which ``LambdaLR`` follows too).
        ``values`` is the schedule at ``step``.
        """
        if self.start_from == "initial_lr":
            return
        own = values if step > 0 else self.base_lrs
        for i, group in enumerate(self.optimizer.param_groups):
            if own[i] != 0.0:  # a zero holds no information: keep the factor of 1
                self._chain_factors[i] = float(group["lr"]) / float(own[i])
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
        self._reset_chain(len(self.optimizer.param_groups))
        return self._step_to(self.last_epoch)

    def _derive(self) -> None:
        self._factors_changed()


# -------------------------------------------------------------------- WarmupDecayLR


class WarmupDecayLR(_ChainableLR):
    """A warmup to each group's base lr, an optional stable phase, then a decay to ``min_lr``.

    With ``t`` the step (``last_epoch``), ``W = warmup_steps``, ``S = stable_steps``,
    ``T = total_steps`` and ``p = (t - W - S) / (T - W - S)``, the lr of a group with base
    lr ``b`` is

    * ``t < W``: ``b * w(t)``, the warmup going from ``warmup_start_factor * b`` at step 0
      towards ``b``: with ``q = t / W``, ``"linear"`` ``sf + (1 - sf) * q``,
      ``"exponential"`` ``sf ** (1 - q)``, ``"constant"`` ``sf``, ``"cosine"``
      ``sf + (1 - sf) * (1 - cos(pi q)) / 2``, ``"1-sqrt"`` ``sf + (1 - sf) * (1 - sqrt(1 - q))``;
    * ``W <= t < W + S``: ``b`` (the stable phase of a warmup-stable-decay schedule);
    * ``W + S <= t < T``: ``min_lr + (b - min_lr) * s(p)``, where ``s`` goes from 1 to 0:
      ``"cosine"`` ``(1 + cos(2 pi * num_cycles * p)) / 2`` (half a cosine for the default
      ``num_cycles``), ``"linear"`` ``1 - p``, ``"polynomial"`` ``(1 - p) ** power``,
      ``"1-sqrt"`` ``1 - sqrt(p)``, ``"constant"`` 1; ``"exponential"``
      (``gamma ** (t - W - S)``), ``"step"`` (``gamma ** ((t - W - S) // step_size)``) and
      ``"inverse_sqrt"`` (``sqrt(tau / (tau + t - W - S))``) are rescaled affinely,
      ``(r - r(T)) / (1 - r(T))``, so that they too end exactly at ``min_lr``;
    * ``t >= T``: ``min_lr``; with ``end_at="wave"``, the cosine's own value at ``T``,
      ``min_lr + (b - min_lr) * s(1)``, which is ``min_lr`` too unless ``num_cycles`` is not
      an odd multiple of 0.5 (``num_cycles=1``: back at ``b``), as transformers' cosine
      schedules have it at ``T``. ``T == W + S`` leaves no decay: the lr is then that value
      from ``T`` on.

    ``total_steps=None`` makes the decay endless, for the curves that never reach 0 on their
    own: ``"constant"`` (a warmup then the base lr for ever, transformers'
    ``get_constant_schedule_with_warmup``), ``"inverse_sqrt"`` (transformers'
    ``get_inverse_sqrt_schedule`` with its ``timescale``), ``"exponential"`` and ``"step"``
    (torch's ``ExponentialLR`` and ``StepLR`` with a floor); they are then not rescaled, and
    approach ``min_lr`` without reaching it.

    With ``warmup_start_factor=0.0`` and ``min_lr=0.0``, ``decay="cosine"`` and
    ``decay="linear"`` give transformers' ``get_cosine_schedule_with_warmup`` and
    ``get_linear_schedule_with_warmup`` up to ``total_steps``; ``stable_steps`` with
    ``warmup_start_factor=min_lr_ratio=r`` gives its ``get_wsd_schedule``;
    :func:`get_scheduler` builds all of them from transformers' names.

    The default ``warmup_start_factor`` is ``1 / (warmup_steps + 1)``: the linear warmup
    is then the line through 0 one step *before* step 0, ``b * (t + 1) / (W + 1)``, so the
    first optimizer step already trains (transformers' warmup spends it at lr 0) and the
    lr is never 0 during warmup, where chaining could not measure other schedulers.

    Args:
        optimizer: Wrapped optimizer; each group's base lr is its ``initial_lr``
            (its ``lr`` when the scheduler is created with ``last_epoch=-1``).
        warmup_steps: Steps of warmup ``W >= 0``; 0 starts the decay at once.
        total_steps: Step ``T >= 1`` at which the lr reaches ``min_lr`` and stays, with
            ``T >= W + S``; or None for an endless decay (above).
        stable_steps: Steps ``S >= 0`` at the base lr between the warmup and the decay.
            Default: 0.
        warmup: ``"linear"`` (default), ``"exponential"``, ``"constant"``, ``"cosine"`` or
            ``"1-sqrt"``.
        decay: ``"cosine"`` (default), ``"linear"``, ``"polynomial"``, ``"exponential"``,
            ``"step"``, ``"inverse_sqrt"``, ``"constant"`` or ``"1-sqrt"``.
        warmup_start_factor: The warmup's first lr as a fraction of the base lr, in
            ``[0, 1]`` (``(0, 1]`` for ``"exponential"``). Default: ``1 / (W + 1)``.
        min_lr: Absolute final lr (like torch's ``eta_min``), one value or one per param
            group, each in ``[0, base lr]``. Default: 0.0.
        min_lr_ratio: The final lr as a fraction of each group's base lr, in ``[0, 1]``, one
            value or one per group (transformers' ``min_lr_ratio``); instead of ``min_lr``.
        power: Exponent of ``"polynomial"`` decay, ``> 0``. Default: 1.0.
        gamma: Decay rate in ``(0, 1)`` per step (``"exponential"``) or per ``step_size``
            steps (``"step"``); required by those two decays, rejected by the others.
        step_size: Steps per stair of ``"step"`` decay, ``>= 1``; required by it only.
        num_cycles: Cosine waves over the decay, ``> 0``, for ``"cosine"`` only (transformers'
            ``num_cycles``). Default: 0.5, half a cosine.
        end_at: The lr from ``T`` on, for ``"cosine"`` only: ``"min_lr"`` (default), or
            ``"wave"``, where the last wave is at ``T`` (transformers' cosine schedules).
        timescale: ``tau`` of ``"inverse_sqrt"``, an integer ``>= 1``; for it only.
            Default: ``max(W, 1)``.
        start_from: How the lr found in the param groups at construction is read:
            ``"lr"`` (default) as a factor on the schedule, as torch's chainable schedulers
            do (a scheduler built earlier keeps its effect); ``"initial_lr"``: ignored, the
            schedule starts from ``initial_lr``, as transformers' (``LambdaLR``) do. With
            ``last_epoch=k``, ``"lr"`` continues from the lr found, ``"initial_lr"`` from
            the closed form.
        last_epoch: The index of the last step, as in torch. Default: -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1e-3)
        >>> sched = WarmupDecayLR(opt, warmup_steps=100, total_steps=1000, min_lr=1e-5)
        >>> sched.get_last_lr()  # step 0: 1e-3 / 101
        [9.900990099009901e-06]
        >>> wsd = WarmupDecayLR(  # warmup 2, stable 3, 1-sqrt decay over 4, to 10 % of 1.0
        ...     torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), 2, 9,
        ...     stable_steps=3, decay="1-sqrt", warmup_start_factor=0.0, min_lr_ratio=0.1,
        ... )
        >>> [round(lr, 4) for lr in preview(wsd, 11)["lr"][0]]
        [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.55, 0.3636, 0.2206, 0.1, 0.1]

        The lr at milestone steps of each decay is tabulated, and executed as a test, in
        ``docs/schedulers.md``.
    """

    _per_group_state = (*_ChainableLR._per_group_state, "min_lrs")
    _state_defaults: ClassVar[Mapping[str, Any]] = {
        "stable_steps": 0,
        "num_cycles": 0.5,
        "end_at": "min_lr",
        "start_from": "lr",
    }
    # min_lr_ratio: saved by torchkit 2.0's development versions, never read.
    _not_saved = _ChainableLR._not_saved | {"_decay", "_decay_keywords", "min_lr_ratio"}

    def __init__(
        self,
        optimizer: Optimizer,
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
        end_at: str | None = None,
        timescale: int | None = None,
        start_from: str = "lr",
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.stable_steps = _check_int("stable_steps", stable_steps, 0)
        self.warmup = _choice("warmup", warmup, _schedules.WARMUPS)
        self.decay = _choice("decay", decay, _schedules.DECAYS)
        if total_steps is None:
            if decay not in _schedules.ENDLESS_DECAYS:
                raise ValueError(
                    f"decay={decay!r} needs total_steps (the step where it reaches min_lr), got "
                    f"None; only {', '.join(map(repr, _schedules.ENDLESS_DECAYS))} run without one"
                )
            self.total_steps: int | None = None
        else:
            self.total_steps = _check_int("total_steps", total_steps, 1)
            if self.total_steps < self.warmup_steps + self.stable_steps:
                raise ValueError(
                    "total_steps must be at least warmup_steps + stable_steps, got total_steps="
                    f"{total_steps!r}, warmup_steps={warmup_steps!r} and "
                    f"stable_steps={stable_steps!r}"
                )

        if warmup_start_factor is None:
            start_factor = 1.0 / (self.warmup_steps + 1)
        else:
            start_factor = _check_fraction("warmup_start_factor", warmup_start_factor)
            if self.warmup == "exponential" and start_factor == 0.0:
                raise ValueError(
                    "warmup_start_factor must be > 0 for warmup='exponential' (a geometric "
                    f"ramp cannot start at 0), got {warmup_start_factor!r}"
                )
        self.warmup_start_factor = start_factor

        self.power = _as_float("power", power)
        if self.power <= 0.0:
            raise ValueError(f"power must be > 0, got {power!r}")
        self.gamma: float | None = _option_for(
            "gamma", gamma, decay, ("exponential", "step"), _check_rate, needs="a rate in (0, 1)"
        )
        self.step_size: int | None = _option_for(
            "step_size", step_size, decay, ("step",), _check_count, needs="steps per stair"
        )
        cycles = _option_for("num_cycles", num_cycles, decay, ("cosine",), _check_positive)
        self.num_cycles = 0.5 if cycles is None else cycles
        end = _option_for(
            "end_at", end_at, decay, ("cosine",), functools.partial(_choice, choices=_END_AT)
        )
        self.end_at = "min_lr" if end is None else end
        given = _option_for("timescale", timescale, decay, ("inverse_sqrt",), _check_count)
        self._timescale = max(self.warmup_steps, 1) if given is None else given
        self.start_from = _choice("start_from", start_from, _START_FROM)
        self.min_lrs = _floors(optimizer, min_lr, min_lr_ratio)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._bind_decay()
        super().__init__(optimizer, last_epoch)

    def _bind_decay(self) -> None:
        """The decay fraction ``t`` steps into the decay: ``_decay(t, **_decay_keywords)``."""
        start = self.warmup_steps + self.stable_steps
        span = None if self.total_steps is None else self.total_steps - start
        options = {
            "num_cycles": self.num_cycles,
            "power": self.power,
            "gamma": self.gamma,
            "step_size": self.step_size,
            "timescale": self._timescale,
        }
        self._decay, self._decay_keywords = _schedules.bind_decay(self.decay, span, options)

    def _derive(self) -> None:
        super()._derive()
        self._bind_decay()

    def _schedule(self, step: int) -> list[float]:
        if step < self.warmup_steps:
            shape = _schedules.WARMUP_FUNCTIONS[self.warmup]
            w = shape(step, self.warmup_steps, self.warmup_start_factor)
            return [base * w for base in self.base_lrs]
        start = self.warmup_steps + self.stable_steps
        if step < start:
            return list(self.base_lrs)
        if self.total_steps is None or step < self.total_steps:
            s = self._decay(step - start, **self._decay_keywords)
        elif self.end_at == "wave":  # where the last wave is at p = 1
            s = _schedules.cosine_decay(1, 1, num_cycles=self.num_cycles)
        else:
            s = 0.0  # min_lr, exactly: floor + (base - floor) * 0.0 is floor
        bases, floors = self.base_lrs, self.min_lrs
        if len(bases) == 1:  # the common case, without the cost of a comprehension
            return [floors[0] + (bases[0] - floors[0]) * s]
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        return [floor + (base - floor) * s for base, floor in zip(bases, floors)]  # noqa: B905


# ----------------------------------------------------------------------- OneCycleLR


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
    (``max_lrs``, ``initial_lrs``, ``min_lrs`` and the momenta) live on the scheduler (its
    ``state_dict`` holds ``max_lrs`` and the momenta, the others follow from them), so only
    ``initial_lr`` (as the base class requires) is written into the param groups. At
    construction the lr is set from ``max_lr`` (the optimizer's own lr is ignored, as in
    torch), so the chain factor starts at 1. ``load_state_dict`` restores the momentum of the
    interrupted step like the lr (see :meth:`WarmupDecayLR.load_state_dict`), and refuses a
    state that cycles a momentum (or ``beta1``) some param group lacks.

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

    # It sets its lr from max_lr, as torch's, whatever lr it finds (and rebuilds at the
    # closed form, as torch's).
    start_from = "initial_lr"
    _per_group_state = (*_ChainableLR._per_group_state, "max_lrs")
    # Derived from max_lrs, the momenta and the phase arguments (torchkit 1 saved them).
    _not_saved = _ChainableLR._not_saved | {
        "initial_lrs",
        "min_lrs",
        "_lr_points",
        "_momentum_points",
        "_phase_ends",
    }

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
        self.div_factor = _check_positive("div_factor", div_factor)
        self.final_div_factor = _check_positive("final_div_factor", final_div_factor)
        self.pct_start = pct_start
        self.three_phase = bool(three_phase)
        self.max_lrs = _per_group("max_lr", max_lr, optimizer)
        self.cycle_momentum = bool(cycle_momentum)
        self.use_beta1 = "betas" in optimizer.defaults
        self.max_momentums: list[float] = []
        self.base_momentums: list[float] = []
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and not self.use_beta1:
                raise ValueError(
                    "cycle_momentum=True needs an optimizer with 'momentum' or 'betas' in its "
                    f"defaults; {type(optimizer).__name__} has neither (pass "
                    "cycle_momentum=False)"
                )
            self.max_momentums = _per_group("max_momentum", max_momentum, optimizer)
            self.base_momentums = _per_group("base_momentum", base_momentum, optimizer)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        self._build_cycle()

        # Everything is checked: only now touch the optimizer (torch writes initial_lr before
        # it checks the momenta, so a failed construction leaves it changed).
        if last_epoch == -1:
            for group, start in zip(optimizer.param_groups, self.initial_lrs, strict=True):
                group["initial_lr"] = start
        super().__init__(optimizer, last_epoch)

    def _build_cycle(self) -> None:
        """The derived attributes: each group's lr and momentum at the ends of the phases."""
        self._phase_ends = _schedules.one_cycle_phase_ends(
            self.total_steps, self.pct_start, self.three_phase
        )
        self.initial_lrs = [peak / self.div_factor for peak in self.max_lrs]
        self.min_lrs = [start / self.final_div_factor for start in self.initial_lrs]
        lr_ends = zip(self.initial_lrs, self.max_lrs, self.min_lrs, strict=True)
        momentum_ends = zip(self.max_momentums, self.base_momentums, strict=True)
        if self.three_phase:
            self._lr_points = [[start, peak, start, end] for start, peak, end in lr_ends]
            self._momentum_points = [[high, low, high, high] for high, low in momentum_ends]
        else:
            self._lr_points = [[start, peak, end] for start, peak, end in lr_ends]
            self._momentum_points = [[high, low, high] for high, low in momentum_ends]

    def _derive(self) -> None:
        super()._derive()
        self._build_cycle()

    def _apply_state(self, state: dict[str, Any]) -> None:
        """Also restore the momentum (or ``beta1``) of the interrupted step, like the lr,
        into every param group that still holds the momentum this scheduler wrote last."""
        written = self._annealed(self._momentum_points, *self._phase(self.last_epoch))
        keep = _groups_holding(self.optimizer, _momentum_of, written)
        super()._apply_state(state)
        momenta = self._annealed(self._momentum_points, *self._phase(self.last_epoch))
        for group, momentum, restore in zip(self.optimizer.param_groups, momenta, keep):  # noqa: B905
            if restore:
                _set_momentum(group, momentum, self.use_beta1)

    def _check_loaded_state(self, state: dict[str, Any]) -> None:
        if not state["cycle_momentum"]:
            return
        groups = self.optimizer.param_groups
        for key in ("max_momentums", "base_momentums"):
            _check_per_group_entry(state, key, len(groups))
        needed = "betas" if state["use_beta1"] else "momentum"
        for i, group in enumerate(groups):
            if needed not in group:
                raise ValueError(
                    f"the state_dict cycles {needed!r} but param group {i} of "
                    f"{type(self.optimizer).__name__} has no {needed!r}"
                )

    def _phase(self, step: int) -> tuple[int, float]:
        """``(phase, fraction of it done)`` at ``step``; past ``total_steps``, torch's error."""
        if step > self.total_steps:
            raise ValueError(
                f"Tried to step {step} times. The specified number of total steps is "
                f"{self.total_steps}"
            )
        return _schedules.one_cycle_phase(step, self._phase_ends)

    def _annealed(self, points: list[list[float]], phase: int, pct: float) -> list[float]:
        """Every group's value ``pct`` into ``phase``, between its ``points`` (phase ends)."""
        anneal = _schedules.ANNEALS[self.anneal_strategy]
        return [anneal(p[phase], p[phase + 1], pct) for p in points]

    def _schedule(self, step: int) -> list[float]:
        return self._annealed(self._lr_points, *self._phase(step))

    def _step_to(self, step: int) -> list[float]:
        """The lrs at ``step``, having set its momenta: one pass for both, as torch's."""
        phase, pct = self._phase(step)
        if not self.cycle_momentum:
            return self._annealed(self._lr_points, phase, pct)
        anneal = _schedules.ANNEALS[self.anneal_strategy]
        lrs = []
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        for group, p, m in zip(self.optimizer.param_groups, self._lr_points, self._momentum_points):  # noqa: B905
            lrs.append(anneal(p[phase], p[phase + 1], pct))
            _set_momentum(group, anneal(m[phase], m[phase + 1], pct), self.use_beta1)
        return lrs


def _set_momentum(group: dict[str, Any], momentum: float, use_beta1: bool) -> None:
    """Write ``momentum`` into ``group`` (as ``betas[0]`` for Adam-like optimizers)."""
    if use_beta1:
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
        start_from: ``"lr"`` (default) or ``"initial_lr"``: how the lr found in the param
            groups at construction is read (see :class:`WarmupDecayLR`).

    Example:
        >>> import torch
        >>> opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = NoamLR(opt, d_model=512, warmup_steps=4)
        >>> [f"{lr:.4g}" for lr in preview(sched, 7)["lr"][0]]  # steps 0 to 6, peak at 4
        ['0.005524', '0.005524', '0.01105', '0.01657', '0.0221', '0.01976', '0.01804']
    """

    _state_defaults: ClassVar[Mapping[str, Any]] = {"start_from": "lr"}

    def __init__(
        self,
        optimizer: Optimizer,
        d_model: int,
        warmup_steps: int,
        factor: float = 1.0,
        last_epoch: int = -1,
        *,
        start_from: str = "lr",
    ) -> None:
        _check_optimizer(optimizer)
        self.d_model = _check_int("d_model", d_model, 1)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 1)
        self.factor = _as_float("factor", factor)
        if self.factor <= 0.0:
            raise ValueError(f"factor must be > 0, got {factor!r}")
        self.start_from = _choice("start_from", start_from, _START_FROM)
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        super().__init__(optimizer, last_epoch)

    def _schedule(self, step: int) -> list[float]:
        rate = _schedules.noam_factor(step, self.d_model, self.warmup_steps, self.factor)
        return [base * rate for base in self.base_lrs]


# ------------------------------------------------------------------ CosineRestartsLR

# CosineRestartsLR's memo of the cycle of the previous step, before there is one: no step is
# in it (see CosineRestartsLR._locate).
_NO_CYCLE: tuple[float, float, float, float, list[float]] = (1.0, 0.0, 0.0, 1.0, [])


class CosineRestartsLR(_ChainableLR):
    """Cosine annealing with restarts: timm's cycles, transformers' hard restarts, a warmup.

    Each cycle is a cosine from the cycle's peak down towards ``min_lr``, and the lr jumps
    back up at the start of the next one. The cycles are given in one of two ways:

    * ``cycle_steps`` (timm's ``CosineLRScheduler``, torch's ``CosineAnnealingWarmRestarts``):
      cycle ``i`` lasts ``cycle_steps * cycle_mul**i`` steps and peaks at
      ``base * cycle_decay**i``; after ``cycle_limit`` cycles (None: never) the lr is
      ``min_lr``. Inside a cycle of length ``L``, ``d`` steps in, the lr is
      ``min_lr + (peak - min_lr) * (1 + cos(pi * d**k / L**k)) / 2``, ``k = k_decay``;
    * ``total_steps`` and ``num_cycles`` (transformers'
      ``get_cosine_with_hard_restarts_schedule_with_warmup``): ``num_cycles`` equal cycles
      fill the steps up to ``total_steps``, from which the lr is ``min_lr``.

    The warmup is timm's: ``warmup_steps`` of a straight line from ``warmup_start_lr`` to
    the base lr. With ``warmup_prefix=True`` the cycles start after it; with ``False``
    (timm's default) they start at step 0 and the warmup replaces their first steps. The
    floats are those of timm's and transformers' formulas, computed in their order: timm's
    schedule equals this one step for step (timm's ``t`` is this scheduler's step count,
    whether timm is stepped per epoch or per update), except where timm's floored logarithm
    puts the first step of a growing cycle in the cycle before (``cycle_mul=3``: step 121 of
    ``cycle_steps=1``, steps 363 and 88,572 of ``cycle_steps=3``, where timm's lr is the
    previous cycle's minimum): there the cycle is torch's, and the lr its peak.

    Args:
        optimizer: Wrapped optimizer; each group's base lr (``initial_lr``) is its peak.
        cycle_steps: Length of the first cycle, a number > 0 (timm's ``t_initial``).
        total_steps: With ``num_cycles``, instead of ``cycle_steps``: the step at which the
            last cycle ends, an integer beyond the warmup (when it is a prefix).
        num_cycles: With ``total_steps``: how many equal cycles, a number > 0 (a fractional
            last cycle is cut at ``total_steps``).
        cycle_mul: Each cycle is ``cycle_mul`` times as long as the one before, >= 1.
            Default: 1.0. Only with ``cycle_steps``.
        cycle_decay: Each cycle peaks ``cycle_decay`` times lower, > 0. Default: 1.0.
        cycle_limit: Number of cycles, an integer >= 1, or None for no limit. Default:
            None (timm's default is 1). Only with ``cycle_steps``.
        min_lr: Absolute lower end of every cycle, one value or one per param group, each in
            ``[0, base lr]``. Default: 0.0.
        k_decay: Exponent of the k-decay variant, > 0; 1 is the plain cosine. Default: 1.0.
        warmup_steps: Steps of linear warmup, an integer >= 0. Default: 0.
        warmup_start_lr: Absolute lr at step 0 of the warmup, one value or one per group,
            >= 0 (timm's ``warmup_lr_init``); only with ``warmup_steps > 0``. Default: 0.0.
        warmup_prefix: Start the cycles after the warmup (True) or at step 0 (False).
            Default: False.
        start_from: ``"lr"`` (default) or ``"initial_lr"``: how the lr found in the param
            groups at construction is read (see :class:`WarmupDecayLR`).
        last_epoch: The index of the last step, as in torch. Default: -1.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> sched = CosineRestartsLR(opt, 4, cycle_mul=2.0, cycle_decay=0.5)  # 4, 8, 16, ...
        >>> [round(lr, 4) for lr in preview(sched, 13)["lr"][0]]
        [1.0, 0.8536, 0.5, 0.1464, 0.5, 0.481, 0.4268, 0.3457, 0.25, 0.1543, 0.0732, 0.019, 0.25]
        >>> hard = CosineRestartsLR(opt, total_steps=8, num_cycles=2)  # transformers' restarts
        >>> [round(lr, 4) for lr in preview(hard, 10)["lr"][0]]
        [1.0, 0.8536, 0.5, 0.1464, 1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """

    _per_group_state = (*_ChainableLR._per_group_state, "min_lrs", "warmup_start_lrs")
    _not_saved = _ChainableLR._not_saved | {"_cycle_memo"}

    def __init__(
        self,
        optimizer: Optimizer,
        cycle_steps: float | None = None,
        *,
        total_steps: int | None = None,
        num_cycles: float | None = None,
        cycle_mul: float = 1.0,
        cycle_decay: float = 1.0,
        cycle_limit: int | None = None,
        min_lr: float | Sequence[float] = 0.0,
        k_decay: float = 1.0,
        warmup_steps: int = 0,
        warmup_start_lr: float | Sequence[float] = 0.0,
        warmup_prefix: bool = False,
        start_from: str = "lr",
        last_epoch: int = -1,
    ) -> None:
        _check_optimizer(optimizer)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        if not isinstance(warmup_prefix, bool):
            raise ValueError(f"warmup_prefix must be a bool, got {warmup_prefix!r}")
        self.warmup_prefix = warmup_prefix
        fitted = total_steps is not None or num_cycles is not None
        if (cycle_steps is None) == (not fitted) or (
            fitted and (total_steps is None or num_cycles is None)
        ):
            raise ValueError(
                "give cycle_steps (timm's cycles), or total_steps and num_cycles (transformers' "
                f"hard restarts); got cycle_steps={cycle_steps!r}, total_steps={total_steps!r}, "
                f"num_cycles={num_cycles!r}"
            )
        self.cycle_steps = (
            None if cycle_steps is None else _check_positive("cycle_steps", cycle_steps)
        )
        self.total_steps = (
            None if total_steps is None else _check_int("total_steps", total_steps, 1)
        )
        self.num_cycles = None if num_cycles is None else _check_positive("num_cycles", num_cycles)
        if (
            self.total_steps is not None
            and self.warmup_prefix
            and self.total_steps <= self.warmup_steps
        ):
            raise ValueError(
                "total_steps must be greater than warmup_steps when the warmup is a prefix, "
                f"got total_steps={total_steps!r} and warmup_steps={warmup_steps!r}"
            )
        self.cycle_mul = _as_float("cycle_mul", cycle_mul)
        if self.cycle_mul < 1.0:
            raise ValueError(
                f"cycle_mul must be >= 1 (shrinking cycles end after finitely many steps), got "
                f"{cycle_mul!r}"
            )
        if cycle_limit is not None:
            cycle_limit = _check_int("cycle_limit", cycle_limit, 1)
        if fitted and (self.cycle_mul != 1.0 or cycle_limit is not None):
            raise ValueError(
                "cycle_mul and cycle_limit are only used with cycle_steps; num_cycles fixes the "
                f"cycles, got cycle_mul={cycle_mul!r} and cycle_limit={cycle_limit!r}"
            )
        self.cycle_limit = cycle_limit
        self.cycle_decay = _check_positive("cycle_decay", cycle_decay)
        self.k_decay = _check_positive("k_decay", k_decay)
        self.min_lrs = _floors(optimizer, min_lr, None)
        self.warmup_start_lrs = _per_group("warmup_start_lr", warmup_start_lr, optimizer)
        if any(start < 0.0 for start in self.warmup_start_lrs):
            raise ValueError(f"warmup_start_lr must be >= 0, got {warmup_start_lr!r}")
        if self.warmup_steps == 0 and any(start != 0.0 for start in self.warmup_start_lrs):
            raise ValueError(
                f"warmup_start_lr is only used with warmup_steps > 0, got warmup_start_lr="
                f"{warmup_start_lr!r} with warmup_steps=0"
            )
        self.start_from = _choice("start_from", start_from, _START_FROM)
        self._cycle_memo = _NO_CYCLE
        last_epoch = _check_int("last_epoch", last_epoch, -1)
        super().__init__(optimizer, last_epoch)

    def _derive(self) -> None:
        super()._derive()
        self._cycle_memo = _NO_CYCLE  # the cycles may differ from those of the state loaded

    def _schedule(self, step: int) -> list[float]:
        warmup = self.warmup_steps
        if step < warmup:
            # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
            return [
                start + step * ((base - start) / warmup)
                for base, start in zip(self.base_lrs, self.warmup_start_lrs)  # noqa: B905
            ]
        t = step - warmup if self.warmup_prefix else step
        if self.cycle_steps is None:  # num_cycles equal cycles up to total_steps
            span = self.total_steps - (warmup if self.warmup_prefix else 0)  # type: ignore[operator]
            if t >= span:
                return list(self.min_lrs)
            cycle, done = _schedules.fitted_cycle(t, span, self.num_cycles)  # type: ignore[arg-type]
            cosine = _schedules.cycle_cosine(done, 1.0, self.k_decay)
            gamma = self.cycle_decay**cycle  # timm's order of operations, below too
            return [
                floor + 0.5 * (base * gamma - floor) * cosine
                for base, floor in zip(self.base_lrs, self.min_lrs)  # noqa: B905
            ]
        low, high, start, length, halves = self._cycle_memo
        if not low <= t <= high:  # not in the cycle of the previous step
            low, high, start, length, halves = self._cycle_memo = self._locate(t)
        if self.k_decay == 1.0:  # cycle_cosine's, without a call: the same floats
            cosine = 1 + math.cos(math.pi * (t - start) / length)
        else:
            cosine = _schedules.cycle_cosine(t - start, length, self.k_decay)
        floors = self.min_lrs
        if len(floors) == 1:  # the common case, without the cost of a comprehension
            return [floors[0] + halves[0] * cosine]
        return [floor + half * cosine for floor, half in zip(floors, halves)]  # noqa: B905

    def _locate(self, t: float) -> tuple[float, float, float, float, list[float]]:
        """``(low, high, start, length, halves)`` of timm's cycle at ``t``: the steps from
        ``low`` to ``high`` are in it whatever the rounding of the floats that locate cycles
        (those at least one away from its ends; past the last cycle, every later step), and
        ``min_lr + halves * cosine`` is timm's ``min_lr + 0.5 * (peak - min_lr) * cosine``
        (``halves`` is 0 past the last cycle: the lr is then ``min_lr``)."""
        cycle, length, start = _schedules.timm_cycle(t, self.cycle_steps, self.cycle_mul)  # type: ignore[arg-type]
        if self.cycle_limit is not None and cycle >= self.cycle_limit:
            return t, math.inf, start, length, [0.0] * len(self.min_lrs)
        gamma = self.cycle_decay**cycle
        halves = [
            0.5 * (base * gamma - floor)
            for base, floor in zip(self.base_lrs, self.min_lrs)  # noqa: B905
        ]
        return start + 1, start + length - 1, start, length, halves


# ----------------------------------------------------------- plateau and chaining


class ReduceLROnPlateau(_CheckedState, _TorchReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau``, checked, resumable, and meant to compose.

    Alone, it is torch's class: the same decisions for any metric sequence (``mode``,
    ``threshold`` and ``threshold_mode``, ``patience``, ``cooldown``), the same cut
    ``lr = max(lr * factor, min_lr)`` per group, skipped when it would change the lr by no
    more than ``eps``. A cut multiplies whatever lr the group holds, so stepped after a
    torchkit scheduler (``warmup.step(); plateau.step(val_loss)``, or both in a
    :class:`ChainedScheduler`) it acts as a factor on that schedule: the torchkit scheduler
    measures the cut as a change of its chain factor and carries it on, so the lr is
    ``schedule(t) * cuts``. ``min_lr`` bounds the cuts, not the schedule: a cut never takes
    the lr below it, and a schedule that decays further takes the product with it.

    What it adds to torch's: arguments are checked (``ValueError`` naming the argument);
    ``state_dict`` names the class; ``load_state_dict`` refuses a state of another class or
    number of param groups before writing anything, and restores the lr of the interrupted
    step into the param groups whose lr nobody changed since this scheduler last looked (as
    torchkit's schedulers do; see :meth:`WarmupDecayLR.load_state_dict`), which makes the
    "load the optimizer, then build and load" order exact for a chain ending with it.

    Args:
        optimizer: Wrapped optimizer.
        mode: ``"min"`` (default; a loss) or ``"max"`` (an accuracy).
        factor: The cut ``new_lr = lr * factor``, in ``[0, 1)``. Default: 0.1.
        patience: Epochs without improvement tolerated before a cut, an integer >= 0.
            Default: 10.
        threshold: What counts as an improvement over the best value, >= 0. Default: 1e-4.
        threshold_mode: ``"rel"`` (default) or ``"abs"``.
        cooldown: Epochs after a cut during which bad epochs are not counted, an integer
            >= 0. Default: 0.
        min_lr: Lower bound of the cuts, one value or one per param group, >= 0. Default: 0.
        eps: A cut changing the lr by no more than ``eps`` is skipped, >= 0. Default: 1e-8.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> warmup = WarmupDecayLR(opt, 4, None, decay="constant", warmup_start_factor=0.2)
        >>> plateau = ReduceLROnPlateau(opt, factor=0.5, patience=1)
        >>> lrs = []
        >>> for loss in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:  # no progress after the first epoch
        ...     opt.step()
        ...     warmup.step()
        ...     plateau.step(loss)
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4))
        >>> lrs  # the cut at step 3 halves the rest of the warmup (0.8 -> 0.4, 1.0 -> 0.5)
        [0.4, 0.6, 0.4, 0.5, 0.25, 0.25]
    """

    _per_group_state = ("_last_lr", "min_lrs")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float | Sequence[float] = 0,
        eps: float = 1e-8,
    ) -> None:
        _check_optimizer(optimizer)
        mode = _choice("mode", mode, ("min", "max"))
        threshold_mode = _choice("threshold_mode", threshold_mode, ("rel", "abs"))
        cut = _as_float("factor", factor)
        if not 0.0 <= cut < 1.0:
            raise ValueError(f"factor must be in [0, 1), got {factor!r}")
        patience = _check_int("patience", patience, 0)
        cooldown = _check_int("cooldown", cooldown, 0)
        threshold = _check_nonnegative("threshold", threshold)
        eps = _check_nonnegative("eps", eps)
        floors = _per_group("min_lr", min_lr, optimizer)
        if any(floor < 0.0 for floor in floors):
            raise ValueError(f"min_lr must be >= 0, got {min_lr!r}")
        super().__init__(
            optimizer,
            mode=mode,  # type: ignore[arg-type]
            factor=cut,
            patience=patience,
            threshold=threshold,
            threshold_mode=threshold_mode,  # type: ignore[arg-type]
            cooldown=cooldown,
            min_lr=floors if isinstance(min_lr, (list, tuple)) else floors[0],
            eps=eps,
        )


def _improves(
    current: float, best: float, mode: str, threshold_mode: str, threshold: float
) -> bool:
    """Is ``current`` better than ``best`` by more than ``threshold`` (torch's plateau rule)?"""
    if mode == "min":
        bar = best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold
        return current < bar
    bar = best * (1.0 + threshold) if threshold_mode == "rel" else best + threshold
    return current > bar


class GreedyLR(_CheckedState, LRScheduler):
    """transformers' ``GreedyLR``: raises the lr while the metric improves, lowers it on a plateau.

    Each ``step(metrics)`` compares the metric (or its running mean over the last
    ``window_size`` values, with ``smooth=True``) with the best one so far, as
    :class:`ReduceLROnPlateau` does. After ``patience + 1`` improvements in a row every group's
    lr becomes ``min(lr / factor, max_lr)``, and the next ``warmup`` steps are not counted;
    after ``patience + 1`` steps in a row without improvement it becomes
    ``max(lr * factor, min_lr)``, and the next ``cooldown`` steps are not counted. A change
    of no more than ``eps`` is skipped. When a decrease finds every group at its ``min_lr``
    for the ``reset_start``-th time (an increase restarts that count), the scheduler resets:
    it undoes its own changes to the lr and forgets the best metric, the counters and the
    window. The decisions, lrs and reset are transformers' for any metric sequence.

    Like :class:`ReduceLROnPlateau`, a change multiplies whatever lr the group holds, so
    stepped after a torchkit scheduler (``warmup.step(); greedy.step(loss)``, or both in a
    :class:`ChainedScheduler`) it acts as a factor on that schedule; ``min_lr`` and
    ``max_lr`` bound the changes, not the schedule. Its reset divides out the changes it
    made: alone, that is the lr it found when built (transformers' reset, to rounding).

    Where it differs from transformers, on purpose: arguments are checked (``ValueError``
    naming the argument), including a base lr outside ``[min_lr, max_lr]`` (transformers
    accepts it, and its decreases, or increases, then do nothing: its default
    ``min_lr=1e-3`` is above most fine-tuning lrs); ``step()`` takes no ``epoch`` and there
    is no ``verbose`` (torch dropped both from its schedulers); the ``state_dict`` is
    torchkit's (plain data, class name, exact resume).

    Args:
        optimizer: Wrapped optimizer.
        mode: ``"min"`` (default; a loss) or ``"max"`` (an accuracy).
        factor: The change: ``lr * factor`` down, ``lr / factor`` up, in ``(0, 1)``.
            Default: 0.95.
        patience: Steps in a row tolerated before a change, an integer >= 0 (the change
            comes on the ``patience + 1``-th). Default: 10.
        threshold: What counts as an improvement over the best value, >= 0. Default: 1e-6.
        threshold_mode: ``"abs"`` (default) or ``"rel"``.
        cooldown: Steps after a decrease that are not counted, an integer >= 0. Default: 0.
        warmup: Steps after an increase that are not counted, an integer >= 0 (it does not
            warm the lr up: chain a :class:`WarmupDecayLR` for that). Default: 0.
        min_lr: Lower bound of the decreases, one value or one per param group, >= 0.
            Default: 1e-3.
        max_lr: Upper bound of the increases, one value or one per param group, at least
            the group's base lr. Default: 1.0.
        eps: A change of no more than ``eps`` is skipped, >= 0. Default: 1e-8.
        smooth: Compare the running mean of the last ``window_size`` metrics instead of the
            metric. Default: False.
        window_size: Length of that window, an integer >= 1. Default: 50.
        reset_start: Decreases that find every group at ``min_lr`` before the reset, an
            integer >= 1 (they are decisions, ``patience + 1 + cooldown`` steps apart at
            least, not steps). Default: 500.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> greedy = GreedyLR(opt, factor=0.5, patience=1, min_lr=0.05, max_lr=0.4)
        >>> lrs = []
        >>> for loss in [4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        ...     greedy.step(loss)
        ...     lrs.append(opt.param_groups[0]["lr"])
        >>> lrs  # up after 2 improvements in a row (to max_lr), down after 2 steps without
        [0.1, 0.2, 0.2, 0.4, 0.4, 0.2, 0.2, 0.1]
    """

    _per_group_state = ("_last_lr", "min_lrs", "max_lrs", "_scales")

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.95,
        patience: int = 10,
        threshold: float = 1e-6,
        threshold_mode: str = "abs",
        cooldown: int = 0,
        warmup: int = 0,
        min_lr: float | Sequence[float] = 1e-3,
        max_lr: float | Sequence[float] = 1.0,
        eps: float = 1e-8,
        smooth: bool = False,
        window_size: int = 50,
        reset_start: int = 500,
    ) -> None:
        _check_optimizer(optimizer)
        self.mode = _choice("mode", mode, ("min", "max"))
        self.threshold_mode = _choice("threshold_mode", threshold_mode, ("abs", "rel"))
        self.factor = _check_rate("factor", factor)
        self.patience = _check_int("patience", patience, 0)
        self.cooldown = _check_int("cooldown", cooldown, 0)
        self.warmup = _check_int("warmup", warmup, 0)
        self.window_size = _check_count("window_size", window_size)
        self.reset_start = _check_count("reset_start", reset_start)
        if not isinstance(smooth, bool):
            raise TypeError(f"smooth must be a bool, got {type(smooth).__name__}")
        self.smooth = smooth
        self.threshold = _check_nonnegative("threshold", threshold)
        self.eps = _check_nonnegative("eps", eps)
        self.min_lrs = _per_group("min_lr", min_lr, optimizer)
        self.max_lrs = _per_group("max_lr", max_lr, optimizer)
        for i, group in enumerate(optimizer.param_groups):
            base = float(group.get("initial_lr", group["lr"]))
            low, high = self.min_lrs[i], self.max_lrs[i]
            if not 0.0 <= low <= base <= high:
                raise ValueError(
                    f"param group {i} needs 0 <= min_lr <= its base lr <= max_lr, got "
                    f"min_lr={low!r}, base lr {base!r}, max_lr={high!r} (pass min_lr and "
                    "max_lr around the optimizer's lr)"
                )
        self.optimizer = optimizer
        self.last_epoch = 0
        self._last_lr = _group_lrs(optimizer)
        # What the changes made so far multiplied each group's lr by (the reset divides it out).
        self._scales = [1.0] * len(optimizer.param_groups)
        self._restart()

    def _restart(self) -> None:
        """Forget the best metric, the counters and the smoothing window."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.num_good_epochs = 0
        self.cooldown_counter = 0
        self.warmup_counter = 0
        self.resets_in = self.reset_start
        self._window: list[float] = []
        self._window_sum = 0.0

    def step(self, metrics: float | torch.Tensor) -> None:  # type: ignore[override]
        """Take the metric of this step (a number or a one-element tensor) and adjust the lr.

        Args:
            metrics: The monitored value (validation loss, accuracy, ...).
        """
        current = metrics
        if type(current) is not float:
            current = float(metrics.item() if isinstance(metrics, torch.Tensor) else metrics)
        if self.smooth:  # transformers' running sum, for its floats
            self._window.append(current)
            self._window_sum += current
            if len(self._window) > self.window_size:
                self._window_sum -= self._window.pop(0)
            current = self._window_sum / len(self._window)
        self.last_epoch += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        elif self.warmup_counter > 0:
            self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            if _improves(current, self.best, self.mode, self.threshold_mode, self.threshold):
                self.best = current
                self.num_bad_epochs = 0
                self.num_good_epochs += 1
            else:
                self.num_bad_epochs += 1
                self.num_good_epochs = 0
            if self.num_good_epochs > self.patience:
                self._change(self.max_lrs, up=True)
                self.resets_in = self.reset_start
                self.warmup_counter = self.warmup
                self.num_good_epochs = 0
            elif self.num_bad_epochs > self.patience:
                at_floor = self._change(self.min_lrs, up=False)
                if at_floor:
                    self.resets_in -= 1
                    if self.resets_in <= 0:
                        self._reset()
                # After a reset too, as transformers does.
                self.cooldown_counter = self.cooldown
                self.num_bad_epochs = 0
        self._last_lr = _group_lrs(self.optimizer)

    def _change(self, bounds: list[float], up: bool) -> bool:
        """Move every group's lr one factor up or down within ``bounds``; are all groups then
        at their bound?"""
        at_bound = True
        for i, group in enumerate(self.optimizer.param_groups):
            old = float(group["lr"])
            if up:
                new = min(old / self.factor, bounds[i])
                moves = new - old > self.eps
            else:
                new = max(old * self.factor, bounds[i])
                moves = old - new > self.eps
            if moves:
                _set_group_value(group, "lr", new)
                self._scales[i] *= new / old
            now = float(group["lr"])
            at_bound = at_bound and (now >= bounds[i] if up else now <= bounds[i])
        return at_bound

    def _reset(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            _set_group_value(group, "lr", float(group["lr"]) / self._scales[i])
            self._scales[i] = 1.0
        self._restart()


def _takes_metrics(scheduler: object) -> bool:
    """Does ``scheduler.step`` want a metric (a plateau, a GreedyLR, or a chain holding one)?"""
    if isinstance(scheduler, (_TorchReduceLROnPlateau, GreedyLR)):
        return True
    if isinstance(scheduler, ChainedScheduler):
        return True in scheduler._takes_metrics
    return False


class ChainedScheduler(_CheckedState, _TorchChainedScheduler):
    """torch's ``ChainedScheduler`` that also chains ``ReduceLROnPlateau`` and passes it the metric.

    ``step(metrics)`` steps every member in order, giving ``metrics`` to those that take
    one (a ``ReduceLROnPlateau``, torch's or torchkit's, a :class:`GreedyLR`, or a nested
    chain holding one) and
    calling the others' ``step()``. ``ChainedScheduler([warmup, plateau])`` is then
    warmup-then-plateau in one object, stepped once per epoch with the validation loss,
    saved and resumed as one. Without a member that takes a metric it is torch's class.

    Its ``state_dict`` holds the members' states (plain data, as torch's), the class name
    and the param groups' lrs; ``load_state_dict`` also takes the state of torch's
    ``ChainedScheduler`` over the same members. It checks every member's state before it
    loads any (a refused state leaves the chain, its members and the optimizer as they
    were; the state of a member that is not torchkit's can only be checked to be a
    mapping), then restores the lr of the interrupted step where the constructors
    overwrote it: resuming is exact whether the optimizer's state is loaded before or after
    the chain is built, whatever the members.

    Args:
        schedulers: The schedulers, all on the same optimizer, stepped in this order.
        optimizer: Their optimizer. Default: the first scheduler's.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        >>> chain = ChainedScheduler(
        ...     [
        ...         WarmupDecayLR(opt, 4, None, decay="constant", warmup_start_factor=0.2),
        ...         ReduceLROnPlateau(opt, factor=0.5, patience=1),
        ...     ]
        ... )
        >>> lrs = []
        >>> for loss in [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]:
        ...     opt.step()
        ...     chain.step(loss)
        ...     lrs.append(round(chain.get_last_lr()[0], 4))
        >>> lrs
        [0.4, 0.6, 0.4, 0.5, 0.25, 0.25]
    """

    _per_group_state = ("_last_lr",)
    # Which members step with the metric: fixed by the members, not state.
    _not_saved = frozenset({"_takes_metrics"})

    def __init__(
        self, schedulers: Sequence[LRScheduler], optimizer: Optimizer | None = None
    ) -> None:
        # torch's checks, without its refusal of ReduceLROnPlateau.
        if len(schedulers) < 1:
            raise ValueError("ChainedScheduler needs at least one scheduler, got none")
        for index, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler):
                raise TypeError(
                    f"schedulers[{index}] must be an LRScheduler, got {type(scheduler).__name__}"
                )
        optimizer = _check_optimizer(optimizer or schedulers[0].optimizer)
        for index, scheduler in enumerate(schedulers):
            if scheduler.optimizer is not optimizer:
                raise ValueError(
                    f"every scheduler must wrap the same optimizer, but schedulers[{index}] "
                    f"({type(scheduler).__name__}) wraps another one"
                )
        self._schedulers = list(schedulers)
        self.optimizer = optimizer
        self._last_lr = _group_lrs(optimizer)
        self._takes_metrics = [_takes_metrics(scheduler) for scheduler in self._schedulers]

    def step(self, metrics: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Step every scheduler, passing ``metrics`` to those that take it.

        Args:
            metrics: The metric for the members that take one (validation loss, ...);
                required when there is such a member, rejected when there is none.
        """
        takes = self._takes_metrics
        if (metrics is None) == (True in takes):
            if metrics is None:
                index = takes.index(True)
                raise TypeError(
                    f"step() needs metrics: schedulers[{index}] "
                    f"({type(self._schedulers[index]).__name__}) takes one"
                )
            raise ValueError(
                "step() got metrics but no scheduler of this chain takes one (only "
                "ReduceLROnPlateau and GreedyLR do)"
            )
        # Equal lengths by construction; zip(strict=) would cost a keyword call per step.
        for scheduler, wants in zip(self._schedulers, takes):  # noqa: B905
            if wants:
                scheduler.step(metrics)  # type: ignore[call-arg]
            else:
                scheduler.step()
        # The last member to step took its copy of the lrs the chain leaves.
        self._last_lr = self._schedulers[-1].get_last_lr()

    def _state_keys(self) -> set[str]:
        return set(self.__dict__) - {"optimizer", "_schedulers", *self._not_saved}

    def _checked_state(self, state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        members = state_dict.get("_schedulers")
        if not isinstance(members, (list, tuple)) or len(members) != len(self._schedulers):
            count = len(members) if isinstance(members, (list, tuple)) else members
            raise ValueError(
                f"the state_dict holds {count!r} scheduler states but this chain has "
                f"{len(self._schedulers)} schedulers"
            )
        state, lrs = super()._checked_state(
            {k: v for k, v in state_dict.items() if k != "_schedulers"}
        )
        checked = []
        for index, (scheduler, member) in enumerate(zip(self._schedulers, members, strict=True)):
            if isinstance(scheduler, _CheckedState):
                checked.append(scheduler._checked_state(member)[0])
            elif isinstance(member, Mapping):
                checked.append(copy.deepcopy(dict(member)))
            else:
                raise TypeError(
                    f"the state of schedulers[{index}] must be a dict, got {type(member).__name__}"
                )
        state["_schedulers"] = checked
        return state, lrs

    def _apply_state(self, state: dict[str, Any]) -> None:
        """Load the members' states (no member restores an lr: the chain does), torch's
        members first, as their ``load_state_dict`` checks nothing and may raise."""
        members = list(zip(self._schedulers, state.pop("_schedulers"), strict=True))
        for scheduler, member in members:
            if not isinstance(scheduler, _CheckedState):
                scheduler.load_state_dict(member)
        for scheduler, member in members:
            if isinstance(scheduler, _CheckedState):
                scheduler._apply_state(member)
        self.__dict__.update(state)


# ---------------------------------------------------------------------- get_scheduler

# transformers' SchedulerType values that get_scheduler accepts, in transformers' order.
SCHEDULER_NAMES: tuple[str, ...] = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)

# The scheduler_specific_kwargs of each name (transformers' keyword arguments of the
# matching get_*_schedule function, or of ReduceLROnPlateau) and their defaults; _REQUIRED
# marks a required one.
_REQUIRED = object()
_FACTORY_OPTIONS: dict[str, dict[str, Any]] = {
    "linear": {"last_epoch": -1},
    "cosine": {"num_cycles": 0.5, "last_epoch": -1},
    "cosine_with_restarts": {"num_cycles": 1, "last_epoch": -1},
    "polynomial": {"lr_end": 1e-7, "power": 1.0, "last_epoch": -1},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {"timescale": None, "last_epoch": -1},
    "reduce_lr_on_plateau": {
        "mode": "min",
        "factor": 0.1,
        "patience": 10,
        "threshold": 1e-4,
        "threshold_mode": "rel",
        "cooldown": 0,
        "min_lr": 0,
        "eps": 1e-8,
    },
    "cosine_with_min_lr": {
        "num_cycles": 0.5,
        "min_lr": None,
        "min_lr_rate": None,
        "last_epoch": -1,
    },
    "cosine_warmup_with_min_lr": {
        "num_cycles": 0.5,
        "min_lr": None,
        "min_lr_rate": None,
        "warmup_lr_rate": None,
        "last_epoch": -1,
    },
    "greedy": {
        "mode": "min",
        "factor": 0.95,
        "patience": 10,
        "threshold": 1e-6,
        "threshold_mode": "abs",
        "cooldown": 0,
        "warmup": 0,
        "min_lr": 1e-3,
        "max_lr": 1.0,
        "eps": 1e-8,
        "smooth": False,
        "window_size": 50,
        "reset_start": 500,
    },
    "warmup_stable_decay": {
        "num_decay_steps": _REQUIRED,
        "num_stable_steps": None,
        "warmup_type": "linear",
        "decay_type": "cosine",
        "min_lr_ratio": 0.0,
        "num_cycles": 0.5,
        "last_epoch": -1,
    },
}
_WSD_SHAPES = ("linear", "cosine", "1-sqrt")


def _factory_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` completed with the defaults of ``name``'s options; unknown ones refused."""
    known = _FACTORY_OPTIONS[name]
    unknown = sorted(set(given) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "none (transformers ignores them)"
        raise TypeError(
            f"get_scheduler({name!r}) got unexpected scheduler_specific_kwargs {unknown}; "
            f"it takes: {takes}"
        )
    options = {**known, **given}
    missing = [key for key, value in options.items() if value is _REQUIRED]
    if missing:
        raise ValueError(f"get_scheduler({name!r}) needs scheduler_specific_kwargs {missing}")
    return options


def _min_lr_rate(optimizer: Optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    """transformers' cosine-with-min-lr floor as a fraction of the lr (``min_lr / defaults lr``)."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError(
            f"give min_lr or min_lr_rate, not both: got min_lr={min_lr!r} and "
            f"min_lr_rate={min_lr_rate!r}"
        )
    if min_lr_rate is not None:
        return _check_fraction("min_lr_rate", min_lr_rate)
    if min_lr is None:
        raise ValueError(
            "one of min_lr or min_lr_rate must be given in scheduler_specific_kwargs, got neither"
        )
    lr = float(optimizer.defaults["lr"])
    floor = _as_float("min_lr", min_lr)
    if not 0.0 <= floor <= lr:
        raise ValueError(
            f"min_lr must be in [0, {lr!r}] (the optimizer's default lr, which transformers "
            f"divides it by), got {min_lr!r}"
        )
    return floor / lr


def _training_steps(name: str, num_training_steps: int | None, warmup: int) -> int:
    """``num_training_steps``, required, checked, and not below the warmup."""
    if num_training_steps is None:
        raise ValueError(f"{name} requires num_training_steps, got None")
    total = _check_int("num_training_steps", num_training_steps, 1)
    if total < warmup:
        raise ValueError(
            f"num_training_steps must be at least num_warmup_steps, got num_training_steps="
            f"{num_training_steps!r} and num_warmup_steps={warmup!r}"
        )
    return total


def _transformers_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int | None, **options: Any
) -> WarmupDecayLR:
    """A :class:`WarmupDecayLR` as transformers' schedules start: from ``initial_lr``,
    whatever lr it finds, with a warmup from 0 unless ``options`` says otherwise."""
    options.setdefault("warmup_start_factor", 0.0)
    return WarmupDecayLR(optimizer, warmup_steps, total_steps, start_from="initial_lr", **options)


def _one_step_ahead(scheduler: LRScheduler) -> LRScheduler:
    """Take one step at construction (the schedule then starts at its step 1)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step()`", UserWarning)
        scheduler.step()
    return scheduler


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: Mapping[str, Any] | None = None,
) -> LRScheduler:
    """transformers' ``get_scheduler``, returning torchkit's schedulers.

    Takes every name of transformers' ``SchedulerType`` (a string, or the enum itself) with
    transformers' arguments and their meanings, and returns the torchkit scheduler with the
    same learning rates at every step from 0 to ``num_training_steps``, each computed from
    the step alone (no ``LambdaLR``, no lambda in the ``state_dict``, which
    ``torch.load(weights_only=True)`` reads):

    ======================================  =====================================================
    name                                    returns
    ======================================  =====================================================
    ``linear``, ``cosine``, ``polynomial``  :class:`WarmupDecayLR` (warmup from 0)
    ``constant``, ``constant_with_warmup``  :class:`WarmupDecayLR` with ``decay="constant"``, no end
    ``inverse_sqrt``                        :class:`WarmupDecayLR`, endless ``"inverse_sqrt"``
    ``cosine_with_min_lr``                  :class:`WarmupDecayLR` with ``min_lr_ratio``
    ``cosine_warmup_with_min_lr``           :class:`WarmupDecayLR`, one step ahead (below)
    ``warmup_stable_decay``                 :class:`WarmupDecayLR` with ``stable_steps``
    ``cosine_with_restarts``                :class:`CosineRestartsLR` with ``num_cycles``
    ``reduce_lr_on_plateau``                :class:`ReduceLROnPlateau`
    ``greedy``                              :class:`GreedyLR`
    ======================================  =====================================================

    Like transformers' schedules, they start from each group's ``initial_lr`` whatever lr a
    previous schedule left in the optimizer (``start_from="initial_lr"``), so several can be
    built in turn on one optimizer, and ``last_epoch=k`` gives the closed form at ``k + 1``.
    ``num_training_steps == num_warmup_steps`` (a warmup over the whole run, as
    ``warmup_ratio=1.0`` gives) is accepted, with transformers' lrs: its cosine schedules
    divide by ``max(1, num_training_steps - num_warmup_steps)``, so their decay then lasts
    one step, from the peak at ``num_training_steps``.

    Where they differ from transformers, on purpose:

    * past ``num_training_steps`` the lr stays at its value there, where transformers'
      cosine schedules follow the cosine on;
    * ``cosine_warmup_with_min_lr`` evaluates transformers' cosine schedule one step ahead
      (its lambda reads step ``t + 1``): the returned scheduler has taken one step, so its
      ``last_epoch`` is one more than transformers'. Its decay thus ends at
      ``num_training_steps - 1``, and at ``num_training_steps`` itself transformers' lambda
      is one step past its end, on the way back up the cosine, where torchkit stays. With
      ``warmup_lr_rate`` and ``num_warmup_steps=1`` it starts at ``warmup_lr_rate`` and
      jumps into the decay, which no warmup-then-decay schedule does: that combination
      raises ``ValueError``;
    * ``inverse_sqrt`` honours ``scheduler_specific_kwargs={"timescale": ...}``, which
      transformers' ``get_scheduler`` drops (it calls ``get_inverse_sqrt_schedule`` with
      the warmup alone, so its timescale is always ``num_warmup_steps or 10_000``);
    * arguments transformers would turn into odd schedules raise ``ValueError`` naming
      them: ``num_training_steps < num_warmup_steps``, ``power <= 0``, ``lr_end < 0``,
      ``min_lr`` above the optimizer's lr, ratios outside ``[0, 1]``, a negative
      ``num_stable_steps``; ``scheduler_specific_kwargs`` for ``constant`` and
      ``constant_with_warmup`` (which transformers ignores) raise ``TypeError``, and so
      does an option a name does not take. The step counts are accepted for every name, as
      transformers' ``Trainer`` passes them whatever the schedule.

    Args:
        name: One of :data:`SCHEDULER_NAMES` (or transformers' ``SchedulerType``).
        optimizer: The optimizer to schedule.
        num_warmup_steps: Warmup steps; required by every name but ``constant``,
            ``reduce_lr_on_plateau`` and ``greedy`` (which ignore it, as transformers does).
        num_training_steps: Total steps, at least ``num_warmup_steps``; required by
            ``linear``, ``cosine``, ``cosine_with_restarts``, ``polynomial`` and the two
            ``*_with_min_lr``, and by ``warmup_stable_decay`` unless ``num_stable_steps`` is
            given.
        scheduler_specific_kwargs: The other arguments of transformers' function for the
            name (``num_cycles``, ``lr_end``, ``power``, ``timescale``, ``min_lr``,
            ``min_lr_rate``, ``warmup_lr_rate``, ``num_decay_steps``, ``num_stable_steps``,
            ``warmup_type``, ``decay_type``, ``min_lr_ratio``, ``last_epoch``, or
            ``ReduceLROnPlateau``'s, or ``GreedyLR``'s).

    Returns:
        The scheduler, built on ``optimizer`` (which it has stepped to its step 0).

    Example:
        >>> import torch
        >>> opt = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=10.0)
        >>> sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)
        >>> [round(lr, 2) for lr in preview(sched, 10)["lr"][0]]  # transformers' own test
        [0.0, 5.0, 10.0, 9.62, 8.54, 6.91, 5.0, 3.09, 1.46, 0.38]
        >>> type(sched).__name__, sched.decay
        ('WarmupDecayLR', 'cosine')
    """
    raw = getattr(name, "value", name)
    if not isinstance(raw, str) or raw not in SCHEDULER_NAMES:
        valid = ", ".join(repr(n) for n in SCHEDULER_NAMES)
        raise ValueError(f"name must be one of {valid}; got {name!r}")
    name = raw
    _check_optimizer(optimizer)
    options = _factory_options(name, scheduler_specific_kwargs or {})
    if name == "reduce_lr_on_plateau":
        return ReduceLROnPlateau(optimizer, **options)
    if name == "greedy":
        return GreedyLR(optimizer, **options)
    if name == "constant":
        return WarmupDecayLR(optimizer, 0, None, decay="constant", start_from="initial_lr")

    if num_warmup_steps is None:
        raise ValueError(f"{name} requires num_warmup_steps, got None")
    warmup = _check_int("num_warmup_steps", num_warmup_steps, 0)
    if name == "constant_with_warmup":
        return _transformers_schedule(optimizer, warmup, None, decay="constant")
    last_epoch = options["last_epoch"]
    if name == "inverse_sqrt":
        timescale = options["timescale"]
        if timescale is None:  # transformers' default
            timescale = warmup or 10_000
        return _transformers_schedule(
            optimizer,
            warmup,
            None,
            decay="inverse_sqrt",
            timescale=timescale,
            last_epoch=last_epoch,
        )
    if name == "warmup_stable_decay":
        return _warmup_stable_decay(optimizer, warmup, num_training_steps, options)

    total = _training_steps(name, num_training_steps, warmup)
    # transformers' decays divide by max(1, total - warmup): they last at least one step.
    decay_end = max(total, warmup + 1)
    if name == "linear":  # its lr is (total - t) / max(1, total - warmup): 0 at total
        return _transformers_schedule(
            optimizer, warmup, total, decay="linear", last_epoch=last_epoch
        )
    if name == "polynomial":
        lr_init = float(optimizer.defaults["lr"])
        lr_end = _check_nonnegative("lr_end", options["lr_end"])
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        return _transformers_schedule(
            optimizer,
            warmup,
            total,
            decay="polynomial",
            power=options["power"],
            min_lr_ratio=lr_end / lr_init,
            last_epoch=last_epoch,
        )
    if name == "cosine_with_restarts":
        return CosineRestartsLR(
            optimizer,
            total_steps=decay_end,
            num_cycles=options["num_cycles"],
            warmup_steps=warmup,
            warmup_prefix=True,
            start_from="initial_lr",
            last_epoch=last_epoch,
        )
    # The cosine schedules, whose last wave is where it is at num_training_steps.
    cosine = {"num_cycles": options["num_cycles"], "end_at": "wave", "last_epoch": last_epoch}
    if name == "cosine":
        return _transformers_schedule(optimizer, warmup, decay_end, **cosine)
    rate = _min_lr_rate(optimizer, options["min_lr"], options["min_lr_rate"])
    if name == "cosine_with_min_lr":
        return _transformers_schedule(optimizer, warmup, decay_end, min_lr_ratio=rate, **cosine)
    # cosine_warmup_with_min_lr: transformers' lambda at step t is the cosine-with-min-lr
    # schedule at t + 1, with its own warmup when warmup_lr_rate is given.
    warmup_rate = options["warmup_lr_rate"]
    if warmup_rate is not None:
        warmup_rate = _check_fraction("warmup_lr_rate", warmup_rate)
    if warmup_rate is None or warmup == 0:
        return _one_step_ahead(
            _transformers_schedule(optimizer, warmup, decay_end, min_lr_ratio=rate, **cosine)
        )
    if warmup == 1:
        raise ValueError(
            "cosine_warmup_with_min_lr with warmup_lr_rate and num_warmup_steps=1 starts at "
            "warmup_lr_rate and continues one step into the decay, which no warmup-then-decay "
            "schedule does; use num_warmup_steps=0 or >= 2, or leave warmup_lr_rate out"
        )
    return _transformers_schedule(
        optimizer,
        warmup - 1,
        decay_end - 1,
        warmup_start_factor=warmup_rate,
        min_lr_ratio=rate,
        **cosine,
    )


def _warmup_stable_decay(
    optimizer: Optimizer, warmup: int, num_training_steps: int | None, options: dict[str, Any]
) -> WarmupDecayLR:
    """transformers' ``get_wsd_schedule`` as a :class:`WarmupDecayLR`."""
    decay_steps = _check_int("num_decay_steps", options["num_decay_steps"], 0)
    stable = options["num_stable_steps"]
    if num_training_steps is None and stable is None:
        raise ValueError(
            "warmup_stable_decay needs num_training_steps or num_stable_steps, got neither"
        )
    if num_training_steps is not None and stable is not None:
        warnings.warn(
            "Both num_training_steps and num_stable_steps are specified. num_stable_steps "
            "will be used.",
            UserWarning,
            stacklevel=3,
        )
    if stable is None:
        total = _check_int("num_training_steps", num_training_steps, 1)
        stable = total - warmup - decay_steps
        if stable < 0:
            raise ValueError(
                f"num_training_steps={total!r} is less than num_warmup_steps + num_decay_steps "
                f"= {warmup + decay_steps!r}: the stable phase would be negative"
            )
    stable = _check_int("num_stable_steps", stable, 0)
    if warmup + stable + decay_steps == 0:
        raise ValueError(
            "warmup_stable_decay needs at least one step of warmup, stable phase or decay, got "
            "num_warmup_steps=0, num_stable_steps=0 and num_decay_steps=0"
        )
    warmup_type = _choice("warmup_type", options["warmup_type"], _WSD_SHAPES)
    decay_type = _choice("decay_type", options["decay_type"], _WSD_SHAPES)
    cycles = options["num_cycles"]
    if decay_type != "cosine":
        if cycles != 0.5:
            raise ValueError(
                f"num_cycles is only used by decay_type='cosine', got num_cycles={cycles!r} "
                f"with decay_type={decay_type!r}"
            )
        cycles = None
    ratio = _check_fraction("min_lr_ratio", options["min_lr_ratio"])
    return _transformers_schedule(
        optimizer,
        warmup,
        warmup + stable + decay_steps,
        stable_steps=stable,
        warmup=warmup_type,
        decay=decay_type,
        warmup_start_factor=ratio,  # transformers' warmup starts at min_lr_ratio
        min_lr_ratio=ratio,
        num_cycles=cycles,
        last_epoch=options["last_epoch"],
    )


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
    metrics: Sequence[float] | None = None,
) -> dict[str, list[list[float]]]:
    """The lrs (and momenta) of the next ``steps`` optimizer steps, without side effects.

    A scheduler is deep-copied onto a stand-in optimizer holding a copy of its optimizer's
    param-group hyperparameters, and the copy is stepped: the real optimizer and scheduler
    are not touched, and the model's parameters are not copied. A factory is called with
    such a stand-in built from ``optimizer``, or, when ``optimizer`` is None, from
    ``SGD(lr=1.0, momentum=0.9)`` with one param group (so the lrs are the schedule's
    multipliers). Works for any scheduler, including torch's and
    ``ChainedScheduler``/``SequentialLR``; one whose ``step()`` takes a metric
    (``ReduceLROnPlateau``, or a :class:`ChainedScheduler` holding one) is given ``metrics``.

    Args:
        scheduler_or_factory: An ``LRScheduler``, or a callable ``optimizer -> LRScheduler``.
        steps: Number of steps to report, >= 1; the first is the current lr.
        optimizer: Only with a factory: whose param-group hyperparameters to copy.
        metrics: For a scheduler that takes a metric, and only for one: the metric passed to
            each step after the first (``metrics[i - 1]`` to step ``i``), at least
            ``steps - 1`` values.

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
    if metrics is not None:
        if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
            raise TypeError(f"metrics must be a sequence of numbers, got {type(metrics).__name__}")
        if len(metrics) < steps - 1:
            raise ValueError(
                f"metrics has {len(metrics)} values but {steps} steps need {steps - 1} (one per "
                "step after the first)"
            )
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
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(
                "the factory must return an LRScheduler built on the optimizer it is given, got "
                f"{type(scheduler).__name__}"
            )
    else:
        raise TypeError(
            "scheduler_or_factory must be an LRScheduler or a callable taking an optimizer, "
            f"got {type(scheduler_or_factory).__name__}"
        )
    takes_metrics = _takes_metrics(scheduler)
    if takes_metrics and metrics is None:
        raise ValueError(
            f"preview cannot drive {type(scheduler).__name__} without metrics: its step() "
            "needs a metric (pass metrics=[...], one per step after the first)"
        )
    if metrics is not None and not takes_metrics:
        raise ValueError(
            f"metrics were given but the step() of {type(scheduler).__name__} takes none"
        )

    groups = stand_in.param_groups
    lrs: list[list[float]] = [[] for _ in groups]
    momenta: list[list[float]] = [[] for _ in groups]
    has_momentum = all(_momentum_of(group) is not None for group in groups)
    for i in range(steps):
        if i:
            stand_in.step()
            if takes_metrics:
                scheduler.step(metrics[i - 1])  # type: ignore[call-arg,index]
            else:
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
    metrics: Sequence[float] | None = None,
    dpi: int = 110,
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
        metrics: Passed to :func:`preview`: the metric of each step after the first, for
            schedules whose ``step()`` takes one (every schedule plotted must then take it).
        dpi: Resolution of the PNG, an integer >= 1 (the figure is 8 inches wide).
            Default: 110.

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
    dpi = _check_int("dpi", dpi, 1)

    previews = [
        (label, preview(s, steps, optimizer=optimizer, metrics=metrics)) for label, s in items
    ]
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
    figure.savefig(path, format="png", dpi=dpi)
    return path


def _label_of(schedule: object) -> str:
    if isinstance(schedule, LRScheduler):
        return type(schedule).__name__
    return getattr(schedule, "__name__", type(schedule).__name__)
