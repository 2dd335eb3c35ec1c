"""Draw docs/img/schedulers.png, the figure of docs/schedulers.md, with plot_schedule.

Every schedule is a factory run by ``preview`` on a stand-in ``SGD(lr=1.0, momentum=0.9)``,
so the curves are multipliers of the base lr. Run from anywhere:

    python docs/img/make_schedule_plot.py
"""

from __future__ import annotations

import math
from pathlib import Path

from torch.optim import lr_scheduler as torch_lr_scheduler

from torchkit.optim.lr_scheduler import NoamLR, OneCycleLR, WarmupDecayLR, plot_schedule

STEPS = 1000
OUTPUT = Path(__file__).with_name("schedulers.png")


def main() -> Path:
    """Write the figure and return its path."""
    schedules = {
        "WarmupDecayLR: linear warmup, cosine to min_lr=0.05": lambda opt: WarmupDecayLR(
            opt, 100, 900, min_lr=0.05
        ),
        "WarmupDecayLR: step decay, gamma=0.5 every 150": lambda opt: WarmupDecayLR(
            opt, 50, 900, decay="step", gamma=0.5, step_size=150
        ),
        "OneCycleLR (momentum cycled)": lambda opt: OneCycleLR(opt, max_lr=1.0, total_steps=STEPS),
        "OneCycleLR x ExponentialLR(0.998)": lambda opt: torch_lr_scheduler.ChainedScheduler(
            [
                OneCycleLR(opt, max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
                torch_lr_scheduler.ExponentialLR(opt, gamma=0.998),
            ]
        ),
        # factor = sqrt(d_model * warmup_steps) scales the peak to 1.
        "NoamLR (d_model=512, warmup 100, peak scaled to 1)": lambda opt: NoamLR(
            opt, d_model=512, warmup_steps=100, factor=math.sqrt(512 * 100)
        ),
    }
    return plot_schedule(
        schedules,
        STEPS,
        OUTPUT,
        momentum=True,
        title="torchkit schedulers (multipliers of the base lr)",
    )


if __name__ == "__main__":
    print(main())
