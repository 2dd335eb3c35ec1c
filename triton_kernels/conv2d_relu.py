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
  ``BLOCK_M`` rows of ``BLOCK_K`` contiguous values, addressed as a per-row base pointer
  computed once before the loop plus one scalar offset. The tap advances with scalar (uniform)
  counters; which rows a tap reads inside the image is one AND and one compare per row against
  a bit set of valid taps built before the loop, in the registers of the threads that load the
  row. The tiles are loaded in 16-byte vectors (asynchronous copies) when the channels per group
  and the input's strides are multiples of 16 bytes' worth of elements: ``C_ALIGN`` tells the
  compiler what a launch's own specialisation (multiples of 16) does not, e.g. 24 fp16 channels.
* flat K (few channels per group, e.g. LeNet's first layer with 1, or larger kernels): the
  ``(kh, kw, c)`` index of each reduction term is decoded with a division and a modulo per
  element, as in a general gather: slower per term, but with 1 or 3 channels a step of the
  GEMM form would waste most of its ``BLOCK_K`` lanes.

Offsets are int32: the launcher bounds every offset the kernel can form before launching (see
``_int32_problem``). The grid is one axis: the tiles of group 0, then those of group 1, and so
on, so the number of groups is not limited by CUDA's 65535 on the other axes.

Bias and ReLU are applied in the epilogue while the accumulator is still in fp32 (fp64 for
float64 inputs), and each output element is written exactly once. Padding is symmetric zero
padding, as in :func:`torch.nn.functional.conv2d`; for other padding modes, and for the extra
row/column of ``padding="same"`` with an even kernel, the caller pads the input with ``F.pad``
first (as :class:`torch.nn.Conv2d` and ``F.conv2d`` do).

This module holds the kernel and the launcher only; autograd, the torch custom op,
``nn.Module`` and the choice of backend live in :mod:`torchkit.nn.conv`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from torchkit.kernels._aot import KernelSpec
from torchkit.kernels.gemm_reference import yardstick_spec

__all__ = [
    "INTERPRETER_BLOCKS",
    "KERNEL_DTYPES",
    "TILES",
    "Conv2dReLUBlocks",
    "aot_specs",
    "candidate_tiles",
    "conv2d_relu_fwd",
    "new_output",
    "output_geometry",
    "pack_weight",
    "uses_flat_k",
]

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
"""The dtypes the kernel computes in; other dtypes run stock torch (torchkit.nn.conv)."""

_INT32_LIMIT = 2**31  # element offsets and program ids in the kernel are int32
# The GEMM form tracks valid taps in one int32 per row: 16 bits for kh, 16 for kw.
_MAX_GEMM_TAPS = 16
_MIN_GEMM_CHANNELS = 16  # below this, a K-step would be mostly padding: the flat-K variant
_VECTOR_BYTES = 16  # the widest global load (LDG.E.128) and cp.async


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

    def config(self) -> triton.Config:
        """The tiling as the ``triton.Config`` Triton's autotuner and compiler take.

        Example:
            >>> Conv2dReLUBlocks(128, 64, 32).config().kwargs["BLOCK_N"]
            64
        """
        sizes = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k}
        return triton.Config(
            {**sizes, "GROUP_M": self.group_m},
            num_warps=self.num_warps,
            num_stages=self.num_stages,
        )

    def check(self) -> None:
        """Raise ``ValueError`` naming the field when the tiling cannot be compiled.

        Example:
            >>> Conv2dReLUBlocks(block_m=24).check()
            Traceback (most recent call last):
                ...
            ValueError: blocks.block_m must be a power of two >= 16, got 24
        """
        for name in ("block_m", "block_n", "block_k"):
            size = getattr(self, name)
            if not isinstance(size, int) or size < 16 or size & (size - 1):
                raise ValueError(f"blocks.{name} must be a power of two >= 16, got {size!r}")
        for name in ("group_m", "num_warps", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"blocks.{name} must be a positive int, got {value!r}")


# Used for CPU tensors (the Triton interpreter), where autotuning would re-run every
# candidate through numpy: large tiles mean few program instances, which is what is fast there.
# The launcher narrows block_k to 16 for layers with 16 channels per group.
INTERPRETER_BLOCKS = Conv2dReLUBlocks(block_m=64, block_n=32, block_k=32, group_m=8)

TILES: tuple[Conv2dReLUBlocks, ...] = (
    Conv2dReLUBlocks(128, 128, 32, num_warps=8),  # wide layers
    Conv2dReLUBlocks(128, 64, 32),
    Conv2dReLUBlocks(64, 64, 32),
    Conv2dReLUBlocks(128, 32, 32),
    Conv2dReLUBlocks(64, 16, 32),  # narrow layers: depthwise, LeNet's 6 and 16 channels
)
"""The tilings tried on GPUs (all with ``GROUP_M = 8`` and 3-stage pipelines).

``python -m torchkit kernels`` compiles each one for sm_80 and sm_90 next to a plain GEMM with
the same tile (tests/unit/test_kernel_report.py: no spills, hottest loop within 1.5x of that
GEMM's). Five tiles, not dozens: :func:`candidate_tiles` drops the ones a layer cannot fill, so
autotuning a ResNet layer times two to four of them. ``BLOCK_K`` is 32 throughout."""

_MAX_SHARED_BYTES = 100 * 1024  # what every sm_80+ part offers a block, with room to spare


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


def _fits(tile: Conv2dReLUBlocks, element_size: int, tensor_cores: bool, flat_k: bool) -> bool:
    """Whether a tiling compiles without spills for a kernel variant (the kernel report checks
    it for each reported variant): its pipeline fits in ``_MAX_SHARED_BYTES``; without tensor
    cores (fp32 IEEE, fp64: ``tl.dot`` is FMAs) a thread holds at most 32 accumulators; the
    flat-K variant gathers at most 16 input elements per thread and K-step."""
    bm, bn, bk = tile.block_m, tile.block_n, tile.block_k
    threads = 32 * tile.num_warps
    if (bm * bk + bk * bn) * element_size * tile.num_stages > _MAX_SHARED_BYTES:
        return False
    if not tensor_cores and bm * bn > 32 * threads:
        return False
    return not (flat_k and bm * bk > 16 * threads)


def candidate_tiles(
    m: int, c_in_g: int, c_out_g: int, kh: int, kw: int, dtype: torch.dtype, tf32: bool
) -> list[Conv2dReLUBlocks]:
    """The tiles of :data:`TILES` autotuning times for a layer (in :data:`TILES` order).

    Kept: the tiles that :func:`_fits` the layer's kernel variant, no taller than ``m`` (the
    output pixels, rounded up to a power of two, or the shortest tile) and whose width lies
    between the output channels per group rounded up to a power of two (or the narrowest
    tile) and that or 32, whichever is smaller. If none is left, the smallest tile.

    Args:
        m: rows of the implicit GEMM, ``N * H_out * W_out``.
        c_in_g: input channels per group.
        c_out_g: output channels per group.
        kh: kernel height.
        kw: kernel width.
        dtype: the input's dtype.
        tf32: whether float32 products use TF32 (``allow_tf32``).

    Example:
        >>> [t[:3] for t in candidate_tiles(32 * 56 * 56, 64, 64, 3, 3, torch.float16, False)]
        [(128, 64, 32), (64, 64, 32), (128, 32, 32)]
    """
    element_size = dtype.itemsize
    tensor_cores = element_size == 2 or (dtype == torch.float32 and tf32)
    flat_k = uses_flat_k(c_in_g, kh, kw)
    tallest = max(min(t.block_m for t in TILES), _next_pow2(m))
    widest = max(min(t.block_n for t in TILES), _next_pow2(c_out_g))
    narrowest = min(32, _next_pow2(c_out_g))
    kept = [
        tile
        for tile in TILES
        if _fits(tile, element_size, tensor_cores, flat_k)
        and tile.block_m <= tallest
        and narrowest <= tile.block_n <= widest
    ]
    return kept or [min(TILES, key=lambda t: t.block_m * t.block_n)]


def _prune_configs(
    configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any
) -> list[triton.Config]:
    """The autotuner's early pruning: the configs of :func:`candidate_tiles` for the launch."""
    tiles = candidate_tiles(
        named_args["M"],
        named_args["C_IN_G"],
        named_args["C_OUT_G"],
        named_args["KH"],
        named_args["KW"],
        named_args["x_ptr"].dtype,
        kwargs["INPUT_PRECISION"] == "tf32",
    )
    kept = {_tile_of(tile.config()) for tile in tiles}
    return [config for config in configs if _tile_of(config) in kept]


def _tile_of(config: triton.Config) -> tuple[int, ...]:
    sizes = tuple(config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"))
    return (*sizes, config.num_warps, config.num_stages)


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
    C_ALIGN: tl.constexpr,  # a power of two dividing C_IN_G and the input strides
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
    """Program pid computes a BLOCK_M x BLOCK_N tile of relu(conv2d) of one group: BLOCK_M
    output pixels times BLOCK_N output channels, reducing over K in BLOCK_K steps with tl.dot.
    The programs of group 0 come first, then those of group 1, and so on."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(C_OUT_G, BLOCK_N)
    group = tl.program_id(0) // (num_pid_m * num_pid_n)
    pid = tl.program_id(0) % (num_pid_m * num_pid_n)
    if C_ALIGN > 1:
        # The launcher passes multiples of C_ALIGN: saying so lets the compiler load BLOCK_K
        # channels in 16-byte vectors (or cp.async) when the JIT alone would not know it (a
        # launch specialises integers on divisibility by 16 only; 24 channels are 48 bytes).
        C_IN_G = C_IN_G // C_ALIGN * C_ALIGN
        stride_xn = stride_xn // C_ALIGN * C_ALIGN
        stride_xh = stride_xh // C_ALIGN * C_ALIGN
        stride_xw = stride_xw // C_ALIGN * C_ALIGN

    # Grouped ordering of the tiles: GROUP_M consecutive row tiles sweep the column tiles
    # together, so a column tile of the weight stays in L2 while it is reused.
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
    y_rows = batch * stride_yn + oh * stride_yh + ow * stride_yw

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
        # The taps inside form a range [lo, hi) along each side, so each set is the difference
        # of two powers of two, computed elementwise from the row's own coordinates: taps then
        # has the layout of the loads it masks, and the loop never moves it between threads.
        lo_h = tl.where(ih0 < 0, (dil_h - 1 - ih0) // dil_h, 0)
        hi_h = tl.minimum(tl.where(ih0 < H, (H - 1 - ih0) // dil_h + 1, 0), KH)
        lo_w = tl.where(iw0 < 0, (dil_w - 1 - iw0) // dil_w, 0)
        hi_w = tl.minimum(tl.where(iw0 < W, (W - 1 - iw0) // dil_w + 1, 0), KW)
        taps_h = tl.where(hi_h > lo_h, (1 << hi_h) - (1 << lo_h), 0)
        taps_w = tl.where(hi_w > lo_w, (1 << hi_w) - (1 << lo_w), 0)
        taps = (taps_h << 16) | taps_w
    # The GEMM form's position in K, advanced by scalar counters: the tap's bits in taps, its
    # offset in the input (kh * dil_h * stride_xh + kw * dil_w * stride_xw), the first channel
    # of the step and the step's first packed weight.
    tap_h = 1 << 16
    tap_w = 1
    x_tap = 0
    c0 = 0
    w_k = 0
    next_col = dil_w * stride_xw
    next_row = dil_h * stride_xh - (KW - 1) * dil_w * stride_xw
    last_w = 1 << (KW - 1)
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
            new_tap = c0 >= C_IN_G
            if not EVEN_C:
                w_k = tl.where(new_tap, w_k - c0 + C_IN_G, w_k)
            c0 = tl.where(new_tap, 0, c0)
            new_row = new_tap & (tap_w == last_w)
            x_tap += tl.where(new_tap, tl.where(new_row, next_row, next_col), 0)
            tap_w = tl.where(new_tap, tl.where(new_row, 1, tap_w << 1), tap_w)
            tap_h = tl.where(new_row, tap_h << 1, tap_h)
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

    row_ok = offs_m < M
    if SPLIT_STORE:
        # Channels not contiguous (an NCHW output): each element is a scalar store with its
        # own 64-bit address. Two half-width stores bound what is live at once (fp32 128 x 64
        # on 4 warps, sm_90: 255 registers and 80 bytes of spills -> 200 registers).
        y_offs = y_rows[:, None] + (c_out * stride_yc)[None, :]
        mask = row_ok[:, None] & (offs_n < C_OUT_G)[None, :]
        y_lo, y_hi = _column_halves(y_offs, BLOCK_M, BLOCK_N)
        out_lo, out_hi = _column_halves(out, BLOCK_M, BLOCK_N)
        mask_lo, mask_hi = _column_halves(mask, BLOCK_M, BLOCK_N)
        tl.store(y_ptr + y_lo, out_lo, mask=mask_lo)
        tl.store(y_ptr + y_hi, out_hi, mask=mask_hi)
    else:
        mask = row_ok[:, None] & (offs_n < C_OUT_G)[None, :]
        tl.store(y_ptr + y_rows[:, None] + (c_out * stride_yc)[None, :], out, mask=mask)


@triton.jit
def _column_halves(tile, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """A ``BLOCK_M x BLOCK_N`` tile as its left and right ``BLOCK_M x BLOCK_N // 2`` halves."""
    return tl.split(tl.permute(tl.reshape(tile, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))


_conv2d_relu_fwd_heuristics = triton.heuristics(
    {"EVEN_C": lambda args: args["C_IN_G"] % args["BLOCK_K"] == 0}
)(_conv2d_relu_fwd_kernel)

_conv2d_relu_fwd_kernel_autotuned = triton.autotune(
    configs=[tile.config() for tile in TILES],
    # What changes the best tile, or which tiles pruning keeps: the GEMM's N and K (channels
    # and kernel size), the bucket of its M, the products (TF32 or IEEE), the bias, the
    # output's layout, the input's channel alignment and (added by Triton) the dtypes.
    key=[
        "C_IN_G",
        "C_OUT_G",
        "KH",
        "KW",
        "M_BUCKET",
        "INPUT_PRECISION",
        "HAS_BIAS",
        "SPLIT_STORE",
        "C_ALIGN",
    ],
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


def _strides_like_channels_last(t: torch.Tensor) -> bool:
    """Whether ``t.suggest_memory_format()`` (C++) is channels_last, for a 4-D tensor: c10's
    ``is_channels_last_strides_2d_s4``, which torch's convolutions use to pick their output's
    memory format. Strides must grow along C, W, H, N (size-1 dimensions included); a zero
    channel stride or an ambiguous ``(N, 1, 1, 1)`` layout is NCHW."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    smallest = 0
    for dim in (1, 3, 2, 0):
        if sizes[dim] == 0 or strides[dim] < smallest:
            return False
        if dim == 0 and smallest == strides[1]:
            return False
        smallest = strides[dim] * max(sizes[dim], 1)
    return True


def output_geometry(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int, int, int], torch.memory_format]:
    """The output's shape and memory format, as :func:`torch.nn.functional.conv2d` gives them:
    channels_last when the strides of ``x`` or ``weight`` suggest it (torch's
    ``suggest_memory_format``, which counts strided views such as ``x[..., ::2]`` of a
    channels_last tensor), except for float64 on CUDA, where cuDNN keeps NCHW; else contiguous.

    Example:
        >>> x, w = torch.empty(2, 3, 8, 8), torch.empty(4, 3, 3, 3)
        >>> output_geometry(x, w, (1, 1), (0, 0), (1, 1))
        ((2, 4, 6, 6), torch.contiguous_format)
        >>> x_cl = x.contiguous(memory_format=torch.channels_last)[..., ::2]
        >>> output_geometry(x_cl, w, (1, 1), (0, 0), (1, 1))
        ((2, 4, 6, 2), torch.channels_last)
    """
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    channels_last = not (x.is_cuda and x.dtype == torch.float64) and (
        _strides_like_channels_last(x) or _strides_like_channels_last(weight)
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return (n, c_out, h_out, w_out), memory_format


def new_output(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """The uninitialised output the kernel writes: :func:`output_geometry`'s shape and memory
    format, ``x``'s dtype and device (the custom op's fake implementation builds the same).

    Example:
        >>> x = torch.empty(2, 16, 3, 3).contiguous(memory_format=torch.channels_last)
        >>> new_output(x, torch.empty(4, 16, 3, 3), (1, 1), (0, 0), (1, 1)).stride()
        (4, 1, 4, 4)
    """
    return _empty(x, *output_geometry(x, weight, stride, padding, dilation))


def _empty(
    x: torch.Tensor, shape: tuple[int, ...], memory_format: torch.memory_format
) -> torch.Tensor:
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=memory_format)


# Offsets past the valid ones by up to a tile: lanes and rows that are masked or wrapped.
_TILE_MARGIN = 256


def _int32_problem(
    x: torch.Tensor,
    x_strides: tuple[int, int, int],
    out_shape: tuple[int, int, int, int],
    weight: torch.Tensor,
    reach: tuple[int, int],
    groups: int,
) -> str | None:
    """What would overflow the kernel's int32 arithmetic, or ``None``.

    Every offset the kernel forms is a sum of terms bounded by these: for the input, the batch
    term, the row and column terms (``reach``: how many rows and columns from the image's
    origin padding, stride and the dilated taps go, either way) and the channels, plus a tile
    of masked lanes; for the packed weight, its size; for the (dense) output, its size; for
    the row and column indices, ``reach`` plus the image; for the rows and programs, ``M`` and
    the grid.
    """
    n, c_in, h, w = x.shape
    sxn, sxh, sxw = x_strides  # torch's strides are never negative
    m = out_shape[0] * out_shape[2] * out_shape[3]
    bounds = (
        (n - 1) * sxn + reach[0] * sxh + reach[1] * sxw + c_in + _TILE_MARGIN,
        weight.numel() + _TILE_MARGIN,
        m * out_shape[1],
        max(reach[0] + h, reach[1] + w),
        m + _TILE_MARGIN,
        -(-m // 16) * -(-out_shape[1] // groups // 16) * groups,
    )
    if max(bounds) < _INT32_LIMIT:  # every call but the rare huge one: no message to build
        return None
    for name, value in zip(_INT32_BOUNDS, bounds, strict=True):
        if value >= _INT32_LIMIT:
            return f"{name} reach {value}"
    return None


_INT32_BOUNDS = (
    "x offsets",
    "weight offsets",
    "output offsets",
    "row and column indices",
    "rows (M)",
    "programs",
)


def _x_strides(x: torch.Tensor) -> tuple[int, int, int]:
    """The input's batch, row and column strides as the kernel takes them: 0 along a dimension
    of size 1, whose stride never moves a valid address but would enter the int32 sums (a
    size-1 dimension's stride is arbitrary, even in a contiguous tensor)."""
    (n, _, h, w), (sn, _, sh, sw) = x.shape, x.stride()
    return (sn if n > 1 else 0, sh if h > 1 else 0, sw if w > 1 else 0)


def _channel_alignment(c_in_g: int, x_strides: tuple[int, ...], element_size: int) -> int:
    """The largest power of two, up to a 16-byte vector of elements, that divides ``c_in_g``
    and the input's batch, row and column strides: the kernel's ``C_ALIGN``."""
    common = math.gcd(c_in_g, *x_strides)
    align = 1
    while (2 * align) * element_size <= _VECTOR_BYTES and common % (2 * align) == 0:
        align *= 2
    return align


def _kernel_arguments(
    x: torch.Tensor,
    packed_weight: torch.Tensor,
    bias: torch.Tensor | None,
    y: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    allow_tf32: bool,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The kernel's runtime arguments and the compile-time options the launcher sets (the
    tiling aside), for an NHWC-readable ``x`` and the output ``y``."""
    n, _, h, w = x.shape
    c_out, kh, kw, c_in_g = packed_weight.shape
    h_out, w_out = y.shape[2:]
    m = n * h_out * w_out
    x_strides = _x_strides(x)
    flat_k = uses_flat_k(c_in_g, kh, kw)
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
        *x_strides,
        *y.stride(),
        _next_pow2(m),
    )
    interpreted = x.device.type == "cpu"
    options = {
        "HAS_BIAS": bias is not None,
        "FLAT_K": flat_k,
        "C_ALIGN": 1 if flat_k else _channel_alignment(c_in_g, x_strides, x.element_size()),
        "ACC_DTYPE": tl.float64 if x.dtype == torch.float64 else tl.float32,
        "INPUT_PRECISION": "tf32" if allow_tf32 and x.dtype == torch.float32 else "ieee",
        # The interpreter multiplies the raw bit patterns of bfloat16 tiles in tl.dot
        # (triton-lang/triton#11584); bf16 x bf16 products are exact in fp32, so casting the
        # tiles first computes what the GPU's bf16 MMA with an fp32 accumulator computes.
        "UPCAST_DOT": x.dtype == torch.bfloat16 and interpreted,
        "ROUND_BF16": x.dtype == torch.bfloat16 and interpreted,
        "SPLIT_STORE": y.stride(1) != 1,
    }
    return args, options


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

    The arguments are trusted to be valid for :func:`torch.nn.functional.conv2d` (the public
    entry points check them: :class:`torchkit.nn.FusedConv2dReLU`,
    :func:`torchkit.nn.functional.conv2d_relu`) and of one of :data:`KERNEL_DTYPES`; this
    checks only what keeps the kernel's memory accesses in bounds. The output has ``x``'s
    dtype and device and :func:`output_geometry`'s memory format; any input strides are
    accepted (an input whose channels are not contiguous, or whose strides would overflow the
    kernel's int32 offsets, is converted to channels_last first, see the module docstring).

    Args:
        x: input ``(N, C_in, H, W)``.
        weight: ``(C_out, C_in // groups, KH, KW)``, same dtype and device as ``x``.
        bias: ``(C_out,)`` or ``None``.
        stride: ``(stride_h, stride_w)``, positive.
        padding: ``(pad_h, pad_w)`` zero padding on both sides, non-negative (as in
            :func:`torch.nn.functional.conv2d`; pad asymmetric amounts with ``F.pad`` first).
        dilation: ``(dil_h, dil_w)``, positive.
        groups: number of groups; divides ``C_in`` and ``C_out``.
        allow_tf32: let ``tl.dot`` use TF32 for float32 inputs on GPUs (what cuDNN does when
            ``torch.backends.cudnn.allow_tf32`` is set).
        blocks: a fixed tiling (see :meth:`Conv2dReLUBlocks.check`). ``None`` autotunes on
            CUDA tensors over :func:`candidate_tiles` and uses :data:`INTERPRETER_BLOCKS` on
            CPU tensors (the Triton interpreter).
        packed_weight: ``pack_weight(weight)``, when the caller keeps it between calls;
            ``None`` packs here.

    Returns:
        The ``(N, C_out, H_out, W_out)`` output.

    Raises:
        ValueError: ``packed_weight`` is not ``pack_weight(weight)``, or an offset the kernel
            forms in int32 would reach ``2**31`` even with ``x`` in channels_last.

    Example:
        Needs Triton's interpreter for these CPU tensors (``TRITON_INTERPRET=1`` set before
        Triton is imported):

        >>> x, w = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
        >>> y = conv2d_relu_fwd(x, w, None, (1, 1), (1, 1), (1, 1), 1)
        >>> torch.testing.assert_close(y, torch.relu(torch.nn.functional.conv2d(x, w, padding=1)))
    """
    c_out, c_in_g, kh, kw = weight.shape
    if packed_weight is None:
        packed_weight = pack_weight(weight)
    elif packed_weight.shape != (c_out, kh, kw, c_in_g) or not packed_weight.is_contiguous():
        raise ValueError(
            f"packed_weight must be pack_weight(weight), of shape {(c_out, kh, kw, c_in_g)} "
            f"and contiguous; got shape {tuple(packed_weight.shape)}, strides "
            f"{packed_weight.stride()}"
        )
    shape, memory_format = output_geometry(x, weight, stride, padding, dilation)
    if math.prod(shape) == 0:
        return _empty(x, shape, memory_format)
    _, c_in, h, w = x.shape
    h_out, w_out = shape[2:]
    if c_in > 1 and x.stride(1) != 1:  # the kernel reads channels as the contiguous axis
        x = x.contiguous(memory_format=torch.channels_last)
    # Offsets are int32 in the kernel (int64 would cost registers on every gathered element):
    # an input whose strides alone overflow them (a strided view) is copied to channels_last;
    # what overflows even then is refused rather than read from the wrong address.
    reach = (
        padding[0] + (h_out - 1) * stride[0] + kh * dilation[0],
        padding[1] + (w_out - 1) * stride[1] + kw * dilation[1],
    )
    problem = _int32_problem(x, _x_strides(x), shape, weight, reach, groups)
    if problem is not None and problem.startswith("x "):
        n = x.shape[0]
        dense = (c_in * h * w * (n > 1), w * c_in * (h > 1), c_in * (w > 1))  # channels_last
        if _int32_problem(x, dense, shape, weight, reach, groups) is None:
            x, problem = x.contiguous(memory_format=torch.channels_last), None
    if problem is not None:
        raise ValueError(
            f"the kernel indexes with int32 and supports offsets < 2**31: {problem} (x of "
            f"shape {tuple(x.shape)} and strides {x.stride()}, output {shape})"
        )
    y = _empty(x, shape, memory_format)
    if bias is not None:
        bias = bias.contiguous()  # the kernel indexes it as bias[c_out] with unit stride

    args, options = _kernel_arguments(
        x, packed_weight, bias, y, stride, padding, dilation, groups, allow_tf32
    )
    m, c_out_g = args[4], args[10]
    if blocks is None and x.device.type != "cpu":

        def grid(meta: dict[str, int]) -> tuple[int]:
            tiles = triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(c_out_g, meta["BLOCK_N"])
            return (tiles * groups,)

        _conv2d_relu_fwd_kernel_autotuned[grid](*args, **options)
        return y

    if blocks is None:
        blocks = INTERPRETER_BLOCKS
        if c_in_g == 16:  # the GEMM form with 16 channels: a 32-deep step would be half empty
            blocks = blocks._replace(block_k=16)
    tiles = triton.cdiv(m, blocks.block_m) * triton.cdiv(c_out_g, blocks.block_n)
    _conv2d_relu_fwd_heuristics[(tiles * groups,)](
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


class _Variant(NamedTuple):
    """A variant :func:`aot_specs` reports: what a launch for one kind of layer compiles."""

    dtype: str  # Triton's name of the tensors' dtype
    layout: str  # the output's layout: "nchw" or "channels_last"
    precision: str  # INPUT_PRECISION
    has_bias: bool
    channels: int  # input channels per group (the input is channels_last, contiguous)
    label: str


_VARIANTS = (
    _Variant("fp32", "nchw", "tf32", True, 64, "fp32,tf32,nchw"),
    _Variant("fp32", "nchw", "ieee", True, 64, "fp32,ieee,nchw"),
    _Variant("fp16", "channels_last", "ieee", True, 64, "fp16,channels_last"),
    _Variant("bf16", "nchw", "ieee", False, 64, "bf16,nchw,no bias"),
    _Variant("fp16", "channels_last", "ieee", True, 24, "fp16,channels_last,24 channels"),
    _Variant("fp16", "channels_last", "ieee", True, 3, "fp16,channels_last,flat K"),
)


def aot_specs() -> list[KernelSpec]:
    """The variants ``python -m torchkit kernels`` compiles, each with every tile it may run.

    The GEMM form for channel counts that are multiples of 64 (ResNet's, VGG's: the JIT sees
    them divisible by 16, and ``BLOCK_K`` divides them): fp32 with TF32 (cuDNN's default,
    ``torch.backends.cudnn.allow_tf32``) and with IEEE products, both with an NCHW output;
    fp16 with a channels_last output (mixed-precision training with channels_last); bf16
    without bias and with an NCHW output (autocast on an NCHW model). Then the GEMM form for a
    channel count that is a multiple of 8 but not of 16 (24, 40, 72: ``C_ALIGN = 8`` says so,
    and ``BLOCK_K`` masks the last channels of each tap), fp16 channels_last. Each
    tensor-core variant names :func:`~torchkit.kernels.gemm_reference.gemm_reference`
    compiled with the same tiles and operand layouts as its yardstick (masked along K where
    the conv masks its channels). The flat-K variant is reported for fp16 with a channel count
    that allows no vector loads (ResNet's first layer has 3). Convolution stride, dilation and
    padding stay runtime arguments (the general case); unit strides are constants, as in a
    launch.

    Example:
        >>> sorted(spec.name for spec in aot_specs())[0]
        'bf16,nchw,no bias'
    """
    unit_stride = {"nchw": {"stride_yw": 1}, "channels_last": {"stride_yc": 1}}
    tunable = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M")
    specs = []
    for v in _VARIANTS:
        element_size = 4 if v.dtype == "fp32" else 2
        flat_k = uses_flat_k(v.channels, 3, 3)
        constexprs = {
            **unit_stride[v.layout],
            "HAS_BIAS": v.has_bias,
            "FLAT_K": flat_k,
            "EVEN_C": not flat_k and v.channels % TILES[0].block_k == 0,
            "C_ALIGN": 1 if flat_k else _channel_alignment(v.channels, (), element_size),
            "ACC_DTYPE": tl.float32,
            "INPUT_PRECISION": v.precision,
            "UPCAST_DOT": False,
            "ROUND_BF16": False,
            "SPLIT_STORE": v.layout == "nchw",
        }
        signature = {
            name: f"*{v.dtype}" if name.endswith("_ptr") else "i32"
            for name in _conv2d_relu_fwd_kernel.arg_names
            if name not in constexprs and name not in tunable
        }
        tensor_cores = not (v.dtype == "fp32" and v.precision == "ieee")
        configs = tuple(
            tile.config() for tile in TILES if _fits(tile, element_size, tensor_cores, flat_k)
        )
        # What a launch marks divisible by 16: the channel count and the input strides (its
        # multiples) when it is one; the output's channels (64) and strides throughout.
        divisible = ("C_IN_G", "stride_xn", "stride_xh", "stride_xw")
        divisible = divisible if v.channels % 16 == 0 else ()
        divisible += ("C_OUT_G", "stride_yn", "stride_yc", "stride_yh", "stride_yw")
        yardstick = None
        if tensor_cores and not flat_k:
            yardstick = yardstick_spec(v.dtype, v.precision, configs, even_k=constexprs["EVEN_C"])
        specs.append(
            KernelSpec(
                name=v.label,
                kernel=_conv2d_relu_fwd_kernel_autotuned,
                signature=signature,
                constexprs=constexprs,
                configs=configs,
                divisible_by_16=tuple(name for name in divisible if name in signature),
                yardstick=yardstick,
                dtype=v.dtype,
                input_precision=v.precision,
                layout=v.layout,
                flat_k=flat_k,
                channels=v.channels,
            )
        )
    return specs
