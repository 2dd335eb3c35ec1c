"""LeNet-5 as the reference notes define it, for 1x32x32 inputs and 10 classes."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LeNet"]


class LeNet(nn.Module):
    """The reference notes' LeNet: two conv/ReLU/max-pool stages and a three-layer head.

    ``body`` holds ``Conv2d(1, 6, 5) -> ReLU -> MaxPool2d(2) -> Conv2d(6, 16, 5) -> ReLU ->
    MaxPool2d(2)``, two Conv2d+ReLU pairs that :func:`torchkit.nn.fuse_conv_relu` replaces by
    ``FusedConv2dReLU`` layers; ``head`` is ``Linear(400, 120) -> ReLU -> Linear(120, 84) ->
    ReLU -> Linear(84, 10)``. The ReLUs are in-place, as in the notes. 61,706 parameters.

    Example:
        >>> model = LeNet()
        >>> model(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
            nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2),
        )
        self.head = nn.Sequential(
            nn.Linear(in_features=16 * 5 * 5, out_features=120),
            nn.ReLU(inplace=True),
            nn.Linear(in_features=120, out_features=84),
            nn.ReLU(inplace=True),
            nn.Linear(in_features=84, out_features=10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, 10)`` for images ``(N, 1, 32, 32)``."""
        x = self.body(x)
        return self.head(x.flatten(1))
