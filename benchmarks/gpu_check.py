"""GPU proof kit: validate and measure every torchkit kernel on one CUDA GPU in about four minutes.

    python benchmarks/gpu_check.py               # on a CUDA machine, no arguments needed
    python benchmarks/gpu_check.py --dry-run     # the same code paths on CPU (Triton interpreter)
    bash benchmarks/device_run.sh                # on a lent GPU machine: install, run, copy to $OUT

It writes ``gpu_check.json`` (every figure, with the GPU, driver, CUDA, cuDNN, torch and Triton
versions) and ``gpu_check.md`` (the same as tables) into ``--out`` (default
``benchmarks/results/<gpu name>/``, ``benchmarks/results/dry-run/`` for a dry run). Both files are
rewritten, atomically, after every case: a run cut short leaves everything it measured.

Time. Sections run in order, each with a time budget (``SECTIONS``): a section's deadline is the
start of the run plus the budgets up to it, so time one section leaves unused passes to the next,
and a case that would start after its section's deadline is recorded as skipped, never dropped.
The budgets add up to 225 s; with the imports and the CUDA context (10 to 20 s) a run takes about
four minutes. ``--deadline`` (default 255 s from the start of ``main``) is a hard stop behind them:
a watchdog interrupts whatever runs then, the report says where it stopped, and the exit status is
3. A call blocked inside the driver cannot be interrupted; ``benchmarks/device_run.sh`` runs the kit
under ``timeout`` as the last resort, and the files written so far stay.

Sections:

0. ``warm_up``: compiles every Triton kernel the run launches before anything is timed, in a pool
   of processes (one per CPU core): each job launches one kernel variant the way a case will
   (a conv layer with one tile pinned, for every tile autotuning may time for a case's shape,
   dtype and layout; each Adam case), so Triton's on-disk cache holds the binary when the case
   runs and no budget below pays for a compile (about 2 s each). A dry run, where the
   interpreter compiles nothing, runs one job of each kind (conv: one per layout and main
   loop), to prove the pool.
1. ``adam_correctness``: FusedAdam against ``torch.optim.Adam(fused=True)`` in fp32, bf16 and
   fp16, plain, AMSGrad + weight decay, maximize, AdamW, GradScaler with an overflowing step, and
   capturable under a CUDA graph: fraction of bitwise-equal parameters and the largest difference.
2. ``conv_correctness``: FusedConv2dReLU and stock ``relu(conv2d)`` on cuDNN, forward and
   backward, fp32, TF32, fp16 and bf16, NCHW and channels_last, each against a float64 reference;
   each backward reference is masked with the ReLU of the output it checks.
3. ``adam_bandwidth``: achieved TB/s on one large tensor against torch's fused kernel.
4. ``adam_tiling``: the same with each tiling of the sweep.
5. ``adam_step_time``: ``step()`` for 10, 161 and 400 tensors, host and device time, torchkit
   against torch's fused and foreach Adam, eager and replayed from a CUDA graph.
6. ``conv_speed``: time per call and TFLOP/s against ``F.conv2d(...).relu_()`` and
   ``torch.cudnn_convolution_relu`` (both with ``torch.backends.cudnn.benchmark`` on, as torchkit
   autotunes) on LeNet and ResNet-50 shapes (batch 32); each path timed eagerly and replayed from
   a CUDA graph, and each on its own (one that fails is recorded, the others still run); the
   autotuned config and the time its first call took.
7. ``conv_tiles``: every tile of the autotune space on one ResNet shape.
8. ``adam_large``: one Adam tensor of more than 2^31 elements (skipped when memory is short).

Timings: ``*_us`` from ``triton.testing.do_bench`` (the median of calls made from Python: host
dispatch included, L2 flushed between calls); ``*_graph_us`` from
``triton.testing.do_bench_cudagraph`` (the calls captured in one CUDA graph and replayed: device
time per call, back to back, no host dispatch); TFLOP/s and the roofline ratio use the graph
time. Optimizer steps are timed with CUDA events (``Target.step_times``).

Statuses: ``ok``; ``mismatch`` (a correctness check failed); ``skipped`` (with the reason: the
time budget, the GPU's memory, or ``dry run: ...`` for what only a GPU can do); ``error``
(anything else, a refusal by torchkit included, with the exception; the run goes on). After every
case the device is checked (``Target.health``: a synchronize and a tiny kernel); when the CUDA
context is unusable (a sticky error such as an illegal address), every later case would fail the
same way, so the run stops there, with the case marked and ``meta.stopped`` saying why.

Exit status: 0 every case ok or skipped; 1 a case is ``mismatch`` or ``error``; 2 bad arguments;
3 stopped early (device unusable, or the ``--deadline`` watchdog).

``--dry-run`` runs every section on CPU tensors through Triton's interpreter at tiny sizes, timing
with ``time.perf_counter`` and replaying "graphs" eagerly: it proves the script and its report
work, not anything about speed. Its conv shapes keep the main loop the GPU shape runs (the
GEMM form for at least 16 input channels per group, the flat-K variant below that), which each
conv case records as ``main_loop``.

The kit drives the public surface (``FusedAdam(capturable=True)``, ``FusedConv2dReLU.blocks`` to
pin a tiling) except in the block "Kernel internals", which reads what no public API exposes:
``torchkit.kernels.adam.AdamPlan``, ``AdamTiling`` and ``default_tiling`` (the tiling sweep);
the conv kernel's Triton ``Autotuner`` (its ``configs``, ``cache``, ``best_config``,
``configs_timings`` and ``bench_time``, in Triton 3.2 to 3.9) and its ``_prune_configs`` (which
tiles autotuning times for a shape). Tested with torch 2.13 and Triton 3.9 (dry run); the GPU
machine this kit was prepared for has torch 2.11 and Triton 3.6.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import importlib
import json
import math
import multiprocessing
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
import traffic  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from tables import markdown_table  # noqa: E402

# (name, title, budget in seconds); the budgets add up to 225 s (see the module docstring).
SECTIONS: tuple[tuple[str, str, float], ...] = (
    ("warm_up", "Start-up: every Triton kernel of the run compiled in parallel", 60),
    ("adam_correctness", "Correctness: FusedAdam against torch.optim.Adam(fused=True)", 15),
    ("conv_correctness", "Correctness: FusedConv2dReLU against relu(conv2d) on cuDNN", 35),
    ("adam_bandwidth", "Adam: achieved bandwidth on one large tensor", 5),
    ("adam_tiling", "Adam: tiling sweep", 5),
    ("adam_step_time", "Adam: step time for 10, 161 and 400 tensors", 15),
    ("conv_speed", "Conv2d + bias + ReLU: time per call and TFLOP/s", 60),
    ("conv_tiles", "Conv2d + bias + ReLU: every autotune tile on one shape", 10),
    ("adam_large", "Adam: one tensor of more than 2^31 elements", 20),
)
DEADLINE_S = 255.0  # the watchdog's hard stop, from the start of main()
EXIT_STOPPED = 3
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Skipped(Exception):
    """The case cannot run here; the text says why (``dry run: ...`` for GPU-only work)."""


class DeviceLost(Exception):
    """The CUDA context is unusable after a case: later cases would all fail, so the run stops."""


# --------------------------------------------------------------------------------------------
# Kernel internals: what the kit reads that no public API exposes (see the module docstring).


def adam_tilings() -> list[Any]:
    """The tilings the Adam sweep times: the one a float32 launch on a GPU uses first, then a
    small grid around it (tile size, chunk size, warps)."""
    from torchkit.kernels.adam import AdamTiling, default_tiling

    default = default_tiling(torch.float32, torch.device("cuda"))
    others = [
        AdamTiling(block=256, chunk=16384, num_warps=2),
        AdamTiling(block=1024, chunk=16384, num_warps=4),
        AdamTiling(block=1024, chunk=16384, num_warps=8),
        AdamTiling(block=2048, chunk=65536, num_warps=8),
        AdamTiling(block=512, chunk=65536, num_warps=4),
    ]
    return [default, *[t for t in others if t != default]]


def adam_tiled_step(
    tensors: dict[str, list[torch.Tensor]], tiling: Any
) -> tuple[Callable[[], object], Any]:
    """``(step, plan)``: ``step()`` runs one Adam update of ``tensors`` (``params``, ``grads``,
    ``exp_avgs``, ``exp_avg_sqs``) as one launch of ``plan``, an ``AdamPlan`` cut by ``tiling``
    and built once, as ``FusedAdam`` keeps its own. The step counters it creates are added to
    ``tensors`` as ``state_steps``: a plan holds addresses, not tensors, so whoever launches it
    keeps every tensor alive (a freed counter would be written after its memory was reused)."""
    from torchkit.kernels.adam import AdamPlan

    params = tensors["params"]
    steps = tensors["state_steps"] = [torch.zeros((), device=p.device) for p in params]
    plan = AdamPlan(
        params, tensors["exp_avgs"], tensors["exp_avg_sqs"], [], steps, amsgrad=False, tiling=tiling
    )
    hyper = [(1e-3, 0.9, 0.999, 1e-8, 0.0)]

    def step() -> object:
        return plan.launch(tensors["grads"], hyper, maximize=False, decoupled_weight_decay=False)

    return step, plan


def conv_tiles() -> list[Any]:
    """Every tile of the conv kernel's autotune space, as the ``Conv2dReLUBlocks`` that
    ``FusedConv2dReLU.blocks`` pins."""
    from torchkit.kernels.conv2d_relu import TILES

    return list(TILES)


def main_loop(shape: traffic.ConvShape) -> str:
    """The conv kernel's main loop for ``shape``: ``"GEMM form"`` or ``"flat K"`` (few channels).

    Example:
        >>> [main_loop(s) for s in traffic.CONV_SHAPES[2:4]]
        ['flat K', 'GEMM form']
    """
    from torchkit.kernels.conv2d_relu import uses_flat_k

    return "flat K" if uses_flat_k(shape.c_in, shape.kernel, shape.kernel) else "GEMM form"


def autotune_candidates(shape: traffic.ConvShape, dtype: torch.dtype, tf32: bool) -> list[Any]:
    """The tiles (``Conv2dReLUBlocks``) the conv kernel's autotuner times for ``shape`` on a
    GPU: the kernel's own ``candidate_tiles`` for the shape's GEMM sizes, dtype and precision.

    Example:
        >>> layer1 = next(s for s in traffic.CONV_SHAPES if s.name == "resnet50.layer1.3x3")
        >>> [tile.block_n for tile in autotune_candidates(layer1, torch.float16, False)]
        [64, 64, 32]
    """
    from torchkit.kernels.conv2d_relu import candidate_tiles

    m = shape.batch * shape.out_size**2
    return candidate_tiles(m, shape.c_in, shape.c_out, shape.kernel, shape.kernel, dtype, tf32)


def warm_tiles(shape: traffic.ConvShape, precision: str) -> list[Any]:
    """Every tile a conv call in ``precision`` may run on ``shape``, as ``Conv2dReLUBlocks``:
    the autotune candidates of each precision of the same dtype (the autotuner's key names the
    dtype, not the precision, so a tile tuned for TF32 products may then run with IEEE ones)."""
    dtype = PRECISIONS[precision][0]
    tiles = {
        tile
        for other_dtype, use_tf32, _ in PRECISIONS.values()
        if other_dtype == dtype
        for tile in autotune_candidates(shape, dtype, use_tf32)
    }
    return [tile for tile in conv_tiles() if tile in tiles]


def conv_autotuned_call(call: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """Run ``call`` (one fused conv forward) and say which config the autotuner used, and how
    this call tuned: ``tuning`` and ``tune_s``, the seconds it spent timing tiles (``None`` when
    it timed none). Read from the Autotuner's attributes, which Triton 3.2 to 3.9 all keep: a
    new key in ``cache``, and a new ``configs_timings`` dict (with ``bench_time``) when it timed.
    CPU tensors run fixed interpreter blocks, never autotuned."""
    if device.type != "cuda":
        call()
        return {
            "config": "interpreter blocks (CPU tensors are not autotuned)",
            "tuning": "none",
            "tune_s": None,
        }
    from torchkit.kernels.conv2d_relu import _conv2d_relu_fwd_kernel_autotuned as tuner

    keys_before = len(tuner.cache)
    timings_before = getattr(tuner, "configs_timings", None)
    call()
    figures: dict[str, Any] = {"config": tile_label(tuner.best_config), "tune_s": None}
    timings = getattr(tuner, "configs_timings", None)
    if timings is not None and timings is not timings_before:
        figures["tuning"] = f"timed {len(timings)} tiles"
        figures["tune_s"] = getattr(tuner, "bench_time", None)
    elif len(tuner.cache) > keys_before:
        figures["tuning"] = "one tile left after pruning, not timed"
    else:
        figures["tuning"] = "tuned earlier in this run"
    return figures


def tile_label(config: Any) -> str:
    """A conv tiling, a ``Conv2dReLUBlocks`` or an autotune ``triton.Config``, in one line.

    Example:
        >>> from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks
        >>> tile_label(Conv2dReLUBlocks(128, 64, 32, num_warps=4, num_stages=3))
        '128x64x32, 4 warps, 3 stages'
    """
    if hasattr(config, "block_m"):  # Conv2dReLUBlocks
        sizes = (config.block_m, config.block_n, config.block_k)
    else:
        sizes = tuple(config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return "x".join(map(str, sizes)) + f", {config.num_warps} warps, {config.num_stages} stages"


# --------------------------------------------------------------------------------------------
# The report: JSON and Markdown, rewritten after every case


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def status_summary(cases: Sequence[dict[str, Any]]) -> str:
    """How many cases have each status, in order of first appearance.

    Example:
        >>> status_summary([{"status": "ok"}, {"status": "skipped"}, {"status": "ok"}])
        '2 ok, 1 skipped'
    """
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["status"]] = counts.get(case["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "not reached"


class Report:
    """What the run measured so far, written to ``out/gpu_check.{json,md}`` after every case.

    ``health`` is called after every case: ``None`` when the device still works, else what is
    wrong with it (``Target.health``).
    """

    def __init__(
        self,
        out: Path,
        meta: dict[str, Any],
        sections: Sequence[tuple[str, str, float]] = SECTIONS,
        clock: Callable[[], float] = time.monotonic,
        health: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.out = out
        self.clock = clock
        self.health = health
        self.started = clock()
        self.running: str | None = None  # the case in progress, for a run that is cut short
        self.data: dict[str, Any] = {
            "meta": meta,
            "sections": [
                {"name": n, "title": t, "budget_s": b, "elapsed_s": 0.0, "cases": []}
                for n, t, b in sections
            ],
        }
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def entry(self, name: str) -> dict[str, Any]:
        return next(s for s in self.data["sections"] if s["name"] == name)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[Section]:
        """Run one section: its deadline is the start of the run plus the budgets up to it."""
        names = [s["name"] for s in self.data["sections"]]
        budgets = [s["budget_s"] for s in self.data["sections"]]
        deadline = self.started + sum(budgets[: names.index(name) + 1])
        entry = self.entry(name)
        start = self.clock()
        try:
            yield Section(self, entry, deadline)
        finally:
            entry["elapsed_s"] = round(self.clock() - start, 3)
            self.write()

    def stop(self, reason: str) -> None:
        """Record why the run stopped before its end (``meta.stopped``) and write the files."""
        if self.running is not None:
            reason += f" (during case {self.running})"
        self.data["meta"]["stopped"] = reason
        self.write()

    def write(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.clock() - self.started, 3)
        _atomic_write(
            self.out / "gpu_check.json", json.dumps(self.data, indent=1, default=str) + "\n"
        )
        _atomic_write(self.out / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        meta = self.data["meta"]
        kind = "GPU run"
        if meta.get("dry_run"):
            kind = "dry run on CPU (Triton interpreter; its timings are not speeds)"
        lines = [
            f"# torchkit GPU check: {meta.get('gpu', '?')}",
            "",
            f"Written by `benchmarks/gpu_check.py`, {kind}. Statuses: ok, mismatch, "
            "skipped (with the reason), error.",
            "",
            markdown_table([{"key": k, "value": v} for k, v in meta.items()]),
        ]
        for s in self.data["sections"]:
            lines += [
                "",
                f"## {s['title']}",
                "",
                f"`{s['name']}`: {status_summary(s['cases'])}; {s['elapsed_s']:.1f} s "
                f"(budget {s['budget_s']:.0f} s).",
            ]
            if s["cases"]:
                lines += ["", markdown_table(s["cases"])]
        return "\n".join(lines) + "\n"

    def failures(self) -> list[dict[str, Any]]:
        return [
            case
            for s in self.data["sections"]
            for case in s["cases"]
            if case["status"] in ("mismatch", "error")
        ]


class Section:
    """The cases of one section; each runs through :meth:`case`."""

    def __init__(self, report: Report, entry: dict[str, Any], deadline: float) -> None:
        self.report, self.entry, self.deadline = report, entry, deadline

    def case(
        self,
        case_id: str,
        run: Callable[[], dict[str, Any]],
        *,
        always: bool = False,
        **labels: Any,
    ) -> dict:
        """Run ``run`` (returning the case's figures, ``status`` optional) and record it.

        Past the section's deadline the case is recorded as skipped without running, unless
        ``always`` (a summary of work already done). A
        :class:`Skipped` exception records that status with its text; any other exception is
        recorded as an error, and the run continues, unless the device is unusable after the
        case (the report's ``health``): then the case is an error and :class:`DeviceLost` is
        raised once the report is written.
        """
        record: dict[str, Any] = {"case": case_id, **labels}
        clock = self.report.clock
        lost = None
        if clock() > self.deadline and not always:
            record.update(status="skipped", reason="time budget: the section's deadline passed")
        else:
            start = clock()
            self.report.running = case_id
            try:
                figures = run()
                record.update(figures)
                record.setdefault("status", "ok")
            except Skipped as error:
                record.update(status="skipped", reason=str(error))
            except Exception as error:  # the run must go on: record it and continue
                where = traceback.extract_tb(error.__traceback__)[-1]
                record.update(
                    status="error",
                    reason=f"{type(error).__name__}: {error}"[:2000],
                    where=f"{Path(where.filename).name}:{where.lineno}",
                )
            lost = self.report.health()
            if lost is not None:
                record.update(status="error", device=f"unusable after this case: {lost}"[:2000])
            elif record["status"] == "error" and torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.report.running = None
            record["case_s"] = round(clock() - start, 3)
        # Status first after the id: the Markdown table reads best that way.
        ordered = {"case": case_id, "status": record.pop("status")}
        self.entry["cases"].append({**ordered, **record})
        self.report.write()
        if lost is not None:
            raise DeviceLost(f"the CUDA context is unusable after case {case_id}: {lost}")
        return self.entry["cases"][-1]


# --------------------------------------------------------------------------------------------
# Where the run happens: device, timers, graphs


GRAPH_WARMUP = 3  # calls on a side stream before a CUDA graph capture (torch's recipe)


@dataclass(frozen=True)
class Target:
    """The device under test, and how to time and capture graphs on it (CPU stand-ins: dry run)."""

    device: torch.device
    dry_run: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def health(self) -> str | None:
        """``None`` when the device still runs work, else the error it raises: a synchronize
        surfaces any asynchronous fault of the last case, and a tiny kernel and a copy back
        show whether the context still works (after an illegal address it never does)."""
        if not self.cuda:
            return None
        try:
            torch.cuda.synchronize(self.device)
            probe = torch.ones(4, device=self.device).add_(1).sum().item()
        except Exception as error:
            return f"{type(error).__name__}: {error}"
        return None if probe == 8.0 else f"a probe kernel computed {probe}, not 8.0"

    def bench(self, fn: Callable[[], object], rep_ms: int = 50) -> float:
        """Seconds per call of ``fn`` made from Python: ``do_bench``'s median on CUDA (host
        dispatch included, L2 flushed between calls); in a dry run one call timed with
        ``perf_counter`` (a dry run's timings are not speeds)."""
        if self.cuda:
            import triton.testing

            return triton.testing.do_bench(fn, warmup=10, rep=rep_ms, return_mode="median") / 1e3
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def bench_graph(self, fn: Callable[[], object], rep_ms: int = 10) -> float:
        """Seconds per call of ``fn`` replayed from a CUDA graph: ``do_bench_cudagraph``'s
        median (the calls captured back to back in one graph: device time, no host dispatch).
        A dry run times one eager call instead, as :meth:`bench` does."""
        if self.cuda:
            import triton.testing

            ms = triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median")
            return ms / 1e3
        return self.bench(fn)

    def step_times(self, step: Callable[[], object], steps: int) -> tuple[float, float]:
        """``(host, device)`` seconds per call of ``step``: host is the median time a call takes
        to return (nothing synchronises inside the loop), device is the GPU time between CUDA
        events around ``steps`` back-to-back calls, divided by ``steps`` (the steady state).
        A dry run reports the mean wall time of a call for both (CPU work is synchronous)."""
        step()
        self.sync()
        host = []
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            host.append(time.perf_counter() - t0)
        if not self.cuda:
            return statistics.median(host), sum(host) / steps
        end.record()
        end.synchronize()
        return statistics.median(host), start.elapsed_time(end) / 1e3 / steps

    def graph(self, fn: Callable[[], object]) -> Callable[[], object]:
        """``fn`` captured in a CUDA graph after :data:`GRAPH_WARMUP` calls on a side stream;
        returns the replay. A dry run returns ``fn`` itself, called eagerly (no warm-up calls)."""
        if not self.cuda:
            return fn
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUP):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    @property
    def graphs(self) -> str:
        """What a ``graph`` timing or replay is on this target, for the report."""
        return "CUDA graph replay" if self.cuda else "eager stand-in (dry run)"


@contextlib.contextmanager
def cudnn_settings(**settings: bool) -> Iterator[None]:
    """Set flags of ``torch.backends.cudnn`` for a block, then restore them: ``allow_tf32``
    (which FusedConv2dReLU follows too) and ``benchmark`` (cuDNN times its algorithms for each
    new shape and keeps the fastest, as torchkit's autotuner picks a tile)."""
    previous = {name: getattr(torch.backends.cudnn, name) for name in settings}
    try:
        for name, value in settings.items():
            setattr(torch.backends.cudnn, name, value)
        yield
    finally:
        for name, value in previous.items():
            setattr(torch.backends.cudnn, name, value)


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: same value, or both NaN."""
    return (a == b) | (a.isnan() & b.isnan())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


# --------------------------------------------------------------------------------------------
# 1. Adam correctness

ADAM_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "amsgrad+wd": {"amsgrad": True, "weight_decay": 0.01},
    "maximize": {"maximize": True},
    "adamw": {"weight_decay": 0.01},
    "grad_scaler_inf": {},
    "capturable_graph": {},
}


def _adam_shapes(target: Target) -> list[tuple[int, ...]]:
    if target.dry_run:
        return [(37,), (6, 5), (3, 1, 3, 3), (1,)]
    return [(1 << 20,), (1023,), (256, 64, 3, 3), (1,)]


def adam_compare(target: Target, dtype: torch.dtype, variant: str) -> dict[str, Any]:
    """Run FusedAdam/FusedAdamW and torch's fused Adam/AdamW side by side on the same gradients:
    5 steps (3 in a dry run); on a GPU, ``capturable_graph`` adds the :data:`GRAPH_WARMUP`
    steps that precede each capture (8 steps in all)."""
    from torchkit.optim import FusedAdam, FusedAdamW

    steps = 3 if target.dry_run else 5
    gen = torch.Generator().manual_seed(0)
    shapes = _adam_shapes(target)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]
    if variant == "grad_scaler_inf":
        grads[1][0].view(-1)[0] = math.inf  # the second step overflows: both must skip it

    def params() -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(t.to(target.device, dtype)) for t in init]

    ours_p, ref_p = params(), params()
    options = {"lr": 1e-2, **ADAM_VARIANTS[variant]}
    adamw = variant == "adamw"
    ours_cls, ref_cls = (FusedAdamW, torch.optim.AdamW) if adamw else (FusedAdam, torch.optim.Adam)
    if variant == "capturable_graph":
        ours = ours_cls(ours_p, capturable=True, **options)
        ref = ref_cls(ref_p, fused=True, capturable=True, **options)
    else:
        ours = ours_cls(ours_p, **options)
        ref = ref_cls(ref_p, fused=True, **options)

    if variant == "grad_scaler_inf":
        scalers = [torch.amp.GradScaler(target.device.type, init_scale=1024.0) for _ in range(2)]
        for step_grads in grads:
            for opt, ps, scaler in zip((ours, ref), (ours_p, ref_p), scalers, strict=True):
                g = [t.to(target.device) for t in step_grads]
                loss = sum((p.float() * gi).sum() for p, gi in zip(ps, g, strict=True))
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
        scales = [s.get_scale() for s in scalers]
        extra: dict[str, Any] = {"scale_after": scales[0], "scale_equal": scales[0] == scales[1]}
    elif variant == "capturable_graph":
        for ps in (ours_p, ref_p):
            for p, g in zip(ps, grads[0], strict=True):
                p.grad = g.to(target.device, dtype)
        # The capture's warm-up steps (on the first gradients) count: both optimizers take them.
        replays = [target.graph(ours.step), target.graph(ref.step)]
        for step_grads in grads:
            for ps, replay in zip((ours_p, ref_p), replays, strict=True):
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad.copy_(g)
                replay()
        steps += GRAPH_WARMUP if target.cuda else 0
        extra = {"graph": target.graphs}
    else:
        for step_grads in grads:
            for opt, ps in ((ours, ours_p), (ref, ref_p)):
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad = g.to(target.device, dtype)
                opt.step()
        extra = {}
    target.sync()

    backend = str(ours.last_backend)
    expected = "triton" if target.cuda else "triton-interpreter"
    a = torch.cat([p.detach().reshape(-1) for p in ours_p])
    b = torch.cat([p.detach().reshape(-1) for p in ref_p])
    moments = [
        _max_diff(ours.state[po][key], ref.state[pr][key])
        for po, pr in zip(ours_p, ref_p, strict=True)
        for key in ("exp_avg", "exp_avg_sq")
    ]
    figures = {
        "backend": backend,
        "steps": steps,
        "elements": a.numel(),
        "bitwise_equal": float(_bitwise(a, b).double().mean()),
        "max_abs_diff": _max_diff(a, b),
        "moments_max_abs_diff": max(moments),
        **extra,
    }
    try:
        torch.testing.assert_close(a, b)  # the dtype's default tolerances
    except AssertionError as error:
        figures.update(status="mismatch", reason=str(error).splitlines()[0])
    if backend != expected:
        figures.update(status="error", reason=f"ran on backend {backend}, expected {expected}")
    return figures


def run_adam_correctness(section: Section, target: Target) -> None:
    for dtype_name, dtype in DTYPES.items():
        for variant in ADAM_VARIANTS:
            section.case(
                f"adam/{dtype_name}/{variant}",
                lambda d=dtype, v=variant: adam_compare(target, d, v),
                dtype=dtype_name,
                variant=variant,
            )


# --------------------------------------------------------------------------------------------
# 2. Conv correctness

CONV_CORRECTNESS = ("lenet.conv1", "lenet.conv2", "resnet50.layer1.3x3", "resnet50.layer2.1x1")
CONV_CORRECTNESS += ("resnet50.layer4.3x3",)
# precision -> (dtype, TF32 on, unit roundoff of the products)
PRECISIONS: dict[str, tuple[torch.dtype, bool, float]] = {
    "fp32": (torch.float32, False, 2.0**-24),
    "tf32": (torch.float32, True, 2.0**-11),
    "fp16": (torch.float16, False, 2.0**-11),
    "bf16": (torch.bfloat16, False, 2.0**-8),
}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# (precision, layout) the speed section times, in its order: mixed precision in channels_last,
# fp32 on TF32 tensor cores in torch's default layout, then bf16 (the same bytes and peak as
# fp16 in the model: the first to go when the budget runs out).
SPEED_VARIANTS = (("fp16", "channels_last"), ("tf32", "nchw"), ("bf16", "channels_last"))


def _conv_correctness_variants() -> list[tuple[str, str]]:
    """(precision, layout) of the correctness section, in its order: the speed section's first
    (it reuses their compiled kernels and autotune choices), then the others."""
    variants = list(SPEED_VARIANTS)
    return variants + [(p, lay) for p in PRECISIONS for lay in LAYOUTS if (p, lay) not in variants]


def _shape(name: str, target: Target) -> traffic.ConvShape:
    """A benchmark shape; in a dry run shrunk to 2 images whose output is at most 5 x 5 pixels
    (same kernel size, stride and padding) and at most 6 output channels, so one program
    instance of the interpreter computes it. The input channels stay as they are below 16 and
    become 32 above: the shape keeps its main loop (:func:`main_loop`), and 32 channels fill one
    ``BLOCK_K`` step of the GEMM form as ResNet's do on a GPU."""
    shape = next(s for s in traffic.CONV_SHAPES if s.name == name)
    if not target.dry_run:
        return shape
    out = min(shape.out_size, 5)
    size = (out - 1) * shape.stride + shape.kernel - 2 * shape.padding
    return traffic.ConvShape(
        shape.name, 2, min(shape.c_in, 32), min(shape.c_out, 6), size, shape.kernel,
        shape.stride, shape.padding,
    )  # fmt: skip


def _conv_inputs(
    shape: traffic.ConvShape, dtype: torch.dtype, layout: str, target: Target, seed: int = 0
) -> tuple[torch.Tensor, torch.nn.Conv2d]:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(
        shape.c_in, shape.c_out, shape.kernel, stride=shape.stride, padding=shape.padding
    )
    conv = conv.to(target.device, dtype).to(memory_format=LAYOUTS[layout])
    x = torch.randn(shape.batch, shape.c_in, shape.size, shape.size, device=target.device)
    return x.to(dtype).contiguous(memory_format=LAYOUTS[layout]), conv


def _relative_errors(
    results: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]
) -> list[float]:
    """``max|a - ref| / max|ref|`` per pair (0 when the reference is all zero and so is ``a``)."""
    errors = []
    for a, r in zip(results, reference, strict=True):
        scale = float(r.abs().max())
        diff = float((a.double() - r).abs().max())
        errors.append(diff / scale if scale > 0 else diff)
    return errors


def _errors_against_float64(
    y: torch.Tensor,
    grads: Sequence[torch.Tensor],
    pre_activation: torch.Tensor,
    exact: Sequence[torch.Tensor],
    upstream: torch.Tensor,
) -> list[float]:
    """Relative errors (:func:`_relative_errors`) of an output ``y`` and its input, weight and
    bias gradients ``grads`` for ``upstream``: against ``relu(pre_activation)``, the float64
    convolution of ``exact`` (input, weight, bias), and against the float64 gradients of
    ``pre_activation`` for ``upstream`` masked with ``y > 0``, the mask ``y``'s backward
    applies."""
    masked = upstream.double() * (y.detach() > 0)
    reference = torch.autograd.grad(pre_activation, exact, masked, retain_graph=True)
    return _relative_errors([y.detach(), *grads], [torch.relu(pre_activation).detach(), *reference])


def conv_compare(target: Target, name: str, precision: str, layout: str) -> dict[str, Any]:
    """FusedConv2dReLU and stock ``relu(conv2d)``, forward and backward, each against float64.

    The output is compared with ``relu(conv2d)`` in float64. The gradients are compared with
    float64 gradients computed through the ReLU mask of the output under test (``y > 0``, which
    both backward passes apply): where a pre-activation within rounding of zero lands on the
    other side of it, the mask differs from float64's, and comparing with float64's own mask
    would count a rounding of the forward pass as a gradient error.

    A quantity passes when torchkit's relative error is at most four times stock torch's, or
    at most ``4 sqrt(K) u`` (``K`` terms summed, ``u`` the unit roundoff of the products): the
    error a sum of ``K`` rounded products reaches. Backward: input, weight and bias gradients
    for a fixed random upstream gradient.
    """
    from torchkit.nn import FusedConv2dReLU

    dtype, use_tf32, unit = PRECISIONS[precision]
    shape = _shape(name, target)
    x, conv = _conv_inputs(shape, dtype, layout, target)
    fused = FusedConv2dReLU.from_conv(conv)
    exact = [t.detach().double().requires_grad_() for t in (x, conv.weight, conv.bias)]
    pre_activation = F.conv2d(*exact, conv.stride, conv.padding)
    upstream = torch.randn(pre_activation.shape, generator=torch.Generator().manual_seed(1))
    upstream = upstream.to(target.device)
    errors = {}
    with cudnn_settings(allow_tf32=use_tf32):
        # The first call autotunes (and compiles a variant not seen before): say what it chose.
        with torch.no_grad():
            tuning = conv_autotuned_call(lambda: fused(x), target.device)
        for which in ("torchkit", "stock"):
            xi = x.detach().clone().requires_grad_()
            if which == "torchkit":  # the layer and its parameters: its autograd is tested
                y = fused(xi)
                w, b = fused.weight, fused.bias
            else:
                w = conv.weight.detach().clone().requires_grad_()
                b = conv.bias.detach().clone().requires_grad_()
                y = torch.relu(F.conv2d(xi, w, b, conv.stride, conv.padding))
            grads = torch.autograd.grad(y, (xi, w, b), upstream.to(dtype))
            errors[which] = _errors_against_float64(y, grads, pre_activation, exact, upstream)
    ours, stock = errors["torchkit"], errors["stock"]
    m = shape.batch * shape.out_size**2
    terms = [
        shape.c_in * shape.kernel**2,  # output: a sum over C_in x KH x KW
        shape.c_out * shape.kernel**2,  # input gradient
        m,  # weight gradient
        m,  # bias gradient
    ]
    names = ("out", "grad_input", "grad_weight", "grad_bias")
    failed = [
        n
        for n, e_ours, e_stock, k in zip(names, ours, stock, terms, strict=True)
        if not e_ours <= max(4 * e_stock, 4 * math.sqrt(k) * unit)
    ]
    expected = "triton" if target.cuda else "triton-interpreter"
    figures: dict[str, Any] = {
        "shape": shape.label(),
        "main_loop": main_loop(shape),
        "backend": str(fused.last_backend),
        "reference": "cuDNN" if target.cuda else "CPU F.conv2d (dry run)",
    }
    for n, e_ours, e_stock in zip(names, ours, stock, strict=True):
        figures[f"{n}_err"] = e_ours
        figures[f"{n}_err_stock"] = e_stock
    figures.update(tuning)
    if failed:
        figures.update(status="mismatch", reason=f"error above bound: {', '.join(failed)}")
    if figures["backend"] != expected:
        figures.update(status="error", reason=f"ran on {figures['backend']}, expected {expected}")
    return figures


def run_conv_correctness(section: Section, target: Target) -> None:
    # If the budget runs out, the variants the speed section does not time are the ones skipped.
    for precision, layout in _conv_correctness_variants():
        for name in CONV_CORRECTNESS:
            section.case(
                f"conv/{name}/{precision}/{layout}",
                lambda n=name, p=precision, lay=layout: conv_compare(target, n, p, lay),
            )


# --------------------------------------------------------------------------------------------
# 3. Adam bandwidth and tiling


def _adam_tensors(numels: Sequence[int], dtype: torch.dtype, target: Target) -> dict[str, list]:
    gen = torch.Generator(target.device).manual_seed(0)
    new = [torch.randn(n, generator=gen, device=target.device).to(dtype) for n in numels]
    return {
        "params": new,
        "grads": [torch.randn_like(p) for p in new],
        "exp_avgs": [torch.zeros_like(p) for p in new],
        "exp_avg_sqs": [torch.zeros_like(p) for p in new],
    }


def adam_bandwidth(target: Target, dtype: torch.dtype, numel: int) -> dict[str, Any]:
    """One Adam step over one large tensor: FusedAdam against torch's fused kernel, in TB/s of
    the bytes a fused step must move (traffic.adam_bytes_per_param)."""
    from torchkit.optim import FusedAdam

    bytes_ = traffic.adam_bytes_per_param(dtype)[0] * numel
    times = {}
    for name, factory in (
        ("torchkit", FusedAdam),
        ("torch_fused", lambda ps: torch.optim.Adam(ps, fused=True)),
    ):
        tensors = _adam_tensors([numel], dtype, target)
        p = torch.nn.Parameter(tensors["params"][0])
        p.grad = tensors["grads"][0]
        opt = factory([p])
        opt.step()  # creates the state
        times[name] = target.bench(opt.step)
        del opt, p, tensors
    figures: dict[str, Any] = {"elements": numel, "bytes_per_step": bytes_}
    for name, t in times.items():
        figures[f"{name}_us"] = t * 1e6
        figures[f"{name}_tb_s"] = bytes_ / t / 1e12
    figures["torchkit_over_torch"] = times["torchkit"] / times["torch_fused"]
    gpu = _modelled_gpu(target)
    if gpu is not None:
        figures["torchkit_of_datasheet_bw"] = bytes_ / times["torchkit"] / gpu.bandwidth
    return figures


def adam_tiling(target: Target, tiling: Any, numel: int) -> dict[str, Any]:
    """One float32 Adam step over one large tensor with ``tiling``; ``aligned`` says whether
    the launch took the 128-bit variant (every address 16-byte aligned)."""
    tensors = _adam_tensors([numel], torch.float32, target)
    step, plan = adam_tiled_step(tensors, tiling)
    seconds = target.bench(step)
    bytes_ = traffic.adam_bytes_per_param(torch.float32)[0] * numel
    return {
        "block": tiling.block,
        "chunk": tiling.chunk,
        "num_warps": tiling.num_warps,
        "aligned": plan.aligned,
        "time_us": seconds * 1e6,
        "tb_s": bytes_ / seconds / 1e12,
    }


def _large_numel(target: Target) -> int:
    """Elements of the bandwidth tensors: 2^27 (0.5 GiB in fp32 per tensor), 4,099 dry."""
    return 4099 if target.dry_run else 1 << 27


def run_adam_bandwidth(section: Section, target: Target) -> None:
    for dtype_name in ("fp32", "bf16"):
        section.case(
            f"adam_bw/{dtype_name}",
            lambda d=DTYPES[dtype_name]: adam_bandwidth(target, d, _large_numel(target)),
            dtype=dtype_name,
        )


def run_adam_tiling(section: Section, target: Target) -> None:
    for i, tiling in enumerate(adam_tilings()):
        section.case(
            f"adam_tiling/{tiling.block}/{tiling.chunk}/{tiling.num_warps}w",
            lambda t=tiling: adam_tiling(target, t, _large_numel(target)),
            default=i == 0,
        )


# --------------------------------------------------------------------------------------------
# 4. Adam step time


def _step_optimizer(impl: str, params: list, capturable: bool, target: Target) -> Any:
    from torchkit.optim import FusedAdam

    groups = [{"params": params[0::2]}, {"params": params[1::2], "lr": 2e-3}]
    if impl == "torchkit":
        return FusedAdam(groups, capturable=capturable)
    if impl == "torch_foreach" and capturable and not target.cuda:
        raise Skipped("dry run: torch's foreach Adam refuses capturable=True on CPU tensors")
    kind = "fused" if impl == "torch_fused" else "foreach"
    return torch.optim.Adam(groups, capturable=capturable, **{kind: True})


def adam_step_time(target: Target, count: int, impl: str, mode: str) -> dict[str, Any]:
    """``optimizer.step()`` over ``count`` fp32 tensors in two param groups (a dry run takes
    a twentieth as many, at least two, of two elements each: the interpreter is slow per tensor)."""
    shapes = traffic.step_time_param_shapes(count)
    numels = [2] * max(2, count // 20) if target.dry_run else [math.prod(s) for s in shapes]
    tensors = _adam_tensors(numels, torch.float32, target)
    params = [torch.nn.Parameter(t) for t in tensors["params"]]
    for p, g in zip(params, tensors["grads"], strict=True):
        p.grad = g
    opt = _step_optimizer(impl, params, mode == "graph", target)
    opt.step()  # creates the state
    step = target.graph(opt.step) if mode == "graph" else opt.step
    host, device = target.step_times(step, 1 if target.dry_run else 50)
    return {
        "tensors_run": len(numels),
        "params": sum(numels),
        "host_us": host * 1e6,
        "device_us": device * 1e6,
    }


def run_adam_step_time(section: Section, target: Target) -> None:
    for count in (10, 161, 400):
        for mode in ("eager", "graph"):
            for impl in ("torchkit", "torch_fused", "torch_foreach"):
                section.case(
                    f"adam_step/{count}/{mode}/{impl}",
                    lambda c=count, i=impl, m=mode: adam_step_time(target, c, i, m),
                    tensors=count,
                    mode=mode if target.cuda or mode == "eager" else "graph (eager stand-in)",
                    impl=impl,
                )


# --------------------------------------------------------------------------------------------
# 5. Conv speed and 6. tiles

TILE_SHAPE = "resnet50.layer1.3x3"


def _modelled_gpu(target: Target) -> traffic.GPU | None:
    return traffic.gpu_for(torch.cuda.get_device_name(target.device)) if target.cuda else None


def _cudnn_fused(x: torch.Tensor, conv: torch.nn.Conv2d) -> Callable[[], object] | None:
    """``torch.cudnn_convolution_relu`` on these arguments, or ``None`` where it cannot run."""
    op = getattr(torch, "cudnn_convolution_relu", None)
    if op is None or not x.is_cuda or not torch.backends.cudnn.is_available():
        return None
    args = (x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return lambda: op(*args)


def _time_path(
    target: Target, fn: Callable[[], object], *, called: bool = False
) -> dict[str, float | str]:
    """One path's ``us`` (eager calls, :meth:`Target.bench`, after a first call unless
    ``called`` says it was made: cuDNN picks its algorithm there) and ``graph_us`` (replayed,
    :meth:`Target.bench_graph`), each on its own: a timing that raises is recorded as
    ``error: ...`` in its place, unless the device is unusable after it (then the exception
    goes on, to stop the run)."""
    times: dict[str, float | str] = {}
    for key, bench in (("us", target.bench), ("graph_us", target.bench_graph)):
        try:
            if key == "us" and not called:
                fn()
                target.sync()
            times[key] = bench(fn) * 1e6
        except Exception as error:  # this timing only: the others still run
            times[key] = f"error: {type(error).__name__}: {error}"[:500]
            if target.health() is not None:
                raise
    return times


def _tflops(flops: int, us: float | str) -> float | None:
    return flops / us / 1e6 if isinstance(us, float) else None


def conv_speed(target: Target, name: str, precision: str, layout: str) -> dict[str, Any]:
    """Forward (no grad) time per call of the fused layer, of ``F.conv2d(...).relu_()`` and of
    ``torch.cudnn_convolution_relu`` (the stock paths with ``cudnn.benchmark`` on), each timed
    eagerly and from a CUDA graph; the first call's time (autotuning) and the config chosen.

    Each path and timing runs on its own (:func:`_time_path`): one that fails shows
    ``error: ...`` in its column and in ``reason`` while the others are timed; a failure of
    torchkit's makes the case an error. TFLOP/s, the ratios to stock and
    ``torchkit_of_floor`` use the graph times.
    """
    from torchkit.nn import FusedConv2dReLU

    dtype, use_tf32, _ = PRECISIONS[precision]
    shape = _shape(name, target)
    x, conv = _conv_inputs(shape, dtype, layout, target)
    fused = FusedConv2dReLU.from_conv(conv)
    args = (conv.weight, conv.bias, conv.stride, conv.padding)
    figures: dict[str, Any] = {"shape": shape.label(), "main_loop": main_loop(shape)}
    stock: dict[str, Callable[[], object] | None] = {
        "conv_relu_": lambda: F.conv2d(x, *args).relu_(),
        "cudnn_fused": _cudnn_fused(x, conv),
    }
    with torch.no_grad(), cudnn_settings(allow_tf32=use_tf32):
        target.sync()
        start = time.perf_counter()
        choice = conv_autotuned_call(lambda: fused(x), target.device)
        target.sync()
        figures["first_call_s"] = time.perf_counter() - start
        figures["backend"] = str(fused.last_backend)
        times = {"torchkit": _time_path(target, lambda: fused(x), called=True)}
        with cudnn_settings(benchmark=True):
            for path, fn in stock.items():
                if fn is None:
                    figures[f"{path}_us"] = "n/a: needs CUDA and cuDNN"
                else:
                    times[path] = _time_path(target, fn)
    figures.update(choice)
    figures["graphs"] = target.graphs
    for path, t in times.items():
        figures.update({f"{path}_us": t["us"], f"{path}_graph_us": t["graph_us"]})
        figures[f"{path}_tflops"] = _tflops(shape.flops, t["graph_us"])
    ours = times["torchkit"]["graph_us"]
    for path, t in times.items():
        if path != "torchkit" and isinstance(ours, float) and isinstance(t["graph_us"], float):
            figures[f"torchkit_over_{path}"] = ours / t["graph_us"]
    gpu = _modelled_gpu(target)
    if gpu is not None and isinstance(ours, float):
        mode = traffic.math_mode(dtype, tf32=use_tf32)
        path = traffic.conv_paths(shape, dtype, layout)["torchkit"]
        figures["bound"] = path.bound(gpu, mode)
        figures["floor_us"] = path.floor(gpu, mode) * 1e6
        figures["torchkit_of_floor"] = figures["floor_us"] / ours
    failed = [
        f"{path} {key}: {value}"
        for path, t in times.items()
        for key, value in t.items()
        if isinstance(value, str)
    ]
    if failed:
        figures["reason"] = "; ".join(failed)
    if any(isinstance(value, str) for value in times["torchkit"].values()):
        figures["status"] = "error"
    return figures


def run_conv_speed(section: Section, target: Target) -> None:
    for precision, layout in SPEED_VARIANTS:
        for shape in traffic.CONV_SHAPES:
            section.case(
                f"conv_speed/{shape.name}/{precision}/{layout}",
                lambda n=shape.name, p=precision, lay=layout: conv_speed(target, n, p, lay),
            )


def conv_pinned_call(
    target: Target, name: str, precision: str, layout: str, tile: Any
) -> tuple[Callable[[], object], float, str]:
    """The fused layer on shape ``name`` with ``tile`` pinned (``FusedConv2dReLU.blocks``):
    ``(call, seconds, backend)``, after one forward (no grad) that compiles the tile, or loads
    it from Triton's cache; ``seconds`` is how long that first call took."""
    from torchkit.nn import FusedConv2dReLU

    dtype, use_tf32, _ = PRECISIONS[precision]
    x, conv = _conv_inputs(_shape(name, target), dtype, layout, target)
    fused = FusedConv2dReLU.from_conv(conv)
    fused.blocks = tile

    def call() -> object:
        with torch.no_grad(), cudnn_settings(allow_tf32=use_tf32):
            return fused(x)

    target.sync()
    start = time.perf_counter()
    call()
    target.sync()
    return call, time.perf_counter() - start, str(fused.last_backend)


def conv_tile(target: Target, tile: Any) -> dict[str, Any]:
    """The fused layer with ``tile`` pinned on the sweep's shape in fp16 channels_last: its
    first call, time per call (eager and from a graph), and whether autotuning would time this
    tile for the shape (``autotune_candidate``)."""
    shape = _shape(TILE_SHAPE, target)
    candidates = {tile_label(c) for c in autotune_candidates(shape, torch.float16, tf32=False)}
    call, first, backend = conv_pinned_call(target, TILE_SHAPE, "fp16", "channels_last", tile)
    times = _time_path(target, call, called=True)
    figures = {
        "shape": shape.label(),
        "main_loop": main_loop(shape),
        "autotune_candidate": tile_label(tile) in candidates,
        "backend": backend,
        "first_call_s": first,
        "time_us": times["us"],
        "graph_us": times["graph_us"],
        "tflops": _tflops(shape.flops, times["graph_us"]),
        "graphs": target.graphs,
    }
    failed = [f"{key}: {value}" for key, value in times.items() if isinstance(value, str)]
    if failed:
        figures.update(status="error", reason="; ".join(failed))
    return figures


def run_conv_tiles(section: Section, target: Target) -> None:
    for tile in conv_tiles():
        section.case(
            f"conv_tile/{TILE_SHAPE}/fp16/{tile.block_m}x{tile.block_n}x{tile.block_k}",
            lambda t=tile: conv_tile(target, t),
            tile=tile_label(tile),
        )
    section.case(f"conv_tile/{TILE_SHAPE}/fp16/autotuned", lambda: conv_tile_autotuned(target))


def conv_tile_autotuned(target: Target) -> dict[str, Any]:
    """The layer's own (autotuned) call on the tile sweep's shape, in the sweep's columns."""
    speed = conv_speed(target, TILE_SHAPE, "fp16", "channels_last")
    return {
        "tile": f"autotuned: {speed['config']}",
        "shape": speed["shape"],
        "main_loop": speed["main_loop"],
        "backend": speed["backend"],
        "first_call_s": speed["first_call_s"],
        "tuning": speed["tuning"],
        "tune_s": speed["tune_s"],
        "time_us": speed["torchkit_us"],
        "graph_us": speed["torchkit_graph_us"],
        "tflops": speed["torchkit_tflops"],
        "graphs": speed["graphs"],
        **{key: speed[key] for key in ("status", "reason") if key in speed},
    }


# --------------------------------------------------------------------------------------------
# 7. Adam on one tensor of more than 2^31 elements


def _large_bytes_per_element(dtype: torch.dtype) -> int:
    """GPU bytes per element of the large Adam case: p, grad, exp_avg and exp_avg_sq, plus the
    float32 ``randn`` a narrower dtype is cast from (fp32 16, bf16 12).

    Example:
        >>> _large_bytes_per_element(torch.float32), _large_bytes_per_element(torch.bfloat16)
        (16, 12)
    """
    size = dtype.itemsize
    return 4 * size + (4 if size < 4 else 0)


def adam_large(target: Target) -> dict[str, Any]:
    """Two FusedAdam steps on one tensor of 2^31 + 4,099 elements; three slices (the start,
    across element 2^31, the end) checked against torch's fused Adam run on copies of them."""
    from torchkit.optim import FusedAdam

    numel = 5003 if target.dry_run else 2**31 + 4099
    boundary = numel // 2 if target.dry_run else 2**31
    figures: dict[str, Any] = {"elements": numel}
    if target.dry_run:
        figures["note"] = f"dry run: {numel:,} elements stand in for 2^31 + 4,099"
        dtype = torch.float32
    else:
        torch.cuda.empty_cache()  # what earlier cases left in torch's allocator counts as used
        free = torch.cuda.mem_get_info(target.device)[0]
        need = {
            d: numel * _large_bytes_per_element(d) + 2**30 for d in (torch.float32, torch.bfloat16)
        }
        fits = [d for d, n in need.items() if n < free]
        if not fits:
            least = min(need.values()) / 2**30
            raise Skipped(
                f"needs {least:.0f} GiB of free GPU memory (bf16), {free / 2**30:.0f} free"
            )
        dtype = fits[0]
    figures["dtype"] = str(dtype).removeprefix("torch.")
    gen = torch.Generator(target.device).manual_seed(0)
    p = torch.nn.Parameter(torch.randn(numel, generator=gen, device=target.device).to(dtype))
    p.grad = torch.randn(numel, generator=gen, device=target.device).to(dtype)
    spans = [(0, 4096), (boundary - 2048, boundary + 2048), (numel - 4096, numel)]
    copies = [torch.nn.Parameter(p.detach()[a:b].clone()) for a, b in spans]
    for c, (a, b) in zip(copies, spans, strict=True):
        c.grad = p.grad[a:b].clone()
    ours, ref = FusedAdam([p], lr=1e-2), torch.optim.Adam(copies, lr=1e-2, fused=True)
    for _ in range(2):
        ours.step()
        ref.step()
    target.sync()
    a = torch.cat([p.detach()[lo:hi] for lo, hi in spans])
    b = torch.cat([c.detach() for c in copies])
    figures.update(
        backend=str(ours.last_backend),
        bitwise_equal=float(_bitwise(a, b).double().mean()),
        max_abs_diff=_max_diff(a, b),
    )
    try:
        torch.testing.assert_close(a, b)
    except AssertionError as error:
        figures.update(status="mismatch", reason=str(error).splitlines()[0])
    return figures


def run_adam_large(section: Section, target: Target) -> None:
    section.case("adam_large/2^31+4099", lambda: adam_large(target))


# --------------------------------------------------------------------------------------------
# 0. Warm-up: every Triton kernel of the run compiled in parallel, before anything is timed

# Each kind of job runs, in a pool worker, what a case runs (a conv layer with one tile pinned;
# the Adam cases themselves), so the worker compiles exactly the variants the case will launch
# and leaves them in Triton's on-disk cache, which the main process then reads.
WARM_JOBS: dict[str, Callable[..., object]] = {
    "conv": conv_pinned_call,
    "adam_compare": lambda target, dtype, variant: adam_compare(target, DTYPES[dtype], variant),
    "adam_bandwidth": lambda target, dtype: adam_bandwidth(
        target, DTYPES[dtype], _large_numel(target)
    ),
    "adam_tiling": lambda target, tiling: adam_tiling(target, tiling, _large_numel(target)),
    "adam_step_time": lambda target, count, mode: adam_step_time(target, count, "torchkit", mode),
}


def warm_up_jobs(target: Target) -> list[tuple[str, tuple[Any, ...], tuple[Any, ...]]]:
    """``(kind, args, group)`` of every warm-up job: ``WARM_JOBS[kind](target, *args)``; a dry
    run keeps the first job of each kind and ``group`` (conv: each layout and main loop).

    Conv: every tile autotuning may run (:func:`warm_tiles`) for each shape, precision and
    layout of the correctness and speed sections, and every tile of the sweep; Adam: each
    correctness case, each bandwidth dtype, each tiling, and torchkit's step-time cases.
    """
    conv_cases = [(n, p, lay) for p, lay in _conv_correctness_variants() for n in CONV_CORRECTNESS]
    conv_cases += [(s.name, p, lay) for p, lay in SPEED_VARIANTS for s in traffic.CONV_SHAPES]
    conv_jobs = [
        (name, precision, layout, tile)
        for name, precision, layout in dict.fromkeys(conv_cases)
        for tile in warm_tiles(_shape(name, target), precision)
    ]
    conv_jobs += [(TILE_SHAPE, "fp16", "channels_last", tile) for tile in conv_tiles()]
    jobs = [
        ("conv", args, (args[2], main_loop(_shape(args[0], target))))
        for args in dict.fromkeys(conv_jobs)
    ]
    jobs += [("adam_compare", (d, v), ()) for d in DTYPES for v in ADAM_VARIANTS]
    jobs += [("adam_bandwidth", (d,), ()) for d in ("fp32", "bf16")]
    jobs += [("adam_tiling", (tiling,), ()) for tiling in adam_tilings()]
    jobs += [
        ("adam_step_time", (count, mode), ())
        for count in (10, 161, 400)
        for mode in ("eager", "graph")
    ]
    if target.dry_run:
        firsts: dict[tuple[Any, ...], tuple[str, tuple[Any, ...], tuple[Any, ...]]] = {}
        for kind, args, group in jobs:
            firsts.setdefault((kind, *group), (kind, args, group))
        return list(firsts.values())
    # Conv jobs that likely compile the same binary (same precision, layout, tile, main loop
    # and kernel size; other shapes) go after the first of them, so the pool's first round
    # compiles different binaries and the later jobs find theirs in the cache.
    seen: dict[tuple[Any, ...], int] = {}
    ranks = []
    for kind, args, _ in jobs:
        key: tuple[Any, ...] = (kind, args)
        if kind == "conv":
            name, precision, layout, tile = args
            shape = _shape(name, target)
            key = (precision, layout, tile, main_loop(shape), shape.kernel)
        seen[key] = seen.get(key, -1) + 1
        ranks.append(seen[key])
    return [job for _, job in sorted(zip(ranks, jobs, strict=True), key=lambda pair: pair[0])]


def _warm_job(
    device: str, dry_run: bool, kind: str, args: tuple[Any, ...]
) -> tuple[float, str | None]:
    """One warm-up job, in a pool worker: ``(seconds, None)``, or ``(seconds, the error)``."""
    start = time.perf_counter()
    try:
        target = Target(torch.device(device), dry_run)
        if target.cuda:
            torch.cuda.set_device(target.device)
        WARM_JOBS[kind](target, *args)
        target.sync()
    except Exception as error:  # reported in the summary; the case itself will say more
        return time.perf_counter() - start, f"{type(error).__name__}: {error}"[:500]
    return time.perf_counter() - start, None


def _warm_worker_init() -> None:
    torch.set_num_threads(1)  # the workers share the cores: one thread each


def warm_up(
    jobs: Sequence[tuple[str, tuple[Any, ...], Any]],
    target: Target,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` in a pool of spawned processes (one per core; two in a dry run) until they
    are done or ``deadline`` (on ``clock``) passes, then end the pool. Per kind of job: how
    many ran, failed (the first failure, with its arguments) or were unfinished, and times."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(len(jobs), cores or 1, 2 if target.dry_run else 64))
    # Workers find the functions by module name: when this file runs as __main__ (a script, or
    # under cProfile), they come from it imported as the module gpu_check (benchmarks/ is on
    # sys.path, which spawned workers inherit).
    this = sys.modules[__name__] if __name__ != "__main__" else importlib.import_module("gpu_check")
    start = clock()
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=this._warm_worker_init)
    try:
        pending = [
            (
                kind,
                args,
                pool.apply_async(this._warm_job, (str(target.device), target.dry_run, kind, args)),
            )
            for kind, args, _ in jobs
        ]
        for _, _, result in pending:
            result.wait(max(0.0, deadline - clock()))
    finally:
        pool.terminate()  # jobs still compiling at the deadline: their cases compile on launch
        pool.join()
    wall = clock() - start
    summary: dict[str, dict[str, Any]] = {}
    for kind, args, result in pending:
        entry = summary.setdefault(
            kind, {"jobs": 0, "finished": 0, "failed": 0, "unfinished": 0, "slowest_s": 0.0}
        )
        entry["jobs"] += 1
        if not result.ready():
            entry["unfinished"] += 1
            continue
        try:
            seconds, error = result.get()
        except Exception as failure:  # the job never ran (e.g. its arguments did not pickle)
            seconds, error = 0.0, f"{type(failure).__name__}: {failure}"
        entry["finished"] += 1
        entry["slowest_s"] = max(entry["slowest_s"], seconds)
        if error is not None:
            entry["failed"] += 1
            entry.setdefault("first_failure", f"{args}: {error}")
    for entry in summary.values():
        entry.update(workers=workers, pool_wall_s=wall)
    return summary


def run_warm_up(section: Section, target: Target) -> None:
    jobs = warm_up_jobs(target)
    summary = warm_up(jobs, target, section.deadline, section.report.clock)
    note = (
        "dry run: the interpreter compiles nothing; one job of each kind (conv: one per layout "
        "and main loop) ran, to prove the pool"
    )
    for kind, entry in summary.items():
        figures = dict(entry)
        if entry["failed"]:
            figures.update(status="error", reason=figures.pop("first_failure"))
        elif entry["unfinished"]:
            figures["reason"] = (
                f"{entry['unfinished']} jobs unfinished at the section's deadline: "
                "their cases compile them when they first launch"
            )
        if target.dry_run:
            figures["note"] = note
        section.case(f"warm_up/{kind}", lambda f=figures: f, always=True)


# --------------------------------------------------------------------------------------------
# The run

RUNNERS: dict[str, Callable[[Section, Target], None]] = {
    "warm_up": run_warm_up,
    "adam_correctness": run_adam_correctness,
    "conv_correctness": run_conv_correctness,
    "adam_bandwidth": run_adam_bandwidth,
    "adam_tiling": run_adam_tiling,
    "adam_step_time": run_adam_step_time,
    "conv_speed": run_conv_speed,
    "conv_tiles": run_conv_tiles,
    "adam_large": run_adam_large,
}


def _first_line(command: list[str]) -> str | None:
    """The first line ``command`` prints, or ``None`` when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def environment(target: Target, argv: Sequence[str]) -> dict[str, Any]:
    """What the run ran on: GPU, driver, CUDA, cuDNN, torch, Triton, torchkit and the command."""
    import triton

    import torchkit

    meta: dict[str, Any] = {
        "dry_run": target.dry_run,
        "gpu": "none (dry run on CPU)",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python benchmarks/gpu_check.py", *argv]),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "torchkit": torchkit.__version__,
        # A copy of the tree without .git (a lent GPU machine) names its commit in the environment.
        "torchkit_commit": _first_line(["git", "-C", str(HERE), "rev-parse", "HEAD"])
        or os.environ.get("TORCHKIT_COMMIT"),
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "finished": False,
    }
    if target.cuda:
        props = torch.cuda.get_device_properties(target.device)
        gpu = _modelled_gpu(target)
        meta.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            driver=_first_line(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            ),
            roofline_model=gpu.name if gpu else None,
        )
    return meta


def default_out(target: Target) -> Path:
    """``benchmarks/results/<gpu name>`` (``dry-run`` for a dry run)."""
    if not target.cuda:
        return RESULTS / "dry-run"
    name = torch.cuda.get_device_name(target.device)
    return RESULTS / (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "gpu")


class Watchdog:
    """After ``seconds``, interrupt the main thread (a ``KeyboardInterrupt`` there) unless
    :meth:`stop` came first; ``fired`` tells that interrupt from a user's Ctrl-C."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._lock = threading.Lock()
        self._armed = True
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._armed:
                self.fired = True
                _thread.interrupt_main()

    def stop(self) -> None:
        with self._lock:
            self._armed = False
        self._timer.cancel()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, Triton interpreter, tiny sizes"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default: benchmarks/results/<gpu>)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(name for name, _, _ in SECTIONS),
        help="comma-separated subset of the sections, in their fixed order",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=DEADLINE_S,
        help=f"hard stop, in seconds from the start (default {DEADLINE_S:g}; exit status 3)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; expected some of {list(RUNNERS)}")
    if not args.deadline > 0:
        parser.error(f"--deadline must be positive, got {args.deadline}")

    if args.dry_run:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--dry-run needs TRITON_INTERPRET=1 before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"
        target = Target(torch.device("cpu"), dry_run=True)
    else:
        if os.environ.get("TRITON_INTERPRET") == "1":
            parser.error("TRITON_INTERPRET=1 is set: unset it, or pass --dry-run")
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
        target = Target(torch.device("cuda", torch.cuda.current_device()), dry_run=False)
    # Triton 3.9 warns when unset; set before the warm-up's workers start, which inherit it (it
    # is part of the key of Triton's compile cache).
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

    sections = [s for s in SECTIONS if s[0] in chosen]
    meta = environment(target, argv)
    meta.update(budget_s=sum(b for _, _, b in sections), deadline_s=args.deadline)
    out = args.out or default_out(target)
    report = Report(out, meta, sections, health=target.health)
    watchdog = Watchdog(args.deadline)
    stopped = False
    try:
        try:
            print(f"gpu_check: writing {out}/gpu_check.{{json,md}}", file=sys.stderr)
            for name, title, _ in sections:
                print(f"gpu_check: {title}", file=sys.stderr)
                with report.section(name) as section:
                    RUNNERS[name](section, target)
            meta["finished"] = True
        except DeviceLost as lost:
            report.stop(str(lost))
            stopped = True
        finally:
            watchdog.stop()
    except KeyboardInterrupt:
        if not watchdog.fired:
            raise
        report.stop(f"the watchdog stopped the run at its {args.deadline:g} s deadline")
        stopped = True
    report.write()
    failures = report.failures()
    for case in failures:
        print(f"gpu_check: {case['status']}: {case['case']}: {case.get('reason')}", file=sys.stderr)
    if stopped:
        print(f"gpu_check: stopped: {meta['stopped']}", file=sys.stderr)
    print(
        f"gpu_check: done in {meta['elapsed_s']:.0f} s; {len(failures)} failure(s)", file=sys.stderr
    )
    if stopped:
        return EXIT_STOPPED
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
