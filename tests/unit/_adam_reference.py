"""torch's CUDA fused Adam, emulated on the CPU operation by operation (and a counter of the
launch tables FusedAdam builds, for the tests of when it builds them).

The formulas are those of ``FusedAdamMathFunctor`` / ``adam_math`` in
``aten/src/ATen/native/cuda/fused_adam_utils.cuh`` as torch 2.13 ships it (the header is in
the wheel: ``torch/include/ATen/native/cuda/fused_adam_utils.cuh``): the hyperparameters are
cast to ``opmath_t`` (float32 for float32, float16 and bfloat16 tensors), the step counter too,
``1 - pow(beta, step)`` is computed in float32, the moments are updated with ``std::fma`` lerps,
and every other operation is one float32 operation rounded to nearest.

Each float32 operation is computed here in float64 and rounded to float32: for one ``+``,
``-``, ``*``, ``/`` or ``sqrt`` of float32 operands that double rounding always gives the
correctly rounded float32 result (53 >= 2 * 24 + 2 bits). An ``fma`` is not one of those, so
:func:`fma32` rounds the exact ``a * b + c`` itself. ``powf`` is taken as correctly rounded
(``math.pow`` in float64, then float32), which is what the kernel computes: where CUDA's
``powf`` is off by an ulp, both differ from the GPU alike.
"""

from __future__ import annotations

import math

import pytest
import torch

F32, F64 = torch.float32, torch.float64


def _f32(x: torch.Tensor) -> torch.Tensor:
    """A float64 result of one operation on float32 operands, rounded to float32."""
    return x.to(F32)


def fma32(
    a: torch.Tensor | float, b: torch.Tensor | float, c: torch.Tensor | float
) -> torch.Tensor:
    """``a * b + c`` rounded once to float32, for float32 operands (``std::fma``).

    The product of two float32 numbers is exact in float64; ``s = p + c`` then rounds once,
    and ``e`` (TwoSum) is what that rounding lost. ``float32(s)`` is the correctly rounded
    result except when ``s`` lands exactly halfway between two float32 numbers while the
    exact sum does not (``e != 0``): then the exact sum's side decides.
    """
    a, b, c = (torch.as_tensor(t, dtype=F32) for t in (a, b, c))
    a, b, c = torch.broadcast_tensors(a, b, c)
    p = a.double() * b.double()
    s = p + c.double()
    back = s - p
    e = (p - (s - back)) + (c.double() - back)
    nearest = s.float()
    toward = torch.where(s > nearest.double(), math.inf, -math.inf).to(F32)
    other = torch.nextafter(nearest, toward)
    halfway = (nearest.double() != s) & ((nearest.double() + other.double()) / 2 == s)
    above, below = torch.maximum(nearest, other), torch.minimum(nearest, other)
    return torch.where(halfway & (e != 0), torch.where(e > 0, above, below), nearest)


def _opmath(value: float | torch.Tensor) -> torch.Tensor:
    """A hyperparameter as ``static_cast<float>`` of the double torch passes (a tensor lr is
    read as the float32 it holds)."""
    return torch.tensor(float(value), dtype=F64).to(F32)


def cuda_adam_step(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    vmax: torch.Tensor | None,
    step: torch.Tensor,
    *,
    lr: float | torch.Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool,
    decoupled: bool,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
) -> None:
    """One step of torch's CUDA ``_fused_adam_`` / ``_fused_adamw_`` on one tensor, in place
    (float32, float16 or bfloat16 storage; ``vmax`` for AMSGrad; ``step`` the float32 counter
    of steps taken). ``found_inf`` equal to 1 skips everything, the counter included (torch
    adds 1 before its kernel and subtracts ``found_inf`` after)."""
    if found_inf is not None and float(found_inf) == 1.0:
        return
    step += 1
    lr_, beta1_, beta2_ = _opmath(lr), _opmath(beta1), _opmath(beta2)
    eps_, weight_decay_ = _opmath(eps), _opmath(weight_decay)
    t = float(step)
    correction1 = _f32(1 - torch.tensor(math.pow(float(beta1_), t), dtype=F64).float().double())
    correction2 = _f32(1 - torch.tensor(math.pow(float(beta2_), t), dtype=F64).float().double())
    correction2_sqrt = _f32(correction2.double().sqrt())

    param, grad = p.float(), g.float()
    exp_avg, exp_avg_sq = m.float(), v.float()
    if grad_scale is not None:
        grad = _f32(grad.double() / float(grad_scale))
    unscaled = grad
    if maximize:
        grad = -grad
    if float(weight_decay_) != 0:
        if decoupled:  # param -= lr * weight_decay * param, contracted into one fma
            param = fma32(-_f32(lr_.double() * weight_decay_.double()), param, param)
        else:  # grad += param * weight_decay, contracted into one fma
            grad = fma32(param, weight_decay_, grad)
    exp_avg = fma32(beta1_, exp_avg, fma32(-beta1_, grad, grad))
    square = _f32(grad.double() * grad.double())
    exp_avg_sq = fma32(beta2_, exp_avg_sq, fma32(-beta2_, square, square))
    step_size = _f32(lr_.double() / correction1.double())
    second = exp_avg_sq
    if vmax is not None:  # std::max(max_exp_avg_sq, exp_avg_sq) keeps the first on NaN
        second = torch.where(vmax.float() < exp_avg_sq, exp_avg_sq, vmax.float())
        vmax.copy_(second.to(vmax.dtype))
    root = _f32(second.double().sqrt())
    denom = _f32(_f32(root.double() / correction2_sqrt.double()).double() + eps_.double())
    update = _f32(_f32(step_size.double() * exp_avg.double()).double() / denom.double())
    p.copy_(_f32(param.double() - update.double()).to(p.dtype))
    m.copy_(exp_avg.to(m.dtype))
    v.copy_(exp_avg_sq.to(v.dtype))
    if grad_scale is not None:
        g.copy_(unscaled.to(g.dtype))


def plans_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that gets one entry per ``AdamPlan`` built from now on, with the plans
    ``adam_multi_tensor`` keeps by address forgotten first."""
    from torchkit.kernels import adam as kernels

    built: list[int] = []
    original = kernels.AdamPlan.__init__

    def counting(self: kernels.AdamPlan, *args: object, **kwargs: object) -> None:
        built.append(1)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "_PLANS", [])
    monkeypatch.setattr(kernels.AdamPlan, "__init__", counting)
    return built
