"""``fuse_conv_relu``: swap ``nn.Conv2d`` + ``nn.ReLU`` pairs of a model for ``FusedConv2dReLU``.

What is fused: inside every ``nn.Sequential`` of the model (found recursively, at any depth), an
``nn.Conv2d`` immediately followed by an ``nn.ReLU`` (``inplace`` or not). The conv's slot gets
a :class:`~torchkit.nn.FusedConv2dReLU` sharing its parameters, the ReLU's slot gets an
``nn.Identity``: indices and ``state_dict`` keys of the container are unchanged, so checkpoints
of the original model load into the fused one and back.

What is left alone, because fusing could change the result or lose behaviour:

* subclasses of ``nn.Conv2d`` (they may override ``forward``; ``FusedConv2dReLU`` itself,
  ``LazyConv2d`` before its first call, parametrized convs) and ReLU subclasses;
* a conv or ReLU with forward hooks or forward pre-hooks registered on it;
* activations applied in ``forward`` code (``F.relu(self.conv(x))``): a module's ``forward``
  is Python, not a graph, and rewriting it would need ``torch.fx`` tracing, which turns the
  model into a ``GraphModule`` and fails on data-dependent control flow. Such models can use
  :class:`~torchkit.nn.FusedConv2dReLU` explicitly.
"""

from __future__ import annotations

import copy
import itertools
from typing import Literal, TypeVar, overload

from torch import nn

from torchkit.nn.conv import FusedConv2dReLU

__all__ = ["fuse_conv_relu"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _has_hooks(module: nn.Module) -> bool:
    """Whether fusing ``module`` away would drop a hook registered on it."""
    return any(getattr(module, name, None) for name in _HOOK_DICTS)


def _fusable(first: nn.Module, second: nn.Module) -> bool:
    return (
        type(first) is nn.Conv2d
        and type(second) is nn.ReLU
        and not _has_hooks(first)
        and not _has_hooks(second)
    )


@overload
def fuse_conv_relu(
    model: ModuleT, inplace: bool = False, *, return_fused: Literal[False] = False
) -> ModuleT: ...


@overload
def fuse_conv_relu(
    model: ModuleT, inplace: bool = False, *, return_fused: Literal[True]
) -> tuple[ModuleT, list[str]]: ...


def fuse_conv_relu(
    model: ModuleT, inplace: bool = False, *, return_fused: bool = False
) -> ModuleT | tuple[ModuleT, list[str]]:
    """Replace each ``nn.Conv2d`` directly followed by ``nn.ReLU`` in a ``Sequential`` by one
    :class:`~torchkit.nn.FusedConv2dReLU` with the same weights.

    Outputs are unchanged (up to the rounding of a different summation order). The module
    docstring of :mod:`torchkit.nn.fuse` lists what is and is not fused.

    Args:
        model: the model; a bare ``nn.Sequential`` works too.
        inplace: modify ``model`` itself (the fused layers then share its parameters, so an
            existing optimizer keeps working) instead of a deep copy. Default: ``False``.
        return_fused: also return the qualified names of the fused convolutions (their
            ``state_dict`` prefixes), one per fused pair. Default: ``False``.

    Returns:
        The fused model (``model`` itself when ``inplace``), or ``(model, names)`` when
        ``return_fused`` is set; ``len(names)`` is the number of pairs fused.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> from torchkit.nn import fuse_conv_relu
        >>> model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        >>> fused, names = fuse_conv_relu(model, return_fused=True)
        >>> names
        ['0']
        >>> fused
        Sequential(
          (0): FusedConv2dReLU(1, 6, kernel_size=(5, 5), stride=(1, 1))
          (1): Identity()
          (2): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)
        )
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {inplace!r}")
    if not inplace:
        model = copy.deepcopy(model)
    fused: list[str] = []
    containers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Sequential)]
    for prefix, sequential in containers:
        children = list(sequential.named_children())
        for (name, first), (relu_name, second) in itertools.pairwise(children):
            if not _fusable(first, second):
                continue
            setattr(sequential, name, FusedConv2dReLU.from_conv(first))  # type: ignore[arg-type]
            setattr(sequential, relu_name, nn.Identity())
            fused.append(f"{prefix}.{name}" if prefix else name)
    return (model, fused) if return_fused else model
