"""Fused optimizers and LR schedulers, mirroring :mod:`torch.optim`."""

from torchkit.optim import lr_scheduler

__all__ = ["lr_scheduler"]
