"""``FusedConv2dReLU``: a drop-in for ``nn.Sequential(nn.Conv2d(...), nn.ReLU())``.

The naming chain of the op: ``torchkit.kernels.conv2d_relu._conv2d_relu_fwd_kernel`` (the Triton
kernel) -> ``conv2d_relu_fwd`` (its launcher) -> ``torch.ops.torchkit.conv2d_relu`` (the torch
custom op, with its fake implementation and autograd, defined here) ->
:func:`torchkit.nn.functional.conv2d_relu` / :class:`FusedConv2dReLU` (this module).

Backends (:func:`torchkit.backend.select_backend`, asked for the weight's device):

* ``Backend.TRITON`` (CUDA tensors): the compiled implicit-GEMM kernel computes conv, bias and
  ReLU in one pass and writes the output once;
* ``Backend.TRITON_INTERPRETER`` (CPU tensors, ``TRITON_INTERPRET=1``): the same kernel, run
  by Triton's interpreter;
* ``Backend.TORCH``: ``F.conv2d`` followed by an in-place ``relu_`` on its fresh output (no
  second output tensor; autograd accepts it because the convolution's backward does not need
  its output).

Tracing: on the Triton backends, a traced call goes through the custom op
``torchkit::conv2d_relu`` (``torch.library.custom_op``), which tracers see as one opaque node
with a fake implementation (shape, dtype and memory format) and a registered backward:
``torch.compile`` (no graph break), ``torch.export.export`` and ``torch.jit.trace`` record it, on
CUDA and under the interpreter alike. An eager call runs the same forward and backward without
the op's dispatch overhead (:class:`_Conv2dReLUFunction`). ``torch.jit.script`` is refused with
a message saying so (:class:`FusedConv2dReLU`). The op's arguments are ``conv2d``'s (zero
padding, 4-D input), then ``allow_tf32``, ``blocks`` (a pinned tiling, the fields of
``Conv2dReLUBlocks``, or ``None`` to autotune) and ``packed_weight`` (``pack_weight(weight)``
when the caller keeps it, or ``None`` to pack in the op). Needs Triton's interpreter for
CPU tensors (``TRITON_INTERPRET=1``):

    >>> x, w = torch.randn(1, 3, 6, 6), torch.randn(4, 3, 3, 3)
    >>> conv = ((1, 1), (1, 1), (1, 1), 1)  # stride, padding, dilation, groups
    >>> y = torch.ops.torchkit.conv2d_relu(x, w, None, *conv, False, None, None)
    >>> torch.testing.assert_close(y, F.relu(F.conv2d(x, w, padding=1)))

Backward (Triton backends): the output ``y`` is saved (it exists anyway, so this costs no
memory), the incoming gradient is masked with ``y > 0`` exactly as ``torch.relu``'s backward
does (``aten.threshold_backward``), and ``aten.convolution_backward`` computes the input,
weight and bias gradients with the vendor library (cuDNN on CUDA). Writing a Triton backward
would only re-implement what cuDNN already does; the fusion saves forward traffic, the output
crossing memory once instead of up to five times (a model: docs/performance.md).

Calls the kernel cannot run go to the stock path on every backend, and the layer reports
``Backend.TORCH`` for them (:attr:`FusedConv2dReLU.last_backend`): inputs of a dtype the kernel
does not compute in (integers, complex, bool: torch computes or raises there exactly as
``F.conv2d`` + ``relu`` do) and calls under ``torch.func`` transforms (``grad``, ``vmap``,
``jvp``...), whose wrapped tensors have no storage for a Triton launch and which torch's
convolution supports.

Errors: a bad argument or input raises what ``nn.Conv2d``/``F.conv2d`` raise on every backend
(``TypeError`` for a wrong type, else :class:`Conv2dError`, a ``RuntimeError`` like torch's
that is also a ``ValueError``).

Private torch API, tested with torch 2.13:

* ``Tensor._version`` (the in-place version counter, torch 2.4 to 2.13) keys the packed-weight
  cache of :class:`FusedConv2dReLU`; torch has no public way to ask whether a tensor changed
  in place. The cache also counts optimizer steps with the public
  ``torch.optim.optimizer.register_optimizer_step_post_hook``, registered once per process.
* ``torch._C._are_functorch_transforms_active()`` says whether a ``torch.func`` transform is
  running; torch has no public way to ask.
"""

from __future__ import annotations

import numbers
import weakref
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.hooks import RemovableHandle

from torchkit.backend import Backend, select_backend

__all__ = ["Conv2dError", "FusedConv2dReLU"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_PADDING_STRINGS = ("same", "valid")

IntPair = int | tuple[int, int]


class Conv2dError(RuntimeError, ValueError):
    """A bad argument or input to a convolution.

    A ``RuntimeError``, as ``F.conv2d`` and ``nn.Conv2d.forward`` raise for bad shapes and
    values, so code written against torch catches it; also a ``ValueError``, as torchkit
    raised before its kernels matched torch's exception types.

    Example:
        >>> import torchkit.nn
        >>> try:
        ...     torchkit.nn.FusedConv2dReLU(4, 2, 3)(torch.randn(1, 3, 8, 8))
        ... except RuntimeError as error:
        ...     print(type(error).__name__, isinstance(error, ValueError))
        Conv2dError True
    """


def _is_int(value: object) -> bool:
    """An integer as torch's int arguments take it (numpy's too), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_pair(
    name: str, value: IntPair | Sequence[int], *, minimum: int, single: bool = True
) -> tuple[int, int]:
    """``value`` as two ints ``>= minimum``; ``TypeError``/``Conv2dError`` naming ``name``.
    A sequence of one int stands for both, as in ``F.conv2d``, when ``single`` is set."""
    if _is_int(value):
        pair: tuple[Any, ...] = (value, value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        pair = tuple(value)
        if single and len(pair) == 1:
            pair = pair * 2
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if not all(_is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if len(pair) != 2:
        raise Conv2dError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        kind = "positive" if minimum == 1 else f">= {minimum}"
        raise Conv2dError(f"{name} must be {kind}, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_groups(groups: object) -> int:
    if not _is_int(groups):
        raise TypeError(f"groups must be an int, got {groups!r}")
    if groups < 1:  # type: ignore[operator]
        raise Conv2dError(f"groups must be positive, got {groups}")
    return int(groups)  # type: ignore[call-overload]


def _check_padding(padding: str | IntPair | Sequence[int]) -> str | tuple[int, int]:
    if isinstance(padding, str):
        if padding not in _PADDING_STRINGS:
            raise Conv2dError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
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
        raise Conv2dError(
            f"input must be (N, C, H, W) or unbatched (C, H, W), got shape {tuple(input.shape)}"
        )
    expected = weight.shape[1] * groups
    if input.shape[-3] != expected:
        raise Conv2dError(
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


# ------------------------------------------------------------------ the custom op

_OP_SCHEMA = (
    "(Tensor input, Tensor weight, Tensor? bias, int[] stride, int[] padding, int[] dilation, "
    "int groups, bool allow_tf32, int[]? blocks, Tensor? packed_weight) -> Tensor"
)


def _run_kernel(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    allow_tf32: bool,
    blocks: Sequence[int] | None,
    packed_weight: torch.Tensor | None,
) -> torch.Tensor:
    """The op's forward: the Triton launcher, with the op's arguments. A pinned tiling is
    checked here, where the op's callers pass it (the layer checks its own when it is set)."""
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks, conv2d_relu_fwd

    if blocks is not None:
        _check_blocks(blocks)
    return conv2d_relu_fwd(
        input,
        weight,
        bias,
        (stride[0], stride[1]),
        (padding[0], padding[1]),
        (dilation[0], dilation[1]),
        groups,
        allow_tf32=allow_tf32,
        blocks=None if blocks is None else Conv2dReLUBlocks(*blocks),
        packed_weight=packed_weight,
    )


def _check_blocks(blocks: Sequence[int]) -> None:
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks

    if not isinstance(blocks, Sequence) or not 0 < len(blocks) <= len(Conv2dReLUBlocks._fields):
        raise TypeError(f"blocks must be a Conv2dReLUBlocks or None, got {blocks!r}")
    Conv2dReLUBlocks(*blocks).check()


_conv2d_relu_op = torch.library.custom_op(
    "torchkit::conv2d_relu", _run_kernel, mutates_args=(), schema=_OP_SCHEMA
)


@_conv2d_relu_op.register_fake
def _conv2d_relu_fake(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    *_: object,  # groups, allow_tf32, blocks, packed_weight: they do not change the output
) -> torch.Tensor:
    """What the op returns, without running it: the launcher's own output tensor, built by the
    same function (shape, dtype, device and strides)."""
    from torchkit.kernels.conv2d_relu import new_output

    return new_output(input, weight, tuple(stride), tuple(padding), tuple(dilation))


def _conv2d_relu_setup_context(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor
) -> None:
    input, weight, bias, stride, padding, dilation, groups = inputs[:7]
    ctx.save_for_backward(input, weight, output)
    ctx.conv_args = (list(stride), list(padding), list(dilation), groups)  # type: ignore[attr-defined]
    ctx.has_bias = bias is not None  # type: ignore[attr-defined]


def _conv2d_relu_backward(
    ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
) -> tuple[torch.Tensor | None, ...]:
    """``relu``'s backward (``threshold_backward`` on the saved output), then the convolution's
    (``aten.convolution_backward``): torch ops, so double backward works too."""
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
        stride,
        padding,
        dilation,
        False,  # transposed
        [0, 0],  # output_padding
        groups,
        [needs[0], needs[1], has_bias and needs[2]],
    )
    return grad_input, grad_weight, grad_bias, None, None, None, None, None, None, None


_conv2d_relu_op.register_autograd(_conv2d_relu_backward, setup_context=_conv2d_relu_setup_context)


class _Conv2dReLUFunction(torch.autograd.Function):
    """The op for eager calls: the same forward, context and backward, as an autograd.Function.

    torch.library dispatches a Python custom op through Python layers that cost more than the
    launch itself. With the Triton launch stubbed out (``TRITON_INTERPRET=1``, one CPU thread,
    best of 15 x 200 calls, a 64-channel 3 x 3 layer), a call took 26 us in the launcher, 48 us
    through the op for inputs without grad and 89 us with grad, 67 us as this autograd.Function;
    ``FusedConv2dReLU`` then took 37 us in inference (it calls the launcher directly) and 69 us
    in training. Tracers must see the op, so :func:`_dispatch` uses this class or the bare
    launcher only when nothing traces the call (:func:`_eager`).
    """

    @staticmethod
    def forward(*args: object) -> torch.Tensor:
        return _run_kernel(*args)  # type: ignore[arg-type]

    setup_context = staticmethod(_conv2d_relu_setup_context)
    backward = staticmethod(_conv2d_relu_backward)


# ------------------------------------------------------------------ dispatch


def _eager(input: torch.Tensor) -> bool:
    """Whether the call runs eagerly on real tensors: no tracer (torch.compile, torch.export,
    torch.jit.trace) and no tensor subclass (fake tensors, ...). Only then may the layer's
    packed weight be used, and the call skip the custom op (:class:`_Conv2dReLUFunction`)."""
    return not (torch.compiler.is_compiling() or torch.jit.is_tracing()) and (
        type(input) is torch.Tensor
    )


def _dispatch(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: str | tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    backend: Backend,
    *,
    blocks: Sequence[int] | None = None,
    packer: _PackedWeightCache | None = None,
) -> tuple[torch.Tensor, Backend]:
    """``relu(conv2d(...))`` for an input :func:`_check_input` accepted, on ``backend`` or, for
    a call the kernel cannot run (see the module docstring), on the stock path; returns the
    output and the backend that computed it."""
    conv = (stride, padding, dilation, groups)
    if backend is Backend.TORCH:  # F.conv2d, then an in-place relu_ on its fresh output
        return F.conv2d(input, weight, bias, *conv).relu_(), backend
    # F.conv2d reports (or, for meta inputs, accepts) mixed devices itself; the kernel cannot
    # take them, and must say so before autocast is asked about the input's device.
    if input.device != weight.device or (bias is not None and bias.device != weight.device):
        devices = f"input on {input.device}, weight on {weight.device}"
        if bias is not None:
            devices += f", bias on {bias.device}"
        raise RuntimeError(
            f"the {backend.value} backend needs its tensors on one device, got {devices}"
        )
    from torchkit.kernels.conv2d_relu import KERNEL_DTYPES

    own_weight = weight
    cast = _autocast(input, weight, bias)
    if cast[0].dtype not in KERNEL_DTYPES or _transformed():
        return F.conv2d(input, weight, bias, *conv).relu_(), Backend.TORCH
    input, weight, bias = cast
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != input.dtype:
            raise Conv2dError(
                f"input is {input.dtype} but {name} is {t.dtype}; they must match "
                "(as in F.conv2d; torch.autocast casts both)"
            )
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    if padding == "valid":
        pads = (0, 0)
    elif padding == "same":
        pads, extra = _same_padding((weight.shape[2], weight.shape[3]), dilation)
        if any(extra):  # an even dilated kernel: one more row/column at the bottom/right
            input = F.pad(input, (0, extra[1], 0, extra[0]))
    else:
        pads = padding
    _check_output_size(input, weight, pads, dilation)
    # An eager call uses the layer's packed weight, in training too (_PackedWeightCache says
    # when it is rebuilt), unless autocast cast the weight (a new tensor every call) or a CUDA
    # graph is being captured: a replay must pack the weight it finds then, so the packing is
    # captured with the launch. A traced call packs the weight in the graph, outside the op:
    # a compiler sees the packing as the weight's own computation (inductor's freezing folds
    # it into a constant) and an exported program carries it.
    packed = None
    if not _eager(input):
        from torchkit.kernels.conv2d_relu import pack_weight

        run = _conv2d_relu_op
        packed = pack_weight(weight)
    else:
        records = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (input, weight, bias)
        )
        run = _Conv2dReLUFunction.apply if records else _run_kernel
        if packer is not None and weight is own_weight and not _capturing(weight):
            packed = packer(weight)
    output = run(
        input,
        weight,
        bias,
        stride,
        pads,
        dilation,
        groups,
        input.is_cuda and torch.backends.cudnn.allow_tf32,
        blocks,
        packed,
    )
    return (output.squeeze(0) if unbatched else output), backend


def _transformed() -> bool:
    """Whether a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``...) is running: its
    wrapped tensors have no storage a Triton launch could read (not asked while tracing, when
    the transforms are compiled as graphs)."""
    return not torch.compiler.is_compiling() and torch._C._are_functorch_transforms_active()


def _check_output_size(
    input: torch.Tensor, weight: torch.Tensor, pads: tuple[int, int], dilation: tuple[int, int]
) -> None:
    """Raise :class:`Conv2dError` when the padded input is smaller than the dilated kernel."""
    padded = [input.shape[2 + i] + 2 * pads[i] for i in range(2)]
    kernel = [dilation[i] * (weight.shape[2 + i] - 1) + 1 for i in range(2)]
    if padded[0] < kernel[0] or padded[1] < kernel[1]:
        raise Conv2dError(
            f"the padded input ({padded[0]} x {padded[1]}) is smaller than the dilated kernel "
            f"({kernel[0]} x {kernel[1]})"
        )


def _capturing(weight: torch.Tensor) -> bool:
    """Whether ``weight``'s launch would be captured into a CUDA graph."""
    return weight.is_cuda and torch.cuda.is_current_stream_capturing()


# Optimizer steps taken in this process, counted by a global step post hook that the first
# packed-weight cache registers: every torch.optim.Optimizer runs it, whether or not its
# update bumps version counters (torch's fused=True kernels do not, in torch 2.13).
_optimizer_steps = [0]
_step_hook: list[RemovableHandle] = []


def _count_optimizer_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    _optimizer_steps[0] += 1


_CacheEntry = tuple["weakref.ref[torch.Tensor]", tuple[Any, ...], torch.Tensor, torch.Tensor]


class _PackedWeightCache:
    """The weight packed for the kernel, kept while the weight stays the same.

    The packed copy is rebuilt when the weight

    * is another tensor object (a new ``nn.Parameter``);
    * was modified in place by a torch operation (its ``_version`` moved:
      ``load_state_dict``, ``copy_`` or ``mul_`` under ``no_grad``, the foreach and
      single-tensor optimizers, ``FusedAdam``);
    * may have been updated by an optimizer whose kernel does not bump ``_version``: any
      ``torch.optim.Optimizer.step()`` since the copy was made (torch's ``fused=True``
      optimizers, third-party raw kernels; FSDP2 all-gathers the new values without a bump);
    * had its ``.data`` replaced or was converted or moved (address, dtype, device, shape or
      strides differ). The source storage is held with the copy, so that no other tensor can
      be allocated at its address while the copy stands for it.

    Not seen: writes that bypass both the version counter and ``Optimizer.step`` (in place
    through ``weight.data``, a raw kernel outside an optimizer step, a CUDA graph replay);
    ``torch.autograd.graph.increment_version(layer.weight)`` after such a write repacks. A
    channels_last weight already has the packed layout: its "copy" is a view, always current.
    """

    def __init__(self) -> None:
        # (the weight, its key, its storage, the packed weight), replaced whole, never
        # updated in place: threads sharing a layer (nn.DataParallel's replicas share their
        # __dict__) each get the packed weight of the key they checked.
        self._entry: _CacheEntry | None = None

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        key = (
            weight._version,
            _optimizer_steps[0],
            weight.data_ptr(),
            weight.dtype,
            weight.device,
            weight.shape,
            weight.stride(),
        )
        entry = self._entry
        if entry is None or entry[0]() is not weight or entry[1] != key:
            entry = self._fill(weight, key)
        return entry[3]

    def _fill(self, weight: torch.Tensor, key: tuple[Any, ...]) -> _CacheEntry:
        from torchkit.kernels.conv2d_relu import pack_weight

        if not _step_hook:  # once per process, when a packed weight is first kept
            _step_hook.append(register_optimizer_step_post_hook(_count_optimizer_step))
        with torch.no_grad():
            # The storage is held (not copied) so that its address is not reused meanwhile.
            self._entry = (weakref.ref(weight), key, weight.detach(), pack_weight(weight))
        return self._entry

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    # A layer is deep-copied (fuse_conv_relu) and pickled (torch.save) with its cache: both
    # start the copy empty, to be rebuilt for the copy's own weight.
    def __getstate__(self) -> dict[str, None]:
        return {}

    def __setstate__(self, state: dict[str, None]) -> None:
        self.clear()


class FusedConv2dReLU(nn.Conv2d):
    """``relu(conv2d(x))`` in one kernel: a drop-in for ``nn.Conv2d`` followed by ``nn.ReLU``.

    It subclasses :class:`torch.nn.Conv2d` and has its constructor, parameters, ``state_dict``
    and ``repr``: a ``Conv2d``'s weights load directly (:meth:`from_conv` shares them). The
    forward pass runs the fused Triton kernel on CUDA (and under ``TRITON_INTERPRET=1`` on CPU
    tensors), else ``F.conv2d`` and an in-place ``relu_``; :meth:`backend_for` says which, and
    :attr:`last_backend` records what the latest call ran on (the stock path, on any backend,
    for a dtype the kernel does not compute in and under ``torch.func`` transforms).

    On the Triton backends the layer keeps its weight packed in the kernel's layout between
    calls (a copy, or a view when the weight is channels_last), repacked when the weight
    changes in place, is replaced, or an optimizer steps; a write that bypasses all three (in
    place through ``weight.data``) needs ``torch.autograd.graph.increment_version(weight)``
    (docs/fused_conv.md, "Layouts"). By default the kernel autotunes its tiling per shape, and
    :attr:`blocks` pins one.
    ``torch.compile``, ``torch.export.export`` and ``torch.jit.trace`` trace the layer (the
    kernel is the custom op ``torch.ops.torchkit.conv2d_relu``); ``torch.jit.script`` raises
    ``RuntimeError``.

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

    @property
    def blocks(self) -> tuple[int, ...] | None:
        """A tiling for the Triton kernel, a ``torchkit.kernels.conv2d_relu.Conv2dReLUBlocks``;
        ``None`` (the default) autotunes on CUDA. Checked when set (``ValueError`` naming the
        field). See docs/fused_conv.md, "Pinning a tiling"."""
        return self.__dict__.get("_blocks")

    @blocks.setter
    def blocks(self, value: Sequence[int] | None) -> None:
        if value is not None:
            _check_blocks(value)
            if not isinstance(value, tuple):
                value = tuple(value)
        self.__dict__["_blocks"] = value

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
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        in_channels, out_channels, groups = int(in_channels), int(out_channels), int(groups)
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if value % groups:
                raise ValueError(f"{name}={value} is not divisible by groups={groups}")
        kernel_size = _int_pair("kernel_size", kernel_size, minimum=1, single=False)
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
        self.blocks = None
        self._packed_weight = _PackedWeightCache()

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
        padding: str | tuple[int, int] = self.padding  # type: ignore[assignment]
        if self.padding_mode != "zeros" and isinstance(input, torch.Tensor):
            # Padded first, as nn.Conv2d does: F.pad raises what it raises for the input.
            input = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0, 0)
        _check_input(input, weight, self.groups)
        output, ran_on = _dispatch(
            input,
            weight,
            self.bias,
            self.stride,  # type: ignore[arg-type]
            padding,
            self.dilation,  # type: ignore[arg-type]
            self.groups,
            backend,
            blocks=self.blocks,
            packer=self._packed_weight,
        )
        # Straight into the instance dict: nn.Module.__setattr__ first searches parameters,
        # buffers and submodules for the name.
        self.__dict__["last_backend"] = ran_on
        return output

    def __prepare_scriptable__(self) -> FusedConv2dReLU:
        """``torch.jit.script`` calls this first: refuse with a message that says why."""
        raise RuntimeError(
            "FusedConv2dReLU cannot be compiled by torch.jit.script: its forward chooses a "
            "backend (Triton kernel or stock torch) in Python on every call. Use "
            "torch.jit.trace, torch.compile or torch.export.export, which all trace it."
        )
