"""Which implementation a fused torchkit op runs: the one backend policy of the package.

Every fused object (``FusedConv2dReLU``, ``FusedAdam``, ...) asks :func:`select_backend`
for the device its tensors live on and reports the answer, so nothing falls back silently:

============================  ======================================================
``Backend.TRITON``            compiled Triton kernels; CUDA tensors, Triton importable
``Backend.TRITON_INTERPRETER`` the same Triton kernels run by Triton's interpreter on
                              CPU tensors; ``TRITON_INTERPRET=1`` set before Triton
                              is imported (this is how the test-suite runs kernels
                              on machines without a GPU)
``Backend.TORCH``             the fastest stock PyTorch path for the device
============================  ======================================================

:func:`force_backend` pins one backend for a block of code (tests use it to run the
stock path while the interpreter is enabled); asking for a backend that cannot run on
a device raises instead of quietly running something else.

Example:
    >>> import torch
    >>> from torchkit.backend import Backend, force_backend, select_backend
    >>> with force_backend("torch"):
    ...     select_backend(torch.device("cpu"))
    <Backend.TORCH: 'torch'>
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import os
import threading
from collections.abc import Iterator

import torch

__all__ = [
    "Backend",
    "force_backend",
    "interpreter_enabled",
    "select_backend",
    "triton_available",
    "triton_version",
]


class Backend(str, enum.Enum):
    """An implementation a fused op can run on."""

    TRITON = "triton"
    TRITON_INTERPRETER = "triton-interpreter"
    TORCH = "torch"

    def __str__(self) -> str:
        return self.value


# Filled by the first triton_available() call. A plain global rather than functools.cache: the
# fused ops ask for their backend inside code that torch.compile traces, and Dynamo warns about
# (and traces through) lru_cache wrappers, while a global read becomes a guarded constant.
_triton_found: list[bool] = []


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (checked once, without importing it)."""
    if not _triton_found:
        try:
            found = importlib.util.find_spec("triton") is not None
        except (ImportError, ValueError):  # a broken or blocked installation counts as absent
            found = False
        _triton_found.append(found)
    return _triton_found[0]


def triton_version() -> str | None:
    """The installed Triton version, or ``None`` when Triton is not installed."""
    if not triton_available():
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("triton")
    except PackageNotFoundError:  # importable but not installed as a distribution
        import triton

        return str(triton.__version__)


def interpreter_enabled() -> bool:
    """Whether ``TRITON_INTERPRET=1`` asks Triton to interpret kernels on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_override = threading.local()


def _usable(backend: Backend, device: torch.device) -> str | None:
    """``None`` when ``backend`` can run on ``device``, else the reason it cannot."""
    if backend is Backend.TORCH:
        return None
    if not triton_available():
        return "triton is not installed"
    if backend is Backend.TRITON and device.type != "cuda":
        return f"compiled Triton kernels need CUDA tensors, got device {device}"
    if backend is Backend.TRITON_INTERPRETER:
        if device.type != "cpu":
            return f"the Triton interpreter runs on CPU tensors, got device {device}"
        if not interpreter_enabled():
            return "TRITON_INTERPRET=1 must be set before triton is imported"
    return None


def select_backend(device: torch.device | str) -> Backend:
    """Return the backend a fused op uses for tensors on ``device``.

    This runs on every forward and optimizer step, so the common case reads the device type
    and the environment once each.

    Args:
        device: the device of the op's tensors.

    Raises:
        RuntimeError: a backend pinned with :func:`force_backend` cannot run on ``device``.
    """
    if not isinstance(device, torch.device):
        device = torch.device(device)
    forced = getattr(_override, "backend", None)
    if forced is not None:
        reason = _usable(forced, device)
        if reason is not None:
            raise RuntimeError(f"backend {forced.value!r} was forced but cannot run: {reason}")
        return forced
    kind = device.type
    if kind == "cuda":
        return Backend.TRITON if triton_available() else Backend.TORCH
    if kind == "cpu" and interpreter_enabled() and triton_available():
        return Backend.TRITON_INTERPRETER
    return Backend.TORCH


@contextlib.contextmanager
def force_backend(backend: Backend | str) -> Iterator[Backend]:
    """Pin the backend :func:`select_backend` returns inside a ``with`` block (this thread only).

    Args:
        backend: a :class:`Backend` or its value (``"triton"``, ``"triton-interpreter"``,
            ``"torch"``).

    Raises:
        ValueError: ``backend`` names no backend.
    """
    try:
        chosen = Backend(backend)
    except ValueError:
        valid = ", ".join(repr(b.value) for b in Backend)
        raise ValueError(f"unknown backend {backend!r}; expected one of {valid}") from None
    previous = getattr(_override, "backend", None)
    _override.backend = chosen
    try:
        yield chosen
    finally:
        _override.backend = previous
