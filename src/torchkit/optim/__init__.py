"""Fused optimizers and LR schedulers, mirroring :mod:`torch.optim`.

* :class:`FusedAdam`, :class:`FusedAdamW`: drop-ins for ``torch.optim.Adam``/``AdamW`` whose
  step is one multi-tensor Triton launch per device and dtype; :func:`fused_adam` is their
  functional form and :func:`fused_adam_from` converts a live torch Adam with its state.
* :mod:`torchkit.optim.lr_scheduler`: chainable, resumable, closed-form LR schedulers.
"""

from torchkit.optim import lr_scheduler
from torchkit.optim.adam import AdamLaunch, FusedAdam, FusedAdamW, fused_adam, fused_adam_from

__all__ = [
    "AdamLaunch",
    "FusedAdam",
    "FusedAdamW",
    "fused_adam",
    "fused_adam_from",
    "lr_scheduler",
]
