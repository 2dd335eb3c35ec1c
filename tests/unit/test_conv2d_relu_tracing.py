"""FusedConv2dReLU under torch.compile, torch.export and torch.jit, on both CPU backends.

On the Triton backends the kernel is the custom op ``torch.ops.torchkit.conv2d_relu``: tracers
record it as one node (its fake implementation gives the output's shape, dtype and memory
format) and its registered backward serves autograd. On the stock backend they see
``F.conv2d`` and ``relu_``. Inductor compiles cost seconds on CPU (a C++ toolchain probe and
build), so only one small test uses it; graph breaks are checked with a backend that records
the graphs, and ``fullgraph=True``, which fails on any break.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import BACKENDS, assert_tensors_close
from torch import nn

import torchkit
from torchkit.backend import Backend
from torchkit.nn import FusedConv2dReLU

pytestmark = [
    # Dynamo notes that it traces through torchkit.backend's functools.cache'd helpers.
    pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools"),
    # torch.jit.trace warns about every Python check of a shape (the input validation).
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]

OP = torch.ops.torchkit.conv2d_relu.default


def small_model() -> nn.Sequential:
    """Both kernel variants (16 input channels: the GEMM form; 8: flat K), a padding mode, a
    stock op between them and no bias in the second layer."""
    torch.manual_seed(0)
    return nn.Sequential(
        FusedConv2dReLU(16, 8, 3, padding=1, padding_mode="reflect"),
        nn.MaxPool2d(2),
        FusedConv2dReLU(8, 4, 1, bias=False),
    )


def _ops(graph: torch.fx.Graph) -> list[object]:
    return [node.target for node in graph.nodes if node.op == "call_function"]


def _expect_op(backend: Backend, ops: list[object], count: int) -> None:
    """The custom op is in the graph ``count`` times on the Triton backends, never on torch's."""
    assert ops.count(OP) == (0 if backend is Backend.TORCH else count), ops


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_traces_the_model_in_one_graph(backend):
    model = small_model()
    x = torch.randn(2, 16, 6, 6)
    graphs: list[torch.fx.GraphModule] = []

    def recording(gm: torch.fx.GraphModule, example_inputs: list[torch.Tensor]):
        graphs.append(gm)
        return gm.forward

    with torchkit.force_backend(backend):
        expected = model(x)
        model[0].last_backend = None
        # fullgraph=True raises on any graph break.
        out = torch.compile(model, backend=recording, fullgraph=True)(x)
    assert len(graphs) == 1
    _expect_op(backend, _ops(graphs[0].graph), 2)
    assert_tensors_close(out, expected)
    assert model[0].last_backend is backend, "the compiled call must record its backend"


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_inductor_forward_and_backward_match_eager(backend):
    torch.manual_seed(0)
    layer = FusedConv2dReLU(16, 4, 3, padding=1)
    x = torch.randn(1, 16, 4, 4, requires_grad=True)
    compiled = torch.compile(layer)  # inductor
    with torchkit.force_backend(backend):
        out = compiled(x)
        (grad_x,) = torch.autograd.grad(out.sum(), x)
        expected = layer(x)
        (expected_grad_x,) = torch.autograd.grad(expected.sum(), x)
        assert_tensors_close(out, expected)
        assert_tensors_close(grad_x, expected_grad_x, name="grad input")
        # The weight is a graph input: an in-place update shows in the next compiled call.
        with torch.no_grad():
            layer.weight.mul_(-1.0)
        assert_tensors_close(compiled(x), layer(x), name="after the update")


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_records_the_op_and_runs(backend):
    model = small_model()
    x = torch.randn(2, 16, 6, 6)
    with torchkit.force_backend(backend):
        program = torch.export.export(model, (x,))
        expected = model(x)
        _expect_op(backend, _ops(program.graph), 2)
        assert_tensors_close(program.module()(x), expected)
        other = torch.randn(2, 16, 6, 6)
        assert_tensors_close(program.module()(other), model(other), name="another input")


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_trace_records_the_op_and_follows_the_weights(backend):
    model = small_model()
    x = torch.randn(2, 16, 6, 6)
    with torchkit.force_backend(backend):
        traced = torch.jit.trace(model, (x,))
        kinds = [node.kind() for node in traced.inlined_graph.nodes()]
        assert kinds.count("torchkit::conv2d_relu") == (0 if backend is Backend.TORCH else 2)
        assert_tensors_close(traced(x), model(x))
        # Parameters stay parameters of the traced module, and nothing packed at trace time
        # was baked into the trace: an update after tracing is seen.
        with torch.no_grad():
            model[0].weight.mul_(-1.0)
        assert_tensors_close(traced(x), model(x), name="after the update")


def test_jit_script_is_refused_with_a_reason():
    with pytest.raises(RuntimeError, match=r"cannot be compiled by torch\.jit\.script.*trace"):
        torch.jit.script(small_model())


# (input shape, channels_last input, weight shape): size-1 dimensions, whose strides
# contiguous() leaves as they are, in the output (1 x 1 images, one output channel, batch 1).
FAKE_CASES = {
    "bf16-strided-dilated": ((2, 16, 7, 5), True, (8, 16, 3, 2)),
    "one-by-one-output": ((2, 16, 3, 3), True, (4, 16, 3, 3)),
    "one-output-channel": ((2, 16, 5, 5), True, (1, 16, 3, 3)),
    "batch-of-one": ((1, 16, 5, 5), True, (4, 16, 3, 3)),
    "nchw": ((2, 16, 5, 5), False, (4, 16, 3, 3)),
    "one-input-channel": ((2, 1, 5, 5), True, (4, 1, 3, 3)),
}


@pytest.mark.interpreter
@pytest.mark.parametrize("case", FAKE_CASES.values(), ids=FAKE_CASES)
def test_fake_output_is_the_kernels_output(case):
    """The fake implementation (what tracers see) gives the op's output exactly: shape, dtype
    and strides, size-1 dimensions included (inductor lays out what follows by them)."""
    from torch._subclasses.fake_tensor import FakeTensorMode  # no public path in torch 2.13

    x_shape, channels_last, w_shape = case
    torch.manual_seed(0)
    x = torch.randn(x_shape).to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(w_shape, dtype=torch.bfloat16)
    args = ((2, 1), (1, 0), (1, 2), 1, False, None, None) if x_shape[2] == 7 else None
    args = args or ((1, 1), (0, 0), (1, 1), 1, False, None, None)
    real = OP(x, weight, None, *args)
    with FakeTensorMode() as mode:
        fake = OP(mode.from_tensor(x), mode.from_tensor(weight), None, *args)
    assert (fake.shape, fake.dtype, fake.stride()) == (real.shape, real.dtype, real.stride())
    assert_tensors_close(real, F.relu(F.conv2d(x, weight, None, *args[:4])))


@pytest.mark.interpreter
def test_traced_graphs_pack_the_weight_outside_the_op():
    """A traced call packs the weight as a graph computation of the weight, passed to the op:
    inductor's freezing can fold it into a constant, and exported programs carry it."""
    model = small_model()
    x = torch.randn(2, 16, 6, 6)
    with torchkit.force_backend(Backend.TRITON_INTERPRETER):
        program = torch.export.export(model, (x,))
        expected = model(x)
    calls = [node for node in program.graph.nodes if node.target is OP]
    assert len(calls) == 2
    for call in calls:
        packed = call.args[9]
        assert isinstance(packed, torch.fx.Node), "the op packed the weight itself"
        chain = []  # the ops from the weight to the packed weight (a contiguous() of a
        while packed.op == "call_function":  # permute(), left out when already contiguous)
            chain.append(str(packed.target))
            packed = packed.args[0]
        assert "aten.permute.default" in chain, chain
        assert packed is call.args[1], "the packed weight is not computed from the op's weight"
    assert_tensors_close(program.module()(x), expected)
