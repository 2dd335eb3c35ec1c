"""Fused ``relu(conv2d(x, weight, bias))``: one implicit-GEMM Triton kernel and its launcher.

The convolution is computed as a matrix product that is never materialised (an *implicit*
GEMM, as in cuDNN's ``IMPLICIT_GEMM`` algorithm): for each group ``g``

* ``M = N * H_out * W_out`` rows, one per output pixel ``(n, oh, ow)``;
* ``N = C_out / groups`` columns, one per output channel of the group;
* ``K = KH * KW * C_in / groups`` reduction terms, ordered ``(kh, kw, c)``: one per kernel tap
  and input channel. The ``(M, K)`` operand is gathered from the input on the fly (zero padding
  is a load mask); the ``(K, N)`` operand is the weight, packed once by :func:`pack_weight`.

Layouts. The kernel reads the input as NHWC (channels contiguous): channels_last tensors are
read in place, NCHW ones are converted by the launcher with one
``x.contiguous(memory_format=torch.channels_last)`` (the same pass cuDNN makes for tensor-core
convolutions of NCHW tensors). The weight is packed as ``(C_out, KH, KW, C_in / groups)``,
contiguous: column ``co`` of the GEMM's ``B`` operand is one contiguous row of ``K`` values
("K-major", as cuBLAS's TN layout and Hopper's TF32 MMA want it); a channels_last weight is
already in that layout and is used as is.

Main loop, two variants chosen by the launcher (``FLAT_K``):

* GEMM form (``C_in / groups >= 16`` and kernels up to 16 x 16): one flat loop over K-steps.
  A step covers one tap ``(kh, kw)`` and ``BLOCK_K`` consecutive channels, so its input tile is
  ``BLOCK_M`` rows of ``BLOCK_K`` contiguous values (16-byte vectors, asynchronous copies),
  addressed as a per-row base pointer computed once before the loop plus one scalar offset.
  The tap advances with scalar (uniform) counters; which rows a tap reads inside the image is
  one AND and one compare per row against a bit set of valid taps built before the loop.
* flat K (few channels per group, e.g. LeNet's first layer with 1, or larger kernels): the
  ``(kh, kw, c)`` index of each reduction term is decoded with a division and a modulo per
  element, as in a general gather: slower per term, but with 1 or 3 channels a step of the
  GEMM form would waste most of its ``BLOCK_K`` lanes.

Bias and ReLU are applied in the epilogue while the accumulator is still in fp32 (fp64 for
float64 inputs), and each output element is written exactly once. Padding is symmetric zero
padding, as in :func:`torch.nn.functional.conv2d`; for other padding modes, and for the extra
row/column of ``padding="same"`` with an even kernel, the caller pads the input with ``F.pad``
first (as :class:`torch.nn.Conv2d` and ``F.conv2d`` do).

This module holds the kernel and the launcher only; autograd, the torch custom op,
``nn.Module`` and the choice of backend live in :mod:`torchkit.nn.conv`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from torchkit.kernels._aot import KernelSpec
from torchkit.kernels.gemm_reference import yardstick_spec

__all__ = [
    "INTERPRETER_BLOCKS",
    "Conv2dReLUBlocks",
    "aot_specs",
    "conv2d_relu_fwd",
    "output_geometry",
    "pack_weight",
    "uses_flat_k",
]

_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MAX_GROUPS = 65535  # groups are the grid's second axis, limited to 2**16 - 1 on CUDA
_INT32_LIMIT = 2**31  # element offsets in the kernel are int32
# The GEMM form tracks valid taps in one int32 per row: 16 bits for kh, 16 for kw.
_MAX_GEMM_TAPS = 16
_MIN_GEMM_CHANNELS = 16  # below this, a K-step would be mostly padding: the flat-K variant


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
    num_stages: int = 3


# Used for CPU tensors (the Triton interpreter), where autotuning would re-run every
# candidate through numpy: large tiles mean few program instances, which is what is fast there.
# The launcher narrows block_k to 16 for layers with 16 or fewer channels per group.
INTERPRETER_BLOCKS = Conv2dReLUBlocks(block_m=64, block_n=32, block_k=32, group_m=8)


# The tilings tried on GPUs: (block_m, block_n, block_k, num_warps, num_stages), GROUP_M = 8.
# `python -m torchkit kernels` compiles each one for sm_80 and sm_90 next to a plain GEMM with
# the same tile (tests/unit/test_kernel_report.py: no spills, hottest loop within 1.5x of that
# GEMM's). Five tiles, not dozens: early pruning drops the ones a layer cannot fill, so
# autotuning a ResNet layer times two to four of them. BLOCK_K is 32 throughout: the smallest
# channel count the GEMM form serves without masking half of each step is then 32.
_TILES: tuple[tuple[int, int, int, int, int], ...] = (
    (128, 128, 32, 8, 3),  # wide layers
    (128, 64, 32, 4, 3),
    (64, 64, 32, 4, 3),
    (128, 32, 32, 4, 3),
    (64, 16, 32, 4, 3),  # narrow layers: depthwise, LeNet's 6 and 16 channels
)
_MAX_SHARED_BYTES = 100 * 1024  # what every sm_80+ part offers a block, with room to spare


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


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def uses_flat_k(c_in_g: int, kh: int, kw: int) -> bool:
    """Whether a layer runs the flat-K variant: fewer than 16 input channels per group, or a
    kernel side longer than 16 (the GEMM form tracks valid taps in 16-bit sets).

    Example:
        >>> uses_flat_k(1, 5, 5), uses_flat_k(64, 3, 3), uses_flat_k(64, 31, 31)
        (True, False, True)
    """
    return c_in_g < _MIN_GEMM_CHANNELS or max(kh, kw) > _MAX_GEMM_TAPS


def _fits(config: triton.Config, element_size: int, tensor_cores: bool, flat_k: bool) -> bool:
    """Whether a tiling compiles without spills for a kernel variant (the kernel report checks
    it for each reported variant): its pipeline fits in ``_MAX_SHARED_BYTES``; without tensor
    cores (fp32 IEEE, fp64: ``tl.dot`` is FMAs) a thread holds at most 32 accumulators; the
    flat-K variant gathers at most 16 input elements per thread and K-step."""
    bm, bn, bk = (config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    threads = 32 * config.num_warps
    if (bm * bk + bk * bn) * element_size * config.num_stages > _MAX_SHARED_BYTES:
        return False
    if not tensor_cores and bm * bn > 32 * threads:
        return False
    return not (flat_k and bm * bk > 16 * threads)


def _prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any
) -> list[triton.Config]:
    """Drop the tilings a layer cannot fill before autotuning times the rest.

    Kept: the tiles that :func:`_fits` the variant and, along each of M (output pixels), N
    (output channels of a group) and K (the reduction terms of a K-step: one tap's channels in
    the GEMM form, the whole kernel in the flat-K variant), are no larger than the size rounded
    up to a power of two (or than the smallest tile offers) and no smaller than that or 32.
    If none is left, the smallest tile runs.
    """
    c_in_g, kh, kw = named_args["C_IN_G"], named_args["KH"], named_args["KW"]
    flat_k = kwargs["FLAT_K"]
    element_size = named_args["x_ptr"].element_size()
    tensor_cores = kwargs["INPUT_PRECISION"] == "tf32" or element_size == 2
    sizes = {
        "BLOCK_M": named_args["M"],
        "BLOCK_N": named_args["C_OUT_G"],
        "BLOCK_K": kh * kw * c_in_g if flat_k else c_in_g,
    }
    bounds = {}
    for name, size in sizes.items():
        smallest = min(config.kwargs[name] for config in configs)
        bounds[name] = (min(32, _next_pow2(size)), max(smallest, _next_pow2(size)))
    kept = [
        config
        for config in configs
        if _fits(config, element_size, tensor_cores, flat_k)
        and all(low <= config.kwargs[name] <= high for name, (low, high) in bounds.items())
    ]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


@triton.jit(do_not_specialize=["M_BUCKET"])
def _conv2d_relu_fwd_kernel(
    x_ptr,  # input, NHWC: element (n, h, w, c) at n*stride_xn + h*stride_xh + w*stride_xw + c
    w_ptr,  # packed weight (C_out, KH, KW, C_in // groups), contiguous (see pack_weight)
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
    stride_xn,  # input strides, in elements (the channel stride is 1)
    stride_xh,
    stride_xw,
    stride_yn,  # output strides, in elements
    stride_yc,
    stride_yh,
    stride_yw,
    M_BUCKET,  # M rounded up to a power of two: an autotuning key only, never read
    HAS_BIAS: tl.constexpr,  # add b_ptr[c_out] before the ReLU
    FLAT_K: tl.constexpr,  # the flat-K variant (few channels per group) instead of the GEMM form
    EVEN_C: tl.constexpr,  # BLOCK_K divides C_IN_G: the GEMM form needs no channel mask
    ACC_DTYPE: tl.constexpr,  # tl.float32, or tl.float64 for float64 inputs
    INPUT_PRECISION: tl.constexpr,  # tl.dot precision for fp32 inputs: "tf32" or "ieee"
    UPCAST_DOT: tl.constexpr,  # cast both tiles to ACC_DTYPE before tl.dot (see the launcher)
    ROUND_BF16: tl.constexpr,  # round the bf16 output to nearest even by hand (interpreter)
    SPLIT_STORE: tl.constexpr,  # store in two halves along N (for outputs with strided channels)
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

    # Rows: output pixels (n, oh, ow). Rows past M wrap around to valid pixels, as columns past
    # C_OUT_G do: the main loop then needs no row or column mask, and the store drops them.
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = offs_m % M
    ow = rows % W_OUT
    n_oh = rows // W_OUT
    oh = n_oh % H_OUT
    batch = n_oh // H_OUT
    ih0 = oh * stride_h - pad_h  # input row of tap kh = 0
    iw0 = ow * stride_w - pad_w  # input column of tap kw = 0
    x_rows = x_ptr + batch * stride_xn + ih0 * stride_xh + iw0 * stride_xw + group * C_IN_G

    # Columns: output channels of this group, each a contiguous row of K packed weights.
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_out = group * C_OUT_G + offs_n % C_OUT_G
    k_total = KH * KW * C_IN_G
    w_cols = w_ptr + c_out * k_total
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    if FLAT_K:
        num_steps = tl.cdiv(k_total, BLOCK_K)
    else:
        num_steps = KH * KW * tl.cdiv(C_IN_G, BLOCK_K)
        # Bit 16 + kh of taps[row] is set when input row ih0 + kh * dil_h is inside the image,
        # bit kw when column iw0 + kw * dil_w is: a tap is read when both of its bits are set.
        taps = tl.zeros((BLOCK_M,), dtype=tl.int32)
        for kh in range(KH):
            ih = ih0 + kh * dil_h
            taps |= ((ih >= 0) & (ih < H)).to(tl.int32) << (16 + kh)
        for kw in range(KW):
            iw = iw0 + kw * dil_w
            taps |= ((iw >= 0) & (iw < W)).to(tl.int32) << kw
    # The GEMM form's position in K, advanced by scalar counters: the tap's bits in taps, its
    # offset in the input (kh * dil_h * stride_xh + kw * dil_w * stride_xw), the first channel
    # of the step and the step's first packed weight.
    tap_h = 1 << 16
    tap_w = 1
    x_tap = 0
    c0 = 0
    w_k = 0
    for step in range(num_steps):
        if FLAT_K:
            # Decode (kh, kw, c) per reduction term; terms past K are masked off.
            k = step * BLOCK_K + offs_k
            c = k % C_IN_G
            kh_kw = k // C_IN_G
            dh = (kh_kw // KW) * dil_h
            dw = (kh_kw % KW) * dil_w
            ih = ih0[:, None] + dh[None, :]
            iw = iw0[:, None] + dw[None, :]
            in_k = k < k_total
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(
                x_rows[:, None] + (dh * stride_xh + dw * stride_xw + c)[None, :],
                mask=in_k[None, :] & inside,
                other=0.0,
            )
            b = tl.load(w_cols[None, :] + k[:, None], mask=in_k[:, None], other=0.0)
        else:
            tap = tap_h | tap_w
            inside = (taps & tap) == tap
            a_ptrs = x_rows[:, None] + (x_tap + c0 + offs_k)[None, :]
            b_ptrs = w_cols[None, :] + (w_k + offs_k)[:, None]
            if EVEN_C:
                a = tl.load(a_ptrs, mask=inside[:, None], other=0.0)
                b = tl.load(b_ptrs)
            else:
                in_c = c0 + offs_k < C_IN_G
                a = tl.load(a_ptrs, mask=inside[:, None] & in_c[None, :], other=0.0)
                b = tl.load(b_ptrs, mask=in_c[:, None], other=0.0)
            # Next step: the next BLOCK_K channels, or the next tap (kw first, then kh).
            c0 += BLOCK_K
            w_k += BLOCK_K
            next_tap = c0 >= C_IN_G
            w_k = tl.where(next_tap, w_k - c0 + C_IN_G, w_k)
            c0 = tl.where(next_tap, 0, c0)
            x_tap = tl.where(next_tap, x_tap + dil_w * stride_xw, x_tap)
            tap_w = tl.where(next_tap, tap_w << 1, tap_w)
            next_row = tap_w == (1 << KW)
            x_tap = tl.where(next_row, x_tap + dil_h * stride_xh - KW * dil_w * stride_xw, x_tap)
            tap_w = tl.where(next_row, 1, tap_w)
            tap_h = tl.where(next_row, tap_h << 1, tap_h)
        if UPCAST_DOT:
            a = a.to(ACC_DTYPE)
            b = b.to(ACC_DTYPE)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        acc += tl.load(b_ptr + c_out).to(ACC_DTYPE)[None, :]
    # ReLU that keeps NaN, like torch.relu (tl.maximum would turn NaN into 0 on GPUs).
    acc = tl.where(acc < 0.0, 0.0, acc)
    if ROUND_BF16:
        # Round to nearest even at bit 16, as the GPU's cvt.rn.bf16.f32 does; the interpreter's
        # own conversion truncates. NaN stays a quiet NaN, overflow becomes inf.
        bits = acc.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        bits = tl.where(acc != acc, 0x7FC00000, bits)
        acc = bits.to(tl.float32, bitcast=True)
    out = acc.to(y_ptr.dtype.element_ty)

    y_rows = batch * stride_yn + oh * stride_yh + ow * stride_yw
    row_ok = offs_m < M
    if SPLIT_STORE:
        # Channels not contiguous (an NCHW output): each element is a scalar store with its
        # own 64-bit address. Two half-width stores bound what is live at once (fp32 128 x 64
        # on 4 warps, sm_90: 255 registers and 80 bytes of spills -> 200 registers).
        y_offs = y_rows[:, None] + (c_out * stride_yc)[None, :]
        mask = row_ok[:, None] & (offs_n < C_OUT_G)[None, :]
        y_lo, y_hi = tl.split(tl.permute(tl.reshape(y_offs, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))
        out_lo, out_hi = tl.split(
            tl.permute(tl.reshape(out, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
        )
        mask_lo, mask_hi = tl.split(
            tl.permute(tl.reshape(mask, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
        )
        tl.store(y_ptr + y_lo, out_lo, mask=mask_lo)
        tl.store(y_ptr + y_hi, out_hi, mask=mask_hi)
    else:
        mask = row_ok[:, None] & (offs_n < C_OUT_G)[None, :]
        tl.store(y_ptr + y_rows[:, None] + (c_out * stride_yc)[None, :], out, mask=mask)


_conv2d_relu_fwd_heuristics = triton.heuristics(
    {"EVEN_C": lambda args: args["C_IN_G"] % args["BLOCK_K"] == 0}
)(_conv2d_relu_fwd_kernel)

_conv2d_relu_fwd_kernel_autotuned = triton.autotune(
    configs=_autotune_configs(),
    # What changes the best tile: the GEMM's N and K (channels and kernel size), the bucket
    # of its M, and (added by Triton) the tensors' dtypes.
    key=["C_IN_G", "C_OUT_G", "KH", "KW", "M_BUCKET"],
    prune_configs_by={"early_config_prune": _prune_configs},
)(_conv2d_relu_fwd_heuristics)


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight in the kernel's layout: ``(C_out, KH, KW, C_in / groups)``, contiguous.

    A channels_last weight is already laid out so and comes back as a view (no copy).

    Example:
        >>> w = torch.randn(8, 4, 3, 3)
        >>> pack_weight(w).shape
        torch.Size([8, 3, 3, 4])
        >>> w_cl = w.contiguous(memory_format=torch.channels_last)
        >>> pack_weight(w_cl).data_ptr() == w_cl.data_ptr()
        True
    """
    return weight.permute(0, 2, 3, 1).contiguous()


def output_geometry(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int, int, int], torch.memory_format]:
    """The output's shape and memory format, as :func:`torch.nn.functional.conv2d` gives them:
    channels_last when ``x`` or ``weight`` is (and not simply contiguous), else contiguous.

    Example:
        >>> x, w = torch.empty(2, 3, 8, 8), torch.empty(4, 3, 3, 3)
        >>> output_geometry(x, w, (1, 1), (0, 0), (1, 1))
        ((2, 4, 6, 6), torch.contiguous_format)
    """
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    channels_last = any(
        t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
        for t in (x, weight)
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return (n, c_out, h_out, w_out), memory_format


def _pair(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be two ints, got {value!r}")
    return int(value[0]), int(value[1])


def _check_blocks(blocks: Conv2dReLUBlocks) -> None:
    sizes = {"block_m": blocks.block_m, "block_n": blocks.block_n, "block_k": blocks.block_k}
    for name, size in sizes.items():
        if size < 16 or size & (size - 1):
            raise ValueError(f"blocks.{name} must be a power of two >= 16, got {size}")
    if blocks.group_m < 1:
        raise ValueError(f"blocks.group_m must be positive, got {blocks.group_m}")


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
    packed_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the fused kernel: ``relu(conv2d(x, weight, bias))`` with zero padding.

    The output has ``x``'s dtype and device and :func:`output_geometry`'s memory format; any
    input strides are accepted (an input whose channels are not contiguous is converted to
    channels_last first, see the module docstring).

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
        packed_weight: ``pack_weight(weight)``, when the caller keeps it between calls;
            ``None`` packs here.

    Returns:
        The ``(N, C_out, H_out, W_out)`` output.

    Raises:
        ValueError: shapes, dtypes, devices or options disagree.
        TypeError: ``x`` has a dtype the kernel does not support.

    Example:
        Needs Triton's interpreter for these CPU tensors (``TRITON_INTERPRET=1`` set before
        Triton is imported):

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
    shape, memory_format = output_geometry(x, weight, stride, padding, dilation)
    h_out, w_out = shape[2:]
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"the padded input ({h + 2 * padding[0]} x {w + 2 * padding[1]}) "
            f"is smaller than the dilated kernel "
            f"({dilation[0] * (kh - 1) + 1} x {dilation[1] * (kw - 1) + 1})"
        )
    if packed_weight is None:
        packed_weight = pack_weight(weight)
    elif packed_weight.shape != (c_out, kh, kw, c_in_g) or not packed_weight.is_contiguous():
        raise ValueError(
            f"packed_weight must be pack_weight(weight), of shape {(c_out, kh, kw, c_in_g)} "
            f"and contiguous; got shape {tuple(packed_weight.shape)}, strides "
            f"{packed_weight.stride()}"
        )
    if blocks is not None:
        _check_blocks(blocks)

    y = torch.empty(shape, device=x.device, dtype=x.dtype, memory_format=memory_format)
    m = n * h_out * w_out
    if y.numel() == 0:
        return y
    if c_in > 1 and x.stride(1) != 1:  # the kernel reads channels as the contiguous axis
        x = x.contiguous(memory_format=torch.channels_last)
    if bias is not None:
        bias = bias.contiguous()  # the kernel indexes it as bias[c_out] with unit stride
    # Offsets are computed in int32 inside the kernel (int64 would cost registers on every
    # gathered element): refuse what would overflow rather than read the wrong memory.
    for name, t in (("x", x), ("weight", packed_weight), ("output", y)):
        span = sum((size - 1) * abs(step) for size, step in zip(t.shape, t.stride(), strict=True))
        if span >= _INT32_LIMIT or m >= _INT32_LIMIT:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} and strides {t.stride()} spans {span} "
                f"elements (M = {m}); the kernel indexes with int32 and supports < 2**31"
            )

    args = (
        x,
        packed_weight,
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
        x.stride(0),
        x.stride(2),
        x.stride(3),
        *y.stride(),
        _next_pow2(m),
    )
    interpreted = x.device.type == "cpu"
    options = {
        "HAS_BIAS": bias is not None,
        "FLAT_K": uses_flat_k(c_in_g, kh, kw),
        "ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
        "INPUT_PRECISION": "tf32" if allow_tf32 and x.dtype == torch.float32 else "ieee",
        # The interpreter multiplies the raw bit patterns of bfloat16 tiles in tl.dot
        # (triton-lang/triton#11584); bf16 x bf16 products are exact in fp32, so casting the
        # tiles first computes what the GPU's bf16 MMA with an fp32 accumulator computes.
        "UPCAST_DOT": x.dtype == torch.bfloat16 and interpreted,
        "ROUND_BF16": x.dtype == torch.bfloat16 and interpreted,
        "SPLIT_STORE": y.stride(1) != 1,
    }
    c_out_g = c_out // groups
    if blocks is None and not interpreted:

        def grid(meta: dict[str, int]) -> tuple[int, int]:
            tiles = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_out_g, meta["BLOCK_N"])
            return tiles, groups

        _conv2d_relu_fwd_kernel_autotuned[grid](*args, **options)
        return y

    if blocks is None:
        blocks = INTERPRETER_BLOCKS
        if c_in_g <= 16 and not options["FLAT_K"]:
            blocks = blocks._replace(block_k=16)
    tiles = triton.cdiv(m, blocks.block_m) * triton.cdiv(c_out_g, blocks.block_n)
    _conv2d_relu_fwd_heuristics[(tiles, groups)](
        *args,
        **options,
        BLOCK_M=blocks.block_m,
        BLOCK_N=blocks.block_n,
        BLOCK_K=blocks.block_k,
        GROUP_M=blocks.group_m,
        num_warps=blocks.num_warps,
        num_stages=blocks.num_stages,
    )
    return y


def aot_specs() -> list[KernelSpec]:
    """The variants ``python -m torchkit kernels`` compiles, each with every tile it may run.

    The GEMM form for channel counts that are multiples of 64 (ResNet's, VGG's: the JIT sees
    them divisible by 16, and ``BLOCK_K`` divides them): fp32 with TF32 (cuDNN's default,
    ``torch.backends.cudnn.allow_tf32``) and with IEEE products, both with an NCHW output;
    fp16 with a channels_last output (mixed-precision training with channels_last); bf16
    without bias and with an NCHW output (autocast on an NCHW model). Each tensor-core variant
    names :func:`~torchkit.kernels.gemm_reference.gemm_reference` compiled with the same tiles
    as its yardstick. The flat-K variant is reported for fp16 with a channel count that allows
    no vector loads (ResNet's first layer has 3). Convolution stride, dilation and padding
    stay runtime arguments (the general case); unit strides are constants, as in a launch.

    Example:
        >>> sorted(spec.name for spec in aot_specs())[0]
        'bf16,nchw,no bias'
    """
    variants = (
        # (dtype, output layout, INPUT_PRECISION, HAS_BIAS, FLAT_K)
        ("fp32", "nchw", "tf32", True, False),
        ("fp32", "nchw", "ieee", True, False),
        ("fp16", "channels_last", "ieee", True, False),
        ("bf16", "nchw", "ieee", False, False),
        ("fp16", "channels_last", "ieee", True, True),
    )
    unit_stride = {"nchw": {"stride_yw": 1}, "channels_last": {"stride_yc": 1}}
    tunable = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
    specs = []
    for dtype, layout, precision, has_bias, flat_k in variants:
        constexprs = {
            **unit_stride[layout],
            "HAS_BIAS": has_bias,
            "FLAT_K": flat_k,
            "EVEN_C": True,
            "ACC_DTYPE": tl.float32,
            "INPUT_PRECISION": precision,
            "UPCAST_DOT": False,
            "ROUND_BF16": False,
            "SPLIT_STORE": layout == "nchw",
        }
        signature = {
            name: f"*{dtype}" if name.endswith("_ptr") else "i32"
            for name in _conv2d_relu_fwd_kernel.arg_names
            if name not in constexprs and name not in tunable
        }
        element_size = 4 if dtype == "fp32" else 2
        tensor_cores = not (dtype == "fp32" and precision == "ieee")
        configs = tuple(
            c for c in _autotune_configs() if _fits(c, element_size, tensor_cores, flat_k)
        )
        # Channel counts that are multiples of 16 (and of BLOCK_K, as EVEN_C says) in the
        # GEMM form; 3 input channels in the flat-K variant.
        divisible = () if flat_k else ("C_IN_G", "stride_xn", "stride_xh", "stride_xw")
        divisible += ("C_OUT_G", "stride_yn", "stride_yc", "stride_yh", "stride_yw")
        label = [dtype, *([precision] if dtype == "fp32" else []), layout]
        label += [] if has_bias else ["no bias"]
        label += ["flat K"] if flat_k else []
        yardstick = None
        if tensor_cores and not flat_k:
            name = f"{dtype},{precision}" if dtype == "fp32" else dtype
            yardstick = yardstick_spec(name, dtype, precision, configs)
        specs.append(
            KernelSpec(
                name=",".join(label),
                kernel=_conv2d_relu_fwd_kernel_autotuned,
                signature=signature,
                constexprs=constexprs,
                configs=configs,
                divisible_by_16=tuple(name for name in divisible if name in signature),
                yardstick=yardstick,
            )
        )
    return specs
