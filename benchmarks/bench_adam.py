"""FusedAdam against torch's Adam: host cost and time per ``optimizer.step()``, as ratios.

* Host cost (any machine): the Python work of one FusedAdam step on its Triton path, with the
  kernel launch replaced by a no-op (``TRITON_INTERPRET=1`` in a subprocess, Triton's
  ``InterpretedFunction.run`` stubbed), for 10, 161 (a ResNet-50's parameter count) and 400
  one-element tensors in two param groups, every step with new gradient tensors (as after
  ``zero_grad()``); for 161 tensors also with a scheduler changing ``lr`` at every step, with
  GradScaler's ``grad_scale``/``found_inf``, with a tensor ``lr``, and the step compiled by
  ``torch.compile`` (inductor; torch's fused Adam runs outside the graph). Next to it torch's
  ``Adam(fused=True)`` step on the same tensors, whose CPU kernel has next to nothing to
  compute on one element each. The fastest step and the median are reported: other jobs on a
  shared machine only add time.
  What this leaves out is Triton's own launch overhead and, on a GPU, the pinned host buffer
  and the host-to-device copy of every table a step rewrites (the gradients' addresses after
  ``zero_grad()``, the group table after a scheduler's change), which only a GPU run measures.
* CPU step: FusedAdam on its stock path (torch's fused kernel: the interpreter is for tests,
  not speed) against ``torch.optim.Adam`` in its default configuration and with
  ``fused=True``. Each round times every optimizer on the same parameters and gradients,
  interleaved (order reversed every round); times are medians over rounds and the ratio is the
  median of the per-round ratios.
* CUDA step: FusedAdam's Triton kernel against ``fused=True`` and ``foreach=True`` with
  ``triton.testing.do_bench``; without a GPU that part prints ``skipped: no CUDA``.

    python benchmarks/bench_adam.py            # full run
    python benchmarks/bench_adam.py --quick    # fewer rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


HOST_COST_TENSORS = (10, 161, 400)
# (label, tensors, what changes between steps besides the gradients)
HOST_COST_CASES = [
    *((f"{n} tensors", n, "") for n in HOST_COST_TENSORS),
    ("161 tensors, lr changes every step", 161, "lr"),
    ("161 tensors, GradScaler", 161, "amp"),
    ("161 tensors, tensor lr", 161, "tensor lr"),
    ("161 tensors, torch.compile (inductor) of the step", 161, "compile"),
]


def _host_cost_worker(
    rounds: int, cases: list[tuple[str, int, str]] = HOST_COST_CASES
) -> dict[str, dict[str, list[float]]]:
    """``[fastest, median]`` seconds per step over ``rounds - 5`` steps, by implementation and
    case label (run under ``TRITON_INTERPRET=1`` with the launch a no-op, :func:`_no_launch`)."""
    factories: dict[str, tuple[Callable, str]] = {
        "fusedadam": (FusedAdam, "triton-interpreter"),
        "torch fused=True": (lambda g: torch.optim.Adam(g, fused=True), "torch"),
    }
    results: dict[str, dict[str, list[float]]] = {name: {} for name in factories}
    for label, n, change in cases:
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(n)]
        grads = [[torch.zeros(1) for _ in params] for _ in range(2)]  # two sets: new addresses
        groups = [{"params": params[0::2]}, {"params": params[1::2], "weight_decay": 0.0}]
        for name, (factory, backend) in factories.items():
            lr = torch.tensor(1e-3) if change == "tensor lr" else 1e-3
            opt = factory([{**g, "params": list(g["params"]), "lr": lr} for g in groups])
            if change == "amp":  # as GradScaler.step hands them over
                opt.grad_scale, opt.found_inf = torch.tensor(1024.0), torch.tensor(0.0)
            step = torch.compile(opt.step, backend="inductor") if change == "compile" else opt.step
            times = []
            with force_backend(backend):
                for i in range(rounds):
                    for p, g in zip(params, grads[i % 2], strict=True):
                        p.grad = g
                    if change == "lr":
                        for group in opt.param_groups:
                            group["lr"] = 1e-3 * (1 + i % 7)
                    start = time.perf_counter()
                    step()
                    times.append(time.perf_counter() - start)
            kept = times[5:]  # the first steps build state and tables (and compile)
            results[name][label] = [min(kept), statistics.median(kept)]
    return results


def _no_launch(self: object, *args: object, **kwargs: object) -> None:
    """Triton's ``InterpretedFunction.run`` for the host-cost worker: the launch does nothing."""


def host_rows(quick: bool) -> list[dict]:
    """The host cost table's rows, measured in a subprocess that runs Triton's interpreter."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "TRITON_DEFAULT_FP_FUSION": "1"}
    rounds = "300" if quick else "3000"
    done = subprocess.run(
        [sys.executable, __file__, "--host-cost-worker", rounds],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return host_cost_rows(json.loads(done.stdout.splitlines()[-1]))


def host_cost_rows(results: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Rows of the worker's ``results``, one per case it measured, in its order."""
    ours, theirs = results["fusedadam"], results["torch fused=True"]
    return [
        {
            "benchmark": "adam host cost (launch stubbed)",
            "case": f"{label}, 2 groups, new grads, vs torch fused=True step",
            "label": label,
            "torchkit_s": ours[label][0],
            "stock_s": theirs[label][0],
            "ratio": ours[label][0] / theirs[label][0],
            "torchkit_median_s": ours[label][1],
            "stock_median_s": theirs[label][1],
        }
        for label in ours
    ]


def host_cost_table(rows: list[dict]) -> str:
    """The host cost rows as the Markdown table of docs/fused_adam.md."""
    lines = [
        "| step | FusedAdam, host (µs): fastest | median "
        "| torch `Adam(fused=True)` (µs): fastest | median |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['torchkit_s'] * 1e6:.1f} | {r['torchkit_median_s'] * 1e6:.1f} "
            f"| {r['stock_s'] * 1e6:.1f} | {r['stock_median_s'] * 1e6:.1f} |"
        )
    fastest = {r["label"]: r["torchkit_s"] for r in rows}
    slope = (fastest["400 tensors"] - fastest["161 tensors"]) / (400 - 161)
    lines.append(f"| each tensor beyond 161 | {slope * 1e6:.2f} | | | |")
    return "\n".join(lines)


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
    rows = host_rows(quick) + cpu_rows(quick)
    if torch.cuda.is_available():
        rows += cuda_rows(quick)
    else:
        print("bench_adam cuda: skipped: no CUDA", file=sys.stderr)
    return rows


DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "fused_adam.md"


def write_host_cost(rows: list[dict], page: Path = DOCS_PAGE) -> None:
    """Write the host cost table of ``rows`` into the ``host-cost`` block of ``page``."""
    from run_all import replace_block  # benchmarks/ is a folder of scripts, not a package

    host = [r for r in rows if r["benchmark"].startswith("adam host cost")]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = f"{host_cost_table(host)}\n\nLoad average (1, 5, 15 min) after the run: {load}."
    page.write_text(replace_block(page.read_text(), "host-cost", body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--write-docs", action="store_true", help="write the host cost table into fused_adam.md"
    )
    parser.add_argument("--host-cost-worker", type=int, metavar="ROUNDS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.host_cost_worker:
        from triton.runtime.interpreter import InterpretedFunction

        InterpretedFunction.run = _no_launch  # this process only times the host work
        torch.set_num_threads(1)
        print(json.dumps(_host_cost_worker(args.host_cost_worker)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = run(args.quick)
    host = [r for r in rows if r["benchmark"].startswith("adam host cost")]
    print("\nHost cost of one step, Triton path with the launch stubbed:\n")
    print(host_cost_table(host) + "\n")
    if args.write_docs:
        write_host_cost(rows)
    print(f"{'benchmark':<32} {'case':<58} {'torchkit µs':>12} {'stock µs':>10} {'ratio':>6}")
    for r in rows:
        print(
            f"{r['benchmark']:<32} {r['case']:<58} {r['torchkit_s'] * 1e6:>12.1f} "
            f"{r['stock_s'] * 1e6:>10.1f} {r['ratio']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
