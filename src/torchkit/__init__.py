"""torchkit: plug-ins for stock PyTorch.

* :mod:`torchkit.optim.lr_scheduler` - chainable, resumable, closed-form LR schedulers;
* :mod:`torchkit.nn`, :mod:`torchkit.optim` - fused Triton drop-ins for torch classes;
* :mod:`torchkit.backend` - the policy choosing Triton, the Triton interpreter or stock torch.

Importing torchkit never imports Triton; kernels are loaded on first use.
"""

from torchkit.backend import Backend, force_backend, select_backend

__version__ = "0.1.0"

__all__ = ["Backend", "__version__", "force_backend", "select_backend"]
