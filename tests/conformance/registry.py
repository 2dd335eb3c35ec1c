"""The implementations under test, grouped in families.

An example tagged ``family=NAME`` runs once per implementation of that family, with the
family's name (``Adam``, ``Conv2d``, ...) bound to it. Implementations are named by import
path and imported only when an item runs, so an implementation that cannot be imported fails
its own items, with the import error, and nothing else.

A third party adds its own with ``--conformance-impl=MODULE`` (repeatable) or the environment
variable ``TORCHKIT_CONFORMANCE_IMPL`` (comma-separated modules). The module exposes either

* ``register_conformance(registry)``, a function calling :meth:`Registry.register` (and
  :meth:`Registry.add_family` for a new family), or
* ``CONFORMANCE_IMPLEMENTATIONS``, a dict ``{family: {name: target}}``, where a target is an
  object or an ``"module:attribute"`` string.

Example:
    >>> registry = builtin_registry()
    >>> [i.name for i in registry.implementations("adam")]
    ['torch.optim.Adam', 'torchkit.optim.FusedAdam']
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "ENV_VAR",
    "Family",
    "Implementation",
    "ImplementationUnavailable",
    "Registry",
    "TorchConv2dReLU",
    "builtin_registry",
    "load_plugins",
]

ENV_VAR = "TORCHKIT_CONFORMANCE_IMPL"
ALL_KINDS = frozenset({"session", "shapes", "milestones"})


class ImplementationUnavailable(Exception):
    """An implementation could not be imported; its items fail with this message."""


class TorchConv2dReLU(nn.Conv2d):
    """Stock torch's Conv2d followed by ReLU: the reference of the ``conv2d_relu`` family.

    A ``nn.Conv2d`` subclass, so ``weight``, ``bias``, ``repr`` and ``state_dict`` keys are
    those of ``torchkit.nn.FusedConv2dReLU``.

    Example:
        >>> layer = TorchConv2dReLU(1, 2, 3)
        >>> bool((layer(torch.randn(1, 1, 5, 5)) >= 0).all())
        True
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(input))


@dataclass(frozen=True)
class Family:
    """A family: the name bound in examples and what it stands for."""

    name: str
    binding: str
    description: str = ""


@dataclass(frozen=True)
class Implementation:
    """One implementation of a family.

    Args:
        family: the family's name.
        name: the name shown in test ids (``torchkit.optim.FusedAdam``).
        target: the object, or ``"module:attribute"`` to import when an item runs.
        kinds: the example kinds it takes part in (``FusedConv2dReLU`` is in the ``conv2d``
            family for shape tables only, since it applies a ReLU).
        origin: ``"built-in"`` or the module that registered it.
    """

    family: str
    name: str
    target: object
    kinds: frozenset[str] = ALL_KINDS
    origin: str = "built-in"

    def load(self) -> object:
        """Return the implementation, importing it now if it was given as a string."""
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            return getattr(module, attribute) if attribute else module
        except (ImportError, AttributeError) as error:
            raise ImplementationUnavailable(
                f"implementation {self.name!r} of family {self.family!r} "
                f"({self.target!r}, {self.origin}) is not available: "
                f"{type(error).__name__}: {error}"
            ) from error


@dataclass
class Registry:
    """Families and their implementations, in registration order (the first is the reference)."""

    families: dict[str, Family] = field(default_factory=dict)
    _implementations: list[Implementation] = field(default_factory=list)
    # The module whose register_conformance() is running: the default origin of what it adds.
    _loading: str = "built-in"

    def add_family(self, name: str, binding: str, description: str = "") -> None:
        """Declare a family whose examples bind ``binding`` to each implementation.

        Raises:
            ValueError: if ``name`` exists with another binding, or ``binding`` is not an
                identifier.
        """
        if not binding.isidentifier():
            raise ValueError(f"binding must be a Python identifier, got {binding!r}")
        known = self.families.get(name)
        if known is not None and known.binding != binding:
            raise ValueError(
                f"family {name!r} already binds {known.binding!r}, cannot rebind to {binding!r}"
            )
        if known is None:
            self.families[name] = Family(name, binding, description)

    def register(
        self,
        family: str,
        name: str,
        target: object,
        *,
        kinds: frozenset[str] | set[str] | None = None,
        origin: str | None = None,
    ) -> None:
        """Add an implementation to a family.

        Args:
            family: an existing family's name.
            name: the name in test ids; unique within the family, no spaces or brackets.
            target: the object bound in examples, or ``"module:attribute"``.
            kinds: the example kinds it runs in (default: all).
            origin: who registered it (shown in the report header; default: the plugin
                module being loaded, or "built-in").

        Raises:
            ValueError: for an unknown family, a duplicate or malformed name, unknown kinds.
        """
        if family not in self.families:
            raise ValueError(f"unknown family {family!r}; known: {sorted(self.families)}")
        if not name or any(c in name for c in " []\t\n"):
            raise ValueError(
                f"implementation name must be non-empty without spaces or brackets, got {name!r}"
            )
        if any(i.family == family and i.name == name for i in self._implementations):
            raise ValueError(f"implementation {name!r} is already registered in family {family!r}")
        kinds = ALL_KINDS if kinds is None else frozenset(kinds)
        if not kinds or not kinds <= ALL_KINDS:
            raise ValueError(
                f"kinds must be a non-empty subset of {sorted(ALL_KINDS)}, got {sorted(kinds)}"
            )
        self._implementations.append(
            Implementation(family, name, target, kinds, origin or self._loading)
        )

    def implementations(self, family: str, kind: str | None = None) -> list[Implementation]:
        """The implementations of ``family`` (taking part in ``kind``), reference first."""
        return [
            i
            for i in self._implementations
            if i.family == family and (kind is None or kind in i.kinds)
        ]

    def reference(self, family: str) -> Implementation:
        """The first registered implementation of ``family``: the one setup replays use."""
        return self.implementations(family)[0]


def builtin_registry() -> Registry:
    """The families of ``docs/conformance.md`` with stock torch's and torchkit's implementations."""
    registry = Registry()
    registry.add_family("conv2d", "Conv2d", "2-D convolution layers")
    registry.add_family("conv2d_relu", "Conv2dReLU", "Conv2d followed by ReLU")
    registry.add_family("adam", "Adam", "Adam optimizers")
    registry.add_family("adamw", "AdamW", "AdamW optimizers")
    registry.add_family("onecycle", "OneCycleLR", "the 1cycle LR schedule")
    registry.register("conv2d", "torch.nn.Conv2d", nn.Conv2d)
    registry.register(
        "conv2d", "torchkit.nn.FusedConv2dReLU", "torchkit.nn:FusedConv2dReLU", kinds={"shapes"}
    )
    registry.register("conv2d_relu", "torch.nn.Conv2d+ReLU", TorchConv2dReLU)
    registry.register("conv2d_relu", "torchkit.nn.FusedConv2dReLU", "torchkit.nn:FusedConv2dReLU")
    registry.register("adam", "torch.optim.Adam", torch.optim.Adam)
    registry.register("adam", "torchkit.optim.FusedAdam", "torchkit.optim:FusedAdam")
    registry.register("adamw", "torch.optim.AdamW", torch.optim.AdamW)
    registry.register("adamw", "torchkit.optim.FusedAdamW", "torchkit.optim:FusedAdamW")
    registry.register(
        "onecycle", "torch.optim.lr_scheduler.OneCycleLR", torch.optim.lr_scheduler.OneCycleLR
    )
    registry.register(
        "onecycle",
        "torchkit.optim.lr_scheduler.OneCycleLR",
        "torchkit.optim.lr_scheduler:OneCycleLR",
    )
    return registry


def load_plugins(registry: Registry, modules: list[str]) -> list[str]:
    """Import third-party modules and let each register its implementations.

    Args:
        registry: the registry to extend.
        modules: module names from ``--conformance-impl`` and ``TORCHKIT_CONFORMANCE_IMPL``.

    Returns:
        The modules loaded, in order, without duplicates.

    Raises:
        ValueError: if a module cannot be imported or exposes neither
            ``register_conformance`` nor ``CONFORMANCE_IMPLEMENTATIONS``.
    """
    loaded: list[str] = []
    for name in modules:
        if name in loaded:
            continue
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ValueError(
                f"conformance implementation module {name!r} cannot be imported: {error}"
            ) from error
        register: Callable[[Registry], None] | None = getattr(module, "register_conformance", None)
        table = getattr(module, "CONFORMANCE_IMPLEMENTATIONS", None)
        if callable(register):
            registry._loading = name
            try:
                register(registry)
            finally:
                registry._loading = "built-in"
        elif isinstance(table, dict):
            for family, entries in table.items():
                for impl_name, target in entries.items():
                    registry.register(family, impl_name, target, origin=name)
        else:
            raise ValueError(
                f"conformance implementation module {name!r} exposes neither "
                "register_conformance(registry) nor a CONFORMANCE_IMPLEMENTATIONS dict"
            )
        loaded.append(name)
    return loaded


def plugin_modules(option_values: list[str] | None) -> list[str]:
    """Module names from the command-line option values and the environment variable."""
    names: list[str] = []
    for value in [*(option_values or []), os.environ.get(ENV_VAR, "")]:
        names += [n.strip() for n in value.split(",") if n.strip()]
    return names
