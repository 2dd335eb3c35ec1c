"""FusedAdam against torch's Adam: time per ``optimizer.step()``, in one run, as ratios.

On CPU, FusedAdam runs torch's fused kernel (``Backend.TORCH``: the Triton interpreter is
for tests, not speed) and is compared with ``torch.optim.Adam`` in its default configuration
(the single-tensor loop on CPU) and with ``fused=True``, torch's fastest CPU path; the target
is a ratio of at most about 1 against the latter. Each round times every optimizer on the
same parameters and gradients, interleaved (the order reversed every round); the times are
medians over rounds and the ratio is the median of the per-round ratios.

On CUDA, FusedAdam runs its Triton kernel and is compared with ``fused=True`` and
``foreach=True`` using ``triton.testing.do_bench``; without a GPU that part prints
``skipped: no CUDA``.

    python benchmarks/bench_adam.py            # full run
    python benchmarks/bench_adam.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

from torchkit import force_backend
from torchkit.optim import FusedAdam

# (case name, parameter shapes, number of param groups): the tensors are split round-robin
# over the groups, which get different learning rates and weight decays.
CASES: list[tuple[str, list[tuple[int, ...]], int]] = [
    ("MLP 784-512-512-10, 2 groups", [(512, 784), (512,), (512, 512), (512,), (10, 512), (10,)], 2),
    ("120 tensors of 64x64, 2 groups", [(64, 64)] * 120, 2),
    ("4 tensors of 512x512, 1 group", [(512, 512)] * 4, 1),
]
QUICK_CASES = CASES[:2]


def _make(
    shapes: list[tuple[int, ...]], groups: int, device: str, factory: Callable
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen).to(device)
    param_groups = [
        {"params": params[g::groups], "lr": 1e-3 * (g + 1), "weight_decay": 0.01 * g}
        for g in range(groups)
    ]
    return factory(param_groups), params


def _time_steps(opt: torch.optim.Optimizer, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def cpu_rows(quick: bool) -> list[dict]:
    """FusedAdam (CPU: torch's fused kernel) against torch Adam default and fused=True."""
    rounds, steps = (7, 2) if quick else (41, 5)
    rows = []
    factories: dict[str, Callable] = {
        "fusedadam": FusedAdam,
        "torch default": torch.optim.Adam,
        "torch fused=True": lambda g: torch.optim.Adam(g, fused=True),
    }
    with force_backend("torch"):
        for case, shapes, groups in QUICK_CASES if quick else CASES:
            opts = {name: _make(shapes, groups, "cpu", f)[0] for name, f in factories.items()}
            for opt in opts.values():  # warm-up: creates the state
                _time_steps(opt, 2)
            times: dict[str, list[float]] = {name: [] for name in opts}
            order = list(opts)
            for _ in range(rounds):
                for name in order:
                    times[name].append(_time_steps(opts[name], steps))
                order.reverse()  # no optimizer always runs first (or right after another)
            ours = times["fusedadam"]
            for stock in ("torch default", "torch fused=True"):
                theirs = times[stock]
                rows.append(
                    {
                        "benchmark": "adam step (cpu)",
                        "case": f"{case}, vs {stock}",
                        "torchkit_s": statistics.median(ours),
                        "stock_s": statistics.median(theirs),
                        # Per-round ratios of neighbouring measurements cancel slow drifts in
                        # the machine's load better than a ratio of two medians.
                        "ratio": statistics.median(
                            a / b for a, b in zip(ours, theirs, strict=True)
                        ),
                    }
                )
    return rows


def cuda_rows(quick: bool) -> list[dict]:
    """FusedAdam (Triton) against torch Adam fused=True and foreach=True, with do_bench."""
    import triton.testing

    rows = []
    factories: dict[str, Callable] = {
        "fusedadam": FusedAdam,
        "torch fused=True": lambda g: torch.optim.Adam(g, fused=True),
        "torch foreach=True": lambda g: torch.optim.Adam(g, foreach=True),
    }
    rep = 50 if quick else 200
    for case, shapes, groups in QUICK_CASES if quick else CASES:
        opts = {name: _make(shapes, groups, "cuda", f)[0] for name, f in factories.items()}
        results = {name: [] for name in opts}
        for _ in range(3):  # interleaved rounds
            for name, opt in opts.items():
                results[name].append(triton.testing.do_bench(opt.step, warmup=25, rep=rep) / 1e3)
        ours = statistics.median(results["fusedadam"])
        for stock in ("torch fused=True", "torch foreach=True"):
            theirs = statistics.median(results[stock])
            rows.append(
                {
                    "benchmark": f"cuda adam step ({torch.cuda.get_device_name(0)})",
                    "case": f"{case}, vs {stock}",
                    "torchkit_s": ours,
                    "stock_s": theirs,
                    "ratio": ours / theirs,
                }
            )
    return rows


def run(quick: bool) -> list[dict]:
    """All rows: CPU always, CUDA when a GPU is present (else prints ``skipped: no CUDA``).

    Args:
        quick: fewer cases and rounds (a smoke test).

    Returns:
        Rows ``{"benchmark", "case", "torchkit_s", "stock_s", "ratio"}``; ``ratio`` below 1
        means FusedAdam is faster.
    """
    rows = cpu_rows(quick)
    if torch.cuda.is_available():
        rows += cuda_rows(quick)
    else:
        print("bench_adam cuda: skipped: no CUDA", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and rounds")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'benchmark':<24} {'case':<58} {'torchkit µs':>12} {'stock µs':>10} {'ratio':>6}")
    for r in run(args.quick):
        print(
            f"{r['benchmark']:<24} {r['case']:<58} {r['torchkit_s'] * 1e6:>12.1f} "
            f"{r['stock_s'] * 1e6:>10.1f} {r['ratio']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
