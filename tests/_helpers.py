"""Assertions shared by the kernel and optimizer tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

from torchkit.backend import Backend, force_backend, interpreter_enabled

# The two backends a CPU machine can run: parametrize tests that hold on both with this.
BACKENDS = [
    pytest.param(Backend.TORCH, id="torch"),
    pytest.param(Backend.TRITON_INTERPRETER, id="interpreter", marks=pytest.mark.interpreter),
]

# (atol, rtol) per dtype: torch.testing.assert_close's defaults, used to compare a result
# against a reference computed in higher precision from the same (rounded) inputs.
DTYPE_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1.3e-6),
    torch.float16: (1e-5, 1e-3),
    torch.bfloat16: (1e-5, 1.6e-2),
    torch.float64: (1e-7, 1e-7),
}


def assert_tensors_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    name: str = "tensor",
) -> None:
    """``torch.testing.assert_close`` with a report fit for kernels.

    On failure the message says how many elements differ, where the worst one is, its two
    values, and whether NaN/inf appear on one side only, which is what a kernel bug looks like.
    """
    if actual.shape != expected.shape:
        raise AssertionError(f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    if (atol is None) != (rtol is None):
        raise ValueError("give both atol and rtol, or neither")
    if atol is None:
        atol, rtol = DTYPE_TOLERANCES.get(actual.dtype, (0.0, 0.0))
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    nonfinite = (~torch.isfinite(a)) ^ (~torch.isfinite(e))
    both_finite = torch.isfinite(a) & torch.isfinite(e)
    diff = torch.where(both_finite, (a - e).abs(), torch.zeros_like(a))
    bad = both_finite & (diff > atol + rtol * e.abs())
    same_nonfinite = ~both_finite & ~nonfinite
    bad |= same_nonfinite & ~((a == e) | (a.isnan() & e.isnan()))
    bad |= nonfinite
    if not bool(bad.any()):
        return
    worst = int(torch.argmax(torch.where(bad, diff, torch.full_like(diff, -1.0))))
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), a.shape))
    raise AssertionError(
        f"{name}: {int(bad.sum())} of {a.numel()} elements differ (atol={atol}, rtol={rtol}); "
        f"worst at {index}: {a.flatten()[worst].item()!r} vs {e.flatten()[worst].item()!r} "
        f"(|diff|={diff.flatten()[worst].item():.3g}); "
        f"NaN/inf on one side only: {int(nonfinite.sum())}"
    )


@contextlib.contextmanager
def running_on(backend: Backend, launches: list[str], *, kernel: str) -> Iterator[None]:
    """Pin ``backend``; afterwards check ``kernel`` ran exactly when it should have.

    ``launches`` is the ``kernel_launches`` fixture (tests/conftest.py): the stock torch path
    must launch no Triton kernel, the interpreter path must launch ``kernel`` at least once.
    """
    if backend is Backend.TRITON_INTERPRETER and not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")
    before = launches.count(kernel)
    with force_backend(backend):
        yield
    ran = launches.count(kernel) - before
    if backend is Backend.TORCH:
        assert ran == 0, f"the torch backend launched the Triton kernel {kernel} {ran} times"
    else:
        assert ran > 0, f"the Triton kernel {kernel} never ran under the interpreter"
