"""Mixed precision: ``torch.autocast`` (bf16 on CPU) + ``torch.amp.GradScaler`` training with
FusedConv2dReLU and FusedAdam against torch's Adam under the same scaler, including steps whose
gradients overflow (inf or NaN).

On the stock path the reference model is nn.Conv2d + nn.ReLU: both run the same bf16
convolution, so the gradients are equal and only the optimizers' fp32 rounding differs (fp32
defaults). On the interpreter path the Triton conv kernel accumulates the bf16 products in fp32
and rounds differently from torch's CPU convolution; to compare the optimizers at fp32
precision rather than the two convolutions at bf16 precision, the reference model there runs
the same kernel (the kernel itself is compared with torch in ``test_conv2d_relu.py``). The
skipping of overflowed steps is exact on both paths.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _helpers import BACKENDS, assert_tensors_close
from torch import nn

import torchkit
from torchkit.backend import Backend, interpreter_enabled
from torchkit.nn import FusedConv2dReLU
from torchkit.optim import FusedAdam

STEPS = 6
FAULT_STEP = 3


def make_model(fused: bool) -> nn.Module:
    """Conv2d(3, 4, 3) + ReLU (fused into FusedConv2dReLU or not) and a Linear; seed 0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)
    )
    if fused:
        model[0] = FusedConv2dReLU.from_conv(model[0])
        model[1] = nn.Identity()
    return model


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(4, 3, 6, 6, generator=gen), torch.randn(4, 2, generator=gen)


FAULTS = ["inf-grad", "nan-grad", "nan-input", "none"]


def train(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, fault: str
) -> dict[str, Any]:
    """``STEPS`` autocast steps; at ``FAULT_STEP`` inject ``fault``. Records what each step did."""
    scales, skipped, dtypes = [], [], set()
    for step in range(STEPS):
        x, y = batch(step)
        if fault == "nan-input" and step == FAULT_STEP:
            x[0, 1, 2, 3] = math.nan  # NaN activations, so NaN gradients everywhere
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            conv_out = model[0](x)
            out = model[3](model[2](model[1](conv_out)))
        dtypes.add(conv_out.dtype)
        scaler.scale(F.mse_loss(out.float(), y)).backward()
        if step == FAULT_STEP and fault == "inf-grad":
            model[0].weight.grad[1, 0, 0, 0] = math.inf
        if step == FAULT_STEP and fault == "nan-grad":
            model[3].bias.grad[0] = math.nan
        before = [p.detach().clone() for p in model.parameters()]
        state_before = copy.deepcopy(optimizer.state_dict()["state"])
        scaler.step(optimizer)
        scaler.update()
        unchanged = all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
        state_after = optimizer.state_dict()["state"]
        same_state = state_before.keys() == state_after.keys() and all(
            torch.equal(state_after[i][k], v) for i, s in state_before.items() for k, v in s.items()
        )
        skipped.append(unchanged and same_state)
        scales.append(scaler.get_scale())
    steps = {int(s["step"].item()) for s in optimizer.state_dict()["state"].values()}
    return {"scales": scales, "skipped": skipped, "dtypes": dtypes, "steps": steps}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_grad_scaler_training_matches_torch(backend: Backend, fault: str) -> None:
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    stock = backend is Backend.TORCH
    model, ref_model = make_model(fused=True), make_model(fused=not stock)
    optimizer = FusedAdam(model.parameters(), lr=1e-2, weight_decay=1e-2)
    reference = torch.optim.Adam(ref_model.parameters(), lr=1e-2, weight_decay=1e-2)
    # A small growth interval makes the scale grow as well as back off within 6 steps.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)
    ref_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=2)

    with torchkit.force_backend(backend):
        ran = train(model, optimizer, scaler, fault)
        expected = train(ref_model, reference, ref_scaler, fault)

    assert model[0].last_backend is backend
    assert optimizer.last_backend is backend
    assert ran["dtypes"] == expected["dtypes"] == {torch.bfloat16}
    # The skipped steps, the scale after every step, and the step counts are torch's.
    assert ran["skipped"] == expected["skipped"]
    assert ran["skipped"] == [fault != "none" and i == FAULT_STEP for i in range(STEPS)]
    assert ran["scales"] == expected["scales"]
    assert ran["steps"] == expected["steps"] == {STEPS - (fault != "none")}
    assert scaler.state_dict() == ref_scaler.state_dict()
    assert isinstance(ref_model[0], FusedConv2dReLU) is not stock
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.isfinite(p).all(), name
        assert_tensors_close(p, q, name=name)
