"""Triton kernels and their launchers, installed as ``torchkit.kernels``.

Each module holds one operation's ``@triton.jit`` kernels and the plain Python launcher
that checks shapes, allocates outputs and launches the grid. Nothing here knows about
``nn.Module``, autograd or the backend policy; that lives in :mod:`torchkit.nn` and
:mod:`torchkit.optim`. Importing this package does not import Triton; importing one of
its kernel modules does.
"""

__all__: list[str] = []
