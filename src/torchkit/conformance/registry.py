"""The implementations under test, grouped in families.

An example tagged ``family=NAME`` runs once per implementation of that family, with the family's
name (``Adam``, ``WarmupDecayLR``, ...) bound to it; the first implementation is the reference.
Implementations are named by import path and imported only when an item runs, so one that cannot
be imported fails its own items, with the import error, and nothing else.

A third party adds its own with ``--conformance-impl=MODULE`` (repeatable), the ini option
``conformance_impl`` or the environment variable ``TORCHKIT_CONFORMANCE_IMPL``. The module exposes

* ``register_conformance(registry)``, calling :meth:`Registry.register` (and
  :meth:`Registry.add_family` for a new family), or ``CONFORMANCE_IMPLEMENTATIONS``, a dict
  ``{family: {name: object or "module:attribute"}}``;
* optionally ``CONFORMANCE_EXPECTATIONS``, the path of its expectations file (known
  disagreements, each with a reason; see :mod:`torchkit.conformance.plugin`).

``register_conformance`` may raise :class:`PluginUnavailable` (say, when the library it adapts is
not installed): the run goes on and the report says why the plugin was not tested.

Example:
    >>> registry = builtin_registry()
    >>> [i.name for i in registry.implementations("adam")]
    ['torch.optim.Adam', 'torchkit.optim.FusedAdam']
    >>> registry.families["warmup_decay"].binding
    'WarmupDecayLR'
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

ENV_VAR = "TORCHKIT_CONFORMANCE_IMPL"
ALL_KINDS = frozenset({"session", "shapes", "milestones"})
_CONV, _LR, _TORCH_LR = (
    "torchkit.nn:FusedConv2dReLU",
    "torchkit.optim.lr_scheduler",
    "torch.optim.lr_scheduler",
)


class ImplementationUnavailable(Exception):
    """An implementation could not be imported; its items fail with this message."""


class PluginUnavailable(Exception):
    """Raised by ``register_conformance`` when the plugin cannot run here; the message says why."""


class TorchConv2dReLU(nn.Conv2d):
    """Stock torch's Conv2d followed by ReLU: the reference of the ``conv2d_relu`` family.

    A ``nn.Conv2d`` subclass, so ``weight``, ``bias``, ``repr`` and ``state_dict`` keys are those
    of ``torchkit.nn.FusedConv2dReLU``.

    Example:
        >>> layer = TorchConv2dReLU(1, 2, 3)
        >>> bool((layer(torch.randn(1, 1, 5, 5)) >= 0).all())
        True
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(input))


@dataclass(frozen=True)
class Family:
    """A family: the name bound in its examples and what it stands for."""

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
    _loading: str = "built-in"  # the plugin being loaded: the origin of what it registers

    def add_family(self, name: str, binding: str, description: str = "") -> None:
        """Declare a family whose examples bind ``binding`` to each implementation.

        Raises:
            ValueError: if ``binding`` is not an identifier, or ``name`` exists with another
                binding.
        """
        if not binding.isidentifier():
            raise ValueError(f"binding must be a Python identifier, got {binding!r}")
        known = self.families.setdefault(name, Family(name, binding, description))
        if known.binding != binding:
            raise ValueError(
                f"family {name!r} already binds {known.binding!r}, cannot rebind to {binding!r}"
            )

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
            origin: who registered it (default: the plugin being loaded, or "built-in").

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
        """The first registered implementation of ``family``: the one replays bind."""
        return self.implementations(family)[0]


# family: (binding, description, implementations as "module:attribute"; the first is the
# reference). A family whose API torch lacks has torchkit's class as its reference: the pages'
# fixed "# implementation: torch" blocks show torch's way.
_BUILTIN = {
    "conv2d": ("Conv2d", "2-D convolution layers", ["torch.nn:Conv2d"]),
    "conv2d_relu": ("Conv2dReLU", "Conv2d then ReLU", [f"{__name__}:TorchConv2dReLU", _CONV]),
    "adam": ("Adam", "Adam optimizers", ["torch.optim:Adam", "torchkit.optim:FusedAdam"]),
    "adamw": ("AdamW", "AdamW optimizers", ["torch.optim:AdamW", "torchkit.optim:FusedAdamW"]),
    "onecycle": (
        "OneCycleLR",
        "the 1cycle schedule",
        [f"{_TORCH_LR}:OneCycleLR", f"{_LR}:OneCycleLR"],
    ),
    "warmup_decay": ("WarmupDecayLR", "warmup then decay to min_lr", [f"{_LR}:WarmupDecayLR"]),
    "noam": ("NoamLR", "the Transformer's inverse-sqrt schedule", [f"{_LR}:NoamLR"]),
    "plateau": (
        "ReduceLROnPlateau",
        "cut the lr when a metric stalls",
        [f"{_TORCH_LR}:ReduceLROnPlateau"],
    ),
}


def builtin_registry() -> Registry:
    """Every family of ``docs/conformance.md``, with stock torch's and torchkit's implementations.

    An implementation's name is its import path (``torch.optim.Adam``); ``torch.nn.Conv2d+ReLU``
    is :class:`TorchConv2dReLU`, and ``FusedConv2dReLU`` is also a ``conv2d`` for shapes only.
    """
    registry = Registry()
    for family, (binding, description, targets) in _BUILTIN.items():
        registry.add_family(family, binding, description)
        for target in targets:
            name = (
                "torch.nn.Conv2d+ReLU"
                if target.endswith("TorchConv2dReLU")
                else target.replace(":", ".")
            )
            registry.register(family, name, target)
    registry.register("conv2d", _CONV.replace(":", "."), _CONV, kinds={"shapes"})
    return registry


@dataclass
class LoadedPlugins:
    """What :func:`load_plugins` did: modules loaded, their expectations files, those skipped."""

    loaded: list[str] = field(default_factory=list)
    expectations: list[Path] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # module -> why


def load_plugins(registry: Registry, modules: list[str]) -> LoadedPlugins:
    """Import third-party modules and let each register its implementations.

    Args:
        registry: the registry to extend.
        modules: module names (duplicates are loaded once).

    Returns:
        The modules loaded, the expectations files they declare, and the modules that raised
        :class:`PluginUnavailable` with the reason.

    Raises:
        ValueError: if a module cannot be imported or exposes neither
            ``register_conformance`` nor ``CONFORMANCE_IMPLEMENTATIONS``.
    """
    result = LoadedPlugins()
    for name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise ValueError(
                f"conformance implementation module {name!r} cannot be imported: {error}"
            ) from error
        register = getattr(module, "register_conformance", None)
        table = getattr(module, "CONFORMANCE_IMPLEMENTATIONS", None)
        if not callable(register) and not isinstance(table, dict):
            raise ValueError(
                f"conformance implementation module {name!r} exposes neither "
                "register_conformance(registry) nor a CONFORMANCE_IMPLEMENTATIONS dict"
            )
        registry._loading = name
        try:
            if callable(register):
                register(registry)
            else:
                for family, entries in table.items():
                    for implementation, target in entries.items():
                        registry.register(family, implementation, target)
        except PluginUnavailable as why:
            result.unavailable[name] = str(why)
            continue
        finally:
            registry._loading = "built-in"
        result.loaded.append(name)
        expectations = getattr(module, "CONFORMANCE_EXPECTATIONS", None)
        if expectations is not None:
            result.expectations.append(Path(expectations))
    return result


def plugin_modules(*values: list[str] | str | None) -> list[str]:
    """Module names from option/ini values and ``TORCHKIT_CONFORMANCE_IMPL`` (comma-separated).

    Example:
        >>> plugin_modules(["a, b"], "c", None)[:3]
        ['a', 'b', 'c']
    """
    names: list[str] = []
    for value in [*values, os.environ.get(ENV_VAR, "")]:
        for text in [value] if isinstance(value, str) else value or []:
            names += [n.strip() for n in text.split(",") if n.strip()]
    return names
