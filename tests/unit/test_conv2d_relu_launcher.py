"""The launcher's own contract: argument layouts the kernel cannot index directly."""

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_tensors_close

from torchkit.backend import Backend, force_backend, triton_available
from torchkit.nn import FusedConv2dReLU, fuse_conv_relu
from torchkit.nn.functional import conv2d_relu

needs_interpreter = pytest.mark.skipif(
    not triton_available(), reason="the Triton interpreter needs triton installed"
)


@needs_interpreter
@pytest.mark.interpreter
def test_strided_bias_gives_the_reference_output():
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    bias = (torch.arange(8.0) * 10)[::2]  # stride 2: the kernel must not read it as contiguous
    with force_backend(Backend.TRITON_INTERPRETER):
        out = conv2d_relu(x, w, bias, padding=1)
    assert_tensors_close(out, F.relu(F.conv2d(x, w, bias, padding=1)))


@needs_interpreter
@pytest.mark.interpreter
def test_offsets_past_int32_are_refused_not_wrapped():
    # A broadcast view spans 2**32 output positions without allocating them.
    x = torch.zeros(1, 1, 1, 1).expand(1, 1, 65536, 65536)
    with force_backend(Backend.TRITON_INTERPRETER), pytest.raises(ValueError, match="2\\*\\*31"):
        conv2d_relu(x, torch.ones(1, 1, 1, 1))


@pytest.mark.parametrize(
    "register",
    [
        lambda m: m.register_full_backward_hook(lambda *a: None),
        lambda m: m.register_full_backward_pre_hook(lambda *a: None),
        lambda m: m.register_forward_hook(lambda *a: None),
        lambda m: m._register_state_dict_hook(lambda *a: None),
    ],
    ids=["backward", "backward-pre", "forward", "state-dict"],
)
@pytest.mark.parametrize("where", [0, 1], ids=["on-conv", "on-relu"])
def test_pairs_with_hooks_are_left_alone(register, where):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    register(model[where])
    fused, names = fuse_conv_relu(model, return_fused=True)
    assert names == []
    assert not isinstance(fused[0], FusedConv2dReLU)
