"""Fused ``relu(conv2d(x, weight, bias))``: one implicit-GEMM Triton kernel and its launcher.

The convolution is computed as a matrix product that is never materialised (an *implicit*
GEMM, as in cuDNN's ``IMPLICIT_GEMM`` algorithm): for each group ``g``

* ``M = N * H_out * W_out`` rows, one per output pixel ``(n, oh, ow)``;
* ``N = C_out / groups`` columns, one per output channel of the group;
* ``K = C_in / groups * KH * KW`` reduction terms, one per (input channel, kernel row,
  kernel column); the ``(M, K)`` operand is gathered from the input on the fly (zero padding
  is a load mask), the ``(K, N)`` operand is the weight seen as a matrix.

Bias and ReLU are applied in the epilogue while the accumulator is still in fp32 (fp64 for
float64 inputs), and each output element is written exactly once. Padding is symmetric zero
padding, as in :func:`torch.nn.functional.conv2d`; for other padding modes, and for the extra
row/column of ``padding="same"`` with an even kernel, the caller pads the input with ``F.pad``
first (as :class:`torch.nn.Conv2d` and ``F.conv2d`` do).

This module holds the kernel and the launcher only; autograd, ``nn.Module`` and the choice
of backend live in :mod:`torchkit.nn.conv`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from torchkit.kernels._aot import KernelSpec

__all__ = ["INTERPRETER_BLOCKS", "Conv2dReLUBlocks", "aot_specs", "conv2d_relu_fwd"]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_GROUPS = 65535  # groups are the grid's second axis, limited to 2**16 - 1 on CUDA
_INT32_LIMIT = 2**31  # element offsets in the kernel are int32


class Conv2dReLUBlocks(NamedTuple):
    """One tiling of the implicit GEMM: a program computes a ``block_m x block_n`` tile.

    Args:
        block_m: output pixels per tile (``>= 16``, a power of two).
        block_n: output channels per tile (``>= 16``, a power of two).
        block_k: reduction terms per ``tl.dot`` step (``>= 16``, a power of two).
        group_m: tiles along M visited together, so they reuse the same weight columns in L2.
        num_warps: warps per program (ignored by the interpreter).
        num_stages: software-pipelining depth (ignored by the interpreter).
    """

    block_m: int = 64
    block_n: int = 32
    block_k: int = 32
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 2


# Used for CPU tensors (the Triton interpreter), where autotuning would re-run every
# candidate through numpy: large tiles mean few program instances, which is what is slow there.
INTERPRETER_BLOCKS = Conv2dReLUBlocks(block_m=64, block_n=32, block_k=32, group_m=8)


# The tilings tried on GPUs, (block_m, block_n, block_k, num_warps, num_stages). Each one
# compiles without register spills for every aot_specs() variant (fp32 TF32 and IEEE, fp16,
# bf16) on sm_80 and sm_90; `python -m torchkit kernels` prints the table and
# tests/unit/test_kernel_report.py keeps it spill-free. The limit is the gather, not the
# accumulator: each thread computes an address and a mask for each of its input- and
# weight-tile elements, so registers grow with tile elements per thread. ptxas numbers
# (registers, spill bytes) that shaped the list, before -> after:
# * 128x128 and 256x64 tiles: 255 registers and 80-268 B of spills on 8 warps, and 16 warps
#   cap a thread at 128 registers and spill as much: dropped; 8192-element tiles use 8 warps
#   (128x64x32: fp32 IEEE 238 / 214 on sm_80 / sm_90, fp16 159 / 167).
# * 64x64x32 on 4 warps, fp32 IEEE: 255 and 24 B spilled on sm_80 -> BLOCK_K 16: 186.
# * 128x32x32 on 4 warps: 255 and 440-644 B -> 128x32x16 on 8 warps: at most 122.
# * 128x16x32 on 4 warps, bf16 sm_90: 254 -> BLOCK_K 16: 153.
_TILES: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 64, 32, 8, 3),
    (64, 128, 32, 8, 3),
    (64, 64, 16, 4, 3),
    (128, 32, 16, 8, 3),
    (64, 32, 32, 4, 3),
    (32, 32, 32, 4, 3),
    (128, 16, 16, 4, 3),  # narrow layers: few output channels per group
)


def _autotune_configs() -> list[triton.Config]:
    """One ``triton.Config`` per entry of ``_TILES``, all with ``GROUP_M = 8``."""
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
            num_warps=warps,
            num_stages=stages,
        )
        for bm, bn, bk, warps, stages in _TILES
    ]


@triton.jit
def _conv2d_relu_fwd_kernel(
    x_ptr,  # input (N, C_in, H, W), any strides: stride_xn/xc/xh/xw
    w_ptr,  # weight (C_out, C_in // groups, KH, KW), strides stride_wo/wc/wh/ww
    b_ptr,  # bias (C_out,), contiguous; not read unless HAS_BIAS
    y_ptr,  # output (N, C_out, H_out, W_out), strides stride_yn/yc/yh/yw
    M,  # rows of the implicit GEMM: N * H_out * W_out
    H,  # input height (after any non-zero-mode padding the caller applied)
    W,  # input width
    H_OUT,  # output height
    W_OUT,  # output width
    C_IN_G,  # input channels per group: C_in // groups
    C_OUT_G,  # output channels per group: C_out // groups (the GEMM's N)
    KH,  # kernel height
    KW,  # kernel width
    stride_h,  # convolution stride along H
    stride_w,  # convolution stride along W
    pad_h,  # zero padding at the top and bottom (a load mask, never materialised)
    pad_w,  # zero padding at the left and right
    dil_h,  # dilation along H
    dil_w,  # dilation along W
    stride_xn,  # input strides, in elements
    stride_xc,
    stride_xh,
    stride_xw,
    stride_wo,  # weight strides, in elements
    stride_wc,
    stride_wh,
    stride_ww,
    stride_yn,  # output strides, in elements
    stride_yc,
    stride_yh,
    stride_yw,
    HAS_BIAS: tl.constexpr,  # add b_ptr[c_out] before the ReLU
    CHANNELS_INNER: tl.constexpr,  # K ordered (kh, kw, c_in): contiguous loads for channels_last
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
    INPUT_PRECISION: tl.constexpr,  # tl.dot precision for fp32 inputs: "tf32" or "ieee"
    UPCAST_DOT: tl.constexpr,  # cast both tiles to ACC_DTYPE before tl.dot (see the launcher)
    BLOCK_M: tl.constexpr,  # output pixels per tile
    BLOCK_N: tl.constexpr,  # output channels per tile
    BLOCK_K: tl.constexpr,  # reduction terms per tl.dot step
    GROUP_M: tl.constexpr,  # tiles along M that share weight columns (L2 reuse)
):
    """Program (pid, g) computes a BLOCK_M x BLOCK_N tile of relu(conv2d) of group g: BLOCK_M
    output pixels times BLOCK_N output channels, reducing over K in BLOCK_K steps with tl.dot."""
    pid = tl.program_id(0)
    group = tl.program_id(1)

    # Grouped ordering of the tiles: GROUP_M consecutive row tiles sweep the column tiles
    # together, so a column tile of the weight stays in L2 while it is reused.
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(C_OUT_G, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows: output pixels (n, oh, ow).
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    ow = offs_m % W_OUT
    n_oh = offs_m // W_OUT
    oh = n_oh % H_OUT
    batch = (n_oh // H_OUT).to(tl.int64)
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    x_rows = x_ptr + batch * stride_xn + (group * C_IN_G).to(tl.int64) * stride_xc

    # Columns: output channels of this group.
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < C_OUT_G
    c_out = group * C_OUT_G + offs_n
    w_cols = w_ptr + c_out.to(tl.int64) * stride_wo

    k_total = C_IN_G * KH * KW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for k0 in range(0, k_total, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_total
        if CHANNELS_INNER:
            c_in = offs_k % C_IN_G
            kh_kw = offs_k // C_IN_G
            kh = kh_kw // KW
            kw = kh_kw % KW
        else:
            kw = offs_k % KW
            c_kh = offs_k // KW
            kh = c_kh % KH
            c_in = c_kh // KH
        # The input tile is gathered as (BLOCK_K, BLOCK_M) and transposed for tl.dot (a
        # relabelling in shared memory). Gathered addresses carry no contiguity, so Triton
        # lays a load out along its last axis; along M, each thread keeps BLOCK_M / 32 of the
        # row vectors ih0, iw0, x_rows and mask_m live across the loop instead of
        # BLOCK_M / num_warps of them (64x64x32 on 4 warps: 255 -> 166 registers on sm_80).
        ih = ih0[None, :] + (kh * dil_h)[:, None]
        iw = iw0[None, :] + (kw * dil_w)[:, None]
        x_mask = mask_m[None, :] & mask_k[:, None] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_tile_t = tl.load(
            x_rows[None, :] + (c_in * stride_xc)[:, None] + ih * stride_xh + iw * stride_xw,
            mask=x_mask,
            other=0.0,
        )
        x_tile = tl.trans(x_tile_t)
        w_offs = c_in * stride_wc + kh * stride_wh + kw * stride_ww
        w_tile = tl.load(
            w_cols[None, :] + w_offs[:, None],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        if UPCAST_DOT:
            x_tile = x_tile.to(ACC_DTYPE)
            w_tile = w_tile.to(ACC_DTYPE)
        acc = tl.dot(x_tile, w_tile, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        bias = tl.load(b_ptr + c_out, mask=mask_n, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]
    # ReLU that keeps NaN, like torch.relu (tl.maximum would turn NaN into 0 on GPUs).
    acc = tl.where(acc < 0.0, 0.0, acc)

    y_rows = batch * stride_yn + oh * stride_yh + ow * stride_yw
    y_offs = y_rows[:, None] + c_out.to(tl.int64)[None, :] * stride_yc
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


_conv2d_relu_fwd_kernel_autotuned = triton.autotune(
    configs=_autotune_configs(),
    key=["M", "C_IN_G", "C_OUT_G", "KH", "KW", "stride_h", "dil_h", "CHANNELS_INNER"],
)(_conv2d_relu_fwd_kernel)


def _pair(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be two ints, got {value!r}")
    return int(value[0]), int(value[1])


def conv2d_relu_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    *,
    allow_tf32: bool = False,
    blocks: Conv2dReLUBlocks | None = None,
) -> torch.Tensor:
    """Launch the fused kernel: ``relu(conv2d(x, weight, bias))`` with zero padding.

    The output has ``x``'s dtype and device, and is channels_last when ``x`` or ``weight`` is
    (as :func:`torch.nn.functional.conv2d`'s output is); any input strides are accepted.

    Args:
        x: input ``(N, C_in, H, W)``; float16, bfloat16, float32 or float64.
        weight: ``(C_out, C_in // groups, KH, KW)``, same dtype and device as ``x``.
        bias: ``(C_out,)`` or ``None``.
        stride: ``(stride_h, stride_w)``, positive.
        padding: ``(pad_h, pad_w)`` zero padding on both sides, non-negative (as in
            :func:`torch.nn.functional.conv2d`; pad asymmetric amounts with ``F.pad`` first).
        dilation: ``(dil_h, dil_w)``, positive.
        groups: number of groups; divides ``C_in`` and ``C_out``.
        allow_tf32: let ``tl.dot`` use TF32 for float32 inputs on GPUs (what cuDNN does when
            ``torch.backends.cudnn.allow_tf32`` is set).
        blocks: a fixed tiling. ``None`` autotunes on CUDA tensors and uses
            :data:`INTERPRETER_BLOCKS` on CPU tensors (the Triton interpreter).

    Returns:
        The ``(N, C_out, H_out, W_out)`` output.

    Raises:
        ValueError: shapes, dtypes, devices or options disagree.
        TypeError: ``x`` has a dtype the kernel does not support.

    Example:
        On CPU tensors this runs in Triton's interpreter, which needs ``TRITON_INTERPRET=1``
        set before Triton is imported:

        >>> x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
        >>> y = conv2d_relu_fwd(x, w, None, (1, 1), (1, 1), (1, 1), 1)
        >>> torch.testing.assert_close(y, torch.relu(torch.nn.functional.conv2d(x, w, padding=1)))
    """
    stride, padding = _pair("stride", stride), _pair("padding", padding)
    dilation = _pair("dilation", dilation)
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(
            f"stride and dilation must be positive and padding non-negative, got "
            f"stride={stride}, padding={padding}, dilation={dilation}"
        )
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"x must be 4-D and weight 4-D, got shapes {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if x.dtype not in _KERNEL_DTYPES:
        raise TypeError(f"x has dtype {x.dtype}; the kernel supports {_KERNEL_DTYPES}")
    tensors = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
    for name, t in tensors.items():
        if t.dtype != x.dtype or t.device != x.device:
            raise ValueError(
                f"{name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}; "
                "they must match"
            )
    n, c_in, h, w = x.shape
    c_out, c_in_g, kh, kw = weight.shape
    if groups > _MAX_GROUPS:
        raise ValueError(f"groups={groups} exceeds the launch grid's limit of {_MAX_GROUPS}")
    if groups < 1 or c_in % groups or c_out % groups or c_in_g != c_in // groups:
        raise ValueError(
            f"x has {c_in} channels and weight has shape {tuple(weight.shape)}, which does not "
            f"fit groups={groups}: expected weight.shape[1] == {c_in} // {groups} and C_out "
            "divisible by groups"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")
    if bias is not None:
        bias = bias.contiguous()  # the kernel indexes it as bias[c_out] with unit stride
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"the padded input ({h + 2 * padding[0]} x {w + 2 * padding[1]}) "
            f"is smaller than the dilated kernel "
            f"({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1})"
        )

    if blocks is not None:
        sizes = {"block_m": blocks.block_m, "block_n": blocks.block_n, "block_k": blocks.block_k}
        for name, size in sizes.items():
            if size < 16 or size & (size - 1):
                raise ValueError(f"blocks.{name} must be a power of two >= 16, got {size}")
        if blocks.group_m < 1:
            raise ValueError(f"blocks.group_m must be positive, got {blocks.group_m}")

    channels_last = any(
        t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        for t in (x, weight)
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty(
        (n, c_out, h_out, w_out), device=x.device, dtype=x.dtype, memory_format=memory_format
    )
    m = n * h_out * w_out
    if y.numel() == 0:
        return y
    # Offsets are computed in int32 inside the kernel (int64 would cost registers on every
    # gathered element): refuse what would overflow rather than read the wrong memory.
    for name, t in (("x", x), ("weight", weight), ("output", y)):
        span = sum((size - 1) * abs(step) for size, step in zip(t.shape, t.stride(), strict=True))
        if span >= _INT32_LIMIT or m >= _INT32_LIMIT:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} and strides {t.stride()} spans {span} "
                f"elements (M = {m}); the kernel indexes with int32 and supports < 2**31"
            )

    is_fp64 = x.dtype == torch.float64
    args = (
        x,
        weight,
        bias if bias is not None else y,  # never read when HAS_BIAS is False
        y,
        m,
        h,
        w,
        h_out,
        w_out,
        c_in_g,
        c_out // groups,
        kh,
        kw,
        *stride,
        *padding,
        *dilation,
        *x.stride(),
        *weight.stride(),
        *y.stride(),
    )
    options = {
        "HAS_BIAS": bias is not None,
        "CHANNELS_INNER": x.stride(1) < x.stride(3),
        "ACC_DTYPE": tl.float64 if is_fp64 else tl.float32,
        "INPUT_PRECISION": "tf32" if allow_tf32 and x.dtype == torch.float32 else "ieee",
        # The interpreter multiplies the raw bit patterns of bfloat16 tiles in tl.dot
        # (triton-lang/triton#11584); bf16 x bf16 products are exact in fp32, so casting the
        # tiles first computes what the GPU's bf16 MMA with an fp32 accumulator computes.
        "UPCAST_DOT": x.dtype == torch.bfloat16 and x.device.type == "cpu",
    }
    c_out_g = c_out // groups
    if blocks is None and x.device.type == "cuda":

        def grid(meta: dict[str, int]) -> tuple[int, int]:
            tiles = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_out_g, meta["BLOCK_N"])
            return tiles, groups

        _conv2d_relu_fwd_kernel_autotuned[grid](*args, **options)
        return y

    b = INTERPRETER_BLOCKS if blocks is None else blocks
    tiles = triton.cdiv(m, b.block_m) * triton.cdiv(c_out_g, b.block_n)
    _conv2d_relu_fwd_kernel[(tiles, groups)](
        *args,
        **options,
        BLOCK_M=b.block_m,
        BLOCK_N=b.block_n,
        BLOCK_K=b.block_k,
        GROUP_M=b.group_m,
        num_warps=b.num_warps,
        num_stages=b.num_stages,
    )
    return y


# Strides a launch passes as 1 for each memory format; Triton's JIT compiles an int argument
# equal to 1 as a constant, so the ahead-of-time variants do the same.
_UNIT_STRIDES = {
    "nchw": {"stride_xw": 1, "stride_ww": 1, "stride_yw": 1},
    "channels_last": {"stride_xc": 1, "stride_wc": 1, "stride_yc": 1},
}


def aot_specs() -> list[KernelSpec]:
    """The variants ``python -m torchkit kernels`` compiles, each for every autotune config.

    fp32 with TF32 (cuDNN's default, ``torch.backends.cudnn.allow_tf32``) and with IEEE
    products, both contiguous; fp16 channels_last (the layout of mixed-precision training);
    bf16 contiguous without bias. Convolution stride, dilation and padding stay runtime
    arguments (the general case); unit memory strides are constants, as in a real launch.

    Example:
        >>> sorted(spec.name for spec in aot_specs())[0]
        'bf16,nchw,no bias'
    """
    variants = (
        # (dtype, memory format, INPUT_PRECISION, HAS_BIAS)
        ("fp32", "nchw", "tf32", True),
        ("fp32", "nchw", "ieee", True),
        ("fp16", "channels_last", "ieee", True),
        ("bf16", "nchw", "ieee", False),
    )
    tunable = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")  # set by each autotune config
    specs = []
    for dtype, layout, precision, has_bias in variants:
        constexprs = {
            **_UNIT_STRIDES[layout],
            "HAS_BIAS": has_bias,
            "CHANNELS_INNER": layout == "channels_last",
            "ACC_DTYPE": tl.float32,
            "INPUT_PRECISION": precision,
            "UPCAST_DOT": False,
        }
        signature = {
            name: f"*{dtype}" if name.endswith("_ptr") else "i32"
            for name in _conv2d_relu_fwd_kernel.arg_names
            if name not in constexprs and name not in tunable
        }
        label = [dtype, *([precision] if dtype == "fp32" else []), layout]
        label += [] if has_bias else ["no bias"]
        specs.append(
            KernelSpec(
                name=",".join(label),
                kernel=_conv2d_relu_fwd_kernel_autotuned,
                signature=signature,
                constexprs=constexprs,
            )
        )
    return specs
