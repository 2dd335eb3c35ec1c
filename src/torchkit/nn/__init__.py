"""Fused drop-ins for :mod:`torch.nn` layers."""

__all__: list[str] = []
