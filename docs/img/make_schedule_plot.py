"""Draw the scheduler gallery of docs/schedulers.md (docs/img/sched_*.png) with plot_schedule.

One figure per family of schedules. Every schedule is a factory run by ``preview`` on a
stand-in ``SGD(lr=1.0, momentum=0.9)``, so the curves are multipliers of the base lr; the
plateau and greedy figures feed the same made-up validation loss to every schedule. Run from
anywhere:

    python docs/img/make_schedule_plot.py [OUTPUT_DIR]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from torch.optim import lr_scheduler as torch_lr_scheduler

from torchkit.optim.lr_scheduler import (
    ChainedScheduler,
    CosineRestartsLR,
    GreedyLR,
    NoamLR,
    OneCycleLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
    plot_schedule,
)

HERE = Path(__file__).parent
DPI = 90  # keeps every PNG under 100 KB


def _loss(epochs: int) -> list[float]:
    """A made-up validation loss: improves, stalls from epoch 12, improves again from 30 to 50."""
    return [2.0 * math.exp(-min(t, 12) / 8) - 0.02 * max(0, min(t, 50) - 30) for t in range(epochs)]


def _warmup_then_plateau(warmup: int) -> Callable:
    def build(optimizer):
        return ChainedScheduler(
            [
                WarmupDecayLR(optimizer, warmup, None, decay="constant"),
                ReduceLROnPlateau(optimizer, factor=0.5, patience=5, min_lr=0.1),
            ]
        )

    return build


# file -> (title, steps, {label: factory}, extra plot_schedule arguments)
GALLERY: dict[str, tuple[str, int, dict[str, Callable], dict]] = {
    "sched_warmup_decay.png": (
        "WarmupDecayLR: 100 warmup steps, then each decay to min_lr=0.05 at step 900",
        1000,
        {
            f"decay={decay!r}": lambda opt, d=decay, o=options: WarmupDecayLR(
                opt, 100, 900, decay=d, min_lr=0.05, **o
            )
            for decay, options in {
                "cosine": {},
                "linear": {},
                "polynomial": {"power": 2.0},
                "step": {"gamma": 0.5, "step_size": 200},
                "inverse_sqrt": {},
                "1-sqrt": {},
            }.items()
        },
        {},
    ),
    "sched_wsd.png": (
        "Warmup-stable-decay: WarmupDecayLR(stable_steps=...), min_lr_ratio=0.1",
        1000,
        {
            f"warmup={w!r}, decay={d!r}": lambda opt, w=w, d=d: WarmupDecayLR(
                opt,
                100,
                1000,
                stable_steps=700,
                warmup=w,
                decay=d,
                warmup_start_factor=0.1,
                min_lr_ratio=0.1,
            )
            for w, d in [("linear", "1-sqrt"), ("cosine", "cosine"), ("linear", "linear")]
        },
        {},
    ),
    "sched_restarts.png": (
        "CosineRestartsLR: timm's cycles and transformers' hard restarts",
        1000,
        {
            "cycle_steps=250 (torch's warm restarts)": lambda opt: CosineRestartsLR(opt, 250),
            "cycle_steps=100, cycle_mul=2, cycle_decay=0.6, warmup 50": lambda opt: (
                CosineRestartsLR(opt, 100, cycle_mul=2.0, cycle_decay=0.6, warmup_steps=50)
            ),
            "k_decay=3, cycle_limit=2, min_lr=0.1": lambda opt: CosineRestartsLR(
                opt, 400, k_decay=3.0, cycle_limit=2, min_lr=0.1
            ),
            "total_steps=900, num_cycles=3, warmup prefix 60": lambda opt: CosineRestartsLR(
                opt, total_steps=900, num_cycles=3, warmup_steps=60, warmup_prefix=True
            ),
        },
        {},
    ),
    "sched_inverse_sqrt.png": (
        "Inverse square root: endless WarmupDecayLR and NoamLR (log scale)",
        4000,
        {
            "NoamLR(warmup 200), peak scaled to 1": lambda opt: NoamLR(
                opt, d_model=512, warmup_steps=200, factor=math.sqrt(512 * 200)
            ),
            "inverse_sqrt, warmup 200, timescale 200: on top of NoamLR": lambda opt: WarmupDecayLR(
                opt, 200, None, decay="inverse_sqrt", warmup_start_factor=0.0
            ),
            "inverse_sqrt, warmup 200, timescale 1000": lambda opt: WarmupDecayLR(
                opt, 200, None, decay="inverse_sqrt", timescale=1000, warmup_start_factor=0.0
            ),
        },
        {"log_scale": True},
    ),
    "sched_plateau.png": (
        "Warmup, then ReduceLROnPlateau(factor=0.5, patience=5, min_lr=0.1): cuts are factors",
        120,
        {f"warmup {w} epochs": _warmup_then_plateau(w) for w in (0, 10, 30)},
        {"metrics": _loss(119)},
    ),
    "sched_greedy.png": (
        "GreedyLR(min_lr=0.1, max_lr=2): up while the loss improves, down while it stalls",
        120,
        {
            f"factor={factor}, patience={patience}": lambda opt, f=factor, p=patience: GreedyLR(
                opt, factor=f, patience=p, min_lr=0.1, max_lr=2.0
            )
            for factor, patience in [(0.9, 2), (0.7, 5)]
        },
        {"metrics": _loss(119)},
    ),
    "sched_onecycle.png": (
        "OneCycleLR, alone (with its momentum) and chained with ExponentialLR(0.998)",
        1000,
        {
            "OneCycleLR": lambda opt: OneCycleLR(opt, max_lr=1.0, total_steps=1000),
            "OneCycleLR x ExponentialLR(0.998)": lambda opt: torch_lr_scheduler.ChainedScheduler(
                [
                    OneCycleLR(opt, max_lr=1.0, total_steps=1000, cycle_momentum=False),
                    torch_lr_scheduler.ExponentialLR(opt, gamma=0.998),
                ]
            ),
        },
        {"momentum": True},
    ),
}


def main(directory: Path = HERE, names: list[str] | None = None) -> list[Path]:
    """Write the figures of the gallery (all, or ``names``) into ``directory``; their paths."""
    paths = []
    for name, (title, steps, schedules, extra) in GALLERY.items():
        if names is not None and name not in names:
            continue
        path = directory / name
        paths.append(plot_schedule(schedules, steps, path, title=title, dpi=DPI, **extra))
    return paths


if __name__ == "__main__":
    for path in main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
