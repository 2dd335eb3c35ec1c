"""A plain Triton GEMM main loop: the yardstick the kernel report holds other kernels against.

``python -m torchkit kernels`` compiles :func:`gemm_reference` with the same tile, warps, stages
and dtype as each implicit-GEMM kernel config and reports both, so a kernel's hottest loop can be
read against what Triton makes of the simplest possible loop over the same tiles. The kernel has
the shape of the Triton tutorial's matrix multiplication (grouped tile order, one pointer
increment per K-step, a mask along K only), written here so that the yardstick does not change
when a tutorial does. It is never launched by torchkit.

Example:
    >>> spec = yardstick_spec("fp16", "fp16", "tf32")
    >>> spec.kernel.__name__, spec.constexprs["stride_ak"]
    ('gemm_reference', 1)
"""

from __future__ import annotations

import triton
import triton.language as tl

from torchkit.kernels._aot import KernelSpec

__all__ = ["gemm_reference", "yardstick_spec"]


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


def yardstick_spec(name: str, dtype: str, precision: str, configs: tuple = ()) -> KernelSpec:
    """:func:`gemm_reference` as a launch on row-major operands would compile it.

    Row-major ``A`` and ``B`` have unit strides along K and N, which the JIT compiles as the
    constant 1; the sizes and the other strides are multiples of 16, which it marks divisible
    by 16 (as for a 4096 x 4096 problem).

    Args:
        name: the variant's label in the report.
        dtype: the Triton pointer dtype of A, B and C: ``"fp16"``, ``"bf16"`` or ``"fp32"``.
        precision: ``tl.dot``'s ``input_precision`` (only matters for fp32).
        configs: the ``triton.Config`` tilings to compile, with ``BLOCK_M``, ``BLOCK_N``,
            ``BLOCK_K`` and ``GROUP_M``.
    """
    constexprs = {"stride_ak": 1, "stride_bn": 1, "stride_cn": 1, "INPUT_PRECISION": precision}
    tunable = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
    signature = {
        arg: f"*{dtype}" if arg.endswith("_ptr") else "i32"
        for arg in gemm_reference.arg_names
        if arg not in constexprs and arg not in tunable
    }
    return KernelSpec(
        name=name,
        kernel=gemm_reference,
        signature=signature,
        constexprs=constexprs,
        configs=tuple(configs),
        divisible_by_16=tuple(arg for arg, kind in signature.items() if kind == "i32"),
    )
