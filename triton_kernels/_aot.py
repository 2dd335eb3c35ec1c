"""What ``python -m torchkit kernels`` needs to compile a kernel ahead of time.

A kernel module exposes ``aot_specs() -> list[KernelSpec]``: one spec per variant worth reporting
(dtype, compile-time switches). The report compiles each spec for every autotune config of the
kernel (or the spec's own ``configs`` when the kernel is not autotuned) and every target arch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    """One compilable variant of a Triton kernel.

    Args:
        name: the variant's label in the report, e.g. ``"fp32"`` or ``"bf16,amsgrad"``.
        kernel: the ``@triton.jit`` function, or the ``@triton.autotune`` wrapper around it.
        signature: every runtime argument's Triton type (``"*fp32"``, ``"i32"``, ...), in order.
        constexprs: values of the compile-time arguments the autotune configs do not set.
        configs: ``triton.Config`` objects to compile when ``kernel`` is not autotuned.
    """

    name: str
    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    configs: tuple[Any, ...] = ()
