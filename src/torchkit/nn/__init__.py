"""Fused drop-ins for :mod:`torch.nn` layers, and the passes that swap them into models.

* :class:`FusedConv2dReLU` - ``nn.Conv2d`` + ``nn.ReLU`` in one Triton kernel;
* :func:`fuse_conv_relu` - replaces ``Conv2d``/``ReLU`` pairs of a model by ``FusedConv2dReLU``;
* :mod:`torchkit.nn.functional` - the functional forms (``conv2d_relu``);
* :class:`Conv2dError` - what a bad convolution argument or input raises.
"""

from torchkit.nn import functional
from torchkit.nn.conv import Conv2dError, FusedConv2dReLU
from torchkit.nn.fuse import fuse_conv_relu

__all__ = ["Conv2dError", "FusedConv2dReLU", "functional", "fuse_conv_relu"]
