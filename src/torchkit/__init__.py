"""torchkit: plug-ins for stock PyTorch.

* :mod:`torchkit.optim.lr_scheduler` - chainable, resumable, closed-form LR schedulers;
* :mod:`torchkit.nn`, :mod:`torchkit.optim` - fused Triton drop-ins for torch classes;
* :mod:`torchkit.backend` - the policy choosing Triton, the Triton interpreter or stock torch.

Importing torchkit imports neither torch nor Triton: the names below load :mod:`torchkit.backend`
on first use, and kernels are loaded when first launched. So the ``torchkit.conformance`` pytest
plugin, which every pytest run in an environment with torchkit loads, costs nothing until used.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Backend", "__version__", "force_backend", "select_backend"]

if TYPE_CHECKING:
    from torchkit.backend import Backend, force_backend, select_backend


def __getattr__(name: str) -> Any:
    if name in ("Backend", "force_backend", "select_backend"):
        from torchkit import backend

        return getattr(backend, name)
    raise AttributeError(f"module 'torchkit' has no attribute {name!r}")
