"""``FusedConv2dReLU``: a drop-in for ``nn.Sequential(nn.Conv2d(...), nn.ReLU())``.

The naming chain of the op: ``torchkit.kernels.conv2d_relu._conv2d_relu_fwd_kernel`` (the Triton
kernel) -> ``conv2d_relu_fwd`` (its launcher) -> :class:`Conv2dReLUFunction` (autograd) ->
:func:`torchkit.nn.functional.conv2d_relu` / :class:`FusedConv2dReLU` (this module).

Backends (:func:`torchkit.backend.select_backend`, asked for the weight's device):

* ``Backend.TRITON`` (CUDA tensors): the compiled implicit-GEMM kernel computes conv, bias and
  ReLU in one pass and writes the output once;
* ``Backend.TRITON_INTERPRETER`` (CPU tensors, ``TRITON_INTERPRET=1``): the same kernel, run
  by Triton's interpreter;
* ``Backend.TORCH``: ``F.conv2d`` followed by an in-place ``relu_`` on its fresh output (no
  second output tensor; autograd accepts it because the convolution's backward does not need
  its output).

Backward (Triton backends): the output ``y`` is saved (it exists anyway, so this costs no
memory), the incoming gradient is masked with ``y > 0`` exactly as ``torch.relu``'s backward
does (``aten.threshold_backward``), and ``aten.convolution_backward`` computes the input,
weight and bias gradients with the vendor library (cuDNN on CUDA). Writing a Triton backward
would only re-implement what cuDNN already does well; the fusion pays in the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from torchkit.backend import Backend, select_backend

__all__ = ["Conv2dReLUFunction", "FusedConv2dReLU"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PADDING_STRINGS = ("same", "valid")
_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

IntPair = int | tuple[int, int]


def _int_pair(name: str, value: IntPair | Sequence[int], *, minimum: int) -> tuple[int, int]:
    """``value`` as two ints ``>= minimum``; ``TypeError``/``ValueError`` naming ``name``."""
    if isinstance(value, int) and not isinstance(value, bool):
        pair: tuple[int, ...] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pair = tuple(value)
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return pair[0], pair[1]


def _check_padding(padding: str | IntPair | Sequence[int]) -> str | tuple[int, int]:
    if isinstance(padding, str):
        if padding not in _PADDING_STRINGS:
            raise ValueError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
        return padding
    return _int_pair("padding", padding, minimum=0)


def _same_padding(
    kernel_size: tuple[int, int], dilation: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``padding="same"`` as ``((top, left), (bottom - top, right - left))``: the symmetric part
    and the extra row/column an even dilated kernel needs at the bottom/right (as torch pads)."""
    totals = [d * (k - 1) for k, d in zip(kernel_size, dilation, strict=True)]
    symmetric = (totals[0] // 2, totals[1] // 2)
    extra = (totals[0] - 2 * symmetric[0], totals[1] - 2 * symmetric[1])
    return symmetric, extra


def _check_input(input: torch.Tensor, weight: torch.Tensor, groups: int) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a Tensor, got {type(input).__name__}")
    if input.dim() not in (3, 4):
        raise ValueError(
            f"input must be (N, C, H, W) or unbatched (C, H, W), got shape {tuple(input.shape)}"
        )
    expected = weight.shape[1] * groups
    if input.shape[-3] != expected:
        raise ValueError(
            f"input has {input.shape[-3]} channels but {expected} were expected "
            f"(weight {tuple(weight.shape)}, groups={groups}); input shape {tuple(input.shape)}"
        )


def _autocast(
    input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cast like autocast casts ``conv2d``'s arguments (floating, not float64) when it is on."""
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t

    return cast(input), cast(weight), None if bias is None else cast(bias)


class Conv2dReLUFunction(torch.autograd.Function):
    """Autograd for the fused kernel: ``relu(conv2d(input, weight, bias))`` with zero padding.

    ``forward`` launches the Triton kernel; ``backward`` masks the gradient with the saved
    output (``threshold_backward``, as ``relu`` does) and calls ``aten.convolution_backward``.
    Both are differentiable torch ops, so double backward works too.

    Example:
        >>> x = torch.randn(2, 3, 8, 8, requires_grad=True)
        >>> w = torch.randn(4, 3, 3, 3, requires_grad=True)
        >>> y = Conv2dReLUFunction.apply(x, w, None, (1, 1), (1, 1), (1, 1), 1, False)
        >>> y.sum().backward()
        >>> x.grad.shape
        torch.Size([2, 3, 8, 8])
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        groups: int,
        allow_tf32: bool,
    ) -> torch.Tensor:
        from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

        output = conv2d_relu_fwd(
            input, weight, bias, stride, padding, dilation, groups, allow_tf32=allow_tf32
        )
        ctx.save_for_backward(input, weight, output)
        ctx.conv_args = (stride, padding, dilation, groups)  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return output

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        input, weight, output = ctx.saved_tensors  # type: ignore[attr-defined]
        stride, padding, dilation, groups = ctx.conv_args  # type: ignore[attr-defined]
        has_bias = ctx.has_bias  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_conv = torch.ops.aten.threshold_backward(grad_output, output, 0)
        grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_conv,
            input,
            weight,
            [weight.shape[0]] if has_bias else None,
            list(stride),
            list(padding),
            list(dilation),
            False,  # transposed
            [0, 0],  # output_padding
            groups,
            [needs[0], needs[1], has_bias and needs[2]],
        )
        return grad_input, grad_weight, grad_bias, None, None, None, None, None


def _dispatch(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: str | tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    backend: Backend,
) -> torch.Tensor:
    """``relu(conv2d(...))`` on ``backend``, for an input :func:`_check_input` accepted."""
    if backend is Backend.TORCH:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups).relu_()
    return _conv2d_relu_kernel(input, weight, bias, stride, padding, dilation, groups, backend)


def _conv2d_relu_kernel(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: str | tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    backend: Backend,
) -> torch.Tensor:
    """:func:`_dispatch` on a Triton ``backend``, for an input already checked."""
    # F.conv2d reports (or, for meta inputs, accepts) mixed devices itself; the kernel cannot
    # take them, and must say so before autocast is asked about the input's device.
    if input.device != weight.device or (bias is not None and bias.device != weight.device):
        devices = f"input on {input.device}, weight on {weight.device}"
        if bias is not None:
            devices += f", bias on {bias.device}"
        raise RuntimeError(
            f"the {backend.value} backend needs its tensors on one device, got {devices}"
        )
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    input, weight, bias = _autocast(input, weight, bias)
    if input.dtype not in _TRITON_DTYPES:
        raise TypeError(
            f"the {backend.value} backend supports float16, bfloat16, float32 and float64, "
            f"got input of dtype {input.dtype}"
        )
    if padding == "valid":
        pads = (0, 0)
    elif padding == "same":
        pads, extra = _same_padding((weight.shape[2], weight.shape[3]), dilation)
        if any(extra):  # an even dilated kernel: one more row/column at the bottom/right
            input = F.pad(input, (0, extra[1], 0, extra[0]))
    else:
        pads = padding
    output = Conv2dReLUFunction.apply(
        input,
        weight,
        bias,
        stride,
        pads,
        dilation,
        groups,
        input.is_cuda and torch.backends.cudnn.allow_tf32,
    )
    return output.squeeze(0) if unbatched else output


class FusedConv2dReLU(nn.Conv2d):
    """``relu(conv2d(x))`` in one kernel: a drop-in for ``nn.Conv2d`` followed by ``nn.ReLU``.

    It subclasses :class:`torch.nn.Conv2d` and has its constructor, parameters, ``state_dict``
    and ``repr``: a ``Conv2d``'s weights load directly (:meth:`from_conv` shares them). The
    forward pass runs the fused Triton kernel on CUDA (and under ``TRITON_INTERPRET=1`` on CPU
    tensors), else ``F.conv2d`` and an in-place ``relu_``; :meth:`backend_for` says which, and
    :attr:`last_backend` records what the latest call ran on.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: ``KH`` (square) or ``(KH, KW)``.
        stride: positive int or pair. Default: 1.
        padding: non-negative int or pair, ``"valid"`` (none) or ``"same"`` (output size equals
            input size; only with stride 1). Default: 0.
        dilation: positive int or pair. Default: 1.
        groups: blocked connections from input to output channels; divides both channel
            counts (``groups == in_channels`` is a depthwise convolution). Default: 1.
        bias: learn an additive bias. Default: ``True``.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``; non-zero
            modes pad the input with ``F.pad`` first, as ``nn.Conv2d`` does. Default:
            ``"zeros"``.
        device: device of the parameters.
        dtype: dtype of the parameters.

    Raises:
        ValueError: a channel count not divisible by ``groups``, an unknown ``padding_mode``
            or padding string, a non-positive ``kernel_size``/``stride``/``dilation``, a
            negative padding, or ``padding="same"`` with a stride other than 1.
        TypeError: an argument that is not an int / pair of ints.

    Example:
        >>> import torchkit.nn
        >>> layer = torchkit.nn.FusedConv2dReLU(3, 8, 3, padding=1)
        >>> layer
        FusedConv2dReLU(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
        >>> layer(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
        >>> layer.last_backend in set(torchkit.Backend)
        True
    """

    last_backend: Backend | None
    """The backend the latest forward call ran on (``None`` before the first call)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: str | IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"{name}={value} is not divisible by groups={groups}")
        kernel_size = _int_pair("kernel_size", kernel_size, minimum=1)
        stride = _int_pair("stride", stride, minimum=1)
        dilation = _int_pair("dilation", dilation, minimum=1)
        padding = _check_padding(padding)
        if padding == "same" and stride != (1, 1):
            raise ValueError(
                f"padding='same' needs stride 1 (as in nn.Conv2d), got stride={stride}"
            )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
            padding_mode=padding_mode,
            device=device,
            dtype=dtype,
        )
        self.last_backend = None

    @classmethod
    def backend_for(cls, device: torch.device | str) -> Backend:
        """The backend the layer runs on for parameters on ``device`` (the package policy).

        Example:
            >>> import torchkit
            >>> with torchkit.force_backend("torch"):
            ...     FusedConv2dReLU.backend_for("cpu")
            <Backend.TORCH: 'torch'>
        """
        return select_backend(device)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> FusedConv2dReLU:
        """A fused layer computing ``relu(conv(x))`` that shares ``conv``'s parameters.

        The parameters are the same ``nn.Parameter`` objects (not copies), so an optimizer
        built over ``conv`` keeps updating the fused layer. Hooks are not carried over.

        Args:
            conv: a :class:`torch.nn.Conv2d` (not a transposed or lazy, uninitialised one).

        Example:
            >>> conv = nn.Conv2d(3, 8, 3)
            >>> fused = FusedConv2dReLU.from_conv(conv)
            >>> fused.weight is conv.weight
            True
        """
        if not isinstance(conv, nn.Conv2d) or isinstance(conv, nn.modules.lazy.LazyModuleMixin):
            raise TypeError(f"conv must be an initialised nn.Conv2d, got {type(conv).__name__}")
        fused = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=conv.padding,  # type: ignore[arg-type]
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",  # placeholders, replaced by conv's parameters below
        )
        fused.weight = conv.weight
        fused.bias = conv.bias
        fused.train(conv.training)
        return fused

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``relu(conv2d(input))`` for ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)`` input."""
        # This runs on every call: read each parameter once (nn.Module.__getattr__ is slow)
        # and check the input once.
        weight = self.weight
        backend = select_backend(weight.device)
        _check_input(input, weight, self.groups)
        padding: str | tuple[int, int] = self.padding  # type: ignore[assignment]
        if self.padding_mode != "zeros":
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        output = _dispatch(
            input,
            weight,
            self.bias,
            self.stride,  # type: ignore[arg-type]
            padding,
            self.dilation,  # type: ignore[arg-type]
            self.groups,
            backend,
        )
        # Straight into the instance dict: nn.Module.__setattr__ first searches parameters,
        # buffers and submodules for the name.
        self.__dict__["last_backend"] = backend
        return output
