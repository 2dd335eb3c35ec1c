"""The implementations under test, grouped in families, and the plugins that add to them.

An example tagged ``family=NAME`` runs once per implementation of the family, with the family's
binding (``Adam``, ``WarmupDecayLR``, ...) bound to it; the first implementation is the reference.
One given as ``"module:attribute"`` is imported when its items run, so one that cannot be imported
fails its own items, with the import error, and nothing else. A plugin module (loaded by
:meth:`Registry.load`) exposes ``register_conformance(registry)``, which may raise
:class:`PluginUnavailable`, or a dict ``CONFORMANCE_IMPLEMENTATIONS = {family: {name: target}}``,
and optionally ``CONFORMANCE_EXPECTATIONS``, the path of its expectations file.

Example:
    >>> registry = builtin_registry()
    >>> registry.add_family("sgd", "SGD")
    >>> registry.register("sgd", "torch.optim.SGD", "torch.optim:SGD", kinds={"session"})
    >>> [i.name for i in registry.implementations("adam")], registry.families["sgd"]
    (['torch.optim.Adam', 'torchkit.optim.FusedAdam'], 'SGD')
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

KINDS = ("session", "shapes", "milestones")  # the kinds of example an implementation runs in
_NAME_RE = re.compile(r"[^\s\[\]]+\.[^\s\[\]]+")  # an implementation's: a dotted name


class ImplementationUnavailable(Exception):
    """An implementation could not be imported; its items fail with this message."""


class PluginUnavailable(Exception):
    """Raised by ``register_conformance`` when the plugin cannot run here; the message says why."""


class TorchConv2dReLU(nn.Conv2d):
    """``nn.Conv2d`` then ReLU: the ``conv2d_relu`` reference, an ``nn.Conv2d`` like the drop-in."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(input))


@dataclass(frozen=True)
class Implementation:
    """One implementation of a family; ``target`` is the object or ``"module:attribute"``."""

    family: str
    name: str
    target: object
    kinds: frozenset[str] = frozenset(KINDS)
    origin: str = "built-in"  # or the plugin module that registered it

    def load(self) -> object:
        """The implementation, imported now if it was given as a string."""
        if not isinstance(self.target, str):
            return self.target
        module, _, attribute = self.target.partition(":")
        try:
            loaded = importlib.import_module(module)
            return getattr(loaded, attribute) if attribute else loaded
        except (ImportError, AttributeError) as error:
            raise ImplementationUnavailable(
                f"implementation {self.name!r} of family {self.family!r} "
                f"({self.target!r}, {self.origin}) is not available: "
                f"{type(error).__name__}: {error}"
            ) from error


@dataclass
class Registry:
    """Families (name: the name their examples bind) and implementations, reference first."""

    families: dict[str, str] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)  # plugin modules
    expectations: list[Path] = field(default_factory=list)  # the files they declare
    unavailable: dict[str, str] = field(default_factory=dict)  # plugin module: why not
    _all: list[Implementation] = field(default_factory=list)
    _origin: str = "built-in"

    def add_family(self, name: str, binding: str) -> None:
        """Declare a family whose examples bind ``binding`` to each implementation in turn."""
        if not binding.isidentifier():
            raise ValueError(f"binding must be a Python identifier, got {binding!r}")
        if self.families.setdefault(name, binding) != binding:
            raise ValueError(
                f"family {name!r} already binds {self.families[name]!r}, "
                f"cannot rebind to {binding!r}"
            )

    def register(
        self, family: str, name: str, target: object, *, kinds: set[str] | None = None
    ) -> None:
        """Add an implementation to a family.

        Args:
            family: a declared family.
            name: the name in test ids, unique in the family: a dotted name without spaces or
                brackets (``mypkg.WarmupCosine``), so it never clashes with a milestone table's
                ``# implementation: NAME`` blocks, which pages name with plain words.
            target: the object bound in examples, or ``"module:attribute"``.
            kinds: the example kinds it takes part in (default: all of :data:`KINDS`).
        """
        if family not in self.families:
            raise ValueError(f"unknown family {family!r}; known: {sorted(self.families)}")
        if not _NAME_RE.fullmatch(name):
            raise ValueError(
                "implementation name must be a dotted name without spaces or brackets, "
                f"such as 'mypkg.{name or 'Name'}' (a table's blocks use plain words), got {name!r}"
            )
        if name in [i.name for i in self.implementations(family)]:
            raise ValueError(f"implementation {name!r} is already registered in family {family!r}")
        kinds = frozenset(KINDS if kinds is None else kinds)
        if not kinds or not kinds <= set(KINDS):
            raise ValueError(
                f"kinds must be a non-empty subset of {sorted(KINDS)}, got {sorted(kinds)}"
            )
        self._all.append(Implementation(family, name, target, kinds, self._origin))

    def implementations(
        self, family: str | None = None, kind: str | None = None
    ) -> list[Implementation]:
        """The implementations (of ``family``, in ``kind`` examples, if given), reference first."""
        return [
            i
            for i in self._all
            if (family is None or i.family == family) and (kind is None or kind in i.kinds)
        ]

    def load(self, modules: list[str]) -> None:
        """Import plugin modules (each once) and let each register its implementations;
        ``ValueError``, naming the module, for one that cannot be imported, registers nothing or
        raises while registering (but :class:`PluginUnavailable`)."""
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
            self._origin = name
            try:
                if callable(register):
                    register(self)
                else:
                    for family, entries in table.items():
                        for implementation, target in entries.items():
                            self.register(family, implementation, target)
            except PluginUnavailable as why:
                self.unavailable[name] = str(why)
                continue
            except Exception as error:
                raise ValueError(
                    f"conformance implementation module {name!r} could not register: "
                    f"{type(error).__name__}: {error}"
                ) from error
            finally:
                self._origin = "built-in"
            self.loaded.append(name)
            if (expectations := getattr(module, "CONFORMANCE_EXPECTATIONS", None)) is not None:
                self.expectations.append(Path(expectations))


_LR = "torchkit.optim.lr_scheduler"
# family: (binding, implementations by import path, the reference first). A family whose API torch
# lacks has torchkit's class as its reference; the pages' "# implementation: torch" blocks show
# torch's way. "torch.nn.Conv2d+ReLU" is TorchConv2dReLU.
_BUILTIN = {
    "conv2d": ("Conv2d", ["torch.nn.Conv2d"]),
    "conv2d_relu": ("Conv2dReLU", ["torch.nn.Conv2d+ReLU", "torchkit.nn.FusedConv2dReLU"]),
    "adam": ("Adam", ["torch.optim.Adam", "torchkit.optim.FusedAdam"]),
    "adamw": ("AdamW", ["torch.optim.AdamW", "torchkit.optim.FusedAdamW"]),
    "onecycle": ("OneCycleLR", ["torch.optim.lr_scheduler.OneCycleLR", f"{_LR}.OneCycleLR"]),
    "warmup_decay": ("WarmupDecayLR", [f"{_LR}.WarmupDecayLR"]),
    "cosine_restarts": ("CosineRestartsLR", [f"{_LR}.CosineRestartsLR"]),
    "noam": ("NoamLR", [f"{_LR}.NoamLR"]),
    "plateau": (
        "ReduceLROnPlateau",
        ["torch.optim.lr_scheduler.ReduceLROnPlateau", f"{_LR}.ReduceLROnPlateau"],
    ),
    "chained": (
        "ChainedScheduler",
        ["torch.optim.lr_scheduler.ChainedScheduler", f"{_LR}.ChainedScheduler"],
    ),
}


def builtin_registry() -> Registry:
    """Every family of ``docs/conformance.md`` with stock torch's and torchkit's implementations."""
    registry = Registry()
    for family, (binding, names) in _BUILTIN.items():
        registry.add_family(family, binding)
        for name in names:
            target = ":".join(name.rsplit(".", 1))
            registry.register(family, name, TorchConv2dReLU if "+" in name else target)
    # FusedConv2dReLU applies a ReLU: a conv2d for shape tables only.
    registry.register(
        "conv2d", "torchkit.nn.FusedConv2dReLU", "torchkit.nn:FusedConv2dReLU", kinds={"shapes"}
    )
    return registry
