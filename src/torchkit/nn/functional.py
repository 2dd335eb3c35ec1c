"""Functional forms of torchkit's fused layers, mirroring :mod:`torch.nn.functional`."""

__all__: list[str] = []
