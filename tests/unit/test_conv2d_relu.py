"""FusedConv2dReLU / conv2d_relu against nn.Conv2d + nn.ReLU and F.relu(F.conv2d(...)).

Every case runs on the stock path (``force_backend("torch")``) and on the Triton kernel under
the interpreter, where a launch counter proves the kernel ran. Shapes stay small: the
interpreter executes each program instance through numpy.
"""

from __future__ import annotations

import copy
import functools
import pickle
from dataclasses import dataclass, field
from typing import Any

import _helpers
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import BACKENDS, assert_tensors_close
from torch import nn

import torchkit
from torchkit.backend import Backend
from torchkit.nn import Conv2dError, FusedConv2dReLU
from torchkit.nn.functional import conv2d_relu
from torchkit.optim import FusedAdam

KERNEL = "_conv2d_relu_fwd_kernel"
# torch warns that padding="same" with an even kernel copies the input; the reference does it too.
SAME_PADDING_COPY = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


running_on = functools.partial(_helpers.running_on, kernel=KERNEL)


class _FlatKLaunches(list):
    """``FLAT_K`` of each interpreted launch of the conv kernel, in order; ``launches``: the
    names of every kernel launched (the ``kernel_launches`` fixture)."""

    launches: list[str]


@pytest.fixture
def flat_k_launches(kernel_launches, monkeypatch) -> _FlatKLaunches:
    from triton.runtime.interpreter import InterpretedFunction

    flags = _FlatKLaunches()
    flags.launches = kernel_launches
    counting = InterpretedFunction.run  # kernel_launches' wrapper, which this one calls

    def recording(self, *args, **kwargs):
        if self.fn.__name__ == KERNEL:
            flags.append(kwargs["FLAT_K"])
        return counting(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording)
    return flags


@dataclass(frozen=True)
class Case:
    """A Conv2d configuration and its input."""

    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: int | tuple[int, int]
    conv: dict[str, Any] = field(default_factory=dict)
    layout: str = "contiguous"  # "contiguous", "channels_last" or "strided"

    def make_input(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.layout == "strided":  # every other column of a wider tensor: no unit stride
            *lead, w = self.input_shape
            return torch.randn(*lead, 2 * w, dtype=dtype)[..., ::2]
        x = torch.randn(self.input_shape, dtype=dtype)
        if self.layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def make_conv(self, dtype: torch.dtype = torch.float32) -> nn.Conv2d:
        in_channels = self.input_shape[-3]
        return nn.Conv2d(in_channels, self.out_channels, self.kernel_size, dtype=dtype, **self.conv)


# Layers with fewer than 16 input channels per group run the kernel's flat-K variant; the
# "gemm-*" cases have 16 or more and run its GEMM form (one tap and a channel block per step).
CASES = {
    "3x3-pad1": Case((2, 3, 9, 7), 5, 3, {"padding": 1}),
    "gemm-3x3-pad1": Case((2, 16, 6, 5), 20, 3, {"padding": 1}),
    "gemm-channels-last-strided-dilated": Case(
        (1, 32, 7, 6),
        16,
        (3, 2),
        {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)},
        layout="channels_last",
    ),
    "gemm-groups-partial-channel-block": Case(
        (2, 40, 5, 5), 12, 3, {"groups": 2, "padding": 2, "dilation": 2}
    ),
    "gemm-1x1-no-bias": Case((2, 48, 4, 3), 8, 1, {"bias": False}, layout="strided"),
    "kernel-taller-than-16": Case((1, 2, 19, 6), 3, (17, 3)),
    "5x5-odd-batch1": Case((1, 3, 13, 11), 7, 5),
    "1x1": Case((2, 6, 5, 5), 4, 1),
    "depthwise": Case((2, 4, 8, 8), 8, 3, {"groups": 4, "padding": 1}),
    "groups2-dilation2": Case((2, 4, 11, 10), 6, 3, {"groups": 2, "dilation": 2, "padding": 2}),
    "stride3": Case((2, 3, 13, 12), 5, 3, {"stride": 3, "padding": 1}),
    "rect-kernel-stride2x1": Case((2, 3, 9, 12), 4, (3, 5), {"stride": (2, 1), "padding": (1, 0)}),
    "same-even-kernel": Case((2, 3, 8, 9), 4, 4, {"padding": "same"}),
    "same-dilated": Case((1, 2, 9, 9), 3, 3, {"padding": "same", "dilation": 3}),
    "valid": Case((2, 3, 7, 7), 4, 3, {"padding": "valid"}),
    "reflect": Case((2, 3, 8, 7), 4, 3, {"padding": (1, 2), "padding_mode": "reflect"}),
    "replicate": Case((2, 3, 8, 7), 4, 3, {"padding": 2, "padding_mode": "replicate"}),
    "circular": Case((2, 3, 8, 7), 4, 3, {"padding": (2, 1), "padding_mode": "circular"}),
    "no-bias": Case((2, 3, 9, 7), 5, 3, {"padding": 1, "bias": False}),
    "channels-last": Case((2, 8, 7, 6), 6, 3, {"padding": 1}, layout="channels_last"),
    "non-contiguous": Case((2, 3, 8, 7), 4, 3, {"padding": 1}, layout="strided"),
    "unbatched": Case((3, 9, 8), 4, 3, {"padding": 1}),
    "unbatched-reflect": Case((3, 9, 8), 4, 3, {"padding": 1, "padding_mode": "reflect"}),
}


def _grads(output: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    grad_output = torch.randn_like(output)
    present = [t for t in tensors if t is not None]
    grads = iter(torch.autograd.grad(output, present, grad_output))
    return [None if t is None else next(grads) for t in tensors]


@SAME_PADDING_COPY
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CASES)
def test_module_matches_conv2d_then_relu(name: str, backend: Backend, flat_k_launches):
    case = CASES[name]
    torch.manual_seed(0)
    reference = nn.Sequential(case.make_conv(), nn.ReLU())
    fused = FusedConv2dReLU(case.input_shape[-3], case.out_channels, case.kernel_size, **case.conv)
    fused.load_state_dict(reference[0].state_dict())  # Conv2d weights load directly
    x = case.make_input().requires_grad_()

    with running_on(backend, flat_k_launches.launches):
        out = fused(x)
    expected = reference(x)

    assert fused.last_backend is backend
    # The "gemm-*" cases (16 or more channels per group) run the GEMM form, the others flat K.
    if backend is Backend.TRITON_INTERPRETER:
        assert flat_k_launches == [not name.startswith("gemm-")]
    assert_tensors_close(out, expected, name="output")
    assert out.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(
        memory_format=torch.channels_last
    ), "the output memory format differs from nn.Conv2d's"
    torch.manual_seed(1)
    got = _grads(out, x, fused.weight, fused.bias)
    torch.manual_seed(1)
    want = _grads(expected, x, reference[0].weight, reference[0].bias)
    for name, g, w in zip(("input", "weight", "bias"), got, want, strict=True):
        if w is None:
            assert g is None
        else:
            assert_tensors_close(g, w, name=f"grad {name}")


FUNCTIONAL_CASES = {
    name: case
    for name, case in CASES.items()
    if case.conv.get("padding_mode", "zeros") == "zeros"  # F.conv2d has no padding_mode
}


@SAME_PADDING_COPY
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", FUNCTIONAL_CASES.values(), ids=FUNCTIONAL_CASES.keys())
def test_functional_matches_relu_of_conv2d(case: Case, backend: Backend, kernel_launches):
    torch.manual_seed(0)
    conv = case.make_conv()
    x = case.make_input().requires_grad_()
    weight = conv.weight.detach().requires_grad_()
    bias = None if conv.bias is None else conv.bias.detach().requires_grad_()
    args = {k: v for k, v in case.conv.items() if k != "bias"}

    with running_on(backend, kernel_launches):
        out = conv2d_relu(x, weight, bias, **args)
    expected = F.relu(F.conv2d(x, weight, bias, **args))

    assert_tensors_close(out, expected, name="output")
    torch.manual_seed(1)
    got = _grads(out, x, weight, bias)
    torch.manual_seed(1)
    want = _grads(expected, x, weight, bias)
    for name, g, w in zip(("input", "weight", "bias"), got, want, strict=True):
        if w is not None:
            assert_tensors_close(g, w, name=f"grad {name}")


LOW_PRECISION = [
    pytest.param(torch.float16, id="float16"),
    pytest.param(torch.bfloat16, id="bfloat16"),
]
LOW_PRECISION_CASES = {k: CASES[k] for k in ("3x3-pad1", "depthwise", "channels-last", "no-bias")}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES.values(), ids=LOW_PRECISION_CASES.keys())
def test_low_precision_against_fp32_reference(case, dtype, backend, kernel_launches):
    torch.manual_seed(0)
    conv = case.make_conv(dtype)
    fused = FusedConv2dReLU.from_conv(conv)
    x = case.make_input(dtype).requires_grad_()

    with running_on(backend, kernel_launches):
        out = fused(x)

    assert out.dtype == dtype
    # The reference computes in fp32 from the same rounded inputs, then rounds once; the
    # kernel accumulates in fp32 too, so the only difference is the final rounding and the
    # order of the fp32 sums: the dtype's assert_close defaults hold.
    reference = F.relu(copy.deepcopy(conv).float()(x.detach().float()))
    assert_tensors_close(out, reference)  # tolerance: out's dtype
    # Gradients go through the same aten.convolution_backward as relu(conv2d) in this dtype.
    grad_output = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, conv.weight), grad_output)
    want = torch.autograd.grad(F.relu(conv(x)), (x, conv.weight), grad_output)
    for name, g, w in zip(("input", "weight"), got, want, strict=True):
        assert_tensors_close(g, w, name=f"grad {name}")


BITWISE_CASES = {k: CASES[k] for k in ("3x3-pad1", "gemm-3x3-pad1", "gemm-1x1-no-bias")}


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", LOW_PRECISION)
@pytest.mark.parametrize("case", BITWISE_CASES.values(), ids=BITWISE_CASES.keys())
def test_low_precision_is_the_fp32_result_rounded(case, dtype, kernel_launches):
    """fp16/bf16 outputs are what the fp32 computation rounds to (to nearest even), as on a
    GPU: the reference is a CPU (cuDNN-free) convolution in fp32 of the same rounded inputs,
    rounded once. Only fp32 summation order differs, so almost every element is bitwise
    equal; a kernel that truncated bf16 would match about half of them."""
    torch.manual_seed(0)
    conv = case.make_conv(dtype)
    fused = FusedConv2dReLU.from_conv(conv)
    x = case.make_input(dtype)
    with running_on(Backend.TRITON_INTERPRETER, kernel_launches), torch.no_grad():
        out = fused(x)
        reference = F.relu(copy.deepcopy(conv).float()(x.float())).to(dtype)
    equal = (out == reference).float().mean().item()
    assert equal >= 0.99, f"only {equal:.1%} of {out.numel()} elements are bitwise equal"


@pytest.mark.interpreter
def test_bf16_rounds_to_nearest_even_not_toward_zero(kernel_launches):
    # y = x * 1 + b in fp32 is exact up to one rounding, the same in torch and in the kernel;
    # its bf16 value is the rounding of that fp32 sum. Truncating instead of rounding changes
    # every element whose dropped bits are above half an ulp (4.0837 -> 4.0625 instead of
    # 4.09375).
    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

    torch.manual_seed(0)
    x = (torch.rand(1, 1, 8, 64) * 8).to(torch.bfloat16)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.bfloat16)
    bias = torch.tensor([0.0212], dtype=torch.bfloat16)
    out = conv2d_relu_fwd(x, weight, bias, (1, 1), (0, 0), (1, 1), 1)
    expected = (x.float() + bias.float()).relu().to(torch.bfloat16)  # round to nearest even
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert kernel_launches == [KERNEL]


def _op(x, weight, bias):
    conv = ((2, 1), (1, 1), (1, 2), 2)
    return torch.ops.torchkit.conv2d_relu(x, weight, bias, *conv, False, None, None)


def _functional(x, weight, bias):
    with torchkit.force_backend("triton-interpreter"):
        return conv2d_relu(x, weight, bias, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(_op, id="custom-op"),  # what tracers record: torch.library autograd
        pytest.param(_functional, id="eager"),  # eager calls: the same backward, without it
    ],
)
def test_gradcheck_float64_through_the_kernel(fn, kernel_launches):
    # float64 runs through tl.dot with a float64 accumulator, so finite differences are exact
    # enough. fast_mode checks random projections of the Jacobian: a handful of launches
    # instead of two per input element, each of which costs an interpreted kernel run.
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x, weight, bias), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, weight, bias), fast_mode=True)
    assert kernel_launches.count(KERNEL) > 0


def test_gradcheck_float64_torch_path():
    torch.manual_seed(0)
    layer = FusedConv2dReLU(2, 3, 3, padding=1, padding_mode="reflect", dtype=torch.float64)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    # gradcheck perturbs its inputs in place, so the layer sees the perturbed parameters.
    with torchkit.force_backend("torch"):
        assert torch.autograd.gradcheck(lambda x, w, b: layer(x), (x, layer.weight, layer.bias))


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "in_channels",
    [
        pytest.param(5, id="flat-K"),  # 45 reduction terms: 3 K-steps, the last one partial
        pytest.param(32, id="gemm-form"),  # 9 taps x 2 channel blocks: the tap advances
        pytest.param(24, id="gemm-form-partial-block"),  # 9 taps x (16 + 8 masked) channels
    ],
)
def test_small_tiles_cover_every_tile_edge(in_channels, kernel_launches):
    # 16x16x16 tiles over M = 2*7*7 = 98 rows and 24 channels: partial tiles on both axes,
    # several K steps, and GROUP_M=2 swizzling with a ragged last group. float64, so that the
    # order of up to 288 products per sum does not matter.
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks, conv2d_relu_fwd

    torch.manual_seed(0)
    x = torch.randn(2, in_channels, 7, 7, dtype=torch.float64)
    weight = torch.randn(24, in_channels, 3, 3, dtype=torch.float64)
    bias = torch.randn(24, dtype=torch.float64)
    blocks = Conv2dReLUBlocks(block_m=16, block_n=16, block_k=16, group_m=2)
    out = conv2d_relu_fwd(x, weight, bias, (1, 1), (1, 1), (1, 1), 1, blocks=blocks)
    assert_tensors_close(out, F.relu(F.conv2d(x, weight, bias, padding=1)))
    assert kernel_launches == [KERNEL]


@pytest.mark.interpreter
def test_kernel_relu_keeps_nan_like_torch(kernel_launches):
    x = torch.tensor([[[[1.0, float("nan")], [-2.0, 3.0]]]])
    weight = torch.ones(1, 1, 1, 1)
    with torchkit.force_backend("triton-interpreter"):
        out = conv2d_relu(x, weight)
    torch.testing.assert_close(out, torch.relu(x), equal_nan=True)
    assert kernel_launches == [KERNEL]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    layer = FusedConv2dReLU(3, 4, 3)
    with torchkit.force_backend(backend):
        out = layer(torch.randn(0, 3, 5, 5))
    assert out.shape == (0, 4, 3, 3)


@pytest.mark.interpreter
def test_autocast_runs_the_kernel_in_the_autocast_dtype(kernel_launches):
    torch.manual_seed(0)
    layer = FusedConv2dReLU(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    with (
        torch.autocast("cpu", dtype=torch.bfloat16),
        running_on(Backend.TRITON_INTERPRETER, kernel_launches),
    ):
        out = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.relu(layer._conv_forward(x, layer.weight, layer.bias))
    assert out.dtype == expected.dtype == torch.bfloat16
    assert_tensors_close(out, expected)


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_dtypes_the_kernel_lacks_run_the_stock_path_and_say_so(dtype, kernel_launches):
    """torch computes integer convolutions on CPU (and raises on CUDA): on the kernel backends
    such a call goes to F.conv2d, so its result, or its error, is torch's, and the layer
    reports the stock backend."""
    torch.manual_seed(0)
    x = torch.randint(-3, 4, (2, 3, 5, 4), dtype=dtype)
    weight = torch.randint(-2, 3, (4, 3, 3, 3), dtype=dtype)
    bias = torch.randint(-5, 6, (4,), dtype=dtype)
    layer = FusedConv2dReLU(3, 4, 3, padding=1)
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.bias = nn.Parameter(bias, requires_grad=False)
    with torchkit.force_backend("triton-interpreter"):
        out = layer(x)
        functional = conv2d_relu(x, weight, bias, padding=1)
    expected = F.relu(F.conv2d(x, weight, bias, padding=1))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(functional, expected, rtol=0, atol=0)
    assert layer.last_backend is Backend.TORCH
    assert kernel_launches == []


# --- drop-in behaviour -------------------------------------------------------------------

# Inputs in the layouts torch's convolution reads as channels_last or not; its CPU kernels
# and cuDNN give the output the memory format of c10's suggest_memory_format (the input's or
# the weight's): strided views of a channels_last tensor count.
INPUT_LAYOUTS = {
    "nchw": lambda x: x,
    "channels-last": lambda x: x.contiguous(memory_format=torch.channels_last),
    "channels-last-every-other-column": (
        lambda x: x.contiguous(memory_format=torch.channels_last)[..., ::2]
    ),
    "channels-last-first-channels": lambda x: x.contiguous(memory_format=torch.channels_last)[
        :, :4
    ],
    "nchw-every-other-column": lambda x: x[..., ::2],
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight_layout", ["weight-nchw", "weight-channels-last"])
@pytest.mark.parametrize("layout", INPUT_LAYOUTS)
def test_output_strides_are_torchs(layout, weight_layout, backend, kernel_launches):
    torch.manual_seed(0)
    x = INPUT_LAYOUTS[layout](torch.randn(2, 8, 6, 12, dtype=torch.float64))
    weight = torch.randn(4, x.shape[1], 3, 3, dtype=torch.float64)
    if weight_layout == "weight-channels-last":
        weight = weight.contiguous(memory_format=torch.channels_last)
    with running_on(backend, kernel_launches):
        out = conv2d_relu(x, weight)
    expected = F.relu(F.conv2d(x, weight))
    assert out.stride() == expected.stride()
    assert_tensors_close(out, expected)


def _per_sample_loss(model: nn.Module):
    def loss(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, params, (x.unsqueeze(0),)).square().sum()

    return loss


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in model.named_parameters()}


FUNC_TRANSFORMS = {
    "grad": lambda m, x: list(torch.func.grad(_per_sample_loss(m))(_params(m), x[0]).values()),
    "vmap-of-grad-per-sample-gradients": lambda m, x: list(
        torch.func.vmap(torch.func.grad(_per_sample_loss(m)), in_dims=(None, 0))(
            _params(m), x
        ).values()
    ),
    "vmap": lambda m, x: [torch.func.vmap(m)(x.unsqueeze(1))],
    "jvp": lambda m, x: list(torch.func.jvp(m, (x,), (torch.ones_like(x),))),
    "jacrev": lambda m, x: [torch.func.jacrev(m)(x[:1, :, :3, :3])],
}


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("transform", FUNC_TRANSFORMS)
def test_torch_func_transforms_work_as_on_conv2d(transform, backend, kernel_launches):
    """Under torch.func transforms the tensors are wrappers without storage, which no Triton
    launch can read: the layer runs the stock path on every backend, says so, and gives what
    nn.Conv2d + nn.ReLU give (per-sample gradients included)."""
    torch.manual_seed(0)
    fused = FusedConv2dReLU(16, 4, 3, padding=1, dtype=torch.float64)
    reference = nn.Sequential(nn.Conv2d(16, 4, 3, padding=1, dtype=torch.float64), nn.ReLU())
    reference[0].load_state_dict(fused.state_dict())
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64)
    with torchkit.force_backend(backend):
        got = FUNC_TRANSFORMS[transform](fused, x)
    expected = FUNC_TRANSFORMS[transform](reference, x)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert_tensors_close(g, e)
    assert fused.last_backend is Backend.TORCH
    assert kernel_launches == []


ACCEPTED_LIKE_TORCH = {
    "padding-of-one-int": {"padding": (1,)},
    "stride-of-one-int": {"stride": [2]},
    "dilation-of-one-int": {"dilation": (2,), "padding": 2},
    "numpy-groups": {"groups": np.int64(2)},
    "numpy-stride": {"stride": (np.int64(2), 1), "padding": np.int32(1)},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", ACCEPTED_LIKE_TORCH.values(), ids=ACCEPTED_LIKE_TORCH)
def test_arguments_conv2d_accepts_are_accepted(kwargs, backend, kernel_launches):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    groups = int(kwargs.get("groups", 1))
    weight = torch.randn(6, 4 // groups, 3, 3, dtype=torch.float64)
    with running_on(backend, kernel_launches):
        out = conv2d_relu(x, weight, **kwargs)
        layer = FusedConv2dReLU(4, 6, 3, dtype=torch.float64, **kwargs)
        layer_out = layer(x)
    assert_tensors_close(out, F.relu(F.conv2d(x, weight, **kwargs)))
    reference = nn.Conv2d(4, 6, 3, dtype=torch.float64, **kwargs)
    reference.load_state_dict(layer.state_dict())
    assert_tensors_close(layer_out, F.relu(reference(x)))


CONSTRUCTOR_ARGS = {
    "lenet-conv1": ((1, 6, 5), {}),
    "strided": ((16, 33, 3), {"stride": 2}),
    "everything": (
        (4, 8, (3, 5)),
        {
            "stride": (2, 1),
            "padding": (4, 2),
            "dilation": (3, 1),
            "groups": 2,
            "bias": False,
            "padding_mode": "circular",
        },
    ),
    "same": ((3, 3, 4), {"padding": "same"}),
}


@pytest.mark.parametrize(("args", "kwargs"), CONSTRUCTOR_ARGS.values(), ids=CONSTRUCTOR_ARGS.keys())
def test_looks_like_conv2d(args, kwargs):
    conv = nn.Conv2d(*args, **kwargs)
    fused = FusedConv2dReLU(*args, **kwargs)
    assert isinstance(fused, nn.Conv2d)
    assert repr(fused) == repr(conv).replace("Conv2d", "FusedConv2dReLU", 1)
    assert fused.state_dict().keys() == conv.state_dict().keys()
    for key, value in conv.state_dict().items():
        assert fused.state_dict()[key].shape == value.shape
    fused.load_state_dict(conv.state_dict())
    conv.load_state_dict(fused.state_dict())  # and back
    assert [n for n, _ in fused.named_parameters()] == [n for n, _ in conv.named_parameters()]


def test_from_conv_shares_parameters_and_mode():
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect").eval()
    fused = FusedConv2dReLU.from_conv(conv)
    assert fused.weight is conv.weight
    assert fused.bias is conv.bias
    assert not fused.training
    assert repr(fused) == repr(conv).replace("Conv2d", "FusedConv2dReLU", 1)
    x = torch.randn(1, 3, 5, 5)
    with torchkit.force_backend("torch"):
        assert_tensors_close(fused(x), F.relu(conv(x)))


@pytest.mark.parametrize(
    "conv", [nn.ConvTranspose2d(2, 2, 3), nn.LazyConv2d(4, 3), nn.Linear(2, 2)]
)
def test_from_conv_rejects_other_modules(conv):
    with pytest.raises(TypeError, match=r"nn\.Conv2d"):
        FusedConv2dReLU.from_conv(conv)


def test_backend_for_and_last_backend():
    layer = FusedConv2dReLU(1, 1, 1)
    assert layer.last_backend is None
    assert FusedConv2dReLU.backend_for("cpu") is torchkit.select_backend("cpu")
    with torchkit.force_backend("torch"):
        assert FusedConv2dReLU.backend_for(torch.device("cpu")) is Backend.TORCH
        layer(torch.randn(1, 1, 2, 2))
    assert layer.last_backend is Backend.TORCH


@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_checks_the_input_once(backend, kernel_launches, monkeypatch):
    """The input is checked once per call (it used to be twice) and ``last_backend`` is a plain
    attribute: no parameter, buffer or state_dict entry."""
    import torchkit.nn.conv as conv_module

    checks = []
    original = conv_module._check_input

    def counting(*args):
        checks.append(args[0].shape)
        return original(*args)

    monkeypatch.setattr(conv_module, "_check_input", counting)
    layer = FusedConv2dReLU(3, 4, 3, padding=1, padding_mode="reflect")
    x = torch.randn(1, 3, 6, 5)
    with running_on(backend, kernel_launches):
        out = layer(x)
    assert checks == [(1, 3, 8, 7)]  # after the reflection padding, as nn.Conv2d checks it
    assert_tensors_close(
        out, F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), "reflect"), layer.weight, layer.bias))
    )
    assert layer.last_backend is backend
    assert "last_backend" not in layer.state_dict()
    assert "last_backend" not in dict(layer.named_parameters()) | dict(layer.named_buffers())


BAD_CONSTRUCTOR_ARGS = {
    "in-not-divisible": ((3, 4, 3), {"groups": 2}, ValueError, "in_channels=3 is not divisible"),
    "out-not-divisible": ((4, 3, 3), {"groups": 2}, ValueError, "out_channels=3 is not divisible"),
    "groups-zero": ((4, 4, 3), {"groups": 0}, ValueError, "groups must be positive, got 0"),
    "padding-mode": ((1, 1, 3), {"padding_mode": "mirror"}, ValueError, "'mirror'"),
    "padding-string": ((1, 1, 3), {"padding": "full"}, ValueError, "'full'"),
    "padding-negative": ((1, 1, 3), {"padding": -1}, ValueError, "padding must be >= 0"),
    "stride-zero": ((1, 1, 3), {"stride": 0}, ValueError, "stride must be positive, got 0"),
    "stride-negative": ((1, 1, 3), {"stride": (1, -2)}, ValueError, r"stride .* \(1, -2\)"),
    "dilation-zero": ((1, 1, 3), {"dilation": 0}, ValueError, "dilation must be positive"),
    "kernel-zero": ((1, 1, 0), {}, ValueError, "kernel_size must be positive"),
    "same-strided": ((1, 1, 3), {"padding": "same", "stride": 2}, ValueError, "stride 1"),
    "stride-float": ((1, 1, 3), {"stride": 1.5}, TypeError, "stride must be an int"),
    "stride-triple": ((1, 1, 3), {"stride": (1, 1, 1)}, Conv2dError, "pair of ints"),
    "channels-zero": ((0, 1, 3), {}, ValueError, "in_channels must be positive"),
}


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    BAD_CONSTRUCTOR_ARGS.values(),
    ids=BAD_CONSTRUCTOR_ARGS.keys(),
)
def test_constructor_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        FusedConv2dReLU(*args, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_input_is_reported(backend):
    layer = FusedConv2dReLU(4, 2, 3)
    with torchkit.force_backend(backend):
        with pytest.raises(ValueError, match="input has 3 channels but 4 were expected"):
            layer(torch.randn(1, 3, 8, 8))
        with pytest.raises(ValueError, match=r"\(C, H, W\), got shape \(8, 8\)"):
            layer(torch.randn(8, 8))


# where the meta tensor is -> (the call, what the message names); the weights are on the CPU.
OTHER_DEVICE_CALLS = {
    "module-input": (
        lambda layer, x, meta: layer(x.to(meta)),
        r"input on meta, weight on cpu, bias on cpu",
    ),
    "functional-bias": (
        lambda layer, x, meta: conv2d_relu(x, layer.weight, layer.bias.to(meta), padding=1),
        r"input on cpu, weight on cpu, bias on meta",
    ),
    "functional-input-no-bias": (
        lambda layer, x, meta: conv2d_relu(x.to(meta), layer.weight, padding=1),
        r"input on meta, weight on cpu$",
    ),
}


@pytest.mark.interpreter
@pytest.mark.parametrize(
    ("call", "match"), OTHER_DEVICE_CALLS.values(), ids=OTHER_DEVICE_CALLS.keys()
)
def test_tensors_on_another_device_are_an_error_on_the_kernel_path(call, match, kernel_launches):
    layer = FusedConv2dReLU(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    with (
        torchkit.force_backend("triton-interpreter"),
        pytest.raises(RuntimeError, match="backend needs its tensors on one device, got " + match),
    ):
        call(layer, x, torch.device("meta"))
    assert kernel_launches == []
    assert layer.last_backend is None


def test_stock_path_takes_a_meta_input_like_conv2d():
    """nn.Conv2d with CPU weights turns a meta input into a meta output (shape inference);
    the stock path does the same."""
    layer = FusedConv2dReLU(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, device="meta")
    with torchkit.force_backend("torch"):
        out = layer(x)
    expected = F.relu(nn.Conv2d(4, 6, 3, padding=1)(x))
    assert (out.device, out.shape) == (expected.device, expected.shape)


BAD_FUNCTIONAL_ARGS = {
    "stride-zero": ({"stride": 0}, ValueError, "stride must be positive"),
    "padding-mode-string": ({"padding": "reflect"}, ValueError, "'reflect'"),
    "same-strided": ({"padding": "same", "stride": 2}, ValueError, "stride 1"),
    "groups-mismatch": ({"groups": 2}, ValueError, "input has 4 channels but 8 were expected"),
    "bias-shape": ({"bias": torch.zeros(3)}, ValueError, r"bias must have shape \(2,\)"),
}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"), BAD_FUNCTIONAL_ARGS.values(), ids=BAD_FUNCTIONAL_ARGS.keys()
)
def test_functional_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        conv2d_relu(torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3), **kwargs)


# --- the packed weight and the tiling the kernel path keeps ---------------------------------


@pytest.fixture
def weight_packs(monkeypatch):
    """Shapes of the weights torchkit.kernels.conv2d_relu.pack_weight packs, in order."""
    from torchkit.kernels import conv2d_relu

    packed: list[tuple[int, ...]] = []
    original = conv2d_relu.pack_weight

    def counting(weight):
        packed.append(tuple(weight.shape))
        return original(weight)

    monkeypatch.setattr(conv2d_relu, "pack_weight", counting)
    return packed


def _check(layer: FusedConv2dReLU, x: torch.Tensor) -> None:
    with torchkit.force_backend("triton-interpreter"), torch.no_grad():
        out = layer(x)
        expected = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    assert_tensors_close(out, expected)


@pytest.mark.interpreter
def test_weight_is_packed_once_and_again_when_it_changes(weight_packs):
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    _check(layer, x)
    _check(layer, x)
    assert len(weight_packs) == 1, "the second call must reuse the packed weight"

    with torch.no_grad():
        layer.weight.mul_(-1)  # in place: an optimizer step, a load_state_dict
    _check(layer, x)
    assert len(weight_packs) == 2

    layer.load_state_dict(FusedConv2dReLU(16, 8, 3, padding=1).state_dict())
    _check(layer, x)
    assert len(weight_packs) == 3

    layer.double()  # a new tensor of another dtype
    _check(layer, x.double())
    assert len(weight_packs) == 4


def _train_call(layer: FusedConv2dReLU, x: torch.Tensor) -> None:
    """A forward and backward that autograd records, its output checked against torch's."""
    with torchkit.force_backend("triton-interpreter"):
        out = layer(x)
    expected = F.relu(F.conv2d(x, layer.weight, layer.bias, padding=1))
    assert_tensors_close(out.detach(), expected.detach())
    out.sum().backward()


OPTIMIZERS = {
    "sgd": functools.partial(torch.optim.SGD, lr=0.1, foreach=False),
    "adam": functools.partial(torch.optim.Adam, lr=0.1),
    # torch 2.13's fused kernels leave the parameters' _version alone: the step hook sees them.
    "adam-fused": functools.partial(torch.optim.Adam, lr=0.1, fused=True),
    "sgd-fused": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, fused=True),
    "fusedadam-triton": functools.partial(FusedAdam, lr=0.1),
}


@pytest.mark.interpreter
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_training_calls_reuse_the_packed_weight_until_an_optimizer_step(weight_packs, optimizer):
    """Gradient accumulation: calls that autograd records share one packed weight. Any
    optimizer's step, whether or not its kernel bumps the weight's version, makes the next
    call pack the updated weight (every output is checked against torch's)."""
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    opt = OPTIMIZERS[optimizer](layer.parameters())
    x = torch.randn(1, 16, 5, 5)
    for step in range(2):
        for _ in range(2):  # two micro-batches per step
            _train_call(layer, x)
        assert len(weight_packs) == step + 1, step
        with torchkit.force_backend("triton-interpreter"):  # FusedAdam runs its kernel
            opt.step()
        opt.zero_grad()
    _train_call(layer, x)
    assert len(weight_packs) == 3


@pytest.mark.interpreter
def test_writes_outside_an_optimizer_repack_unless_they_bypass_the_version(weight_packs):
    """In-place torch ops (``copy_`` under ``no_grad``) bump the weight's version and a
    ``.data`` swap changes its address or strides: both repack. An in-place write through
    ``weight.data`` is not seen (``.data`` has its own version counter, as torch documents):
    ``torch.autograd.graph.increment_version(weight)`` after it repacks."""
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    _check(layer, x)
    with torch.no_grad():
        layer.weight.copy_(torch.randn_like(layer.weight))
    _check(layer, x)
    assert len(weight_packs) == 2

    layer.weight.data = torch.randn_like(layer.weight)  # new storage, same version
    _check(layer, x)
    assert len(weight_packs) == 3
    # The same storage read with other strides: another weight at the same address.
    data = layer.weight.data
    layer.weight.data = data.as_strided(data.shape, (data.stride(0), 1, 16 * 3, 16))
    _check(layer, x)
    assert len(weight_packs) == 4

    version = layer.weight._version
    layer.weight.data.mul_(-1.0)
    assert layer.weight._version == version  # invisible: the packed copy is stale
    torch.autograd.graph.increment_version(layer.weight)
    _check(layer, x)
    assert len(weight_packs) == 5


@pytest.mark.interpreter
def test_autocast_and_graph_capture_pack_in_the_call(weight_packs, monkeypatch):
    """A weight cast by autocast is a new tensor every call, and a call captured into a CUDA
    graph must pack at replay time: neither uses nor replaces the layer's packed weight."""
    from torchkit.nn import conv as conv_module

    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    _check(layer, x)
    kept = layer._packed_weight._entry
    with torchkit.force_backend("triton-interpreter"), torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16
        monkeypatch.setattr(conv_module, "_capturing", lambda weight: True)
        layer(x)
    assert len(weight_packs) == 3  # the first call, then each call packs its own
    assert layer._packed_weight._entry is kept


@pytest.mark.interpreter
def test_channels_last_weight_is_used_in_place(weight_packs):
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1).to(memory_format=torch.channels_last)
    packed = layer._packed_weight(layer.weight)
    assert packed.data_ptr() == layer.weight.data_ptr(), "expected a view, not a copy"
    _check(layer, torch.randn(1, 16, 5, 5).to(memory_format=torch.channels_last))


@pytest.mark.interpreter
def test_layer_with_a_packed_weight_copies_and_pickles():
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    _check(layer, x)  # fills the cache
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.add_(1.0)  # the copy's own weight: its packed copy must follow it
    _check(twin, x)
    restored = pickle.loads(pickle.dumps(layer))
    _check(restored, x)


@pytest.mark.interpreter
def test_blocks_pin_the_tiling(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction

    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks

    tiles = []
    original = InterpretedFunction.run

    def recording(self, *args, **kwargs):
        tiles.append((kwargs["BLOCK_M"], kwargs["BLOCK_N"], kwargs["BLOCK_K"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording)
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5)
    layer.blocks = Conv2dReLUBlocks(block_m=16, block_n=16, block_k=16, group_m=1)
    _check(layer, x)
    layer.blocks = None
    _check(layer, x)
    assert tiles == [(16, 16, 16), (64, 32, 16)]  # pinned, then the interpreter's default


@pytest.mark.interpreter
def test_bad_blocks_are_reported_when_set_or_passed_to_the_op(kernel_launches):
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks

    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    with pytest.raises(ValueError, match=r"blocks\.block_m must be a power of two >= 16, got 24"):
        layer.blocks = Conv2dReLUBlocks(block_m=24)
    assert layer.blocks is None
    with pytest.raises(ValueError, match=r"blocks\.num_warps must be a positive int, got 0"):
        layer.blocks = (64, 16, 32, 8, 0)
    x, conv = torch.randn(1, 16, 5, 5), ([1, 1], [1, 1], [1, 1], 1, False)
    with pytest.raises(ValueError, match=r"blocks\.block_n must be a power of two >= 16, got 8"):
        torch.ops.torchkit.conv2d_relu(x, layer.weight, None, *conv, [64, 8, 32], None)
    assert kernel_launches == []


@pytest.mark.interpreter
def test_eager_training_calls_skip_the_custom_op_dispatch(monkeypatch):
    """torch.library's Python dispatch costs more than a launch (see _Conv2dReLUFunction): an
    eager call records the autograd.Function that shares the op's backward, never the op."""
    import torchkit.nn.conv as conv_module

    def refuse(*args):
        raise AssertionError("the eager path went through the custom op")

    monkeypatch.setattr(conv_module, "_conv2d_relu_op", refuse)
    layer = FusedConv2dReLU(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 5, 5, requires_grad=True)
    with torchkit.force_backend("triton-interpreter"):
        out = layer(x)
        with torch.no_grad():
            assert_tensors_close(layer(x), out.detach())
    assert type(out.grad_fn).__name__ == "_Conv2dReLUFunctionBackward"
