"""What ``python -m torchkit kernels`` needs to compile a kernel ahead of time.

A kernel module exposes ``aot_specs() -> list[KernelSpec]``: one spec per variant worth reporting
(dtype, compile-time switches). The report compiles each spec for every autotune config of the
kernel (or the spec's own ``configs``) and every target arch; a spec with a ``yardstick`` is also
compiled as that yardstick kernel with the same configs, and its rows carry the yardstick's
figures next to their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    """One compilable variant of a Triton kernel.

    Args:
        name: the variant's label in the report, e.g. ``"fp32"`` or ``"bf16,amsgrad"``.
        kernel: the ``@triton.jit`` function, or the ``@triton.autotune`` / ``@triton.heuristics``
            wrapper around it.
        signature: every runtime argument's Triton type (``"*fp32"``, ``"i32"``, ...), in order.
        constexprs: values of the compile-time arguments the configs do not set.
        configs: the ``triton.Config`` objects to compile: required when ``kernel`` is not
            autotuned, else a subset of its autotune configs (default: all of them).
        divisible_by_16: integer arguments a real launch passes as multiples of 16, which the
            JIT specialises on (``tt.divisibility``); what makes 16-byte vector loads possible.
        yardstick: a spec compiled with the same configs, whose figures each row reports as
            the one to measure against (see :mod:`torchkit.kernels.gemm_reference`).
        dtype: Triton's name of the variant's tensors' dtype (``"fp16"``, ...).
        input_precision: ``tl.dot``'s ``input_precision`` (``"tf32"`` or ``"ieee"``) for
            kernels that multiply matrices, else ``None``.
        layout: the output's layout (``"nchw"`` or ``"channels_last"``) for kernels that
            write images, else ``None``.
        flat_k: for the convolution, whether this is its flat-K variant, else ``None``.
        channels: for the convolution, the input channels per group the variant is compiled
            for (what the JIT and ``C_ALIGN`` know of them), else ``None``.

    The last five describe the variant for readers of the report, who select rows by them
    rather than by parsing ``name``.
    """

    name: str
    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any] = field(default_factory=dict)
    configs: tuple[Any, ...] = ()
    divisible_by_16: tuple[str, ...] = ()
    yardstick: KernelSpec | None = None
    dtype: str | None = None
    input_precision: str | None = None
    layout: str | None = None
    flat_k: bool | None = None
    channels: int | None = None
