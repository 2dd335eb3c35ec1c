"""A plain Triton GEMM main loop: the yardstick the kernel report holds other kernels against.

``python -m torchkit kernels`` compiles :func:`gemm_reference` with the same tile, warps, stages
and dtype as each implicit-GEMM kernel config and reports both, so a kernel's hottest loop can be
read against what Triton makes of the simplest possible loop over the same tiles. The kernel has
the shape of the Triton tutorial's matrix multiplication (grouped tile order, one pointer
increment per K-step), written here so that the yardstick does not change when a tutorial does.
It is never launched by torchkit.

Two forms are compiled:

* the yardstick (:func:`yardstick_spec`): operands laid out as the implicit-GEMM convolution's
  are, ``A`` and ``B`` both contiguous along K (the conv's NHWC input rows and its K-major
  packed weight), and no mask along K (``EVEN_K``: the conv's ResNet-like variants need none);
* the tutorial's own form (:func:`aot_specs`, the ``fp16,tutorial`` row of the report): ``B``
  contiguous along N and a mask along K on every step. Triton 3.9 compiles its fp16 128x64x32
  tile (4 warps, 3 stages) for sm_90 to 85 instructions per K-step, with 4 HGMMA and 6
  ``LDGSTS``: the figure the convolution was first measured against (issue 13). It has no
  target; it shows what the yardstick's operand layouts change.

Example:
    >>> spec = yardstick_spec("fp16", "ieee")
    >>> spec.name, spec.kernel.__name__, spec.constexprs["stride_bk"], spec.constexprs["EVEN_K"]
    ('fp16', 'gemm_reference', 1, True)
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from torchkit.kernels._aot import KernelSpec

__all__ = ["TUTORIAL_TILE", "aot_specs", "gemm_reference", "yardstick_spec"]


@triton.jit
def gemm_reference(
    a_ptr,  # A (M, K), strides stride_am, stride_ak
    b_ptr,  # B (K, N), strides stride_bk, stride_bn
    c_ptr,  # C = A @ B (M, N), strides stride_cm, stride_cn
    M,  # rows of A and C
    N,  # columns of B and C
    K,  # the reduction length
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    INPUT_PRECISION: tl.constexpr,  # tl.dot precision for fp32 inputs: "tf32" or "ieee"
    EVEN_K: tl.constexpr,  # BLOCK_K divides K: no mask along K
    BLOCK_M: tl.constexpr,  # rows of C per tile
    BLOCK_N: tl.constexpr,  # columns of C per tile
    BLOCK_K: tl.constexpr,  # reduction terms per tl.dot step
    GROUP_M: tl.constexpr,  # row tiles visited together (L2 reuse of B's columns)
):
    """Program pid computes one BLOCK_M x BLOCK_N tile of C, stepping over K by BLOCK_K."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows and columns past the edge wrap around: they load valid memory and are not stored.
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_K, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_K, other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + offs_cm[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


def yardstick_spec(
    dtype: str,
    precision: str,
    configs: tuple[Any, ...] = (),
    *,
    even_k: bool = True,
    tutorial: bool = False,
) -> KernelSpec:
    """:func:`gemm_reference` as a launch on the implicit-GEMM convolution's operands would
    compile it, or (``tutorial``) on the tutorial's row-major operands.

    The yardstick: ``A`` (M, K) and ``B`` (N, K) contiguous along K, whose unit strides the JIT
    compiles as the constant 1, and ``K`` a multiple of ``BLOCK_K`` (``EVEN_K``). The tutorial
    form: ``A`` (M, K) and ``B`` (K, N) row-major, masked along K. Sizes and the other strides
    are multiples of 16, which the JIT marks divisible by 16 (as for a 4096 x 4096 problem).

    Args:
        dtype: the Triton pointer dtype of A, B and C: ``"fp16"``, ``"bf16"`` or ``"fp32"``.
        precision: ``tl.dot``'s ``input_precision`` (only matters for fp32, and names the
            variant there: ``"fp32,tf32"``).
        configs: the ``triton.Config`` tilings to compile, with ``BLOCK_M``, ``BLOCK_N``,
            ``BLOCK_K`` and ``GROUP_M``.
        even_k: no mask along K; ``False`` masks every step, as a convolution whose channel
            count ``BLOCK_K`` does not divide masks its channels (the variant's name then
            says ``masked K``).
        tutorial: the tutorial's operand layouts and K mask instead of the conv's.
    """
    unit_b = {"stride_bn": 1} if tutorial else {"stride_bk": 1}
    constexprs = {
        "stride_ak": 1,
        **unit_b,
        "stride_cn": 1,
        "INPUT_PRECISION": precision,
        "EVEN_K": even_k and not tutorial,
    }
    tunable = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
    signature = {
        arg: f"*{dtype}" if arg.endswith("_ptr") else "i32"
        for arg in gemm_reference.arg_names
        if arg not in constexprs and arg not in tunable
    }
    name = f"{dtype},{precision}" if dtype == "fp32" else dtype
    if tutorial:
        name += ",tutorial"
    elif not even_k:
        name += ",masked K"
    return KernelSpec(
        name=name,
        kernel=gemm_reference,
        signature=signature,
        constexprs=constexprs,
        configs=tuple(configs),
        divisible_by_16=tuple(arg for arg, kind in signature.items() if kind == "i32"),
        dtype=dtype,
        input_precision=precision,
    )


TUTORIAL_TILE = triton.Config(
    {"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_warps=4, num_stages=3
)
"""The tutorial form's tile: fp16 128x64x32, 4 warps, 3 stages."""


def aot_specs() -> list[KernelSpec]:
    """The tutorial form's row of the kernel report (the yardsticks come with the kernels
    they measure).

    Example:
        >>> [(spec.name, len(spec.configs)) for spec in aot_specs()]
        [('fp16,tutorial', 1)]
    """
    return [yardstick_spec("fp16", "ieee", (TUTORIAL_TILE,), tutorial=True)]
