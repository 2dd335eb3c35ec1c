"""Swap torchkit into an ordinary PyTorch training loop: three changed lines.

A plain loop (``DataLoader``, ``model(x)``, ``loss.backward()``, ``optimizer.step()``,
``scheduler.step()``) trains a small CNN on scikit-learn's bundled digits. The lines marked
``# torchkit`` are the whole change:

1. ``fuse_conv_relu(model)`` replaces each ``Conv2d`` + ``ReLU`` pair by one
   ``FusedConv2dReLU`` carrying the same weights;
2. ``FusedAdam`` replaces ``torch.optim.Adam`` (same arguments, same ``state_dict``; to convert
   a live ``torch.optim.Adam`` with its state, use ``torchkit.optim.fused_adam_from``);
3. ``WarmupDecayLR`` replaces a ``SequentialLR(LinearLR, CosineAnnealingLR)`` pair.

Each fused object then says which backend it ran on: compiled Triton on CUDA, the Triton
interpreter with ``TRITON_INTERPRET=1`` on CPU, the stock torch path otherwise.

Run: ``python examples/swap_into_training_loop.py [--epochs 3]`` (needs the ``demo`` extra).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from torchkit.demo.data import load_digits_32
from torchkit.nn import fuse_conv_relu
from torchkit.optim import FusedAdam
from torchkit.optim.lr_scheduler import WarmupDecayLR


def make_model() -> nn.Sequential:
    """A small CNN for 1x32x32 images, written the usual way (Conv2d followed by ReLU)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="passes over the data (default 3)")
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")

    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_digits_32()
    train = DataLoader(
        TensorDataset(data.train.images, data.train.labels), batch_size=64, shuffle=True
    )
    total_steps = args.epochs * len(train)

    model = fuse_conv_relu(make_model()).to(device)  # torchkit: was make_model().to(device)
    optimizer = FusedAdam(model.parameters(), lr=3e-3)  # torchkit: was torch.optim.Adam
    scheduler = WarmupDecayLR(  # torchkit: was SequentialLR(LinearLR, CosineAnnealingLR)
        optimizer, warmup_steps=total_steps // 10, total_steps=total_steps
    )

    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in train:
            images, labels = images.to(device), labels.to(device)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = model(data.test.images.to(device))
            accuracy = (logits.argmax(1).cpu() == data.test.labels).float().mean().item()
        print(
            f"epoch {epoch}: last batch loss {loss.item():.4f}, test accuracy {accuracy:.2%}, "
            f"lr {scheduler.get_last_lr()[0]:.2e}"
        )

    print(model)
    fused = [m for m in model.modules() if hasattr(type(m), "backend_for")]
    for module in fused:
        print(f"{type(module).__name__} ran on: {module.last_backend}")
    print(f"FusedAdam ran on: {optimizer.last_backend}")


if __name__ == "__main__":
    main()
