"""torchkit's demo: the reference notes' LeNet trained under five optimizer/schedule pairs.

``python -m torchkit.demo`` (or the ``torchkit-demo`` console script) trains LeNet, with its
Conv2d+ReLU pairs swapped for ``FusedConv2dReLU`` by :func:`torchkit.nn.fuse_conv_relu`, on
scikit-learn's bundled digits (or MNIST/FashionMNIST IDX files given with ``--data``) under

* torch ``SGD`` + ``StepLR``,
* torch ``Adam``,
* ``torchkit.optim.FusedAdam`` + ``WarmupDecayLR``,
* ``SGD`` + torchkit ``OneCycleLR`` chained with torch ``ExponentialLR``,
* ``FusedAdam`` + ``NoamLR``,

and writes ``lr_schedules.png``, ``loss_curves.png``, ``accuracy.png``, ``summary.md`` and
``metrics.json``. It needs the ``demo`` extra (matplotlib, scikit-learn, tqdm), which is
imported only when the demo runs.

Example:
    >>> from torchkit.demo import main
    >>> main(["--epochs", "1", "--out", "demo-smoke"])  # doctest: +SKIP
    0
"""

from torchkit.demo.cli import main

__all__ = ["main"]
