"""Test-suite wide setup.

Triton reads ``TRITON_INTERPRET`` when it is imported, so it is set here, before any
test module can import Triton: on this CPU-only project every Triton kernel is
exercised by the interpreter. Tests that want the stock torch path pin it with
``torchkit.force_backend("torch")``. A run that exports ``TRITON_INTERPRET=0`` keeps it.
"""

import os
from typing import Any

import pytest

os.environ.setdefault("TRITON_INTERPRET", "1")
# Triton 3.9 warns on every compile when this is unset; "1" is its default behaviour.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


@pytest.fixture
def kernel_launches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the Triton kernels the interpreter launches during the test, in order."""
    from torchkit.backend import triton_available

    if not triton_available():
        pytest.skip("triton is not installed")
    from triton.runtime.interpreter import InterpretedFunction

    launched: list[str] = []
    original = InterpretedFunction.run

    def counting_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        launched.append(self.fn.__name__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting_run)
    return launched
