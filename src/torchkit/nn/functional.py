"""Functional forms of torchkit's fused layers, mirroring :mod:`torch.nn.functional`."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from torchkit.backend import select_backend
from torchkit.nn.conv import (
    Conv2dError,
    _check_groups,
    _check_input,
    _check_padding,
    _dispatch,
    _int_pair,
)

__all__ = ["conv2d_relu"]


def conv2d_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``relu(conv2d(input, weight, bias, ...))`` in one fused kernel where a backend has one.

    Arguments are those of :func:`torch.nn.functional.conv2d` (zero padding only; pad with
    ``F.pad`` first for other modes). On CUDA, and on CPU under ``TRITON_INTERPRET=1``, one
    Triton kernel computes the convolution, bias and ReLU; otherwise ``F.conv2d`` followed by
    an in-place ``relu_``. The backend is :func:`torchkit.select_backend` of ``weight.device``;
    a dtype the kernel does not compute in, or a call under ``torch.func`` transforms, runs
    the stock path on every backend.

    Args:
        input: ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
        weight: ``(C_out, C_in // groups, KH, KW)``.
        bias: ``(C_out,)`` or ``None``.
        stride: positive int or pair (a sequence of one int stands for both). Default: 1.
        padding: non-negative int or pair, ``"valid"`` or ``"same"`` (stride 1 only).
            Default: 0.
        dilation: positive int or pair. Default: 1.
        groups: divides ``C_in`` and ``C_out``. Default: 1.

    Returns:
        ``(N, C_out, H_out, W_out)`` (or ``(C_out, H_out, W_out)`` for unbatched input).

    Raises:
        Conv2dError: a bad option, a weight with no output channel or an empty kernel, an
            ``input`` without ``weight.shape[1] * groups`` channels or smaller than the
            dilated kernel, or tensors of different dtypes (a ``RuntimeError``, as
            :func:`torch.nn.functional.conv2d` raises, and a ``ValueError``).
        TypeError: an argument of the wrong type.

    Example:
        >>> from torchkit.nn.functional import conv2d_relu
        >>> x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
        >>> y = conv2d_relu(x, w, b, padding=1)
        >>> expected = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1))
        >>> torch.testing.assert_close(y, expected)
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight must be a Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise Conv2dError(
            f"weight must be 4-D (C_out, C_in // groups, KH, KW), got shape {tuple(weight.shape)}"
        )
    if 0 in weight.shape[0:1] + weight.shape[2:]:
        raise Conv2dError(
            "weight must have at least one output channel and a non-empty kernel, got shape "
            f"{tuple(weight.shape)}"
        )
    groups = _check_groups(groups)
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a Tensor or None, got {type(bias).__name__}")
    if weight.shape[0] % groups:
        raise Conv2dError(
            f"weight has {weight.shape[0]} output channels, not divisible by {groups=}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise Conv2dError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    stride_ = _int_pair("stride", stride, minimum=1)
    dilation_ = _int_pair("dilation", dilation, minimum=1)
    padding_ = _check_padding(padding)
    if padding_ == "same" and stride_ != (1, 1):
        raise Conv2dError(f"padding='same' needs stride 1, got stride={stride!r}")
    backend = select_backend(weight.device)
    _check_input(input, weight, groups)
    return _dispatch(input, weight, bias, stride_, padding_, dilation_, groups, backend)[0]
