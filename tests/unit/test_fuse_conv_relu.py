"""fuse_conv_relu on the reference notes' LeNet, a ResNet-style block and the cases it must skip."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _helpers import BACKENDS, assert_tensors_close
from torch import nn

import torchkit
from torchkit.demo.model import LeNet  # the reference notes' LeNet, layer for layer
from torchkit.nn import FusedConv2dReLU, fuse_conv_relu


class BasicBlock(nn.Module):
    """A ResNet-style block: conv-ReLU-conv in a Sequential, a 1x1 projection, and
    ``F.relu`` after the residual sum in ``forward`` (which the pass does not touch)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.shortcut = nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main(x) + self.shortcut(x))


def small_resnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        BasicBlock(8, 8, 1),
        BasicBlock(8, 16, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_lenet_has_two_pairs_and_the_same_outputs_and_gradients(backend):
    torch.manual_seed(0)
    model = LeNet()
    x = torch.randn(2, 1, 32, 32)

    fused, names = fuse_conv_relu(model, return_fused=True)

    assert names == ["body.0", "body.3"]
    assert isinstance(fused.body[0], FusedConv2dReLU)
    assert isinstance(fused.body[1], nn.Identity)
    assert isinstance(fused.body[3], FusedConv2dReLU)
    assert type(model.body[0]) is nn.Conv2d, "inplace=False must leave the model alone"
    assert fused.state_dict().keys() == model.state_dict().keys()
    with torchkit.force_backend(backend):
        out = fused(x)
    assert fused.body[0].last_backend is backend
    expected = model(x)
    assert_tensors_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, p_fused), p in zip(fused.named_parameters(), model.parameters(), strict=True):
        assert_tensors_close(p_fused.grad, p.grad, name=f"grad {name}")


def test_lenet_checkpoints_load_both_ways():
    model, fused = LeNet(), fuse_conv_relu(LeNet())
    fused.load_state_dict(model.state_dict())
    model.load_state_dict(fused.state_dict())
    x = torch.randn(1, 1, 32, 32)
    with torchkit.force_backend("torch"):
        assert_tensors_close(fused(x), model(x))


def test_inplace_shares_parameters_with_an_existing_optimizer():
    torch.manual_seed(0)
    model = LeNet()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    returned = fuse_conv_relu(model, inplace=True)

    assert returned is model
    assert isinstance(model.body[0], FusedConv2dReLU)
    x = torch.randn(2, 1, 32, 32)
    with torchkit.force_backend("torch"):
        model(x).sum().backward()
    optimizer.step()  # updates the fused layers: they hold the optimizer's parameters
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    reference(x).sum().backward()
    ref_optimizer.step()
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        assert_tensors_close(p, q)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resnet_style_block(backend):
    torch.manual_seed(0)
    model = small_resnet().eval()
    x = torch.randn(2, 3, 8, 8)

    fused, names = fuse_conv_relu(model, return_fused=True)

    # The stem pair and each block's conv-ReLU; not the 1x1 shortcuts, the second convs (no
    # ReLU after them) or the F.relu in BasicBlock.forward.
    assert names == ["0", "2.main.0", "3.main.0"]
    assert not fused.training
    with torchkit.force_backend(backend), torch.no_grad():
        out = fused(x)
    assert fused[2].main[0].last_backend is backend
    with torch.no_grad():
        assert_tensors_close(out, model(x))


class HookedConv(nn.Conv2d):
    """A Conv2d subclass: its forward could do anything, so it must not be fused."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input) * 2


def _hooked(module: nn.Module) -> nn.Module:
    module.register_forward_hook(lambda m, args, out: None)
    return module


NOT_FUSED = {
    "conv-bn-relu": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU()),
    "relu-before-conv": lambda: nn.Sequential(nn.ReLU(), nn.Conv2d(1, 2, 3)),
    "conv-subclass": lambda: nn.Sequential(HookedConv(1, 2, 3), nn.ReLU()),
    "already-fused": lambda: nn.Sequential(FusedConv2dReLU(1, 2, 3), nn.ReLU()),
    "other-activation": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU6()),
    "hook-on-conv": lambda: nn.Sequential(_hooked(nn.Conv2d(1, 2, 3)), nn.ReLU()),
    "hook-on-relu": lambda: nn.Sequential(nn.Conv2d(1, 2, 3), _hooked(nn.ReLU())),
    "modulelist": lambda: nn.ModuleList([nn.Conv2d(1, 2, 3), nn.ReLU()]),
    "conv1d": lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU()),
}


@pytest.mark.parametrize("make", NOT_FUSED.values(), ids=NOT_FUSED.keys())
def test_leaves_other_patterns_alone(make):
    model = make()
    fused, names = fuse_conv_relu(model, return_fused=True)
    assert names == []
    assert [type(m) for m in fused.modules()] == [type(m) for m in model.modules()]


def test_nested_sequentials_and_consecutive_pairs():
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(inplace=True)),
        nn.Sequential(nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU())),
    )
    fused, names = fuse_conv_relu(model, return_fused=True)
    assert names == ["0.0", "0.2", "1.0.0"]
    assert [type(m).__name__ for m in fused[0]] == [
        "FusedConv2dReLU",
        "Identity",
        "FusedConv2dReLU",
        "Identity",
    ]
    x = torch.randn(1, 1, 7, 7)
    with torchkit.force_backend("torch"):
        assert_tensors_close(fused(x), model(x))


def test_return_value_without_names_is_the_model():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    fused = fuse_conv_relu(model)
    assert isinstance(fused, nn.Sequential)
    assert fused is not model
    assert isinstance(fused[0], FusedConv2dReLU)


@pytest.mark.parametrize(
    ("args", "match"),
    [((torch.randn(2),), "model must be an nn.Module, got Tensor"), ((nn.ReLU(), 1), "inplace")],
    ids=["tensor", "inplace-int"],
)
def test_argument_validation(args, match):
    with pytest.raises(TypeError, match=match):
        fuse_conv_relu(*args)
