"""LR schedulers that subclass :class:`torch.optim.lr_scheduler.LRScheduler`."""

__all__: list[str] = []
